/* Every moment of a C program's life (docs/api.md#any-moment-of-a-programs-life), with real
 * processes: atexit handlers, C++ static and thread_local destructors (the
 * program lifecycle_cxx, next to this one), pthread key destructors, children
 * forked while other threads are inside hpclock, a child handed its parent's
 * handle, and exit() while another thread is busy. Anything that could hang
 * runs in a child with a deadline, so a hang is a failure, never a stuck run.
 *
 * Under valgrind (HPCLOCK_UNDER_VALGRIND=1) the loops run 1/20 of their
 * iterations (the fresh processes of the first-call test, which run outside
 * valgrind, a third). */
#include "harness.h"

#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>

/* ---- helpers ---- */

static int under_valgrind(void) {
    const char *v = getenv("HPCLOCK_UNDER_VALGRIND");
    return v && strcmp(v, "1") == 0;
}

static int scaled(int n) {
    if (!under_valgrind()) return n;
    return n / 20 > 0 ? n / 20 : 1;
}

enum { TIMED_OUT = -2 };

/* Exit status of a child as wait_status gives it, or TIMED_OUT after killing
 * a child that did not end within `seconds`. */
static int wait_within(pid_t pid, double seconds) {
    int pidfd = -1;
#ifdef SYS_pidfd_open
    /* poll(2) on a pidfd wakes at once when the child ends; valgrind 3.19 does
     * not know pidfd_open (and says so on every call), so it gets polling */
    if (!under_valgrind()) pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    double until = now_seconds() + seconds;
    int result;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        if (r < 0 && errno != EINTR) {
            result = -1;
            break;
        }
        double left = until - now_seconds();
        if (left <= 0) {
            fprintf(stderr, "    process %d did not end within %.0f s: killed\n", (int)pid, seconds);
            kill(pid, SIGKILL);
            wait_status(pid);
            result = TIMED_OUT;
            break;
        }
        if (pidfd >= 0) {
            struct pollfd p = { pidfd, POLLIN, 0 };
            poll(&p, 1, (int)(left * 1000) + 1);
        } else {
            sleep_ms(1);
        }
    }
    if (pidfd >= 0) close(pidfd);
    return result;
}

/* "exit 42", "killed by SIGABRT", "hung (killed after the deadline)". */
static const char *describe_status(int status) {
    static char text[128];
    if (status == TIMED_OUT) snprintf(text, sizeof text, "hung (killed after the deadline)");
    else if (status < 0) snprintf(text, sizeof text, "could not be waited for");
    else if (status >= 128) snprintf(text, sizeof text, "killed by signal %d (%s)", status - 128, strsignal(status - 128));
    else snprintf(text, sizeof text, "exit %d", status);
    return text;
}

/* What a child saw, for the parent to check and print. */
struct report {
    int step;           /* the step that failed (numbered from 1), 0 if none reported */
    int32_t rc;         /* the status that step got */
    int finished;       /* all steps passed */
    char error[512];    /* hpclock_last_error() at the failing step */
};

static void report_failure(struct report *r, int step, int32_t rc) {
    r->step = step;
    r->rc = rc;
    const char *e = hpclock_last_error();
    snprintf(r->error, sizeof r->error, "%s", e ? e : "(NULL)");
}

static void print_report(const char *who, const struct report *r) {
    if (r->finished) return;
    if (r->step == 0) fprintf(stderr, "    %s did not finish\n", who);
    else fprintf(stderr, "    %s failed at step %d: status %s, last error \"%s\"\n", who, r->step,
                 hpclock_status_name(r->rc), r->error);
}

static int32_t state_of(const char *path) {
    hpclock_holder info;
    int32_t rc = hpclock_holder_info(path, &info);
    return rc == HPCLOCK_OK ? info.state : 100 + rc;
}

/* ---- atexit ---- */

static hpclock_handle atexit_handle;
static struct report *atexit_report;

static void complete_at_exit(void) {
    int32_t rc = hpclock_complete(atexit_handle);
    if (rc != HPCLOCK_OK) {
        report_failure(atexit_report, 1, rc);
        _exit(50);
    }
    atexit_report->rc = rc;
    atexit_report->finished = 1;
    /* returning lets exit() go on with the status the program chose */
}

