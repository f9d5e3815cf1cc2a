/* The core's behaviour, shown with real processes: fork, kill -9, exec,
 * threads, flock(1) and Python's fcntl.flock on the same files. */
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

/* ---- exactly one winner ---- */

struct race_counts {
    atomic_int ok, busy, other, answered;
};

enum { RACERS = 64, RACE_ROUNDS = 20 };

static enum outcome race_64_processes_one_winner_each_of_20_rounds(void) {
    const char *path = tpath("race.lock");
    struct race_counts *counts = shared_alloc(sizeof *counts);
    for (int round = 0; round < RACE_ROUNDS; round++) {
        memset(counts, 0, sizeof *counts);
        struct gate start, finish;
        gate_init(&start);
        gate_init(&finish);
        pid_t pids[RACERS];
        for (int i = 0; i < RACERS; i++) {
            pids[i] = fork_or_die();
            if (pids[i] == 0) {
                close(finish.fd[1]);
                gate_wait(&start);
                hpclock_handle h = 99;
                int32_t rc = hpclock_try_acquire(path, &h);
                if (rc == HPCLOCK_OK && h != 0) atomic_fetch_add(&counts->ok, 1);
                else if (rc == HPCLOCK_BUSY && h == 0) atomic_fetch_add(&counts->busy, 1);
                else atomic_fetch_add(&counts->other, 1);
                atomic_fetch_add(&counts->answered, 1);
                gate_wait(&finish); /* the winner holds on until everyone has tried */
                _exit(rc == HPCLOCK_OK && hpclock_release(h) != HPCLOCK_OK ? 1 : 0);
            }
        }
        gate_open(&start);
        double until = now_seconds() + 120;
        while (atomic_load(&counts->answered) < RACERS && now_seconds() < until) sleep_ms(1);
        gate_open(&finish);
        int child_failures = 0;
        for (int i = 0; i < RACERS; i++) child_failures += wait_status(pids[i]) != 0;
        if (counts->ok != 1 || counts->busy != RACERS - 1 || counts->other != 0 || child_failures) {
            fprintf(stderr, "    round %d: %d OK, %d BUSY, %d other, %d children failed\n", round,
                    counts->ok, counts->busy, counts->other, child_failures);
            return FAIL;
        }
    }
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.generation == RACE_ROUNDS); /* one acquisition per round, no more */
    CHECK(info.state == HPCLOCK_STATE_FREE);
    return PASS;
}

struct exclusion {
    atomic_int inside, overlaps, entries, acquire_failures;
    long counter; /* deliberately not atomic: the lock alone protects it */
};

enum { WORKERS = 16, ROUNDS_PER_WORKER = 300 };

static enum outcome exclusion_16_processes_300_timed_acquisitions_each(void) {
    const char *path = tpath("counter.lock");
    struct exclusion *shared = shared_alloc(sizeof *shared);
    struct gate start;
    gate_init(&start);
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork_or_die();
        if (pids[w] == 0) {
            gate_wait(&start);
            hpclock_options opts;
            hpclock_options_init(&opts);
            opts.timeout_ms = 120000;
            for (int i = 0; i < ROUNDS_PER_WORKER; i++) {
                hpclock_handle h;
                if (hpclock_acquire(path, &opts, &h) != HPCLOCK_OK) {
                    atomic_fetch_add(&shared->acquire_failures, 1);
                    continue;
                }
                if (atomic_fetch_add(&shared->inside, 1) != 0) atomic_fetch_add(&shared->overlaps, 1);
                long seen = shared->counter;
                sched_yield(); /* widen the window a second holder would need */
                shared->counter = seen + 1;
                atomic_fetch_add(&shared->entries, 1);
                atomic_fetch_sub(&shared->inside, 1);
                if (hpclock_release(h) != HPCLOCK_OK) atomic_fetch_add(&shared->acquire_failures, 1);
            }
            _exit(0);
        }
    }
    gate_open(&start);
    for (int w = 0; w < WORKERS; w++) CHECK(wait_status(pids[w]) == 0);
    CHECK(shared->acquire_failures == 0);
    CHECK(shared->overlaps == 0);
    CHECK(shared->entries == WORKERS * ROUNDS_PER_WORKER);
    CHECK(shared->counter == WORKERS * ROUNDS_PER_WORKER);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.generation == WORKERS * ROUNDS_PER_WORKER);
    return PASS;
}

