/* The holder record, shown with real processes: who holds a lock (pid, host,
 * job, rank, label, since when), whether the holder is alive, what the
 * kernel's lock table says, and files that hold no valid record at all. */
#include "harness.h"

#include <stdatomic.h>

/* Run as `test_record --hold PATH LABEL READYFILE`: a fresh process (so the
 * identity it reads from its environment is its own), holding until killed. */
static int hold_mode(const char *path, const char *label, const char *ready) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.label = label;
    hpclock_handle h;
    if (hpclock_acquire(path, &opts, &h) != HPCLOCK_OK) return 4;
    FILE *f = fopen(ready, "w");
    if (!f) return 5;
    fprintf(f, "%d\n", hpclock_mpi_rank());
    fclose(f);
    for (;;) pause();
}

/* Starts the holder as a new program with a scheduler's environment. */
static pid_t spawn_job_holder(const char *path, const char *label, const char *ready) {
    pid_t pid = fork_or_die();
    if (pid == 0) {
        setenv("SLURM_JOB_ID", "8812352", 1);
        setenv("SLURM_ARRAY_JOB_ID", "8812345", 1);
        setenv("SLURM_ARRAY_TASK_ID", "7", 1);
        setenv("OMPI_COMM_WORLD_RANK", "3", 1);
        execl(self_exe, "test_record", "--hold", path, label, ready, (char *)NULL);
        _exit(21);
    }
    if (!wait_for_file(ready, 30)) {
        kill_and_reap(pid);
        return -1;
    }
    return pid;
}

static int64_t now_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum outcome holder_info_names_holder_job_rank_label_and_time(void) {
    const char *path = tpath("job.lock");
    pid_t holder = spawn_job_holder(path, "array task 7: step 2", tpath("ready"));
    CHECK(holder > 0);
    hpclock_holder who;
    int32_t rc = hpclock_holder_info(path, &who);
    kill_and_reap(holder);
    CHECK_RC(rc, HPCLOCK_OK);
    char host[256] = { 0 };
    gethostname(host, sizeof host - 1);
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.alive == 1);
    CHECK(who.pid == holder);
    CHECK(strcmp(who.host, host) == 0);
    CHECK(strcmp(who.job_id, "8812345_7") == 0);
    CHECK(who.mpi_rank == 3);
    CHECK(strcmp(who.label, "array task 7: step 2") == 0);
    CHECK(who.uid == getuid());
    CHECK(who.generation >= 1);
    CHECK(llabs(now_unix_ms() - who.acquired_unix_ms) < 30000);
    CHECK(who.released_unix_ms == 0);
    CHECK(hpclock_mpi_rank() == -1); /* this process was not launched as a rank */
    return PASS;
}

static enum outcome clean_release_is_free_with_release_time(void) {
    const char *path = tpath("release.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    hpclock_holder who;
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_FREE);
    CHECK(who.pid == getpid()); /* who held it last */
    CHECK(who.released_unix_ms >= who.acquired_unix_ms);
    CHECK(llabs(now_unix_ms() - who.released_unix_ms) < 30000);
    return PASS;
}

static enum outcome holder_killed_is_stale_and_not_alive(void) {
    const char *path = tpath("killed.lock");
    pid_t holder = spawn_job_holder(path, "doomed", tpath("ready"));
    CHECK(holder > 0);
    kill_and_reap(holder);
    hpclock_holder who;
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_STALE);
    CHECK(who.alive == 0);
    CHECK(who.pid == holder);
    CHECK(strcmp(who.job_id, "8812345_7") == 0); /* whose job died, for the log */
    return PASS;
}

/* ---- reading never gets in the way of acquiring ---- */

struct probe_race {
    atomic_int stop, probes, probe_errors, ok, busy, other, answered;
};

enum { PROBE_ROUNDS = 200, PROBE_RACERS = 8 };