static enum outcome atexit_handler_completes_held_lock_and_exit_status_stands(void) {
    const char *path = tpath("atexit-complete.lock");
    atexit_report = shared_alloc(sizeof *atexit_report);
    pid_t child = fork_or_die();
    if (child == 0) {
        if (hpclock_try_acquire(path, &atexit_handle) != HPCLOCK_OK) _exit(40);
        if (atexit(complete_at_exit) != 0) _exit(41);
        exit(42);
    }
    int status = wait_within(child, 30);
    if (status != 42) fprintf(stderr, "    the child that completes in atexit: %s (expected exit 42)\n",
                              describe_status(status));
    print_report("the atexit handler", atexit_report);
    CHECK(status == 42);
    CHECK(atexit_report->finished);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_DONE);
    CHECK(info.pid == child);
    hpclock_handle h = 7;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_DONE);
    CHECK(h == 0);
    CHECK(try_in_child(path) == HPCLOCK_DONE);
    return PASS;
}

static char atexit_dir[PATH_MAX];

/* Every function, from an atexit handler, with its answer checked: the step
 * that fails is the exit status (60 + step). */
static void every_function_at_exit(void) {
    struct report *r = atexit_report;
    char other[PATH_MAX + 32], third[PATH_MAX + 32], missing[PATH_MAX + 32];
    snprintf(other, sizeof other, "%s/other.lock", atexit_dir);
    snprintf(third, sizeof third, "%s/third.lock", atexit_dir);
    snprintf(missing, sizeof missing, "%s/no-such-dir/x.lock", atexit_dir);
    int step = 0;
#define STEP(cond, rc)                           \
    do {                                         \
        step++;                                  \
        if (!(cond)) {                           \
            report_failure(r, step, (rc));       \
            _exit(60 + step);                    \
        }                                        \
    } while (0)

    /* the lock main took, released here */
    int32_t rc = hpclock_release(atexit_handle);
    STEP(rc == HPCLOCK_OK, rc);                                                   /* 1 */
    const char *e = hpclock_last_error();
    STEP(e != NULL && e[0] == '\0', rc);                                          /* 2 */
    hpclock_handle h2 = 0;
    rc = hpclock_try_acquire(other, &h2);
    STEP(rc == HPCLOCK_OK && h2 != 0, rc);                                        /* 3 */
    hpclock_holder info;
    rc = hpclock_holder_info(other, &info);
    STEP(rc == HPCLOCK_OK && info.state == HPCLOCK_STATE_HELD && info.pid == getpid(), rc); /* 4 */
    hpclock_holder mine, previous;
    rc = hpclock_handle_info(h2, &mine, &previous);
    STEP(rc == HPCLOCK_OK && mine.generation == 1 && previous.state == HPCLOCK_STATE_FREE, rc); /* 5 */
    hpclock_handle h3 = 9;
    rc = hpclock_try_acquire(other, &h3);
    STEP(rc == HPCLOCK_BUSY && h3 == 0, rc);                                      /* 6 */
    rc = hpclock_release(h2);
    STEP(rc == HPCLOCK_OK, rc);                                                   /* 7 */
    rc = hpclock_release(h2);
    e = hpclock_last_error();
    STEP(rc == HPCLOCK_E_INVALID && e != NULL && e[0] != '\0', rc);               /* 8 */
    STEP(hpclock_last_errno() == 0, rc);                                          /* 9 */
    STEP(strcmp(hpclock_status_name(HPCLOCK_BUSY), "HPCLOCK_BUSY") == 0, 0);      /* 10 */
    STEP(strcmp(hpclock_status_name(12345), "HPCLOCK_UNKNOWN_STATUS") == 0, 0);   /* 11 */
    const char *v = hpclock_version();
    STEP(v != NULL && v[0] >= '0' && v[0] <= '9', 0);                             /* 12 */
    STEP(hpclock_mpi_rank() >= -1, 0);                                            /* 13 */
    hpclock_fs_info fs;
    rc = hpclock_fs_check(other, &fs);
    STEP(rc == HPCLOCK_OK && fs.fs_type[0] != '\0', rc);                          /* 14 */
    rc = hpclock_holder_info(missing, &info);
    e = hpclock_last_error();
    STEP(rc == HPCLOCK_E_OS && hpclock_last_errno() == ENOENT && e != NULL && strstr(e, "no-such-dir") != NULL, rc); /* 15 */
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.label = "from atexit";
    hpclock_handle h4 = 0;
    rc = hpclock_acquire(third, &opts, &h4);
    STEP(rc == HPCLOCK_OK, rc);                                                   /* 16 */
    rc = hpclock_complete(h4);
    STEP(rc == HPCLOCK_OK, rc);                                                   /* 17 */
    rc = hpclock_try_acquire(third, &h3);
    STEP(rc == HPCLOCK_DONE && h3 == 0, rc);                                      /* 18 */
    rc = hpclock_holder_info(other, &info);
    STEP(rc == HPCLOCK_OK && info.state == HPCLOCK_STATE_FREE && info.generation == 1, rc); /* 19 */
#undef STEP
    r->finished = 1;
}