/* ---- crashes, forks and exec ---- */

static enum outcome holder_killed_with_sigkill_is_stale_and_taken_over(void) {
    const char *path = tpath("crash.lock");
    pid_t holder = spawn_holder(path, -1);
    CHECK(try_in_child(path) == HPCLOCK_BUSY);
    kill_and_reap(holder);

    hpclock_holder seen;
    CHECK_RC(hpclock_holder_info(path, &seen), HPCLOCK_OK);
    CHECK(seen.state == HPCLOCK_STATE_STALE);
    CHECK(seen.alive == 0);
    CHECK(seen.pid == holder);

    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    hpclock_holder mine, previous;
    CHECK_RC(hpclock_handle_info(h, &mine, &previous), HPCLOCK_OK);
    CHECK(previous.state == HPCLOCK_STATE_STALE);
    CHECK(previous.pid == holder);
    CHECK(previous.alive == 0);
    CHECK(strcmp(previous.label, "holder child") == 0);
    CHECK(mine.generation == previous.generation + 1);
    CHECK(mine.state == HPCLOCK_STATE_HELD);
    CHECK(mine.pid == getpid());
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static enum outcome forked_child_release_leaves_parent_holding(void) {
    const char *path = tpath("fork.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    pid_t child = fork_or_die();
    if (child == 0) {
        /* The child's copy of the handle: releasing it must only close its descriptor. */
        int32_t first = hpclock_release(h);
        int32_t second = hpclock_release(h);
        _exit(first == HPCLOCK_OK && second == HPCLOCK_E_INVALID ? 0 : 1);
    }
    CHECK(wait_status(child) == 0);
    CHECK(try_in_child(path) == HPCLOCK_BUSY);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_HELD); /* the child did not rewrite the record */
    CHECK(info.pid == getpid());
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(try_in_child(path) == HPCLOCK_OK);
    return PASS;
}

static enum outcome release_frees_lock_while_forked_child_still_has_descriptor(void) {
    const char *path = tpath("fork-open.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    pid_t child = fork_or_die();
    if (child == 0) {
        for (;;) pause(); /* keeps its inherited copy of the descriptor open */
    }
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    int32_t after_release = try_in_child(path);
    kill_and_reap(child);
    CHECK(after_release == HPCLOCK_OK);
    return PASS;
}

/* Someone replaces the lock file while a waiter has the old one open: when the
 * old holder lets go, the waiter must notice that the path now names another
 * inode (held by someone else) instead of "winning" a file nobody else uses. */
static enum outcome waiter_on_replaced_file_does_not_win_the_old_inode(void) {
    const char *path = tpath("replaced.lock");
    pid_t old_holder = spawn_holder(path, 600);
    struct race_counts *result = shared_alloc(sizeof *result);
    pid_t waiter = fork_or_die();
    if (waiter == 0) {
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.timeout_ms = 3000;
        hpclock_handle h;
        int32_t rc = hpclock_acquire(path, &opts, &h);
        atomic_store(&result->ok, rc == HPCLOCK_OK);
        atomic_store(&result->busy, rc == HPCLOCK_BUSY);
        _exit(0);
    }
    sleep_ms(200); /* the waiter has opened the old inode and is polling it */
    CHECK(unlink(path) == 0);
    hpclock_handle h;
    int32_t rc = hpclock_try_acquire(path, &h); /* a new file at the same path */
    CHECK(wait_status(old_holder) == 0);
    CHECK(wait_status(waiter) == 0);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(result->ok == 0);
    CHECK(result->busy == 1);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* Run as `test_core --exec-probe PATH` by exec_does_not_inherit_the_lock. */
static int exec_probe(const char *path) {
    char resolved[PATH_MAX];
    if (!realpath(path, resolved)) return 10;
    DIR *fds = opendir("/proc/self/fd");
    if (!fds) return 11;
    int inherited = 0;
    for (struct dirent *e; (e = readdir(fds)) != NULL;) {
        char link[PATH_MAX + 32], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            inherited += strcmp(target, resolved) == 0;
        }
    }
    closedir(fds);
    if (inherited) return 12;
    hpclock_handle h;
    int32_t rc = hpclock_try_acquire(path, &h);
    if (rc != HPCLOCK_OK) return 13;
    return hpclock_release(h) == HPCLOCK_OK ? 0 : 14;
}

static enum outcome exec_does_not_inherit_the_lock(void) {
    const char *path = tpath("exec.lock");
    pid_t child = fork_or_die();
    if (child == 0) {
        hpclock_handle h;
        if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) _exit(20);
        execl(self_exe, "test_core", "--exec-probe", path, (char *)NULL);
        _exit(21);
    }
    int status = wait_status(child);
    if (status != 0) fprintf(stderr, "    exec probe exited %d\n", status);
    CHECK(status == 0);
    return PASS;
}

/* ---- the MPI rank-0 guard, from the launcher's environment ---- */

/* Run as `test_core --rank0-probe PATH`: exit code 10 + the status of an
 * acquire with HPCLOCK_RANK0_ONLY (then released). */
static int rank0_probe(const char *path) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_RANK0_ONLY;
    hpclock_handle h = 5;
    int32_t rc = hpclock_acquire(path, &opts, &h);
    if (rc == HPCLOCK_OK) hpclock_release(h);
    else if (h != 0) return 99;
    return 10 + rc;
}

