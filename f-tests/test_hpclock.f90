! test_hpclock DIR: the Fortran binding against the real library, in DIR.
! Any wrong value stops with status 1 and names the check.
program test_hpclock
   use, intrinsic :: iso_c_binding, only: c_int, c_int32_t, c_int64_t, c_char, &
      c_null_char, c_ptr, c_associated, c_sizeof, c_loc, c_intptr_t
   use, intrinsic :: iso_fortran_env, only: error_unit
   use hpclock
   implicit none

   interface
      function getpid() bind(C, name="getpid")
         import :: c_int
         integer(c_int) :: getpid
      end function getpid
      ! uid_t is unsigned int on Linux.
      function getuid() bind(C, name="getuid")
         import :: c_int
         integer(c_int) :: getuid
      end function getuid
      ! 0 if the file exists (mode F_OK = 0): unlike INQUIRE, it does not
      ! drop the trailing blanks of the name.
      function c_access(path, mode) bind(C, name="access")
         import :: c_int, c_char
         character(kind=c_char), dimension(*), intent(in) :: path
         integer(c_int), value :: mode
         integer(c_int) :: c_access
      end function c_access
      ! f-tests/layout.c: sizes and offsets as the C compiler lays out hpclock.h.
      function ftest_c_layout(out) bind(C, name="ftest_c_layout")
         import :: c_int32_t, c_int64_t
         integer(c_int64_t), intent(out) :: out(17)
         integer(c_int32_t) :: ftest_c_layout
      end function ftest_c_layout
   end interface

   character(len=*), parameter :: label_text = "fortran re-run, gen 2"
   character(len=:), allocatable :: dir, lock, missing, msg, padded, padded_label
   integer(hpclock_handle_kind) :: h, h2
   integer(c_int32_t) :: st
   integer :: n_passed, arglen
   integer(c_int64_t) :: c_layout(18)
   type(hpclock_options), target :: opts
   type(hpclock_holder), target :: holder, mine, previous
   type(hpclock_fs_info), target :: info
   character(kind=c_char) :: raw(6)

   n_passed = 0
   if (command_argument_count() /= 1) then
      write (error_unit, '(a)') "usage: test_hpclock DIR"
      stop 2
   end if
   call get_command_argument(1, length=arglen)
   allocate (character(len=arglen) :: dir)
   call get_command_argument(1, dir)
   lock = dir//"/fortran.lock"
   missing = dir//"/no-such-dir/fortran.lock"

   ! The sizes and offsets the C compiler gives hpclock.h's structs: a field
   ! missing from the module (one the C API gained), or of a wrong kind or
   ! order, shows up here before it corrupts anything.
   call check_i("layout", "fields measured by layout.c", ftest_c_layout(c_layout), 18)
   call check_i8("layout", "c_sizeof(hpclock_options) vs C sizeof", int(c_sizeof(opts), c_int64_t), c_layout(1))
   call check_i8("layout", "offset of opts%flags", offset(c_loc(opts), c_loc(opts%flags)), c_layout(2))
   call check_i8("layout", "offset of opts%mode", offset(c_loc(opts), c_loc(opts%mode)), c_layout(3))
   call check_i8("layout", "offset of opts%timeout_ms", offset(c_loc(opts), c_loc(opts%timeout_ms)), c_layout(4))
   call check_i8("layout", "offset of opts%label", offset(c_loc(opts), c_loc(opts%label)), c_layout(5))
   call check_i8("layout", "c_sizeof(hpclock_holder) vs C sizeof", int(c_sizeof(holder), c_int64_t), c_layout(6))
   call check_i8("layout", "offset of holder%pid", offset(c_loc(holder), c_loc(holder%pid)), c_layout(7))
   call check_i8("layout", "offset of holder%uid", offset(c_loc(holder), c_loc(holder%uid)), c_layout(8))
   call check_i8("layout", "offset of holder%generation", offset(c_loc(holder), c_loc(holder%generation)), c_layout(9))
   call check_i8("layout", "offset of holder%released_unix_ms", &
                 offset(c_loc(holder), c_loc(holder%released_unix_ms)), c_layout(10))
   call check_i8("layout", "offset of holder%host", offset(c_loc(holder), c_loc(holder%host)), c_layout(11))
   call check_i8("layout", "offset of holder%job_id", offset(c_loc(holder), c_loc(holder%job_id)), c_layout(12))
   call check_i8("layout", "offset of holder%label", offset(c_loc(holder), c_loc(holder%label)), c_layout(13))
   call check_i8("layout", "c_sizeof(hpclock_fs_info) vs C sizeof", int(c_sizeof(info), c_int64_t), c_layout(14))
   call check_i8("layout", "offset of info%magic", offset(c_loc(info), c_loc(info%magic)), c_layout(15))
   call check_i8("layout", "offset of info%fs_type", offset(c_loc(info), c_loc(info%fs_type)), c_layout(16))
   call check_i8("layout", "offset of info%detail", offset(c_loc(info), c_loc(info%detail)), c_layout(17))
   call check_i8("layout", "offset of opts%lease_ms", offset(c_loc(opts), c_loc(opts%lease_ms)), c_layout(18))
   call pass("layout")

   msg = hpclock_version()
   call check("version", "hpclock_version() non-empty", len(msg) > 0)
   call check("version", "hpclock_version() has two dots: "//msg, count_char(msg, ".") == 2)
   call pass("version")

   call check_s("status_name", "hpclock_status_name(HPCLOCK_BUSY)", &
                hpclock_status_name(HPCLOCK_BUSY), "HPCLOCK_BUSY")
   call check_s("status_name", "hpclock_status_name(HPCLOCK_E_OS)", &
                hpclock_status_name(HPCLOCK_E_OS), "HPCLOCK_E_OS")
   call check_s("status_name", "hpclock_status_name(42)", &
                hpclock_status_name(42_c_int32_t), "HPCLOCK_UNKNOWN_STATUS")
   call pass("status_name")

   raw = [character(kind=c_char) :: "a", "b", c_null_char, "c", "d", "e"]
   call check_s("string", "hpclock_string stops at NUL", hpclock_string(raw), "ab")
   call check_s("string", "hpclock_string without NUL", hpclock_string(raw(4:6)), "cde")
   call check_s("string", "hpclock_string of leading NUL", hpclock_string(raw(3:)), "")
   call pass("string")

   call check_i("mpi_rank", "hpclock_mpi_rank() without MPI variables", hpclock_mpi_rank(), -1)
   call pass("mpi_rank")

   call hpclock_options_init(opts)
   call check_i("options", "default flags", opts%flags, 0)
   call check_i("options", "default mode (0644)", opts%mode, int(o'644'))
   call check_i8("options", "default timeout_ms", opts%timeout_ms, 0_c_int64_t)
   call check("options", "default label is NULL", .not. c_associated(opts%label))
   opts = hpclock_options_default()
   call check_i("options", "hpclock_options_default() mode", opts%mode, int(o'644'))
   call pass("options")

   ! A variable never given hpclock_options_init starts with its values.
   call check_declared_options()
   call pass("options_declared")

   st = hpclock_fs_check(dir, info)
   call check_status("fs_check", "hpclock_fs_check(dir)", st, HPCLOCK_OK)
   call check("fs_check", "detail non-empty", len(hpclock_string(info%detail)) > 0)
   call check("fs_check", "fs_type non-empty", len(hpclock_string(info%fs_type)) > 0)
   call check("fs_check", "scope is a HPCLOCK_SCOPE_*", &
              info%scope >= HPCLOCK_SCOPE_UNKNOWN .and. info%scope <= HPCLOCK_SCOPE_NONE)
   call check("fs_check", "primitive is a HPCLOCK_PRIMITIVE_*", &
              info%primitive == HPCLOCK_PRIMITIVE_FLOCK .or. info%primitive == HPCLOCK_PRIMITIVE_OFD)
   call check("fs_check", "magic non-zero", info%magic /= 0)
   call pass("fs_check")

   st = hpclock_holder_info(lock, holder)
   call check_status("holder_info_absent", "hpclock_holder_info on a file never created", st, HPCLOCK_OK)
   call check_i("holder_info_absent", "state", holder%state, HPCLOCK_STATE_FREE)
   call check_i8("holder_info_absent", "generation", holder%generation, 0_c_int64_t)
   call pass("holder_info_absent")

   st = hpclock_try_acquire(lock, h)
   call check_status("try_acquire", "hpclock_try_acquire on a new lock file", st, HPCLOCK_OK)
   call check("try_acquire", "handle /= 0", h /= 0)
   call pass("try_acquire")

   ! flock locks conflict between open file descriptions, even in one process.
   h2 = -7
   st = hpclock_try_acquire(lock, h2)
   call check_status("busy", "second hpclock_try_acquire in this process", st, HPCLOCK_BUSY)
   call check_i8("busy", "handle on BUSY", h2, 0_c_int64_t)
   call pass("busy")

   st = hpclock_holder_info(lock, holder)
   call check_status("holder_info", "hpclock_holder_info while held", st, HPCLOCK_OK)
   call check_holder("holder_info", holder, HPCLOCK_STATE_HELD, 1_c_int64_t, "")
   call pass("holder_info")

   st = hpclock_handle_info(h, mine, previous)
   call check_status("handle_info", "hpclock_handle_info(h, mine, previous)", st, HPCLOCK_OK)
   call check_holder("handle_info mine", mine, HPCLOCK_STATE_HELD, 1_c_int64_t, "")
   call check_i("handle_info", "previous%state on a new file", previous%state, HPCLOCK_STATE_FREE)
   call check_i8("handle_info", "previous%generation on a new file", previous%generation, 0_c_int64_t)
   st = hpclock_handle_info(h, previous=previous)
   call check_status("handle_info", "hpclock_handle_info without mine", st, HPCLOCK_OK)
   st = hpclock_handle_info(h, mine)
   call check_status("handle_info", "hpclock_handle_info without previous", st, HPCLOCK_OK)
   call check_i8("handle_info", "mine%generation again", mine%generation, 1_c_int64_t)
   call pass("handle_info")

   st = hpclock_complete(h)
   call check_status("complete", "hpclock_complete(h)", st, HPCLOCK_OK)
   st = hpclock_holder_info(lock, holder)
   call check_status("complete", "hpclock_holder_info after complete", st, HPCLOCK_OK)
   call check_i("complete", "state after complete", holder%state, HPCLOCK_STATE_DONE)
   call check("complete", "released_unix_ms set", holder%released_unix_ms > 0)
   h2 = -7
   st = hpclock_try_acquire(lock, h2)
   call check_status("complete", "hpclock_try_acquire after complete", st, HPCLOCK_DONE)
   call check_i8("complete", "handle on DONE", h2, 0_c_int64_t)
   call pass("complete")

   opts = hpclock_options_default()
   opts%flags = ior(HPCLOCK_IGNORE_DONE, HPCLOCK_SYNC)
   st = hpclock_acquire(lock, opts, h, label=label_text)
   call check_status("ignore_done", "hpclock_acquire with HPCLOCK_IGNORE_DONE and a label", st, HPCLOCK_OK)
   call check("ignore_done", "handle /= 0", h /= 0)
   call check("ignore_done", "opts%label untouched by the label argument", .not. c_associated(opts%label))
   st = hpclock_handle_info(h, mine, previous)
   call check_status("ignore_done", "hpclock_handle_info", st, HPCLOCK_OK)
   call check_i("ignore_done", "previous%state", previous%state, HPCLOCK_STATE_DONE)
   call check_i8("ignore_done", "previous%generation", previous%generation, 1_c_int64_t)
   call check_holder("ignore_done mine", mine, HPCLOCK_STATE_HELD, 2_c_int64_t, label_text)
   st = hpclock_holder_info(lock, holder)
   call check_status("ignore_done", "hpclock_holder_info", st, HPCLOCK_OK)
   call check_holder("ignore_done holder", holder, HPCLOCK_STATE_HELD, 2_c_int64_t, label_text)
   call pass("ignore_done")

   st = hpclock_release(h)
   call check_status("release", "hpclock_release(h)", st, HPCLOCK_OK)
   st = hpclock_holder_info(lock, holder)
   call check_status("release", "hpclock_holder_info after release", st, HPCLOCK_OK)
   call check_i("release", "state after release", holder%state, HPCLOCK_STATE_FREE)
   call check_s("release", "label kept after release", hpclock_string(holder%label), label_text)
   call pass("release")

   st = hpclock_release(h)
   call check_status("release_twice", "hpclock_release(h) again", st, HPCLOCK_E_INVALID)
   msg = hpclock_last_error()
   call check("release_twice", "hpclock_last_error() non-empty", len(msg) > 0)
   st = hpclock_release(0_hpclock_handle_kind)
   call check_status("release_twice", "hpclock_release(0)", st, HPCLOCK_E_INVALID)
   call pass("release_twice")

   h2 = -7
   st = hpclock_try_acquire(missing, h2)
   call check_status("missing_dir", "hpclock_try_acquire in a missing directory", st, HPCLOCK_E_OS)
   call check_i8("missing_dir", "handle on E_OS", h2, 0_c_int64_t)
   call check_i("missing_dir", "hpclock_last_errno() (ENOENT)", hpclock_last_errno(), 2)
   msg = hpclock_last_error()
   call check("missing_dir", "hpclock_last_error() names the path: "//msg, index(msg, missing) > 0)
   st = hpclock_holder_info(missing, holder)
   call check_status("missing_dir", "hpclock_holder_info in a missing directory", st, HPCLOCK_E_OS)
   call check_i("missing_dir", "hpclock_last_errno() after holder_info", hpclock_last_errno(), 2)
   call pass("missing_dir")

   st = hpclock_try_acquire("", h2)
   call check_status("empty_path", "hpclock_try_acquire('')", st, HPCLOCK_E_INVALID)
   call check_i8("empty_path", "handle on E_INVALID", h2, 0_c_int64_t)
   call pass("empty_path")

   ! A blank-padded path, as a character(len=64) variable holds it, names
   ! the same file as its trim(): the two exclude each other, and no file
   ! whose name ends in blanks appears. The label is trimmed too.
   padded = dir//"/padded.lock"//repeat(" ", 26)
   padded_label = "step 3"//repeat(" ", 10)
   st = hpclock_acquire(padded, hpclock_options_default(), h, label=padded_label)
   call check_status("untrimmed", "hpclock_acquire(padded path)", st, HPCLOCK_OK)
   h2 = -7
   st = hpclock_try_acquire(trim(padded), h2)
   call check_status("untrimmed", "hpclock_try_acquire(trim(padded path)) while held", st, HPCLOCK_BUSY)
   call check_i8("untrimmed", "handle on BUSY", h2, 0_c_int64_t)
   call check("untrimmed", "no file named with the trailing blanks", &
              c_access(padded//c_null_char, 0_c_int) /= 0)
   call check("untrimmed", "the trimmed file exists", c_access(trim(padded)//c_null_char, 0_c_int) == 0)
   st = hpclock_holder_info(padded, holder)
   call check_status("untrimmed", "hpclock_holder_info(padded path)", st, HPCLOCK_OK)
   call check_holder("untrimmed", holder, HPCLOCK_STATE_HELD, 1_c_int64_t, "step 3")
   st = hpclock_fs_check(padded, info)
   call check_status("untrimmed", "hpclock_fs_check(padded path)", st, HPCLOCK_OK)
   st = hpclock_release(h)
   call check_status("untrimmed", "hpclock_release", st, HPCLOCK_OK)
   st = hpclock_try_acquire(trim(padded), h2)
   call check_status("untrimmed", "hpclock_try_acquire(trim(padded path)) after release", st, HPCLOCK_OK)
   st = hpclock_release(h2)
   call pass("untrimmed")

   write (*, '(i0, a)') n_passed, " passed, 0 failed"
   ! Main-program variables live to the end: without this, leak checkers
   ! (-fsanitize=address) report them.
   deallocate (dir, lock, missing, msg, padded, padded_label)

contains

   ! Byte offset of a field from the start of its variable.
   function offset(base, field) result(bytes)
      type(c_ptr), intent(in) :: base, field
      integer(c_int64_t) :: bytes
      bytes = int(transfer(field, 0_c_intptr_t) - transfer(base, 0_c_intptr_t), c_int64_t)
   end function offset

   ! A local variable, default-initialised on every call: no garbage, no
   ! zeros, but hpclock_options_init's values.
   subroutine check_declared_options()
      type(hpclock_options) :: declared, initialised
      call hpclock_options_init(initialised)
      call check_i("options_declared", "flags", declared%flags, int(initialised%flags))
      call check_i("options_declared", "mode (0644)", declared%mode, int(initialised%mode))
      call check_i("options_declared", "mode is 0644", declared%mode, int(o'644'))
      call check_i8("options_declared", "timeout_ms", declared%timeout_ms, initialised%timeout_ms)
      call check("options_declared", "label is NULL", .not. c_associated(declared%label))
   end subroutine check_declared_options

   subroutine pass(group)
      character(len=*), intent(in) :: group
      n_passed = n_passed + 1
      write (*, '(2a)') "PASS ", group
   end subroutine pass

   subroutine fail(group, what)
      character(len=*), intent(in) :: group, what
      write (error_unit, '(4a)') "FAIL ", group, ": ", what
      write (error_unit, '(2a)') "  hpclock_last_error(): ", hpclock_last_error()
      stop 1
   end subroutine fail

   subroutine check(group, what, ok)
      character(len=*), intent(in) :: group, what
      logical, intent(in) :: ok
      if (.not. ok) call fail(group, what)
   end subroutine check

   subroutine check_i(group, what, got, expected)
      character(len=*), intent(in) :: group, what
      integer(c_int32_t), intent(in) :: got
      integer, intent(in) :: expected
      character(len=64) :: buf
      if (got /= expected) then
         write (buf, '(a, i0, a, i0)') "got ", got, ", expected ", expected
         call fail(group, what//": "//trim(buf))
      end if
   end subroutine check_i

   subroutine check_i8(group, what, got, expected)
      character(len=*), intent(in) :: group, what
      integer(c_int64_t), intent(in) :: got, expected
      character(len=64) :: buf
      if (got /= expected) then
         write (buf, '(a, i0, a, i0)') "got ", got, ", expected ", expected
         call fail(group, what//": "//trim(buf))
      end if
   end subroutine check_i8

   subroutine check_status(group, what, got, expected)
      character(len=*), intent(in) :: group, what
      integer(c_int32_t), intent(in) :: got, expected
      if (got /= expected) then
         call fail(group, what//": got "//hpclock_status_name(got)// &
                   ", expected "//hpclock_status_name(expected))
      end if
   end subroutine check_status

   subroutine check_s(group, what, got, expected)
      character(len=*), intent(in) :: group, what, got, expected
      ! len() too: Fortran == pads the shorter operand with blanks.
      if (len(got) /= len(expected) .or. got /= expected) then
         call fail(group, what//': got "'//got//'", expected "'//expected//'"')
      end if
   end subroutine check_s

   ! A record this process wrote while holding the lock.
   subroutine check_holder(group, r, state, generation, label)
      character(len=*), intent(in) :: group
      type(hpclock_holder), intent(in) :: r
      integer(c_int32_t), intent(in) :: state
      integer(c_int64_t), intent(in) :: generation
      character(len=*), intent(in) :: label
      call check_i(group, "state", r%state, state)
      call check_i(group, "alive", r%alive, 1)
      call check_i8(group, "pid == getpid()", r%pid, int(getpid(), c_int64_t))
      call check_i(group, "uid == getuid()", r%uid, getuid())
      call check_i(group, "mpi_rank", r%mpi_rank, -1)
      call check_i8(group, "generation", r%generation, generation)
      call check(group, "acquired_unix_ms > 0", r%acquired_unix_ms > 0)
      call check_i8(group, "released_unix_ms while held", r%released_unix_ms, 0_c_int64_t)
      call check(group, "host non-empty", len(hpclock_string(r%host)) > 0)
      call check_s(group, "label", hpclock_string(r%label), label)
   end subroutine check_holder

   integer function count_char(s, c)
      character(len=*), intent(in) :: s
      character, intent(in) :: c
      integer :: i
      count_char = 0
      do i = 1, len(s)
         if (s(i:i) == c) count_char = count_char + 1
      end do
   end function count_char

end program test_hpclock