static enum outcome atexit_handler_can_call_every_function(void) {
    const char *path = tpath("atexit-main.lock");
    snprintf(atexit_dir, sizeof atexit_dir, "%s", test_dir);
    atexit_report = shared_alloc(sizeof *atexit_report);
    pid_t child = fork_or_die();
    if (child == 0) {
        if (hpclock_try_acquire(path, &atexit_handle) != HPCLOCK_OK) _exit(40);
        if (atexit(every_function_at_exit) != 0) _exit(41);
        exit(42);
    }
    int status = wait_within(child, 30);
    if (status != 42) fprintf(stderr, "    the child whose atexit handler calls every function: %s (expected exit 42)\n",
                              describe_status(status));
    print_report("the atexit handler", atexit_report);
    CHECK(status == 42);
    CHECK(atexit_report->finished);
    CHECK(state_of(path) == HPCLOCK_STATE_FREE);
    CHECK(state_of(tpath("third.lock")) == HPCLOCK_STATE_DONE);
    CHECK(try_in_child(path) == HPCLOCK_OK);
    CHECK(try_in_child(tpath("other.lock")) == HPCLOCK_OK);
    return PASS;
}

/* ---- C++ destructors: the program lifecycle_cxx ---- */

static int run_cxx(const char *mode, const char *path) {
    char dir[PATH_MAX], program[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s", self_exe);
    snprintf(program, sizeof program, "%s/lifecycle_cxx", dirname(dir));
    if (access(program, X_OK) != 0) {
        fprintf(stderr, "    %s: %s (it is built with this test)\n", program, strerror(errno));
        return -1;
    }
    pid_t child = fork_or_die();
    if (child == 0) {
        execl(program, "lifecycle_cxx", mode, path, (char *)NULL);
        _exit(99);
    }
    int status = wait_within(child, 30);
    if (status != 0) fprintf(stderr, "    lifecycle_cxx %s: %s\n", mode, describe_status(status));
    return status;
}

static enum outcome cxx_static_destructor_releases_the_lock(void) {
    const char *path = tpath("cxx-static.lock");
    CHECK(run_cxx("static-release", path) == 0);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_FREE);
    CHECK(info.generation == 1);
    CHECK(strcmp(info.label, "lifecycle_cxx guard") == 0);
    CHECK(try_in_child(path) == HPCLOCK_OK);
    return PASS;
}

static enum outcome cxx_static_destructor_completes_the_work(void) {
    const char *path = tpath("cxx-complete.lock");
    CHECK(run_cxx("static-complete", path) == 0);
    CHECK(state_of(path) == HPCLOCK_STATE_DONE);
    CHECK(try_in_child(path) == HPCLOCK_DONE);
    return PASS;
}

static enum outcome cxx_function_local_static_destructor_releases_the_lock(void) {
    const char *path = tpath("cxx-local-static.lock");
    CHECK(run_cxx("local-static", path) == 0);
    CHECK(state_of(path) == HPCLOCK_STATE_FREE);
    CHECK(try_in_child(path) == HPCLOCK_OK);
    return PASS;
}

static enum outcome cxx_thread_local_destructors_release_the_lock(void) {
    const char *in_thread = tpath("cxx-thread-local.lock");
    const char *in_main = tpath("cxx-main-thread-local.lock");
    int thread_status = run_cxx("thread-local", in_thread);
    int main_status = run_cxx("main-thread-local", in_main);
    CHECK(thread_status == 0);
    CHECK(main_status == 0);
    CHECK(state_of(in_thread) == HPCLOCK_STATE_FREE);
    CHECK(state_of(in_main) == HPCLOCK_STATE_FREE);
    CHECK(try_in_child(in_thread) == HPCLOCK_OK);
    CHECK(try_in_child(in_main) == HPCLOCK_OK);
    return PASS;
}

/* ---- pthread key destructors ---- */

struct key_case {
    hpclock_handle handle;
    int complete;
    const char *path;
    struct report *report;
};

/* Runs when the thread that set the key ends, after the thread's own
 * thread-locals (the library's included) are gone. */