/* A fresh process (the rank is read once per process, as launchers set it
 * before main) with one variable of docs/record.md#where-the-values-come-from set. */
static int32_t rank0_probe_with(const char *variable, const char *value, const char *path) {
    pid_t child = fork_or_die();
    if (child == 0) {
        static const char *const all[] = { "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK",
                                           "PALS_RANKID", "ALPS_APP_PE", "FLUX_TASK_RANK", "SLURM_PROCID" };
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) unsetenv(all[i]);
        if (variable) setenv(variable, value, 1);
        execl(self_exe, "test_core", "--rank0-probe", path, (char *)NULL);
        _exit(98);
    }
    return wait_status(child) - 10;
}

static enum outcome rank0_only_is_not_rank0_elsewhere_and_touches_nothing(void) {
    const char *path = tpath("rank0.lock");
    CHECK(rank0_probe_with("PMI_RANK", "2", path) == HPCLOCK_NOT_RANK0);
    CHECK(rank0_probe_with("SLURM_PROCID", "17", path) == HPCLOCK_NOT_RANK0);
    CHECK(access(path, F_OK) != 0); /* no rank but 0 created (or opened) the file */
    CHECK(rank0_probe_with("OMPI_COMM_WORLD_RANK", "0", path) == HPCLOCK_OK);
    CHECK(rank0_probe_with(NULL, NULL, path) == HPCLOCK_OK); /* no MPI at all: rank 0 */
    CHECK(access(path, F_OK) == 0);
    return PASS;
}

/* ---- threads ---- */

enum { THREADS = 8 };

struct thread_race {
    pthread_barrier_t start, finish;
    const char *path;
    int32_t rc[THREADS];
    hpclock_handle handle[THREADS];
};

struct thread_arg {
    struct thread_race *race;
    int index;
};

static void *thread_racer(void *p) {
    struct thread_arg *arg = p;
    struct thread_race *race = arg->race;
    pthread_barrier_wait(&race->start);
    race->rc[arg->index] = hpclock_try_acquire(race->path, &race->handle[arg->index]);
    pthread_barrier_wait(&race->finish);
    return NULL;
}

