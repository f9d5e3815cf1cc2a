! test_kinds DIR: a program written as an application would be, with default
! integers and reals, built with and without -fdefault-integer-8
! -fdefault-real-8 (and the module with or without them: f-tests/run.sh
! builds every combination). It must compile and round-trip: acquire with
! options and a label, holder and handle info, complete, DONE after.
program test_kinds
   use hpclock
   use, intrinsic :: iso_c_binding, only: c_int64_t
   implicit none
   integer :: rc, arglen, generation, rank, errnum
   integer(c_int64_t) :: rc64
   integer(hpclock_handle_kind) :: h, h2
   real :: wait_s
   character(len=:), allocatable :: dir
   character(len=512) :: lock       ! blank-padded, passed without trim
   type(hpclock_options) :: opts
   type(hpclock_holder) :: who, mine

   call get_command_argument(1, length=arglen)
   allocate (character(len=arglen) :: dir)
   call get_command_argument(1, dir)
   lock = dir//'/kinds.lock'
   print '(a,i0,a,i0)', 'default integer kind ', kind(rc), ', default real kind ', kind(wait_s)

   ! Flags and fields assigned from the constants, a timeout from a real.
   opts%flags = HPCLOCK_IGNORE_DONE
   opts%flags = ior(HPCLOCK_SYNC, HPCLOCK_IGNORE_DONE)
   opts%flags = 0
   wait_s = 0.25
   opts%timeout_ms = nint(wait_s * 1000)
   rc = hpclock_acquire(lock, opts, h, label='kinds')
   select case (rc)
   case (HPCLOCK_OK)
      print '(2a)', 'acquired: ', hpclock_status_name(rc)
   case (HPCLOCK_BUSY, HPCLOCK_DONE)
      call fail('acquire: '//hpclock_status_name(rc))
   case default
      call fail('acquire: '//hpclock_status_name(rc)//': '//hpclock_last_error())
   end select
   if (hpclock_status_name(rc) /= 'HPCLOCK_OK') call fail('hpclock_status_name(rc)')
   rc64 = HPCLOCK_BUSY
   if (hpclock_status_name(rc64) /= 'HPCLOCK_BUSY') call fail('hpclock_status_name(64-bit)')
   if (hpclock_status_name(-1) /= 'HPCLOCK_E_INVALID') call fail('hpclock_status_name(-1)')
   rc64 = 2_c_int64_t**40
   if (hpclock_status_name(rc64) /= 'HPCLOCK_UNKNOWN_STATUS') call fail('hpclock_status_name(2**40)')

   rc = hpclock_try_acquire(lock, h2)
   if (rc /= HPCLOCK_BUSY) call fail('second acquire: '//hpclock_status_name(rc))

   rc = hpclock_holder_info(lock, who)
   if (rc /= HPCLOCK_OK) call fail('holder_info: '//hpclock_status_name(rc))
   if (who%state /= HPCLOCK_STATE_HELD) call fail('holder_info: not HELD')
   if (hpclock_string(who%label) /= 'kinds') call fail('holder_info: label '//hpclock_string(who%label))
   rc = hpclock_handle_info(h, mine)
   if (rc /= HPCLOCK_OK) call fail('handle_info: '//hpclock_status_name(rc))
   generation = int(mine%generation)
   if (generation /= 1) call fail('generation is not 1')
   if (mine%pid /= who%pid) call fail('handle_info and holder_info name different pids')

   rc = hpclock_complete(h)
   if (rc /= HPCLOCK_OK) call fail('complete: '//hpclock_status_name(rc))
   rc = hpclock_holder_info(lock, who)
   if (who%state /= HPCLOCK_STATE_DONE) call fail('holder_info after complete: not DONE')
   rc = hpclock_try_acquire(lock, h)
   if (rc /= HPCLOCK_DONE) call fail('acquire after complete: '//hpclock_status_name(rc))

   rank = hpclock_mpi_rank()
   errnum = hpclock_last_errno()
   if (rank /= -1) call fail('hpclock_mpi_rank() without MPI variables')
   print '(3a,i0,a,i0)', 'completed; acquiring again: ', hpclock_status_name(rc), ', generation ', generation, &
      ', last errno ', errnum

contains

   subroutine fail(what)
      character(len=*), intent(in) :: what
      print '(2a)', 'FAIL ', what
      error stop 1
   end subroutine fail

end program test_kinds