static void finish_in_key_destructor(void *p) {
    struct key_case *k = p;
    struct report *r = k->report;
    int32_t rc = k->complete ? hpclock_complete(k->handle) : hpclock_release(k->handle);
    if (rc != HPCLOCK_OK) {
        report_failure(r, 1, rc);
        return;
    }
    const char *e = hpclock_last_error();
    if (e == NULL || e[0] != '\0') {
        report_failure(r, 2, rc);
        return;
    }
    rc = hpclock_release(k->handle);
    e = hpclock_last_error();
    if (rc != HPCLOCK_E_INVALID || e == NULL || e[0] == '\0') {
        report_failure(r, 3, rc);
        return;
    }
    hpclock_holder info;
    rc = hpclock_holder_info(k->path, &info);
    if (rc != HPCLOCK_OK || info.state != (k->complete ? HPCLOCK_STATE_DONE : HPCLOCK_STATE_FREE)) {
        report_failure(r, 4, rc);
        return;
    }
    r->finished = 1;
}

static pthread_key_t finish_key;

static void *acquire_and_set_key(void *p) {
    struct key_case *k = p;
    int32_t rc = hpclock_try_acquire(k->path, &k->handle);
    if (rc != HPCLOCK_OK) {
        report_failure(k->report, 9, rc);
        return NULL;
    }
    pthread_setspecific(finish_key, k);
    return NULL; /* the key's destructor lets go of the lock */
}

static enum outcome key_destructor_case(const char *path, int complete) {
    struct report *report = shared_alloc(sizeof *report);
    pid_t child = fork_or_die();
    if (child == 0) {
        static struct key_case k;
        k = (struct key_case){ 0, complete, path, report };
        if (pthread_key_create(&finish_key, finish_in_key_destructor) != 0) _exit(40);
        pthread_t thread;
        if (pthread_create(&thread, NULL, acquire_and_set_key, &k) != 0) _exit(41);
        pthread_join(thread, NULL);
        _exit(report->finished ? 0 : 1);
    }
    int status = wait_within(child, 30);
    if (status != 0) fprintf(stderr, "    the child whose key destructor %s: %s\n",
                             complete ? "completes" : "releases", describe_status(status));
    print_report("the key destructor", report);
    CHECK(status == 0);
    CHECK(report->finished);
    CHECK(state_of(path) == (complete ? HPCLOCK_STATE_DONE : HPCLOCK_STATE_FREE));
    CHECK(try_in_child(path) == (complete ? HPCLOCK_DONE : HPCLOCK_OK));
    return PASS;
}

static enum outcome pthread_key_destructor_releases_and_reads_last_error(void) {
    return key_destructor_case(tpath("key-release.lock"), 0);
}

static enum outcome pthread_key_destructor_completes_the_work(void) {
    return key_destructor_case(tpath("key-complete.lock"), 1);
}

/* ---- fork while other threads are inside hpclock ---- */

struct busy_thread {
    char path[PATH_MAX];
    atomic_int *stop;
    int first_calls_only; /* one acquire, release and holder_info, then end */
    atomic_long iterations;
    atomic_long wrong;    /* answers that were not the expected ones */
    int32_t first_wrong;  /* the first wrong status */
};

static void wrong_answer(struct busy_thread *t, int32_t rc) {
    if (atomic_fetch_add(&t->wrong, 1) == 0) t->first_wrong = rc;
}

/* Always inside an hpclock call: acquire, many handle_info (short calls on the
 * handle table), release, a release of the released handle, holder_info. */
static void *stay_inside_hpclock(void *p) {
    struct busy_thread *t = p;
    while (!atomic_load(t->stop)) {
        hpclock_handle h;
        int32_t rc = hpclock_try_acquire(t->path, &h);
        if (rc != HPCLOCK_OK) {
            wrong_answer(t, rc);
            continue;
        }
        hpclock_holder mine;
        for (int i = 0; i < (t->first_calls_only ? 0 : 64); i++) {
            rc = hpclock_handle_info(h, &mine, NULL);
            if (rc != HPCLOCK_OK) wrong_answer(t, rc);
        }
        if ((rc = hpclock_release(h)) != HPCLOCK_OK) wrong_answer(t, rc);
        if ((rc = hpclock_release(h)) != HPCLOCK_E_INVALID) wrong_answer(t, rc);
        hpclock_holder info;
        if ((rc = hpclock_holder_info(t->path, &info)) != HPCLOCK_OK) wrong_answer(t, rc);
        atomic_fetch_add(&t->iterations, 1);
        if (t->first_calls_only) break;
    }
    return NULL;
}

/* A forked child: one acquire and release of a fresh path. Exit 0 when both
 * answered OK; SIGALRM (exit 142) when it hung.
 *
 * Under valgrind, a child forked while another thread held memory only on its
 * stack (a path being converted, say) is reported as leaking it, since that
 * thread does not exist in the child: there a child that succeeded ends by
 * exec'ing true(1), which valgrind does not leak-check. */