static enum outcome eight_threads_of_one_process_one_winner(void) {
    struct thread_race race;
    race.path = tpath("threads.lock");
    for (int round = 0; round < 20; round++) {
        pthread_barrier_init(&race.start, NULL, THREADS);
        pthread_barrier_init(&race.finish, NULL, THREADS);
        pthread_t threads[THREADS];
        struct thread_arg args[THREADS];
        for (int i = 0; i < THREADS; i++) {
            args[i] = (struct thread_arg){ &race, i };
            pthread_create(&threads[i], NULL, thread_racer, &args[i]);
        }
        for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&race.start);
        pthread_barrier_destroy(&race.finish);
        int ok = 0, busy = 0;
        for (int i = 0; i < THREADS; i++) {
            ok += race.rc[i] == HPCLOCK_OK;
            busy += race.rc[i] == HPCLOCK_BUSY;
        }
        for (int i = 0; i < THREADS; i++) {
            if (race.rc[i] == HPCLOCK_OK) CHECK_RC(hpclock_release(race.handle[i]), HPCLOCK_OK);
        }
        if (ok != 1 || busy != THREADS - 1) {
            fprintf(stderr, "    round %d: %d OK, %d BUSY\n", round, ok, busy);
            return FAIL;
        }
    }
    return PASS;
}

/* ---- other lock users on the same file ---- */

static enum outcome interop_with_util_linux_flock(void) {
    if (!have_program("flock")) return missing_tool("flock (util-linux)");
    const char *path = tpath("shell.lock");
    const char *ready = tpath("flock-holds");
    char *probe[] = { "flock", "-n", (char *)path, "true", NULL };
    hpclock_handle h;

    if (primitive_here() == HPCLOCK_PRIMITIVE_OFD) {
        /* OFD locks and flock locks do not see each other (on a local
         * filesystem; on GPFS flock is node-local anyway): a shell script
         * using flock(1) there is not excluded. The README says so. */
        CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
        CHECK(run_program(probe) == 0);
        CHECK_RC(hpclock_release(h), HPCLOCK_OK);
        return PASS;
    }

    /* hpclock holds: flock -n fails with its conflict status 1. */
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK(run_program(probe) == 1);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(run_program(probe) == 0);

    /* flock(1) holds: hpclock is busy until it lets go. */
    char script[PATH_MAX + 64];
    snprintf(script, sizeof script, ": > '%s'; exec sleep 60", ready);
    char *holder_argv[] = { "flock", "-n", (char *)path, "sh", "-c", script, NULL };
    pid_t holder = spawn_program(holder_argv);
    CHECK(holder > 0);
    if (!wait_for_file(ready, 30)) {
        kill_group_and_reap(holder);
        CHECK(!"flock(1) never took the lock");
    }
    int32_t while_held = hpclock_try_acquire(path, &h);
    kill_group_and_reap(holder);
    CHECK_RC(while_held, HPCLOCK_BUSY);
    CHECK(h == 0);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = 30000; /* the killed sleep may take a moment to close its descriptor */
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* argv: LOCKFILE flock|lockf */
static const char python_try_lock[] =
    "import errno, fcntl, sys\n"
    "f = open(sys.argv[1], 'a')\n"
    "try:\n"
    "    getattr(fcntl, sys.argv[2])(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "except OSError as e:\n"
    "    sys.exit(3 if e.errno in (errno.EAGAIN, errno.EACCES) else 4)\n";

/* argv: LOCKFILE READYFILE flock|lockf */
static const char python_hold_lock[] =
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "getattr(fcntl, sys.argv[3])(f, fcntl.LOCK_EX)\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(60)\n";

static enum outcome interop_with_python_fcntl_flock(void) {
    if (!have_program("python3")) return missing_tool("python3");
    const char *path = tpath("python.lock");
    const char *ready = tpath("python-holds");

    char *call = (char *)python_lock_call();
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    char *probe[] = { "python3", "-c", (char *)python_try_lock, (char *)path, call, NULL };
    CHECK(run_program(probe) == 3);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(run_program(probe) == 0);