static enum outcome holder_info_in_a_tight_loop_never_makes_an_acquire_fail(void) {
    const char *path = tpath("probed.lock");
    struct probe_race *shared = shared_alloc(sizeof *shared);
    pid_t prober = fork_or_die();
    if (prober == 0) {
        while (!atomic_load(&shared->stop)) {
            hpclock_holder who;
            if (hpclock_holder_info(path, &who) != HPCLOCK_OK) atomic_fetch_add(&shared->probe_errors, 1);
            atomic_fetch_add(&shared->probes, 1);
        }
        _exit(0);
    }
    int bad_rounds = 0;
    for (int round = 0; round < PROBE_ROUNDS; round++) {
        atomic_store(&shared->ok, 0);
        atomic_store(&shared->busy, 0);
        atomic_store(&shared->other, 0);
        atomic_store(&shared->answered, 0);
        struct gate start, finish;
        gate_init(&start);
        gate_init(&finish);
        pid_t pids[PROBE_RACERS];
        for (int i = 0; i < PROBE_RACERS; i++) {
            pids[i] = fork_or_die();
            if (pids[i] == 0) {
                close(finish.fd[1]);
                gate_wait(&start);
                hpclock_handle h;
                int32_t rc = hpclock_try_acquire(path, &h);
                atomic_fetch_add(rc == HPCLOCK_OK ? &shared->ok : rc == HPCLOCK_BUSY ? &shared->busy : &shared->other, 1);
                atomic_fetch_add(&shared->answered, 1);
                gate_wait(&finish);
                _exit(rc == HPCLOCK_OK && hpclock_release(h) != HPCLOCK_OK ? 1 : 0);
            }
        }
        gate_open(&start);
        double until = now_seconds() + 60;
        while (atomic_load(&shared->answered) < PROBE_RACERS && now_seconds() < until) sleep_ms(1);
        gate_open(&finish);
        for (int i = 0; i < PROBE_RACERS; i++) bad_rounds += wait_status(pids[i]) != 0;
        if (shared->ok != 1 || shared->busy != PROBE_RACERS - 1 || shared->other != 0) {
            fprintf(stderr, "    round %d: %d OK, %d BUSY, %d other\n", round, shared->ok, shared->busy, shared->other);
            bad_rounds++;
        }
    }
    atomic_store(&shared->stop, 1);
    CHECK(wait_status(prober) == 0);
    fprintf(stderr, "    %d holder_info probes ran during %d rounds\n", shared->probes, PROBE_ROUNDS);
    CHECK(bad_rounds == 0);
    CHECK(shared->probe_errors == 0);
    CHECK(shared->probes > PROBE_ROUNDS); /* the probe really ran alongside */
    return PASS;
}

/* ---- the kernel's lock table wins over the record ---- */

static enum outcome lock_held_by_flock_command_is_held_with_its_pid(void) {
    if (!have_program("flock")) return missing_tool("flock (util-linux)");
    const char *path = tpath("flock.lock");
    const char *ready = tpath("flock-ready");
    char script[PATH_MAX + 64];
    snprintf(script, sizeof script, ": > '%s'; exec sleep 60", ready);
    char *argv[] = { "flock", "-n", (char *)path, "sh", "-c", script, NULL };
    pid_t flock_pid = spawn_program(argv);
    CHECK(flock_pid > 0);
    if (!wait_for_file(ready, 30)) {
        kill_group_and_reap(flock_pid);
        CHECK(!"flock(1) never took the lock");
    }
    hpclock_holder who;
    int32_t rc = hpclock_holder_info(path, &who);
    hpclock_handle h = 0;
    int32_t acquire_rc = hpclock_try_acquire(path, &h);
    kill_group_and_reap(flock_pid);
    CHECK_RC(rc, HPCLOCK_OK);
    if (primitive_here() == HPCLOCK_PRIMITIVE_OFD) {
        /* flock(1)'s lock does not exclude OFD locks, and hpclock says so
         * rather than name a holder that does not keep it out. */
        CHECK(who.state == HPCLOCK_STATE_FREE);
        CHECK_RC(acquire_rc, HPCLOCK_OK);
        CHECK_RC(hpclock_release(h), HPCLOCK_OK);
        return PASS;
    }
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.pid == flock_pid);
    CHECK(who.alive == 1);
    CHECK_RC(acquire_rc, HPCLOCK_BUSY);
    return PASS;
}

