! hpclock.f90: Fortran binding of hpclock (include/hpclock.h, docs/api.md#from-fortran).
!
! Two layers, as in netCDF-Fortran:
!   - hpclock_*_c: raw interfaces bound to the C symbols, argument for
!     argument. They keep the C names only as binding labels, because a
!     Fortran procedure cannot share its name with the wrapper below.
!   - hpclock_*: wrappers taking Fortran strings and returning Fortran strings.
!
!     use hpclock
!     integer(hpclock_handle_kind) :: h
!     if (hpclock_try_acquire(lockfile, h) == HPCLOCK_OK) then
!        ! ... the work ...
!        if (hpclock_complete(h) /= HPCLOCK_OK) print *, hpclock_last_error()
!     end if
!
! Paths and labels: the wrappers drop trailing blanks, so a character(len=64)
! variable names the same file as its trim(); a path that really ends in
! blanks goes through the raw hpclock_*_c interfaces (NUL-terminated). A NUL
! inside a string ends it.
!
! Integer kinds: the module compiles, and is used, alike with and without
! -fdefault-integer-8 (or -i8). Statuses are integer(c_int32_t) function
! results, which assignment converts to any integer; hpclock_status_name
! takes a status of either kind. The constants, like the fields of the
! types, have C's kinds: combine flags as ior(HPCLOCK_SYNC, HPCLOCK_IGNORE_DONE)
! and assign the result to opts%flags. Handles are always
! integer(hpclock_handle_kind), 64 bits, as in C.
!
! C's unsigned types have no Fortran kind; they map to the signed kind of the
! same size. Handles (uint64_t) and generations count up from 1, and flags,
! mode and statfs magics are small, so they never reach the sign bit; a uid
! above 2**31-1 reads as negative.
module hpclock
   use, intrinsic :: iso_c_binding, only: c_int32_t, c_int64_t, c_char, &
      c_ptr, c_null_ptr, c_null_char, c_size_t, c_loc, c_f_pointer, c_associated
   implicit none
   private

   ! hpclock_handle (C: uint64_t). 0 is never a valid handle.
   integer, parameter, public :: hpclock_handle_kind = c_int64_t

   ! Status: >= 0 is an outcome, < 0 an error. Only HPCLOCK_OK means
   ! "you hold it: do the work".
   integer(c_int32_t), parameter, public :: HPCLOCK_OK = 0
   integer(c_int32_t), parameter, public :: HPCLOCK_BUSY = 1
   integer(c_int32_t), parameter, public :: HPCLOCK_DONE = 2
   integer(c_int32_t), parameter, public :: HPCLOCK_NOT_RANK0 = 3
   integer(c_int32_t), parameter, public :: HPCLOCK_E_INVALID = -1
   integer(c_int32_t), parameter, public :: HPCLOCK_E_OS = -2
   integer(c_int32_t), parameter, public :: HPCLOCK_E_NOTSUP = -3
   integer(c_int32_t), parameter, public :: HPCLOCK_E_UNSAFE = -4
   integer(c_int32_t), parameter, public :: HPCLOCK_E_INTERNAL = -5
   integer(c_int32_t), parameter, public :: HPCLOCK_E_LOST = -6

   ! Flags for hpclock_options%flags (C: uint32_t); combine with ior().
   integer(c_int32_t), parameter, public :: HPCLOCK_RANK0_ONLY = 1
   integer(c_int32_t), parameter, public :: HPCLOCK_REQUIRE_CLUSTER = 2
   integer(c_int32_t), parameter, public :: HPCLOCK_SYNC = 4
   integer(c_int32_t), parameter, public :: HPCLOCK_IGNORE_DONE = 8
   integer(c_int32_t), parameter, public :: HPCLOCK_LEASE = 16
   integer(c_int32_t), parameter, public :: HPCLOCK_NO_LEASE = 32

   ! hpclock_holder%state
   integer(c_int32_t), parameter, public :: HPCLOCK_STATE_FREE = 0
   integer(c_int32_t), parameter, public :: HPCLOCK_STATE_HELD = 1
   integer(c_int32_t), parameter, public :: HPCLOCK_STATE_STALE = 2
   integer(c_int32_t), parameter, public :: HPCLOCK_STATE_DONE = 3

   ! hpclock_fs_info%scope
   integer(c_int32_t), parameter, public :: HPCLOCK_SCOPE_UNKNOWN = 0
   integer(c_int32_t), parameter, public :: HPCLOCK_SCOPE_NODE = 1
   integer(c_int32_t), parameter, public :: HPCLOCK_SCOPE_CLUSTER = 2
   integer(c_int32_t), parameter, public :: HPCLOCK_SCOPE_SPLIT = 3
   integer(c_int32_t), parameter, public :: HPCLOCK_SCOPE_NONE = 4

   ! hpclock_fs_info%primitive
   integer(c_int32_t), parameter, public :: HPCLOCK_PRIMITIVE_FLOCK = 1
   integer(c_int32_t), parameter, public :: HPCLOCK_PRIMITIVE_OFD = 2
   integer(c_int32_t), parameter, public :: HPCLOCK_PRIMITIVE_LEASE = 3

   ! The C struct field for field. A variable of this type starts with the
   ! values hpclock_options_init gives (no flags, mode 0644, one try, no
   ! label), so calling it is optional. mode 0 also means 0644; the umask
   ! applies to either.
   type, bind(C), public :: hpclock_options
      integer(c_int32_t) :: flags = 0                          ! uint32_t
      integer(c_int32_t) :: mode = int(o'644', c_int32_t)      ! uint32_t
      integer(c_int64_t) :: timeout_ms = 0_c_int64_t
      ! const char *: a Fortran caller sets it through the label argument of
      ! hpclock_acquire, which keeps the NUL-terminated copy alive.
      type(c_ptr) :: label = c_null_ptr
      ! The lease period in milliseconds; 0 = the default (60000).
      integer(c_int64_t) :: lease_ms = 0_c_int64_t
   end type hpclock_options

   type, bind(C), public :: hpclock_holder
      integer(c_int32_t) :: state
      integer(c_int32_t) :: alive
      integer(c_int64_t) :: pid
      integer(c_int32_t) :: uid          ! uint32_t
      integer(c_int32_t) :: mpi_rank
      integer(c_int64_t) :: generation   ! uint64_t
      integer(c_int64_t) :: acquired_unix_ms
      integer(c_int64_t) :: released_unix_ms
      ! NUL-terminated C strings: read them with hpclock_string().
      character(kind=c_char) :: host(256)
      character(kind=c_char) :: job_id(64)
      character(kind=c_char) :: label(128)
   end type hpclock_holder

   type, bind(C), public :: hpclock_fs_info
      integer(c_int32_t) :: scope
      integer(c_int32_t) :: primitive
      integer(c_int64_t) :: magic        ! uint64_t
      character(kind=c_char) :: fs_type(32)
      character(kind=c_char) :: detail(256)
   end type hpclock_fs_info

   public :: hpclock_try_acquire_c, hpclock_options_init_c, hpclock_acquire_c, &
      hpclock_release_c, hpclock_complete_c, hpclock_holder_info_c, &
      hpclock_handle_info_c, hpclock_fs_check_c, hpclock_check_c, hpclock_mpi_rank_c, &
      hpclock_last_error_c, hpclock_last_errno_c, hpclock_status_name_c, &
      hpclock_version_c

   public :: hpclock_try_acquire, hpclock_options_init, hpclock_options_default, &
      hpclock_acquire, hpclock_release, hpclock_complete, hpclock_holder_info, &
      hpclock_handle_info, hpclock_fs_check, hpclock_check, hpclock_mpi_rank, &
      hpclock_last_error, hpclock_last_errno, hpclock_status_name, &
      hpclock_version, hpclock_string

   ! A status of either integer kind.
   interface hpclock_status_name
      module procedure hpclock_status_name_i32, hpclock_status_name_i64
   end interface hpclock_status_name

   ! Raw interfaces. Paths are NUL-terminated c_char arrays. Arguments that C
   ! allows to be NULL are type(c_ptr), value; the others are references.
   interface
      function hpclock_try_acquire_c(path, out) bind(C, name="hpclock_try_acquire")
         import :: c_int32_t, c_int64_t, c_char
         character(kind=c_char), dimension(*), intent(in) :: path
         integer(c_int64_t), intent(out) :: out
         integer(c_int32_t) :: hpclock_try_acquire_c
      end function hpclock_try_acquire_c

      subroutine hpclock_options_init_c(opts) bind(C, name="hpclock_options_init")
         import :: hpclock_options
         type(hpclock_options), intent(out) :: opts
      end subroutine hpclock_options_init_c

      ! opts: c_loc of a type(hpclock_options), or c_null_ptr for the defaults.
      function hpclock_acquire_c(path, opts, out) bind(C, name="hpclock_acquire")
         import :: c_int32_t, c_int64_t, c_char, c_ptr
         character(kind=c_char), dimension(*), intent(in) :: path
         type(c_ptr), value :: opts
         integer(c_int64_t), intent(out) :: out
         integer(c_int32_t) :: hpclock_acquire_c
      end function hpclock_acquire_c

      function hpclock_release_c(h) bind(C, name="hpclock_release")
         import :: c_int32_t, c_int64_t
         integer(c_int64_t), value :: h
         integer(c_int32_t) :: hpclock_release_c
      end function hpclock_release_c

      function hpclock_complete_c(h) bind(C, name="hpclock_complete")
         import :: c_int32_t, c_int64_t
         integer(c_int64_t), value :: h
         integer(c_int32_t) :: hpclock_complete_c
      end function hpclock_complete_c

      function hpclock_check_c(h) bind(C, name="hpclock_check")
         import :: c_int32_t, c_int64_t
         integer(c_int64_t), value :: h
         integer(c_int32_t) :: hpclock_check_c
      end function hpclock_check_c

      function hpclock_holder_info_c(path, out) bind(C, name="hpclock_holder_info")
         import :: c_int32_t, c_char, hpclock_holder
         character(kind=c_char), dimension(*), intent(in) :: path
         type(hpclock_holder), intent(out) :: out
         integer(c_int32_t) :: hpclock_holder_info_c
      end function hpclock_holder_info_c

      ! mine, previous: c_loc of a type(hpclock_holder), or c_null_ptr.
      function hpclock_handle_info_c(h, mine, previous) bind(C, name="hpclock_handle_info")
         import :: c_int32_t, c_int64_t, c_ptr
         integer(c_int64_t), value :: h
         type(c_ptr), value :: mine
         type(c_ptr), value :: previous
         integer(c_int32_t) :: hpclock_handle_info_c
      end function hpclock_handle_info_c

      function hpclock_fs_check_c(path, out) bind(C, name="hpclock_fs_check")
         import :: c_int32_t, c_char, hpclock_fs_info
         character(kind=c_char), dimension(*), intent(in) :: path
         type(hpclock_fs_info), intent(out) :: out
         integer(c_int32_t) :: hpclock_fs_check_c
      end function hpclock_fs_check_c

      function hpclock_mpi_rank_c() bind(C, name="hpclock_mpi_rank")
         import :: c_int32_t
         integer(c_int32_t) :: hpclock_mpi_rank_c
      end function hpclock_mpi_rank_c

      ! Never NULL; valid until this thread's next hpclock call.
      function hpclock_last_error_c() bind(C, name="hpclock_last_error")
         import :: c_ptr
         type(c_ptr) :: hpclock_last_error_c
      end function hpclock_last_error_c

      function hpclock_last_errno_c() bind(C, name="hpclock_last_errno")
         import :: c_int32_t
         integer(c_int32_t) :: hpclock_last_errno_c
      end function hpclock_last_errno_c

      function hpclock_status_name_c(status) bind(C, name="hpclock_status_name")
         import :: c_int32_t, c_ptr
         integer(c_int32_t), value :: status
         type(c_ptr) :: hpclock_status_name_c
      end function hpclock_status_name_c

      function hpclock_version_c() bind(C, name="hpclock_version")
         import :: c_ptr
         type(c_ptr) :: hpclock_version_c
      end function hpclock_version_c

      ! Fortran has no way to find the end of a C string it did not allocate.
      function c_strlen(s) bind(C, name="strlen")
         import :: c_ptr, c_size_t
         type(c_ptr), value :: s
         integer(c_size_t) :: c_strlen
      end function c_strlen
   end interface

contains

   ! HPCLOCK_OK: you hold it, handle /= 0. Any other status: handle == 0.
   function hpclock_try_acquire(path, handle) result(status)
      character(len=*), intent(in) :: path
      integer(hpclock_handle_kind), intent(out) :: handle
      integer(c_int32_t) :: status
      status = hpclock_try_acquire_c(trim(path) // c_null_char, handle)
   end function hpclock_try_acquire

   subroutine hpclock_options_init(opts)
      type(hpclock_options), intent(out) :: opts
      call hpclock_options_init_c(opts)
   end subroutine hpclock_options_init

   ! For use in expressions: hpclock_acquire(p, hpclock_options_default(), h)
   function hpclock_options_default() result(opts)
      type(hpclock_options) :: opts
      call hpclock_options_init_c(opts)
   end function hpclock_options_default

   ! label, if present, replaces opts%label for this call only: the C side
   ! copies it into the record, so a temporary NUL-terminated copy suffices.
   ! Its trailing blanks are dropped, like the path's. Without it, opts%label
   ! is passed through as is (c_null_ptr by default).
   function hpclock_acquire(path, opts, handle, label) result(status)
      character(len=*), intent(in) :: path
      type(hpclock_options), intent(in) :: opts
      integer(hpclock_handle_kind), intent(out) :: handle
      character(len=*), intent(in), optional :: label
      integer(c_int32_t) :: status
      type(hpclock_options), target :: o
      ! An array, not a character(len=n) scalar: only len=1 characters are
      ! interoperable, so only an array may be given to c_loc under -std=f2008.
      character(kind=c_char), allocatable, target :: clabel(:)
      integer :: i, n
      o = opts
      if (present(label)) then
         n = len_trim(label)
         ! allocate, not clabel = ...: gfortran 12 gives a false
         ! -Wmaybe-uninitialized on reallocation upon assignment.
         allocate (clabel(n + 1))
         do i = 1, n
            clabel(i) = label(i:i)
         end do
         clabel(n + 1) = c_null_char
         o%label = c_loc(clabel)
      end if
      status = hpclock_acquire_c(trim(path) // c_null_char, c_loc(o), handle)
   end function hpclock_acquire

   function hpclock_release(h) result(status)
      integer(hpclock_handle_kind), intent(in) :: h
      integer(c_int32_t) :: status
      status = hpclock_release_c(h)
   end function hpclock_release

   function hpclock_complete(h) result(status)
      integer(hpclock_handle_kind), intent(in) :: h
      integer(c_int32_t) :: status
      status = hpclock_complete_c(h)
   end function hpclock_complete

   ! HPCLOCK_OK while the lock is still yours, HPCLOCK_E_LOST once it is not:
   ! ask before writing what the lock protects.
   function hpclock_check(h) result(status)
      integer(hpclock_handle_kind), intent(in) :: h
      integer(c_int32_t) :: status
      status = hpclock_check_c(h)
   end function hpclock_check

   ! holder is written only on HPCLOCK_OK.
   function hpclock_holder_info(path, holder) result(status)
      character(len=*), intent(in) :: path
      type(hpclock_holder), intent(out) :: holder
      integer(c_int32_t) :: status
      status = hpclock_holder_info_c(trim(path) // c_null_char, holder)
   end function hpclock_holder_info

   ! Either record may be left out (C: NULL). Written only on HPCLOCK_OK.
   function hpclock_handle_info(h, mine, previous) result(status)
      integer(hpclock_handle_kind), intent(in) :: h
      type(hpclock_holder), intent(out), optional, target :: mine, previous
      integer(c_int32_t) :: status
      type(c_ptr) :: pmine, pprevious
      pmine = c_null_ptr
      pprevious = c_null_ptr
      if (present(mine)) pmine = c_loc(mine)
      if (present(previous)) pprevious = c_loc(previous)
      status = hpclock_handle_info_c(h, pmine, pprevious)
   end function hpclock_handle_info

   ! info is written only on HPCLOCK_OK.
   function hpclock_fs_check(path, info) result(status)
      character(len=*), intent(in) :: path
      type(hpclock_fs_info), intent(out) :: info
      integer(c_int32_t) :: status
      status = hpclock_fs_check_c(trim(path) // c_null_char, info)
   end function hpclock_fs_check

   function hpclock_mpi_rank() result(rank)
      integer(c_int32_t) :: rank
      rank = hpclock_mpi_rank_c()
   end function hpclock_mpi_rank

   ! A copy: the C buffer is overwritten by this thread's next hpclock call.
   function hpclock_last_error() result(message)
      character(len=:), allocatable :: message
      message = f_string(hpclock_last_error_c())
   end function hpclock_last_error

   function hpclock_last_errno() result(errnum)
      integer(c_int32_t) :: errnum
      errnum = hpclock_last_errno_c()
   end function hpclock_last_errno

   function hpclock_status_name_i32(status) result(name)
      integer(c_int32_t), intent(in) :: status
      character(len=:), allocatable :: name
      name = f_string(hpclock_status_name_c(status))
   end function hpclock_status_name_i32

   ! A number out of int32_t's range is no status (nor is huge(0_c_int32_t)).
   function hpclock_status_name_i64(status) result(name)
      integer(c_int64_t), intent(in) :: status
      character(len=:), allocatable :: name
      if (abs(status) > int(huge(0_c_int32_t), c_int64_t)) then
         name = f_string(hpclock_status_name_c(huge(0_c_int32_t)))
      else
         name = f_string(hpclock_status_name_c(int(status, c_int32_t)))
      end if
   end function hpclock_status_name_i64

   function hpclock_version() result(version)
      character(len=:), allocatable :: version
      version = f_string(hpclock_version_c())
   end function hpclock_version

   ! The text of a NUL-terminated field such as holder%host, up to the first
   ! NUL (all of it if there is none).
   function hpclock_string(chars) result(s)
      character(kind=c_char), intent(in) :: chars(:)
      character(len=:), allocatable :: s
      integer :: n, i
      n = size(chars)
      do i = 1, size(chars)
         if (chars(i) == c_null_char) then
            n = i - 1
            exit
         end if
      end do
      allocate (character(len=n) :: s)
      do i = 1, n
         s(i:i) = chars(i)
      end do
   end function hpclock_string

   function f_string(p) result(s)
      type(c_ptr), intent(in) :: p
      character(len=:), allocatable :: s
      character(kind=c_char), pointer :: chars(:)
      if (.not. c_associated(p)) then
         s = ''
         return
      end if
      call c_f_pointer(p, chars, [int(c_strlen(p))])
      s = hpclock_string(chars)
   end function f_string

end module hpclock