    char *holder_argv[] = { "python3", "-c", (char *)python_hold_lock, (char *)path, (char *)ready, call, NULL };
    pid_t holder = spawn_program(holder_argv);
    CHECK(holder > 0);
    if (!wait_for_file(ready, 30)) {
        kill_group_and_reap(holder);
        CHECK(!"python never took the lock");
    }
    int32_t while_held = hpclock_try_acquire(path, &h);
    kill_group_and_reap(holder);
    CHECK_RC(while_held, HPCLOCK_BUSY);
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* ---- waiting ---- */

static enum outcome timed_acquire_gets_lock_released_mid_wait(void) {
    const char *path = tpath("handoff.lock");
    pid_t holder = spawn_holder(path, 300);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = 30000;
    hpclock_handle h;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    CHECK(wait_status(holder) == 0);
    hpclock_holder previous;
    CHECK_RC(hpclock_handle_info(h, NULL, &previous), HPCLOCK_OK);
    CHECK(previous.pid == holder);
    CHECK(previous.state == HPCLOCK_STATE_FREE); /* released cleanly, not stale */
    CHECK(previous.released_unix_ms >= previous.acquired_unix_ms);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static enum outcome timed_acquire_is_busy_after_timeout(void) {
    const char *path = tpath("timeout.lock");
    pid_t holder = spawn_holder(path, -1);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = 300;
    hpclock_handle h = 77;
    double start = now_seconds();
    int32_t rc = hpclock_acquire(path, &opts, &h);
    double waited = now_seconds() - start;
    kill_and_reap(holder);
    CHECK_RC(rc, HPCLOCK_BUSY);
    CHECK(h == 0);
    CHECK(waited >= 0.3); /* the whole timeout was honoured */
    CHECK(waited < 10.0);
    return PASS;
}

static enum outcome unlimited_wait_gets_lock_when_released(void) {
    const char *path = tpath("forever.lock");
    pid_t holder = spawn_holder(path, 200);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = -1;
    hpclock_handle h;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    CHECK(wait_status(holder) == 0);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* ---- records, completion, options ---- */

static enum outcome record_is_readable_text_naming_the_holder(void) {
    const char *path = tpath("cat.lock");
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.label = "step 3 of 7";
    hpclock_handle h;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    char text[4096] = { 0 }, expect[64];
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    CHECK(n > 0);
    snprintf(expect, sizeof expect, "\npid=%d\n", (int)getpid());
    CHECK(strstr(text, expect) != NULL);
    CHECK(strstr(text, "\nstate=held\n") != NULL);
    CHECK(strstr(text, "\nlabel=step 3 of 7\n") != NULL);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_HELD);
    CHECK(info.alive == 1);
    CHECK(info.pid == getpid());
    CHECK(info.uid == getuid());
    CHECK(strcmp(info.label, "step 3 of 7") == 0);
    char host[256] = { 0 };
    gethostname(host, sizeof host - 1);
    CHECK(strcmp(info.host, host) == 0);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_FREE);
    CHECK(info.released_unix_ms > 0);
    return PASS;
}

static enum outcome generation_rises_by_one_per_acquisition(void) {
    const char *path = tpath("generation.lock");
    for (uint64_t expected = 1; expected <= 5; expected++) {
        hpclock_handle h;
        CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
        hpclock_holder mine;
        CHECK_RC(hpclock_handle_info(h, &mine, NULL), HPCLOCK_OK);
        CHECK(mine.generation == expected);
        CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    }
    return PASS;
}

static enum outcome complete_makes_later_acquires_done_until_ignore_done(void) {
    const char *path = tpath("done.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_complete(h), HPCLOCK_OK);
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_DONE);
    CHECK(h == 0);
    CHECK(try_in_child(path) == HPCLOCK_DONE);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_DONE);
    CHECK(info.generation == 1);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_IGNORE_DONE;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    hpclock_holder previous;
    CHECK_RC(hpclock_handle_info(h, NULL, &previous), HPCLOCK_OK);
    CHECK(previous.state == HPCLOCK_STATE_DONE);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK); /* released, no longer done */
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static enum outcome mode_is_honoured_for_new_files(void) {
    const char *path = tpath("mode.lock");
    mode_t old = umask(022);
    hpclock_options opts;
    hpclock_options_init(&opts);
    CHECK(opts.mode == 0644 && opts.flags == 0 && opts.timeout_ms == 0 && opts.label == NULL);
    opts.mode = 0660;
    hpclock_handle h;
    int32_t rc = hpclock_acquire(path, &opts, &h);
    umask(old);
    CHECK_RC(rc, HPCLOCK_OK);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static enum outcome unknown_flag_bits_are_refused(void) {
    const char *path = tpath("flags.lock");
    hpclock_options opts;
    hpclock_options_init(&opts);
    hpclock_handle h = 5;
    uint32_t refused[] = { 0x100u, 0x80000000u };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        opts.flags = refused[i];
        CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_E_INVALID);
        CHECK(h == 0);
        CHECK(strlen(hpclock_last_error()) > 0);
    }
    CHECK(access(path, F_OK) != 0); /* refused before touching the filesystem */
    opts.flags = HPCLOCK_SYNC;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static enum outcome label_longer_than_127_bytes_is_refused(void) {
    char label[200];
    memset(label, 'x', sizeof label - 1);
    label[sizeof label - 1] = 0;
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.label = label;
    hpclock_handle h;
    CHECK_RC(hpclock_acquire(tpath("label.lock"), &opts, &h), HPCLOCK_E_INVALID);
    CHECK(strstr(hpclock_last_error(), "label") != NULL);
    label[127] = 0;
    CHECK_RC(hpclock_acquire(tpath("label.lock"), &opts, &h), HPCLOCK_OK);
    hpclock_holder mine;
    CHECK_RC(hpclock_handle_info(h, &mine, NULL), HPCLOCK_OK);
    CHECK(strcmp(mine.label, label) == 0);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* ---- bad input: the right code, never a crash ---- */

static enum outcome null_and_empty_paths_are_invalid(void) {
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(NULL, &h), HPCLOCK_E_INVALID);
    CHECK(h == 0);
    CHECK(strstr(hpclock_last_error(), "NULL") != NULL);
    h = 5;
    CHECK_RC(hpclock_try_acquire("", &h), HPCLOCK_E_INVALID);
    CHECK(h == 0);
    CHECK(strstr(hpclock_last_error(), "empty") != NULL);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(NULL, &info), HPCLOCK_E_INVALID);
    CHECK_RC(hpclock_holder_info("", &info), HPCLOCK_E_INVALID);
    return PASS;
}

