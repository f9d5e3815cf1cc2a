/* A job that survives crashes and requeues: it takes the lock, reads what the
 * previous run left (hpclock_handle_info's `previous`) and says whether it
 * starts fresh, resumes after a crash, or has nothing to do because the work
 * is done. Progress is kept in a checkpoint file next to the lock.
 *
 * Usage: resume LOCKFILE CHECKPOINT [--crash-after STEP]
 * Exit: 0 done (now or earlier), 1 error, 75 another run is at work (EX_TEMPFAIL). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hpclock.h"

enum { STEPS = 5 };

static int read_checkpoint(const char *path) {
    FILE *f = fopen(path, "r");
    int step = 0;
    if (f) {
        if (fscanf(f, "%d", &step) != 1) step = 0;
        fclose(f);
    }
    return step;
}

/* Write-then-rename, so a crash never leaves half a checkpoint. */
static int write_checkpoint(const char *path, int step) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return 0;
    fprintf(f, "%d\n", step);
    if (fclose(f) != 0) return 0;
    return rename(tmp, path) == 0;
}

static const char *when(int64_t unix_ms) {
    static char text[32];
    time_t seconds = (time_t)(unix_ms / 1000);
    struct tm tm;
    localtime_r(&seconds, &tm);
    strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
    return text;
}

static const char *job_of(const hpclock_holder *h) {
    return h->job_id[0] ? h->job_id : "none";
}

int main(int argc, char **argv) {
    if (argc != 3 && !(argc == 5 && strcmp(argv[3], "--crash-after") == 0)) {
        fprintf(stderr, "usage: %s LOCKFILE CHECKPOINT [--crash-after STEP]\n", argv[0]);
        return 1;
    }
    const char *lock = argv[1], *checkpoint = argv[2];
    int crash_after = argc == 5 ? atoi(argv[4]) : 0;

    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.label = "resume example";
    hpclock_handle h;
    int32_t rc = hpclock_acquire(lock, &opts, &h);
    if (rc == HPCLOCK_DONE || rc == HPCLOCK_BUSY) {
        hpclock_holder who;
        if (hpclock_holder_info(lock, &who) != HPCLOCK_OK) memset(&who, 0, sizeof who);
        if (rc == HPCLOCK_DONE) {
            printf("[pid %d] nothing to do: the work was completed by pid %lld (job %s) at %s\n", (int)getpid(),
                   (long long)who.pid, job_of(&who), when(who.released_unix_ms));
            return 0;
        }
        printf("[pid %d] another run is at work: pid %lld on %s (job %s) since %s\n", (int)getpid(),
               (long long)who.pid, who.host, job_of(&who), when(who.acquired_unix_ms));
        return 75;
    }
    if (rc != HPCLOCK_OK) {
        fprintf(stderr, "resume: %s: %s\n", hpclock_status_name(rc), hpclock_last_error());
        return 1;
    }

    hpclock_holder mine, previous;
    hpclock_handle_info(h, &mine, &previous);
    int step = read_checkpoint(checkpoint);
    if (previous.state == HPCLOCK_STATE_STALE) {
        printf("[pid %d] the previous run, pid %lld on %s (job %s), died holding the lock; "
               "resuming after step %d\n", (int)getpid(), (long long)previous.pid, previous.host,
               job_of(&previous), step);
    } else if (previous.generation == 0) {
        printf("[pid %d] first run: starting fresh\n", (int)getpid());
        step = 0;
    } else {
        printf("[pid %d] the previous run, pid %lld, stopped cleanly; continuing after step %d\n",
               (int)getpid(), (long long)previous.pid, step);
    }
    printf("[pid %d] fencing token (generation) %llu\n", (int)getpid(), (unsigned long long)mine.generation);
    fflush(stdout);

    for (step = step + 1; step <= STEPS; step++) {
        printf("[pid %d] step %d of %d\n", (int)getpid(), step, STEPS);
        fflush(stdout);
        if (!write_checkpoint(checkpoint, step)) {
            perror(checkpoint);
            hpclock_release(h);
            return 1;
        }
        if (step == crash_after) {
            printf("[pid %d] crashing now (SIGKILL), holding the lock\n", (int)getpid());
            fflush(stdout);
            raise(SIGKILL);
        }
    }
    if (hpclock_complete(h) != HPCLOCK_OK) {
        fprintf(stderr, "resume: %s\n", hpclock_last_error());
        return 1;
    }
    printf("[pid %d] all %d steps done; the lock file now says done\n", (int)getpid(), STEPS);
    return 0;
}
