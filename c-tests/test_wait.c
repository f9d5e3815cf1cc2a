/* Timed waits (src/wait.rs): a wait never ends BUSY before its deadline, even
 * under a storm of signals; a waiter woken by the holder's release gets the
 * lock; an unlock that makes no inotify event (no close, no write) is still
 * found by the fallback poll; waits leave no descriptor or watch behind, in
 * threads and in forked children alike. With the rig of c-tests/fs_rig.sh
 * (HPCLOCK_RIG_SPLIT_A, a FUSE mount: not node-private, so the wait polls
 * gently) the deadline and the hand-off are checked there too.
 *
 * Only correctness is asserted; the latencies are printed for people, and
 * measured properly by `make bench`. */
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/time.h>

static int32_t timed_acquire(const char *path, int64_t timeout_ms, hpclock_handle *h) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = timeout_ms;
    return hpclock_acquire(path, &opts, h);
}

/* Descriptors of this process, and how many of them are inotify instances
 * that are not close-on-exec or still have a watch (neither may outlive a wait). */
struct fds {
    int total, inotify, bad_inotify;
};

static struct fds count_fds(void) {
    struct fds seen = { 0, 0, 0 };
    DIR *d = opendir("/proc/self/fd");
    if (!d) return (struct fds){ -1, -1, -1 };
    int own = dirfd(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd == own) continue;
        seen.total++;
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        if (strcmp(target, "anon_inode:inotify") != 0) continue;
        seen.inotify++;
        int cloexec = (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
        char info_path[64], info[4096];
        snprintf(info_path, sizeof info_path, "/proc/self/fdinfo/%d", fd);
        long got = read_bytes(info_path, info, sizeof info - 1);
        info[got > 0 ? got : 0] = 0;
        if (!cloexec || strstr(info, "inotify wd:") != NULL) seen.bad_inotify++;
    }
    closedir(d);
    return seen;
}

/* ---- deadlines ---- */

/* Each timeout in turn against a holder that never lets go: BUSY, and never
 * before the deadline on CLOCK_MONOTONIC. */
static enum outcome deadlines_are_never_early_in(const char *dir) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/deadline-%d.lock", dir, (int)getpid());
    pid_t holder = spawn_holder(path, -1);
    static const int64_t timeouts[] = { 1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 1100 };
    int early = 0, not_busy = 0;
    double worst_late = 0;
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        hpclock_handle h = 77;
        double start = now_seconds();
        int32_t rc = timed_acquire(path, timeouts[i], &h);
        double waited = now_seconds() - start;
        not_busy += rc != HPCLOCK_BUSY || h != 0;
        early += waited * 1000.0 < (double)timeouts[i];
        double late = waited * 1000.0 - (double)timeouts[i];
        if (late > worst_late) worst_late = late;
    }
    kill_and_reap(holder);
    fprintf(stderr, "    latest answer: %.2f ms after its deadline\n", worst_late);
    CHECK(not_busy == 0);
    CHECK(early == 0);
    CHECK(worst_late < 1000.0);
    return PASS;
}

static enum outcome deadline_is_never_early(void) {
    return deadlines_are_never_early_in(test_dir);
}

static atomic_int signals_seen;

static void count_signal(int sig) {
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

/* A signal every 200 µs (handler without SA_RESTART, so every sleep of the
 * wait is cut short with EINTR): the deadline still holds to the end, and a
 * release in the middle of the storm is still taken. */
static enum outcome signal_storm_neither_shortens_nor_breaks_a_wait(void) {
    const char *path = tpath("storm.lock");
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old);
    struct itimerval storm = { { 0, 200 }, { 0, 200 } }, off = { { 0, 0 }, { 0, 0 } };

    pid_t holder = spawn_holder(path, -1);
    setitimer(ITIMER_REAL, &storm, NULL);
    hpclock_handle h = 77;
    double start = now_seconds();
    int32_t busy = timed_acquire(path, 300, &h);
    double waited = now_seconds() - start;
    setitimer(ITIMER_REAL, &off, NULL);
    kill_and_reap(holder);

    holder = spawn_holder(path, 150);
    setitimer(ITIMER_REAL, &storm, NULL);
    hpclock_handle got = 0;
    int32_t ok = timed_acquire(path, 20000, &got);
    setitimer(ITIMER_REAL, &off, NULL);
    sleep_ms(50); /* a signal still pending is delivered to our handler, not to SIG_DFL */
    sigaction(SIGALRM, &old, NULL);
    int holder_status = wait_status(holder);
    fprintf(stderr, "    %d signals; BUSY after %.1f ms of a 300 ms wait\n", atomic_load(&signals_seen), waited * 1000);
    CHECK(atomic_load(&signals_seen) > 100);
    CHECK_RC(busy, HPCLOCK_BUSY);
    CHECK(waited >= 0.3);
    CHECK_RC(ok, HPCLOCK_OK);
    CHECK(holder_status == 0);
    CHECK_RC(hpclock_release(got), HPCLOCK_OK);
    return PASS;
}