static enum outcome null_out_pointers_are_invalid(void) {
    const char *path = tpath("null-out.lock");
    CHECK_RC(hpclock_try_acquire(path, NULL), HPCLOCK_E_INVALID);
    CHECK(access(path, F_OK) != 0); /* no file was created for a call that could not return a handle */
    CHECK_RC(hpclock_holder_info(path, NULL), HPCLOCK_E_INVALID);
    hpclock_options_init(NULL); /* no crash */
    return PASS;
}

static enum outcome directory_as_lock_path_is_an_os_error(void) {
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(test_dir, &h), HPCLOCK_E_OS);
    CHECK(h == 0);
    CHECK(hpclock_last_errno() == EISDIR);
    CHECK(strstr(hpclock_last_error(), test_dir) != NULL);
    CHECK(strstr(hpclock_last_error(), "EISDIR") != NULL);
    return PASS;
}

static enum outcome missing_directory_names_path_and_enoent(void) {
    const char *path = tpath("no/such/dir/run.lock");
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_E_OS);
    CHECK(h == 0);
    CHECK(hpclock_last_errno() == ENOENT);
    CHECK(strstr(hpclock_last_error(), path) != NULL);
    CHECK(strstr(hpclock_last_error(), "No such file or directory (ENOENT)") != NULL);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_E_OS);
    CHECK(hpclock_last_errno() == ENOENT);
    return PASS;
}

static enum outcome holder_info_on_missing_file_is_free_generation_0(void) {
    const char *path = tpath("never-taken.lock");
    hpclock_holder info;
    memset(&info, 0x55, sizeof info);
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_FREE);
    CHECK(info.generation == 0);
    CHECK(info.pid == 0);
    CHECK(strcmp(hpclock_last_error(), "") == 0);
    CHECK(access(path, F_OK) != 0); /* reading never creates the file */
    return PASS;
}

