! zero_options LOCKFILE declared|zero: takes the lock with options the
! program never gave hpclock_options_init — as declared (the type's default
! initialisers), or with mode set to 0 (the library's default, 0644) — then
! releases it. f-tests/run.sh runs it twice as a non-root user: the file the
! first run creates must have mode 0644 less the umask, and the second run
! must be able to lock it.
program zero_options
   use hpclock
   implicit none
   type(hpclock_options) :: opts
   integer(hpclock_handle_kind) :: h
   character(len=4096) :: lockfile
   character(len=16) :: how
   integer :: rc

   call get_command_argument(1, lockfile)
   call get_command_argument(2, how)
   if (how == 'zero') then
      opts%flags = 0
      opts%mode = 0
      opts%timeout_ms = 0
   else if (how /= 'declared') then
      print '(a)', 'usage: zero_options LOCKFILE declared|zero'
      error stop 2
   end if
   rc = hpclock_acquire(lockfile, opts, h)
   if (rc /= HPCLOCK_OK) then
      print '(3a)', hpclock_status_name(rc), ': ', hpclock_last_error()
      error stop 1
   end if
   rc = hpclock_release(h)
   if (rc /= HPCLOCK_OK) error stop 1
end program zero_options
