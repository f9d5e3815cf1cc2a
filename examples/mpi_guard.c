/* The MPI pattern: only rank 0 touches the lock file (HPCLOCK_RANK0_ONLY: the
 * other ranks make no filesystem call, so 4,000 ranks cost the metadata server
 * one open, not 4,000), rank 0 broadcasts its answer, and all ranks go on or
 * stop together. Rank 0 completes the lock at the end, so a requeued job finds
 * the work done.
 *
 * Usage: mpirun -np N mpi_guard LOCKFILE [WORK_MS]
 * Exit: 0 worked or already done, 75 another job holds it (EX_TEMPFAIL), 1 error. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "hpclock.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2) {
        if (rank == 0) fprintf(stderr, "usage: mpi_guard LOCKFILE [WORK_MS]\n");
        MPI_Finalize();
        return 1;
    }
    const char *lock = argv[1];
    long work_ms = argc > 2 ? atol(argv[2]) : 100;

    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_RANK0_ONLY; /* ranks other than 0 get HPCLOCK_NOT_RANK0 at once */
    opts.label = "mpi_guard";
    hpclock_handle h = 0;
    int32_t mine = hpclock_acquire(lock, &opts, &h);
    printf("rank %d of %d (hpclock_mpi_rank %d): %s\n", rank, size, hpclock_mpi_rank(), hpclock_status_name(mine));
    fflush(stdout);

    int32_t decision = mine; /* rank 0's answer is the job's answer */
    MPI_Bcast(&decision, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
    if (decision != HPCLOCK_OK) {
        if (rank == 0) {
            hpclock_holder who;
            if (decision < 0) {
                fprintf(stderr, "rank 0: %s: %s\n", hpclock_status_name(decision), hpclock_last_error());
            } else if (hpclock_holder_info(lock, &who) == HPCLOCK_OK) {
                printf("rank 0: %s: %s pid %lld on %s (job %s, label %s); all %d ranks stop\n",
                       hpclock_status_name(decision), decision == HPCLOCK_DONE ? "completed by" : "held by",
                       (long long)who.pid, who.host,
                       who.job_id[0] ? who.job_id : "none", who.label, size);
            }
        }
        MPI_Finalize();
        return decision == HPCLOCK_BUSY ? 75 : decision == HPCLOCK_DONE ? 0 : 1;
    }

    if (rank == 0) printf("rank 0: holding %s; all %d ranks proceed\n", lock, size);
    struct timespec pause = { work_ms / 1000, (work_ms % 1000) * 1000000L }; /* the simulation */
    nanosleep(&pause, NULL);
    MPI_Barrier(MPI_COMM_WORLD);
    int status = 0;
    if (rank == 0 && hpclock_complete(h) != HPCLOCK_OK) {
        fprintf(stderr, "rank 0: %s\n", hpclock_last_error());
        status = 1;
    }
    MPI_Finalize();
    return status;
}