static enum outcome released_unknown_and_zero_handles_are_invalid(void) {
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(tpath("twice.lock"), &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_E_INVALID);
    CHECK(strstr(hpclock_last_error(), "already released") != NULL);
    CHECK_RC(hpclock_complete(h), HPCLOCK_E_INVALID);
    CHECK_RC(hpclock_release(0), HPCLOCK_E_INVALID);
    CHECK_RC(hpclock_release(987654321u), HPCLOCK_E_INVALID);
    CHECK_RC(hpclock_complete(0), HPCLOCK_E_INVALID);
    hpclock_holder info;
    CHECK_RC(hpclock_handle_info(h, &info, &info), HPCLOCK_E_INVALID);
    CHECK_RC(hpclock_handle_info(0, NULL, NULL), HPCLOCK_E_INVALID);
    return PASS;
}

static enum outcome symlink_as_lock_path_is_refused_target_untouched(void) {
    const char *target = tpath("precious.dat");
    const char *path = tpath("link.lock");
    FILE *f = fopen(target, "w");
    CHECK(f != NULL);
    fputs("precious results\n", f);
    fclose(f);
    CHECK(symlink(target, path) == 0);
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_E_OS);
    CHECK(h == 0);
    CHECK(hpclock_last_errno() == ELOOP);
    CHECK(strstr(hpclock_last_error(), "symbolic link") != NULL);
    CHECK(file_equals(target, "precious results\n"));
    struct stat st;
    CHECK(lstat(path, &st) == 0 && S_ISLNK(st.st_mode));
    return PASS;
}

static enum outcome fifo_as_lock_path_is_refused_without_hanging(void) {
    const char *path = tpath("fifo.lock");
    CHECK(mkfifo(path, 0644) == 0);
    pid_t child = fork_or_die();
    if (child == 0) {
        alarm(20); /* a hang ends the child with SIGALRM, and the test fails */
        hpclock_handle h = 5;
        int32_t rc = hpclock_try_acquire(path, &h);
        hpclock_holder info;
        int32_t info_rc = hpclock_holder_info(path, &info);
        int ok = rc == HPCLOCK_E_INVALID && h == 0 && info_rc == HPCLOCK_E_INVALID &&
                 strstr(hpclock_last_error(), "FIFO") != NULL;
        _exit(ok ? 0 : 1);
    }
    int status = wait_status(child);
    if (status != 0) fprintf(stderr, "    child exited %d (%d is SIGALRM: it hung)\n", status, 128 + SIGALRM);
    CHECK(status == 0);
    return PASS;
}

static enum outcome non_utf8_path_works(void) {
    const char *path = tpath("lock-\xff\xfe-\xc3\xa9.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK(access(path, F_OK) == 0);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_HELD);
    CHECK(try_in_child(path) == HPCLOCK_BUSY);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    /* Messages escape the bytes rather than lose them. */
    const char *missing = tpath("nodir-\xff/x.lock");
    CHECK_RC(hpclock_try_acquire(missing, &h), HPCLOCK_E_OS);
    CHECK(strstr(hpclock_last_error(), "nodir-\\xff/x.lock") != NULL);
    return PASS;
}

static enum outcome status_names_and_version(void) {
    CHECK(strcmp(hpclock_status_name(HPCLOCK_OK), "HPCLOCK_OK") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_BUSY), "HPCLOCK_BUSY") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_DONE), "HPCLOCK_DONE") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_NOT_RANK0), "HPCLOCK_NOT_RANK0") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_E_INVALID), "HPCLOCK_E_INVALID") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_E_OS), "HPCLOCK_E_OS") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_E_NOTSUP), "HPCLOCK_E_NOTSUP") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_E_UNSAFE), "HPCLOCK_E_UNSAFE") == 0);
    CHECK(strcmp(hpclock_status_name(HPCLOCK_E_INTERNAL), "HPCLOCK_E_INTERNAL") == 0);
    CHECK(strcmp(hpclock_status_name(42), "HPCLOCK_UNKNOWN_STATUS") == 0);
    int major, minor, patch;
    char rest;
    CHECK(sscanf(hpclock_version(), "%d.%d.%d%c", &major, &minor, &patch, &rest) == 3);
    return PASS;
}