/* ---- hand-off ---- */

/* The holder, started before the lock exists in this process (so the waiter
 * shares no descriptor with it), releases 100 ms into each wait. The waiter
 * must get the lock from that release, with the holder's record as previous. */
static enum outcome woken_wait_takes_the_released_lock(void) {
    const char *path = tpath("woken.lock");
    double worst = 0, total = 0;
    enum { ROUNDS = 10 };
    for (int i = 0; i < ROUNDS; i++) {
        pid_t holder = spawn_holder(path, 100);
        hpclock_handle h;
        double start = now_seconds();
        int32_t rc = timed_acquire(path, 30000, &h);
        double waited = now_seconds() - start;
        int holder_status = wait_status(holder);
        CHECK_RC(rc, HPCLOCK_OK);
        CHECK(holder_status == 0);
        hpclock_holder previous;
        CHECK_RC(hpclock_handle_info(h, NULL, &previous), HPCLOCK_OK);
        CHECK(previous.pid == holder);
        CHECK(previous.state == HPCLOCK_STATE_FREE);
        CHECK_RC(hpclock_release(h), HPCLOCK_OK);
        total += waited;
        if (waited > worst) worst = waited;
    }
    fprintf(stderr, "    waits of a 100 ms hold: mean %.1f ms, longest %.1f ms\n", total / ROUNDS * 1000, worst * 1000);
    return PASS;
}

/* A holder that unlocks without closing and without writing (Python's
 * fcntl.flock(f, LOCK_UN), then more work with the file open) makes no inotify
 * event: the fallback poll must find the lock free long before the holder
 * closes its descriptor or the wait's deadline. */
static enum outcome fallback_poll_finds_an_unlock_without_close(void) {
    const char *path = tpath("unlock-only.lock");
    int ofd = primitive_here() == HPCLOCK_PRIMITIVE_OFD;
    int ready[2];
    if (pipe(ready) != 0) return FAIL;
    pid_t holder = fork_or_die();
    if (holder == 0) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        int locked = ofd ? fcntl(fd, F_OFD_SETLK, &lock) == 0 : flock(fd, LOCK_EX | LOCK_NB) == 0;
        if (fd < 0 || !locked) _exit(2);
        ready_send(ready);
        sleep_ms(300);
        lock.l_type = F_UNLCK;
        if (ofd ? fcntl(fd, F_OFD_SETLK, &lock) != 0 : flock(fd, LOCK_UN) != 0) _exit(3);
        sleep_ms(5000); /* the descriptor stays open: no close event */
        _exit(0);
    }
    CHECK(ready_wait(ready));
    hpclock_handle h;
    double start = now_seconds();
    int32_t rc = timed_acquire(path, 4000, &h);
    double waited = now_seconds() - start;
    kill_and_reap(holder);
    fprintf(stderr, "    got it %.1f ms into the wait (unlocked at 300 ms)\n", waited * 1000);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(waited >= 0.29);
    CHECK(waited < 2.0); /* long before the holder's close (5.3 s) or the deadline (4 s) */
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

/* ---- descriptors and watches ---- */

/* One round of waits: half end BUSY at their deadline, half get the lock
 * from a release in the middle. */
static int round_of_waits(const char *path, int n) {
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        int release = i % 2 == 0;
        pid_t holder = spawn_holder(path, release ? 20 : -1);
        hpclock_handle h;
        int32_t rc = timed_acquire(path, release ? 20000 : 15, &h);
        if (release) {
            wrong += rc != HPCLOCK_OK || hpclock_release(h) != HPCLOCK_OK;
            wrong += wait_status(holder) != 0;
        } else {
            wrong += rc != HPCLOCK_BUSY;
            kill_and_reap(holder);
        }
    }
    return wrong;
}

/* A process may keep one idle inotify instance per thread that waited at the
 * same time (at most 4, close-on-exec, without a watch: src/wait.rs says why);
 * beyond that, waits must not add descriptors, and no watch may outlive its wait. */