/* argv: LOCKFILE READYFILE flock|lockf */
static const char seed_pattern[] =
    /* the seed's Python pattern, with the lock taken before the write */
    "import fcntl, os, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "getattr(fcntl, sys.argv[3])(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "f.truncate(0)\n"
    "f.write(f'{os.getpid()}\\n{time.time()}\\n')\n"
    "f.flush()\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(60)\n";

static enum outcome old_two_line_record_of_a_python_holder_is_read(void) {
    if (!have_program("python3")) return missing_tool("python3");
    const char *path = tpath("seed.lock");
    const char *ready = tpath("python-ready");
    char *argv[] = { "python3", "-c", (char *)seed_pattern, (char *)path, (char *)ready, (char *)python_lock_call(), NULL };
    pid_t python = spawn_program(argv);
    CHECK(python > 0);
    if (!wait_for_file(ready, 30)) {
        kill_group_and_reap(python);
        CHECK(!"python never took the lock");
    }
    hpclock_holder who;
    int32_t rc = hpclock_holder_info(path, &who);
    kill_group_and_reap(python);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.pid == python);
    CHECK(llabs(now_unix_ms() - who.acquired_unix_ms) < 60000);

    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_STALE); /* the record says held; the lock is gone */
    CHECK(who.pid == python);
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    hpclock_holder previous;
    CHECK_RC(hpclock_handle_info(h, NULL, &previous), HPCLOCK_OK);
    CHECK(previous.state == HPCLOCK_STATE_STALE);
    CHECK(previous.pid == python);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* ---- files that hold no valid record ---- */

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* holder_info answers quickly and sanely, and try_acquire still works and
 * leaves a valid record. */
static enum outcome check_bad_file(const char *path, int32_t expected_state, int expect_note) {
    hpclock_holder who;
    double start = now_seconds();
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(now_seconds() - start < 1.0);
    CHECK(who.state == expected_state);
    if (expect_note) CHECK(strstr(hpclock_last_error(), "no readable holder record") != NULL);
    else CHECK(strcmp(hpclock_last_error(), "") == 0);

    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK(file_size(path) <= 4096);
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(strcmp(hpclock_last_error(), "") == 0); /* a whole record now */
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.pid == getpid());
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* A file that is not a lock file: holder_info still answers quickly and
 * sanely (with a note), and try_acquire refuses it and leaves every byte and
 * the mtime as they were (docs/threat-model.md#files-that-are-not-lock-files). */
static enum outcome check_foreign_file(const char *path, const void *bytes, size_t size) {
    struct timespec old[2] = { { 978307200, 0 }, { 978307200, 0 } };
    CHECK(utimensat(AT_FDCWD, path, old, 0) == 0);
    hpclock_holder who;
    double start = now_seconds();
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(now_seconds() - start < 1.0);
    CHECK(who.state == HPCLOCK_STATE_FREE);
    CHECK(strstr(hpclock_last_error(), "no readable holder record") != NULL);

    hpclock_handle h = 5;
    start = now_seconds();
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_E_INVALID);
    CHECK(now_seconds() - start < 1.0);
    CHECK(h == 0);
    char expected[128];
    snprintf(expected, sizeof expected, "is not a lock file: refusing to overwrite its %zu bytes", size);
    CHECK(strstr(hpclock_last_error(), expected) != NULL);
    CHECK(strstr(hpclock_last_error(), path) != NULL);

    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK((size_t)st.st_size == size);
    CHECK(st.st_mtim.tv_sec == old[1].tv_sec && st.st_mtim.tv_nsec == 0);
    char *now = malloc(size + 1);
    CHECK(now != NULL);
    long n = read_bytes(path, now, size + 1);
    int same = n == (long)size && memcmp(now, bytes, size) == 0;
    free(now);
    CHECK(same);
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK); /* still read, never a hard failure */
    CHECK(who.state == HPCLOCK_STATE_FREE);
    return PASS;
}

