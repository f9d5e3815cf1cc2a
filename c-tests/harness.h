/* A small test harness for the C tests: checks that report where and why,
 * a runner that prints each test with PASS/FAIL/SKIPPED and ends with the line
 * "N passed, M failed", and helpers for real processes (fork, exec, pipes). */
#ifndef HPCLOCK_TEST_HARNESS_H
#define HPCLOCK_TEST_HARNESS_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hpclock.h"

extern char **environ;

enum outcome { PASS, FAIL, SKIP };

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "    %s:%d: check failed: %s\n    last error: \"%s\"\n",   \
                    __FILE__, __LINE__, #cond, hpclock_last_error());                   \
            return FAIL;                                                                \
        }                                                                               \
    } while (0)

#define CHECK_RC(rc, expected)                                                          \
    do {                                                                                \
        int32_t rc_ = (rc);                                                             \
        if (rc_ != (expected)) {                                                        \
            fprintf(stderr, "    %s:%d: %s returned %s, expected %s\n    last error: \"%s\"\n", \
                    __FILE__, __LINE__, #rc, hpclock_status_name(rc_),                  \
                    hpclock_status_name(expected), hpclock_last_error());               \
            return FAIL;                                                                \
        }                                                                               \
    } while (0)

struct test {
    const char *name;
    enum outcome (*run)(void);
};

/* ---- the test directory: one fresh directory per test ---- */

static char test_root[1024];
static char test_dir[2048];

static inline int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st; (void)type; (void)ftw;
    return remove(path);
}

static inline void make_test_dir(const char *name) {
    snprintf(test_dir, sizeof test_dir, "%s/%s", test_root, name);
    if (mkdir(test_dir, 0755) != 0 && errno != EEXIST) {
        perror(test_dir);
        exit(2);
    }
}

/* A path inside this test's directory; each call returns a new buffer. */
static inline const char *tpath(const char *file) {
    static char buffers[8][PATH_MAX];
    static int next;
    char *p = buffers[next++ % 8];
    snprintf(p, PATH_MAX, "%s/%s", test_dir, file);
    return p;
}

/* ---- this program, to run again as a fresh process ---- */

/* Its path, from argv[0]: /proc/self/exe would name valgrind when the tests
 * run under it. */
static char self_exe[PATH_MAX];

static inline void remember_self(const char *argv0) {
    if (!realpath(argv0, self_exe)) snprintf(self_exe, sizeof self_exe, "%s", argv0);
}

/* ---- time ---- */

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* ---- processes ---- */

/* Memory shared with forked children. */
static inline void *shared_alloc(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, size);
    return p;
}

static inline pid_t fork_or_die(void) {
    fflush(NULL); /* no stdio buffer printed twice */
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    return pid;
}

/* Exit status of a child, or 128 + signal if a signal ended it. */
static inline int wait_status(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static inline void kill_and_reap(pid_t pid) {
    kill(pid, SIGKILL);
    wait_status(pid);
}

/* A gate: children block in gate_wait() until the parent calls gate_open(),
 * then all go at once (they see end-of-file together). */
struct gate { int fd[2]; };

static inline void gate_init(struct gate *g) {
    if (pipe(g->fd) != 0) {
        perror("pipe");
        exit(2);
    }
}

static inline void gate_wait(struct gate *g) { /* in the child */
    char c;
    close(g->fd[1]);
    while (read(g->fd[0], &c, 1) < 0 && errno == EINTR) {}
    close(g->fd[0]);
}

static inline void gate_open(struct gate *g) { /* in the parent, after forking */
    close(g->fd[0]);
    close(g->fd[1]);
}

/* A one-byte signal from a child to the parent: "I am ready". */
static inline void ready_send(int fd[2]) {
    close(fd[0]);
    if (write(fd[1], "r", 1) != 1) _exit(3);
    close(fd[1]);
}

static inline int ready_wait(int fd[2]) {
    char c;
    ssize_t n;
    close(fd[1]);
    while ((n = read(fd[0], &c, 1)) < 0 && errno == EINTR) {}
    close(fd[0]);
    return n == 1;
}

/* In a child: hold the lock on path until killed, telling the parent once held. */
static inline pid_t spawn_holder(const char *path, int hold_ms) {
    int ready[2];
    if (pipe(ready) != 0) exit(2);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        hpclock_handle h;
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.label = "holder child";
        if (hpclock_acquire(path, &opts, &h) != HPCLOCK_OK) _exit(4);
        ready_send(ready);
        if (hold_ms < 0) {
            for (;;) pause();
        }
        sleep_ms(hold_ms);
        _exit(hpclock_release(h) == HPCLOCK_OK ? 0 : 5);
    }
    if (!ready_wait(ready)) {
        fprintf(stderr, "    holder child %d did not get the lock (exit %d)\n", (int)pid, wait_status(pid));
        exit(2);
    }
    return pid;
}