static enum outcome waits_leave_no_descriptor_or_watch_behind(void) {
    const char *path = tpath("fds.lock");
    int scale = getenv("HPCLOCK_UNDER_VALGRIND") ? 4 : 1;
    struct fds before = count_fds();
    int wrong = round_of_waits(path, 40 / scale);
    struct fds first = count_fds();
    wrong += round_of_waits(path, 100 / scale);
    struct fds second = count_fds();
    fprintf(stderr, "    descriptors: %d before, %d after %d waits, %d after %d more (inotify: %d, %d, %d)\n",
            before.total, first.total, 40 / scale, second.total, 100 / scale, before.inotify, first.inotify,
            second.inotify);
    CHECK(wrong == 0);
    CHECK(second.total == first.total);
    CHECK(first.total <= before.total + 1);
    CHECK(second.bad_inotify == 0);
    return PASS;
}

struct thread_wait {
    char path[PATH_MAX];
    int wrong;
};

static void *thread_waits(void *arg) {
    struct thread_wait *t = arg;
    for (int i = 0; i < 6; i++) {
        hpclock_handle h;
        int32_t rc = timed_acquire(t->path, 20000, &h);
        t->wrong += rc != HPCLOCK_OK || hpclock_release(h) != HPCLOCK_OK;
    }
    return NULL;
}

/* Four threads wait at once, each for its own lock, released by holders in
 * child processes, three times over: every wait succeeds, and the process
 * never keeps more than one idle inotify instance per thread that waited at
 * the same time (4: the limit of src/wait.rs), however often it waits. */
static enum outcome threads_waiting_at_once_leave_nothing_behind(void) {
    enum { THREADS = 4, PASSES = 3 };
    struct fds before = count_fds(), after[PASSES];
    for (int pass = 0; pass < PASSES; pass++) {
        struct thread_wait waits[THREADS];
        pthread_t threads[THREADS];
        pid_t holders[THREADS];
        for (int t = 0; t < THREADS; t++) {
            snprintf(waits[t].path, sizeof waits[t].path, "%s", tpath(t == 0 ? "t0.lock" : t == 1 ? "t1.lock" : t == 2 ? "t2.lock" : "t3.lock"));
            waits[t].wrong = 0;
        }
        /* Each holder takes its lock 6 times, 30 ms each, with a gap for the waiter. */
        for (int t = 0; t < THREADS; t++) {
            holders[t] = fork_or_die();
            if (holders[t] == 0) {
                for (int i = 0; i < 6; i++) {
                    hpclock_handle h;
                    if (timed_acquire(waits[t].path, 20000, &h) != HPCLOCK_OK) _exit(1);
                    sleep_ms(30);
                    if (hpclock_release(h) != HPCLOCK_OK) _exit(2);
                    sleep_ms(10);
                }
                _exit(0);
            }
        }
        for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, thread_waits, &waits[t]);
        int wrong = 0;
        for (int t = 0; t < THREADS; t++) {
            pthread_join(threads[t], NULL);
            wrong += waits[t].wrong;
        }
        for (int t = 0; t < THREADS; t++) wrong += wait_status(holders[t]) != 0;
        CHECK(wrong == 0);
        after[pass] = count_fds();
    }
    fprintf(stderr, "    descriptors: %d before, %d, %d and %d after each pass\n", before.total, after[0].total,
            after[1].total, after[2].total);
    for (int pass = 0; pass < PASSES; pass++) {
        CHECK(after[pass].total <= before.total + THREADS);
        CHECK(after[pass].bad_inotify == 0);
    }
    return PASS;
}

/* ---- fork ---- */

/* The parent has waited (so it keeps an idle inotify instance, which a child
 * inherits); a forked child's waits must work, must not take the parent's
 * instance from it, and must leave the parent's waits working. */
static enum outcome waits_work_in_a_forked_child_and_after_it(void) {
    const char *path = tpath("fork-wait.lock");
    CHECK(round_of_waits(path, 2) == 0);
    struct fds parent_before = count_fds();
    pid_t child = fork_or_die();
    if (child == 0) {
        struct fds inherited = count_fds();
        int wrong = round_of_waits(path, 10);
        struct fds after = count_fds();
        /* The parent's instance is the child's copy: kept open (never
         * closed: that number is not the child's to reuse), and at most one
         * of the child's own besides. */
        wrong += after.total > inherited.total + 1;
        wrong += after.bad_inotify != 0;
        _exit(wrong == 0 ? 0 : 1);
    }
    CHECK(wait_status(child) == 0);
    CHECK(round_of_waits(path, 10) == 0);
    struct fds parent_after = count_fds();
    CHECK(parent_after.total == parent_before.total);
    CHECK(parent_after.bad_inotify == 0);
    return PASS;
}

