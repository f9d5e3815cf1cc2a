! The Fortran twin of use_hpclock.c, built against an installed hpclock
! (pkg-config, CMake's hpclock::hpclock_fortran, fully static): takes the
! lock, reads it back, completes it; then writes, closes, reopens and reads a
! file next to it. A fully static program's first CLOSE is where libgfortran
! crashed when its weak pthread references stayed unresolved.
!
! Usage: use_hpclock_f LOCKFILE
program use_hpclock_f
   use hpclock
   implicit none
   integer(hpclock_handle_kind) :: h
   type(hpclock_holder) :: who
   character(len=4096) :: lockfile
   character(len=64) :: line
   integer :: rc, u

   call get_command_argument(1, lockfile)
   rc = hpclock_try_acquire(lockfile, h)
   if (rc /= HPCLOCK_OK) then
      print '(3a)', hpclock_status_name(rc), ': ', hpclock_last_error()
      error stop 1
   end if
   rc = hpclock_holder_info(lockfile, who)
   if (rc /= HPCLOCK_OK .or. who%state /= HPCLOCK_STATE_HELD) error stop 'holder_info'
   rc = hpclock_complete(h)
   if (rc /= HPCLOCK_OK) error stop 'complete'

   open (newunit=u, file=trim(lockfile)//'.out', status='replace', action='write')
   write (u, '(a)') 'written after hpclock_complete'
   close (u)
   open (newunit=u, file=trim(lockfile)//'.out', status='old', action='read')
   read (u, '(a)') line
   close (u, status='delete')
   if (line /= 'written after hpclock_complete') error stop 'read back'
   print '(5a)', 'hpclock ', hpclock_version(), ': completed ', trim(lockfile), '; OPEN/WRITE/CLOSE work'
end program use_hpclock_f
