! The MPI pattern in Fortran (examples/mpi_guard.c is the C twin): only rank 0
! touches the lock file (HPCLOCK_RANK0_ONLY), broadcasts its answer, and all
! ranks go on or stop together; rank 0 completes the lock at the end, so a
! requeued job finds the work done.
!
! Usage: mpirun -np N mpi_guard_f LOCKFILE
! Exit: 0 worked or already done, 75 another job holds it, 1 error.
program mpi_guard_f
   use mpi
   use hpclock
   use, intrinsic :: iso_c_binding, only: c_int32_t
   implicit none
   integer :: ierr, rank, nranks, decision
   integer(hpclock_handle_kind) :: h
   integer(c_int32_t) :: mine
   type(hpclock_options) :: opts
   type(hpclock_holder) :: who
   character(len=4096) :: lockfile   ! blank-padded: the wrappers trim it

   call MPI_Init(ierr)
   call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
   call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
   call get_command_argument(1, lockfile)

   call hpclock_options_init(opts)
   opts%flags = HPCLOCK_RANK0_ONLY   ! ranks other than 0 get HPCLOCK_NOT_RANK0 at once
   mine = hpclock_acquire(lockfile, opts, h, label='mpi_guard_f')
   write (*, '(a,i0,a,i0,a,a)') 'rank ', rank, ' of ', nranks, ': ', hpclock_status_name(mine)

   decision = mine                    ! rank 0's answer is the job's answer
   call MPI_Bcast(decision, 1, MPI_INTEGER, 0, MPI_COMM_WORLD, ierr)
   if (decision /= HPCLOCK_OK) then
      if (rank == 0 .and. decision > 0) then
         if (hpclock_holder_info(lockfile, who) == HPCLOCK_OK) then
            if (decision == HPCLOCK_DONE) then
               write (*, '(a,i0,a,a)') 'rank 0: HPCLOCK_DONE: completed by pid ', who%pid, ' on ', &
                  hpclock_string(who%host)
            else
               write (*, '(a,i0,a,a)') 'rank 0: HPCLOCK_BUSY: held by pid ', who%pid, ' on ', &
                  hpclock_string(who%host)
            end if
         end if
      else if (rank == 0) then
         write (*, '(a,a)') 'rank 0: ', hpclock_last_error()
      end if
      call MPI_Finalize(ierr)
      if (decision == HPCLOCK_BUSY) error stop 75
      if (decision /= HPCLOCK_DONE) error stop 1
      stop
   end if

   if (rank == 0) write (*, '(a,i0,a)') 'rank 0: holding the lock; all ', nranks, ' ranks proceed'
   ! ... the simulation ...
   call MPI_Barrier(MPI_COMM_WORLD, ierr)
   if (rank == 0) then
      if (hpclock_complete(h) /= HPCLOCK_OK) then
         write (*, '(a,a)') 'rank 0: ', hpclock_last_error()
         call MPI_Finalize(ierr)
         error stop 1
      end if
   end if
   call MPI_Finalize(ierr)
end program mpi_guard_f