/* A child forked while the parent holds the lock (it has the parent's
 * descriptor: the parent's close makes no event) waits for it: the parent's
 * release still hands it over, by its write event or the fallback poll. */
static enum outcome child_forked_while_held_gets_the_lock_on_release(void) {
    const char *path = tpath("held-fork.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    pid_t child = fork_or_die();
    if (child == 0) {
        hpclock_handle w;
        int32_t rc = timed_acquire(path, 20000, &w);
        if (rc != HPCLOCK_OK) _exit(1);
        hpclock_holder previous;
        if (hpclock_handle_info(w, NULL, &previous) != HPCLOCK_OK || previous.pid != getppid()) _exit(2);
        _exit(hpclock_release(w) == HPCLOCK_OK ? 0 : 3);
    }
    sleep_ms(200);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    double start = now_seconds();
    int status = wait_status(child);
    fprintf(stderr, "    the child had it %.1f ms after the release\n", (now_seconds() - start) * 1000);
    CHECK(status == 0);
    return PASS;
}

/* ---- on a shared filesystem (the rig's FUSE mount) ---- */

static const char *shared_dir(void) {
    static char dir[PATH_MAX];
    const char *split = rig("HPCLOCK_RIG_SPLIT_A");
    if (!split) return NULL;
    snprintf(dir, sizeof dir, "%s/test-wait-%d", split, (int)getpid());
    mkdir(dir, 0755);
    return dir;
}

static enum outcome shared_fs_deadline_is_never_early(void) {
    const char *dir = shared_dir();
    if (!dir) return no_rig();
    hpclock_fs_info info;
    CHECK_RC(hpclock_fs_check(dir, &info), HPCLOCK_OK);
    CHECK(info.scope != HPCLOCK_SCOPE_NODE); /* the gentle schedule, not inotify */
    return deadlines_are_never_early_in(dir);
}

static enum outcome shared_fs_wait_takes_the_released_lock(void) {
    const char *dir = shared_dir();
    if (!dir) return no_rig();
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/handoff.lock", dir);
    pid_t holder = spawn_holder(path, 1500);
    hpclock_handle h;
    double start = now_seconds();
    int32_t rc = timed_acquire(path, 20000, &h);
    double waited = now_seconds() - start;
    int holder_status = wait_status(holder);
    fprintf(stderr, "    released at 1.5 s, acquired at %.3f s\n", waited);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(holder_status == 0);
    CHECK(waited >= 1.4);
    CHECK(waited < 4.0); /* the gentle schedule polls at least every 1.25 s */
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static const struct test tests[] = {
    { "deadline_is_never_early", deadline_is_never_early },
    { "signal_storm_neither_shortens_nor_breaks_a_wait", signal_storm_neither_shortens_nor_breaks_a_wait },
    { "woken_wait_takes_the_released_lock", woken_wait_takes_the_released_lock },
    { "fallback_poll_finds_an_unlock_without_close", fallback_poll_finds_an_unlock_without_close },
    { "waits_leave_no_descriptor_or_watch_behind", waits_leave_no_descriptor_or_watch_behind },
    { "threads_waiting_at_once_leave_nothing_behind", threads_waiting_at_once_leave_nothing_behind },
    { "waits_work_in_a_forked_child_and_after_it", waits_work_in_a_forked_child_and_after_it },
    { "child_forked_while_held_gets_the_lock_on_release", child_forked_while_held_gets_the_lock_on_release },
    /* Only where the rig was asked for (fs_rig.sh sets these, or says what is missing). */
    { "shared_fs_deadline_is_never_early", shared_fs_deadline_is_never_early },
    { "shared_fs_wait_takes_the_released_lock", shared_fs_wait_takes_the_released_lock },
};

int main(int argc, char **argv) {
    (void)argc;
    remember_self(argv[0]);
    size_t count = sizeof tests / sizeof tests[0];
    if (!rig("HPCLOCK_RIG_SPLIT_A") && !getenv("HPCLOCK_RIG_MISSING")) count -= 2; /* not run through the rig */
    return run_tests("wait", tests, count);
}