static _Noreturn void forked_child_acquires(const char *dir, long n) {
    alarm(10);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/child-%ld.lock", dir, n);
    hpclock_handle h;
    int32_t rc = hpclock_try_acquire(path, &h);
    if (rc != HPCLOCK_OK) _exit(10);
    rc = hpclock_release(h);
    unlink(path);
    if (rc != HPCLOCK_OK) _exit(11);
    if (under_valgrind()) {
        execl("/bin/true", "true", (char *)NULL);
        execlp("true", "true", (char *)NULL);
        _exit(12);
    }
    _exit(0);
}

enum { BUSY_THREADS = 2, STORM_FORKS = 20000 };

/* The storm stops after this long even if not all its forks are done, so a
 * loaded machine cannot make it drag on; the old library hung within the
 * first thousand forks, most often within a hundred. */
#define STORM_BUDGET_SECONDS 12.0

struct storm {
    int forks, forked;
    int bad_child, bad_status; /* the first child that failed, and how */
    double bad_after;          /* seconds into the storm it was forked */
    long iterations, wrong;    /* the busy threads' */
    int finished;
};

/* In a process of its own, so that a hang in fork or in the busy threads
 * shows as a failure too: two threads stay inside hpclock calls while this
 * one forks children that acquire and release a lock of their own. The busy
 * threads run at SCHED_IDLE: they fill every moment the forks leave free (on
 * two CPUs they run alongside each fork, and against each other, which keeps
 * the handle table busy), yet never slow the forking thread and its children
 * down. */