static enum outcome torn_record_is_reported_and_overwritten(void) {
    const char *path = tpath("torn.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(truncate(path, file_size(path) / 2) == 0); /* a write cut short */
    CHECK(check_bad_file(path, HPCLOCK_STATE_FREE, 1) == PASS);
    return PASS;
}

static enum outcome garbage_file_is_reported_and_refused_untouched(void) {
    const char *path = tpath("garbage.lock");
    unsigned char bytes[3000];
    unsigned state = 12345;
    for (size_t i = 0; i < sizeof bytes; i++) {
        state = state * 1103515245u + 12345u;
        bytes[i] = (unsigned char)(state >> 16);
    }
    CHECK(write_bytes(path, bytes, sizeof bytes));
    CHECK(check_foreign_file(path, bytes, sizeof bytes) == PASS);
    return PASS;
}

static enum outcome old_format_file_without_holder_is_stale(void) {
    const char *path = tpath("legacy.lock");
    const char legacy[] = "4034097\n1764160000.25\n";
    CHECK(write_bytes(path, legacy, strlen(legacy)));
    hpclock_holder who;
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.pid == 4034097);
    CHECK(who.acquired_unix_ms == 1764160000250);
    CHECK(check_bad_file(path, HPCLOCK_STATE_STALE, 0) == PASS);
    return PASS;
}

static enum outcome ten_megabyte_file_is_read_in_4_kib_and_refused_untouched(void) {
    const char *path = tpath("huge.lock");
    size_t size = 10u << 20;
    char *bytes = malloc(size);
    CHECK(bytes != NULL);
    memset(bytes, 'x', size);
    enum outcome result = write_bytes(path, bytes, size) ? check_foreign_file(path, bytes, size) : FAIL;
    free(bytes);
    CHECK(result == PASS);
    return PASS;
}

/* ---- who may read ---- */

static enum outcome holder_info_needs_only_read_access(void) {
    const char *path = tpath("readonly.lock");
    pid_t holder = spawn_job_holder(path, "owner", tpath("ready"));
    CHECK(holder > 0);
    pid_t reader = fork_or_die();
    if (reader == 0) {
        if (geteuid() == 0) {
            /* root ignores permission bits: read as an ordinary user instead */
            chmod(test_root, 0755);
            chmod(test_dir, 0755);
            if (!become_nobody()) _exit(30);
        } else if (chmod(path, 0444) != 0) {
            _exit(31);
        }
        hpclock_holder who;
        if (hpclock_holder_info(path, &who) != HPCLOCK_OK) _exit(32);
        if (who.state != HPCLOCK_STATE_HELD || who.pid != holder) _exit(33);
        hpclock_handle h;
        if (hpclock_try_acquire(path, &h) != HPCLOCK_E_OS || hpclock_last_errno() != EACCES) _exit(34);
        if (!strstr(hpclock_last_error(), "EACCES")) _exit(35);
        _exit(0);
    }
    int status = wait_status(reader);
    kill_and_reap(holder);
    if (status != 0) fprintf(stderr, "    reader exited %d\n", status);
    CHECK(status == 0);
    return PASS;
}

static const struct test tests[] = {
    { "holder_info_names_holder_job_rank_label_and_time", holder_info_names_holder_job_rank_label_and_time },
    { "clean_release_is_free_with_release_time", clean_release_is_free_with_release_time },
    { "holder_killed_is_stale_and_not_alive", holder_killed_is_stale_and_not_alive },
    { "holder_info_in_a_tight_loop_never_makes_an_acquire_fail",
      holder_info_in_a_tight_loop_never_makes_an_acquire_fail },
    { "lock_held_by_flock_command_is_held_with_its_pid", lock_held_by_flock_command_is_held_with_its_pid },
    { "old_two_line_record_of_a_python_holder_is_read", old_two_line_record_of_a_python_holder_is_read },
    { "torn_record_is_reported_and_overwritten", torn_record_is_reported_and_overwritten },
    { "garbage_file_is_reported_and_refused_untouched", garbage_file_is_reported_and_refused_untouched },
    { "old_format_file_without_holder_is_stale", old_format_file_without_holder_is_stale },
    { "ten_megabyte_file_is_read_in_4_kib_and_refused_untouched",
      ten_megabyte_file_is_read_in_4_kib_and_refused_untouched },
    { "holder_info_needs_only_read_access", holder_info_needs_only_read_access },
};

int main(int argc, char **argv) {
    remember_self(argv[0]);
    if (argc == 5 && strcmp(argv[1], "--hold") == 0) return hold_mode(argv[2], argv[3], argv[4]);
    return run_tests("record", tests, sizeof tests / sizeof tests[0]);
}