/* In a child: one try_acquire (released at once); exit code is the status. */
static inline int32_t try_in_child(const char *path) {
    pid_t pid = fork_or_die();
    if (pid == 0) {
        hpclock_handle h;
        int32_t rc = hpclock_try_acquire(path, &h);
        if (rc == HPCLOCK_OK) hpclock_release(h);
        _exit(rc < 0 ? 100 - rc : rc);
    }
    int status = wait_status(pid);
    return status >= 100 ? (int32_t)(100 - status) : status;
}

/* Is a program on PATH? */
static inline int have_program(const char *name) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char *copy = strdup(path);
    int found = 0;
    for (char *dir = strtok(copy, ":"); dir && !found; dir = strtok(NULL, ":")) {
        char full[PATH_MAX];
        snprintf(full, sizeof full, "%s/%s", dir, name);
        found = access(full, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* A missing tool skips a test on a developer's machine, and fails it in CI,
 * where nothing may be skipped. */
static inline enum outcome missing_tool(const char *name) {
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "    %s is not installed, and CI=true: failing rather than skipping\n", name);
        return FAIL;
    }
    fprintf(stderr, "    %s is not installed\n", name);
    return SKIP;
}

/* Runs argv[0] from PATH in its own process group; returns its pid. */
static inline pid_t spawn_program(char *const argv[]) {
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid;
    fflush(NULL);
    int err = posix_spawnp(&pid, argv[0], NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (err != 0) {
        fprintf(stderr, "    cannot run %s: %s\n", argv[0], strerror(err));
        return -1;
    }
    return pid;
}

static inline int run_program(char *const argv[]) {
    pid_t pid = spawn_program(argv);
    return pid < 0 ? -1 : wait_status(pid);
}

static inline void kill_group_and_reap(pid_t pid) {
    kill(-pid, SIGKILL);
    wait_status(pid);
}

/* The kernel lock hpclock uses here: flock, or OFD where the filesystem (or
 * HPCLOCK_TEST_PRIMITIVE=ofd) says so. */
static inline int32_t primitive_here(void) {
    hpclock_fs_info info;
    if (hpclock_fs_check(test_dir, &info) != HPCLOCK_OK) {
        fprintf(stderr, "    hpclock_fs_check(%s): %s\n", test_dir, hpclock_last_error());
        exit(2);
    }
    return info.primitive;
}

/* Python's call that takes the same kind of lock as hpclock here: fcntl.flock
 * for flock; for OFD, fcntl.lockf (a POSIX lock, which OFD locks conflict with). */
static inline const char *python_lock_call(void) {
    return primitive_here() == HPCLOCK_PRIMITIVE_OFD ? "lockf" : "flock";
}

/* Waits up to `seconds` for a file to exist. */
static inline int wait_for_file(const char *path, double seconds) {
    double until = now_seconds() + seconds;
    while (access(path, F_OK) != 0) {
        if (now_seconds() > until) return 0;
        sleep_ms(5);
    }
    return 1;
}

static inline int write_bytes(const char *path, const void *bytes, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t n = fwrite(bytes, 1, size, f);
    return fclose(f) == 0 && n == size;
}

/* Up to `size` bytes of a file; -1 if it cannot be read. */
static inline long read_bytes(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, size, f);
    fclose(f);
    return (long)n;
}

/* Drops root for an ordinary user (nobody), as a forked child does before
 * showing what another user can and cannot do. */
static inline int become_nobody(void) {
    return setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0;
}

/* ---- the rig of c-tests/fs_rig.sh: its mounts come in the environment ---- */

static inline const char *rig(const char *name) {
    return getenv(name);
}

static inline enum outcome no_rig(void) {
    const char *why = getenv("HPCLOCK_RIG_MISSING");
    char what[256];
    snprintf(what, sizeof what, "the rig (run through c-tests/fs_rig.sh; missing: %s)", why ? why : "its environment");
    return missing_tool(what);
}

static inline int file_equals(const char *path, const char *expected) {
    char buf[4096];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == strlen(expected) && memcmp(buf, expected, n) == 0;
}

/* ---- the runner ---- */

static inline int run_tests(const char *suite, const struct test *tests, size_t count) {
    const char *tmp = getenv("TMPDIR");
    snprintf(test_root, sizeof test_root, "%s/hpclock-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", suite);
    if (!mkdtemp(test_root)) {
        perror("mkdtemp");
        return 2;
    }
    int passed = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < count; i++) {
        make_test_dir(tests[i].name);
        double start = now_seconds();
        enum outcome result = tests[i].run();
        const char *word = result == PASS ? "PASS" : result == FAIL ? "FAIL" : "SKIPPED";
        printf("%-64s %s (%.2fs)\n", tests[i].name, word, now_seconds() - start);
        fflush(stdout);
        passed += result == PASS;
        failed += result == FAIL;
        skipped += result == SKIP;
    }
    nftw(test_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (skipped) {
        printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    } else {
        printf("%d passed, %d failed\n", passed, failed);
    }
    return failed ? 1 : 0;
}

#endif