static enum outcome struct_layouts_match_the_contract(void) {
    /* docs/abi.md#what-the-interface-is pins these layouts; Fortran bind(C) types depend on them. */
    CHECK(sizeof(hpclock_handle) == 8);
    CHECK(sizeof(hpclock_options) == 32); /* 0.2 added lease_ms: a new soname */
    CHECK(offsetof(hpclock_options, lease_ms) == 24);
    CHECK(offsetof(hpclock_holder, generation) == 24);
    CHECK(offsetof(hpclock_holder, host) == 48);
    CHECK(offsetof(hpclock_holder, job_id) == 48 + 256);
    CHECK(offsetof(hpclock_holder, label) == 48 + 256 + 64);
    CHECK(sizeof(hpclock_holder) == 48 + 256 + 64 + 128);
    struct hpclock_holder tagged; /* both the tag and the typedef name compile */
    (void)tagged;
    return PASS;
}

static const struct test tests[] = {
    { "race_64_processes_one_winner_each_of_20_rounds", race_64_processes_one_winner_each_of_20_rounds },
    { "exclusion_16_processes_300_timed_acquisitions_each", exclusion_16_processes_300_timed_acquisitions_each },
    { "holder_killed_with_sigkill_is_stale_and_taken_over", holder_killed_with_sigkill_is_stale_and_taken_over },
    { "forked_child_release_leaves_parent_holding", forked_child_release_leaves_parent_holding },
    { "release_frees_lock_while_forked_child_still_has_descriptor",
      release_frees_lock_while_forked_child_still_has_descriptor },
    { "waiter_on_replaced_file_does_not_win_the_old_inode", waiter_on_replaced_file_does_not_win_the_old_inode },
    { "exec_does_not_inherit_the_lock", exec_does_not_inherit_the_lock },
    { "rank0_only_is_not_rank0_elsewhere_and_touches_nothing", rank0_only_is_not_rank0_elsewhere_and_touches_nothing },
    { "eight_threads_of_one_process_one_winner", eight_threads_of_one_process_one_winner },
    { "interop_with_util_linux_flock", interop_with_util_linux_flock },
    { "interop_with_python_fcntl_flock", interop_with_python_fcntl_flock },
    { "timed_acquire_gets_lock_released_mid_wait", timed_acquire_gets_lock_released_mid_wait },
    { "timed_acquire_is_busy_after_timeout", timed_acquire_is_busy_after_timeout },
    { "unlimited_wait_gets_lock_when_released", unlimited_wait_gets_lock_when_released },
    { "record_is_readable_text_naming_the_holder", record_is_readable_text_naming_the_holder },
    { "generation_rises_by_one_per_acquisition", generation_rises_by_one_per_acquisition },
    { "complete_makes_later_acquires_done_until_ignore_done", complete_makes_later_acquires_done_until_ignore_done },
    { "mode_is_honoured_for_new_files", mode_is_honoured_for_new_files },
    { "unknown_flag_bits_are_refused", unknown_flag_bits_are_refused },
    { "label_longer_than_127_bytes_is_refused", label_longer_than_127_bytes_is_refused },
    { "null_and_empty_paths_are_invalid", null_and_empty_paths_are_invalid },
    { "null_out_pointers_are_invalid", null_out_pointers_are_invalid },
    { "directory_as_lock_path_is_an_os_error", directory_as_lock_path_is_an_os_error },
    { "missing_directory_names_path_and_enoent", missing_directory_names_path_and_enoent },
    { "holder_info_on_missing_file_is_free_generation_0", holder_info_on_missing_file_is_free_generation_0 },
    { "released_unknown_and_zero_handles_are_invalid", released_unknown_and_zero_handles_are_invalid },
    { "symlink_as_lock_path_is_refused_target_untouched", symlink_as_lock_path_is_refused_target_untouched },
    { "fifo_as_lock_path_is_refused_without_hanging", fifo_as_lock_path_is_refused_without_hanging },
    { "non_utf8_path_works", non_utf8_path_works },
    { "status_names_and_version", status_names_and_version },
    { "struct_layouts_match_the_contract", struct_layouts_match_the_contract },
};

int main(int argc, char **argv) {
    remember_self(argv[0]);
    if (argc == 3 && strcmp(argv[1], "--exec-probe") == 0) return exec_probe(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--rank0-probe") == 0) return rank0_probe(argv[2]);
    return run_tests("core", tests, sizeof tests / sizeof tests[0]);
}