static void storm(struct storm *result) {
    atomic_int stop = 0;
    struct busy_thread *threads = calloc(BUSY_THREADS, sizeof *threads);
    pthread_t ids[BUSY_THREADS];
    for (int i = 0; i < BUSY_THREADS; i++) {
        char name[32];
        snprintf(name, sizeof name, "busy-%d.lock", i);
        snprintf(threads[i].path, sizeof threads[i].path, "%s", tpath(name));
        threads[i].stop = &stop;
        if (pthread_create(&ids[i], NULL, stay_inside_hpclock, &threads[i]) != 0) _exit(40);
        struct sched_param idle = { 0 };
        pthread_setschedparam(ids[i], SCHED_IDLE, &idle);
    }
    result->forks = scaled(STORM_FORKS);
    result->bad_child = -1;
    double start = now_seconds();
    for (int n = 0; n < result->forks && now_seconds() - start < STORM_BUDGET_SECONDS; n++) {
        double forked_at = now_seconds();
        result->forked++;
        pid_t child = fork_or_die();
        if (child == 0) forked_child_acquires(test_dir, n);
        int status = wait_within(child, 15);
        if (status != 0) {
            result->bad_child = n;
            result->bad_status = status;
            result->bad_after = forked_at - start;
            break;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < BUSY_THREADS; i++) {
        pthread_join(ids[i], NULL);
        result->iterations += atomic_load(&threads[i].iterations);
        result->wrong += atomic_load(&threads[i].wrong);
        if (threads[i].wrong) fprintf(stderr, "    busy thread %d: %ld wrong answers, the first %s\n", i,
                                      (long)threads[i].wrong, hpclock_status_name(threads[i].first_wrong));
    }
    free(threads);
    result->finished = 1;
}

static enum outcome fork_storm_children_never_hang_while_threads_are_inside_hpclock(void) {
    struct storm *result = shared_alloc(sizeof *result);
    pid_t storming = fork_or_die();
    if (storming == 0) {
        storm(result);
        _exit(0);
    }
    int status = wait_within(storming, STORM_BUDGET_SECONDS + 60);
    if (status != 0) fprintf(stderr, "    the storming process: %s\n", describe_status(status));
    if (result->bad_child >= 0) {
        fprintf(stderr, "    fork %d of %d (%.2f s into the storm): the child %s%s\n", result->bad_child + 1,
                result->forks, result->bad_after, describe_status(result->bad_status),
                result->bad_status == 128 + SIGALRM ? ": it hung inside hpclock" : "");
    } else if (result->forked < result->forks) {
        fprintf(stderr, "    (the storm stopped at its %.0f s budget, after %d of %d forks)\n", STORM_BUDGET_SECONDS,
                result->forked, result->forks);
    }
    CHECK(status == 0);
    CHECK(result->finished);
    CHECK(result->bad_child < 0);
    CHECK(result->wrong == 0);
    CHECK(result->iterations > 0); /* the threads were really busy meanwhile */
    return PASS;
}

/* Run as `test_lifecycle --fork-at-first-calls DIR`: a fresh process starts
 * threads whose first-ever hpclock call initialises the library, and forks
 * children at once, while those calls are under way. Exit 0 when every child
 * answered OK; 1 when one hung; 2 when one answered wrong; 3 on a thread's
 * wrong answer. */
enum { FIRST_CALL_CHILDREN = 6 };

static int fork_at_first_calls(const char *dir) {
    snprintf(test_dir, sizeof test_dir, "%s", dir);
    atomic_int stop = 0;
    static struct busy_thread threads[BUSY_THREADS];
    pthread_t ids[BUSY_THREADS];
    for (int i = 0; i < BUSY_THREADS; i++) {
        snprintf(threads[i].path, sizeof threads[i].path, "%s/first-%d-%d.lock", dir, (int)getpid(), i);
        threads[i].stop = &stop;
        threads[i].first_calls_only = 1;
        if (pthread_create(&ids[i], NULL, stay_inside_hpclock, &threads[i]) != 0) return 4;
    }
    pid_t children[FIRST_CALL_CHILDREN];
    for (int n = 0; n < FIRST_CALL_CHILDREN; n++) {
        children[n] = fork();
        if (children[n] < 0) return 4;
        if (children[n] == 0) forked_child_acquires(dir, (long)getpid() * 100 + n);
    }
    int result = 0;
    for (int n = 0; n < FIRST_CALL_CHILDREN; n++) {
        int status = wait_within(children[n], 15);
        if (status != 0) {
            fprintf(stderr, "    child %d of a fresh process: %s\n", n + 1, describe_status(status));
            result = status == 128 + SIGALRM || status == TIMED_OUT ? 1 : 2;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < BUSY_THREADS; i++) {
        pthread_join(ids[i], NULL);
        unlink(threads[i].path);
        if (threads[i].wrong && !result) result = 3;
    }
    return result;
}

enum { FRESH_PROCESSES = 300 };

static enum outcome fork_during_first_ever_calls_of_other_threads_never_hangs(void) {
    /* The fresh processes run outside valgrind (it does not follow exec), so
     * valgrind only slows down the forks that start them: a third of them there. */
    int processes = under_valgrind() ? FRESH_PROCESSES / 3 : FRESH_PROCESSES;
    int hung = 0, wrong = 0;
    for (int p = 0; p < processes; p++) {
        pid_t child = fork_or_die();
        if (child == 0) {
            execl(self_exe, "test_lifecycle", "--fork-at-first-calls", test_dir, (char *)NULL);
            _exit(98);
        }
        int status = wait_within(child, 30);
        if (status == 0) continue;
        if (status == 1) hung++;
        else wrong++;
        fprintf(stderr, "    fresh process %d of %d: %s\n", p + 1, processes,
                status == 1 ? "a child hung" : describe_status(status));
        break; /* one is enough: each hang costs the children's 10 s alarm */
    }
    CHECK(hung == 0);
    CHECK(wrong == 0);
    return PASS;
}

/* ---- a forked child and its parent's handle ---- */

/* A lock file's bytes, to show that a child wrote nothing. */
struct snapshot {
    long size;
    char bytes[8192];
};

static int take_snapshot(const char *path, struct snapshot *s) {
    s->size = read_bytes(path, s->bytes, sizeof s->bytes);
    return s->size > 0;
}

/* After a child used its copy of the parent's handle: the file holds what it
 * held before, the parent still holds the kernel lock, and the record still
 * names the parent as a running holder. */
static enum outcome parent_still_holds(const char *path, const struct snapshot *before) {
    struct snapshot after;
    CHECK(take_snapshot(path, &after));
    CHECK(after.size == before->size && memcmp(after.bytes, before->bytes, (size_t)before->size) == 0);
    CHECK(try_in_child(path) == HPCLOCK_BUSY);
    hpclock_holder info;
    CHECK_RC(hpclock_holder_info(path, &info), HPCLOCK_OK);
    CHECK(info.state == HPCLOCK_STATE_HELD);
    CHECK(info.pid == getpid());
    CHECK(info.alive == 1);
    return PASS;
}

static enum outcome complete_in_forked_child_is_invalid_and_writes_nothing(void) {
    const char *path = tpath("child-complete.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    struct snapshot before;
    CHECK(take_snapshot(path, &before));
    struct report *report = shared_alloc(sizeof *report);
    pid_t child = fork_or_die();
    if (child == 0) {
        int32_t rc = hpclock_complete(h); /* the child holds nothing to complete */
        report_failure(report, 1, rc);
        report->finished = 1;
        _exit(0);
    }
    int status = wait_within(child, 30);
    CHECK(status == 0);
    CHECK(report->finished);
    if (report->rc != HPCLOCK_E_INVALID)
        fprintf(stderr, "    hpclock_complete in the child answered %s (last error \"%s\")\n",
                hpclock_status_name(report->rc), report->error);
    CHECK(report->rc == HPCLOCK_E_INVALID);
    CHECK(report->error[0] != '\0');
    CHECK(parent_still_holds(path, &before) == PASS);
    CHECK_RC(hpclock_complete(h), HPCLOCK_OK); /* the parent's own handle completes */
    CHECK(state_of(path) == HPCLOCK_STATE_DONE);
    CHECK(try_in_child(path) == HPCLOCK_DONE);
    return PASS;
}

static enum outcome release_in_forked_child_answers_ok_and_leaves_parent_holding(void) {
    const char *path = tpath("child-release.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    struct snapshot before;
    CHECK(take_snapshot(path, &before));
    struct report *report = shared_alloc(sizeof *report);
    pid_t child = fork_or_die();
    if (child == 0) {
        int32_t rc = hpclock_release(h);
        if (rc != HPCLOCK_OK) { report_failure(report, 1, rc); _exit(1); }
        hpclock_handle h2 = 5;
        rc = hpclock_try_acquire(path, &h2); /* its copy is closed: the parent's lock excludes it */
        if (rc != HPCLOCK_BUSY || h2 != 0) { report_failure(report, 2, rc); _exit(1); }
        rc = hpclock_release(h);
        if (rc != HPCLOCK_E_INVALID) { report_failure(report, 3, rc); _exit(1); }
        report->finished = 1;
        _exit(0);
    }
    int status = wait_within(child, 30);
    print_report("the child", report);
    CHECK(status == 0);
    CHECK(report->finished);
    CHECK(parent_still_holds(path, &before) == PASS);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(state_of(path) == HPCLOCK_STATE_FREE);
    CHECK(try_in_child(path) == HPCLOCK_OK);
    return PASS;
}

/* A child made by a raw clone(2), as a runtime or a seccomp sandbox may make
 * one: no pthread_atfork handler runs, so nothing in user space tells the
 * library that it is in a new process. It must still know it is not the
 * acquirer (hpclock caches its pid where the kernel wipes it in every child):
 * completing is refused, releasing only closes its copy, and a lock it takes
 * itself carries its own pid. */
static enum outcome a_child_made_by_raw_clone_never_acts_as_its_parent(void) {
    const char *path = tpath("raw-clone.lock");
    const char *own = tpath("raw-clone-own.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    struct snapshot before;
    CHECK(take_snapshot(path, &before));
    struct report *report = shared_alloc(sizeof *report);
    pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
    CHECK(child >= 0);
    if (child == 0) {
        int32_t rc = hpclock_complete(h);
        if (rc != HPCLOCK_E_INVALID) { report_failure(report, 1, rc); _exit(1); }
        rc = hpclock_release(h);
        if (rc != HPCLOCK_OK) { report_failure(report, 2, rc); _exit(1); }
        hpclock_handle mine;
        rc = hpclock_try_acquire(own, &mine);
        if (rc != HPCLOCK_OK) { report_failure(report, 3, rc); _exit(1); }
        hpclock_holder info;
        rc = hpclock_holder_info(own, &info);
        if (rc != HPCLOCK_OK || info.pid != (int64_t)syscall(SYS_getpid)) { report_failure(report, 4, rc); _exit(1); }
        rc = hpclock_release(mine);
        if (rc != HPCLOCK_OK) { report_failure(report, 5, rc); _exit(1); }
        report->finished = 1;
        _exit(0);
    }
    int status = wait_within(child, 30);
    print_report("the cloned child", report);
    CHECK(status == 0);
    CHECK(report->finished);
    CHECK(parent_still_holds(path, &before) == PASS);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(try_in_child(path) == HPCLOCK_OK);
    return PASS;
}

/* ---- exit() while another thread is inside hpclock ---- */

struct exit_race {
    atomic_long iterations;
    atomic_long wrong;
};

struct exit_thread {
    char path[PATH_MAX];
    struct exit_race *race;
};

static void *acquire_release_until_exit(void *p) {
    struct exit_thread *t = p;
    for (;;) {
        hpclock_handle h;
        int32_t rc = hpclock_try_acquire(t->path, &h);
        if (rc != HPCLOCK_OK) {
            atomic_fetch_add(&t->race->wrong, 1);
            continue;
        }
        hpclock_holder info;
        if (hpclock_handle_info(h, &info, NULL) != HPCLOCK_OK || info.pid != getpid())
            atomic_fetch_add(&t->race->wrong, 1);
        if (hpclock_release(h) != HPCLOCK_OK) atomic_fetch_add(&t->race->wrong, 1);
        if (hpclock_holder_info(t->path, &info) != HPCLOCK_OK) atomic_fetch_add(&t->race->wrong, 1);
        atomic_fetch_add(&t->race->iterations, 1);
    }
    return NULL;
}

static hpclock_handle exit_main_handle;

static void release_main_lock_at_exit(void) {
    int32_t rc = hpclock_release(exit_main_handle);
    const char *e = hpclock_last_error();
    if (rc != HPCLOCK_OK) _exit(50);
    if (e == NULL || e[0] != '\0') _exit(51);
}

enum { EXIT_ROUNDS = 200 };

/* exit(0) from main while two threads are inside hpclock, and an atexit
 * handler releases main's lock meanwhile: the process ends with status 0, the
 * handler's release works, and the threads never get a wrong answer. */
static enum outcome exit_while_other_threads_are_inside_hpclock_exits_with_its_status(void) {
    struct exit_race *race = shared_alloc(sizeof *race);
    int rounds = scaled(EXIT_ROUNDS);
    for (int round = 0; round < rounds; round++) {
        atomic_store(&race->iterations, 0);
        pid_t child = fork_or_die();
        if (child == 0) {
            static struct exit_thread threads[2];
            pthread_t id;
            for (int i = 0; i < 2; i++) {
                snprintf(threads[i].path, sizeof threads[i].path, "%s/exit-%d.lock", test_dir, i);
                threads[i].race = race;
                if (pthread_create(&id, NULL, acquire_release_until_exit, &threads[i]) != 0) _exit(40);
            }
            /* main holds a lock of its own, which an atexit handler releases
             * while the threads go on */
            if (hpclock_try_acquire(tpath("exit-main.lock"), &exit_main_handle) != HPCLOCK_OK) _exit(41);
            if (atexit(release_main_lock_at_exit) != 0) _exit(42);
            double until = now_seconds() + 10;
            while (atomic_load(&race->iterations) < 1 + round % 8 && now_seconds() < until) sched_yield();
            exit(0);
        }
        int status = wait_within(child, 20);
        if (status != 0) {
            fprintf(stderr, "    round %d: the process that called exit(0): %s%s\n", round + 1, describe_status(status),
                    status == 50 || status == 51 ? " (its atexit handler's release failed)" : "");
            return FAIL;
        }
        CHECK(atomic_load(&race->iterations) > 0);
        CHECK(state_of(tpath("exit-main.lock")) == HPCLOCK_STATE_FREE); /* the handler released it */
    }
    CHECK(atomic_load(&race->wrong) == 0);
    return PASS;
}

static const struct test tests[] = {
    { "atexit_handler_completes_held_lock_and_exit_status_stands",
      atexit_handler_completes_held_lock_and_exit_status_stands },
    { "atexit_handler_can_call_every_function", atexit_handler_can_call_every_function },
    { "cxx_static_destructor_releases_the_lock", cxx_static_destructor_releases_the_lock },
    { "cxx_static_destructor_completes_the_work", cxx_static_destructor_completes_the_work },
    { "cxx_function_local_static_destructor_releases_the_lock", cxx_function_local_static_destructor_releases_the_lock },
    { "cxx_thread_local_destructors_release_the_lock", cxx_thread_local_destructors_release_the_lock },
    { "pthread_key_destructor_releases_and_reads_last_error", pthread_key_destructor_releases_and_reads_last_error },
    { "pthread_key_destructor_completes_the_work", pthread_key_destructor_completes_the_work },
    { "fork_storm_children_never_hang_while_threads_are_inside_hpclock",
      fork_storm_children_never_hang_while_threads_are_inside_hpclock },
    { "fork_during_first_ever_calls_of_other_threads_never_hangs",
      fork_during_first_ever_calls_of_other_threads_never_hangs },
    { "complete_in_forked_child_is_invalid_and_writes_nothing", complete_in_forked_child_is_invalid_and_writes_nothing },
    { "release_in_forked_child_answers_ok_and_leaves_parent_holding",
      release_in_forked_child_answers_ok_and_leaves_parent_holding },
    { "a_child_made_by_raw_clone_never_acts_as_its_parent", a_child_made_by_raw_clone_never_acts_as_its_parent },
    { "exit_while_other_threads_are_inside_hpclock_exits_with_its_status",
      exit_while_other_threads_are_inside_hpclock_exits_with_its_status },
};

int main(int argc, char **argv) {
    remember_self(argv[0]);
    if (argc == 3 && strcmp(argv[1], "--fork-at-first-calls") == 0) return fork_at_first_calls(argv[2]);
    return run_tests("lifecycle", tests, sizeof tests / sizeof tests[0]);
}
