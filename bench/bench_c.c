/* The C side of `make bench`: each subcommand measures one thing through the
 * C ABI (or the raw system calls) and prints numbers on one line for
 * bench/bench.py, which interleaves the blocks and makes the table.
 *
 *   raw DIR K           ns per open + flock(LOCK_EX|LOCK_NB) + close
 *   hpclock DIR K       ns per hpclock_try_acquire + hpclock_release
 *   flock1 DIR K        ns per `flock -n FILE true` (spawned, as a script pays)
 *   holder_info DIR K   ns per hpclock_holder_info on a lock another process holds
 *   race DIR N          N start-gated processes race once: ns until all answered, winners
 *   handoff DIR K       K hand-offs to a timed waiter: ns from release to acquired, one per line
 *   trace DIR K WHAT    K cycles with marker writes around each call, for strace (WHAT: raw|hpclock)
 *   fs DIR 0            what hpclock_fs_check says of DIR
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hpclock.h"

extern char **environ;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_c: %s: %s (%s)\n", what, strerror(errno), hpclock_last_error());
    exit(1);
}

static void *shared(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    memset(p, 0, size);
    return p;
}

static int raw_cycle(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) return -1;
    return close(fd);
}

static int hpclock_cycle(const char *path) {
    hpclock_handle h;
    if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) return -1;
    return hpclock_release(h) == HPCLOCK_OK ? 0 : -1;
}

static int flock1_cycle(const char *path) {
    char *argv[] = { "flock", "-n", (char *)path, "true", NULL };
    pid_t pid;
    if (posix_spawnp(&pid, "flock", NULL, NULL, argv, environ) != 0) return -1;
    int status;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void per_op(const char *path, long k, int (*cycle)(const char *)) {
    if (cycle(path) != 0) die("warm-up"); /* first-call costs (identity, page faults) stay out */
    int64_t start = now_ns();
    for (long i = 0; i < k; i++) {
        if (cycle(path) != 0) die("cycle");
    }
    printf("%.1f\n", (double)(now_ns() - start) / (double)k);
}

/* A child holds the lock; this process reads holder_info K times. */
static void holder_info_bench(const char *path, long k) {
    int ready[2];
    if (pipe(ready) != 0) die("pipe");
    pid_t holder = fork();
    if (holder == 0) {
        hpclock_handle h;
        if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) _exit(1);
        if (write(ready[1], "r", 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c;
    if (read(ready[0], &c, 1) != 1) die("holder");
    hpclock_holder who;
    if (hpclock_holder_info(path, &who) != HPCLOCK_OK || who.state != HPCLOCK_STATE_HELD) die("holder_info");
    int64_t start = now_ns();
    for (long i = 0; i < k; i++) {
        if (hpclock_holder_info(path, &who) != HPCLOCK_OK) die("holder_info");
    }
    printf("%.1f\n", (double)(now_ns() - start) / (double)k);
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
}

struct race {
    atomic_int ready, answered, ok, busy, other;
    atomic_llong last_answer_ns;
};

/* N processes, forked and waiting at a gate; the clock starts when the gate
 * opens and stops when the last one has its answer. */
static void race_bench(const char *path, int n) {
    struct race *r = shared(sizeof *r);
    int gate[2], finish[2];
    if (pipe(gate) != 0 || pipe(finish) != 0) die("pipe");
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0) die("fork");
        if (pids[i] == 0) {
            close(gate[1]);
            close(finish[1]);
            char c;
            atomic_fetch_add(&r->ready, 1);
            while (read(gate[0], &c, 1) < 0 && errno == EINTR) {}
            hpclock_handle h;
            int32_t rc = hpclock_try_acquire(path, &h);
            int64_t t = now_ns();
            long long seen = atomic_load(&r->last_answer_ns);
            while (t > seen && !atomic_compare_exchange_weak(&r->last_answer_ns, &seen, t)) {}
            atomic_fetch_add(rc == HPCLOCK_OK ? &r->ok : rc == HPCLOCK_BUSY ? &r->busy : &r->other, 1);
            atomic_fetch_add(&r->answered, 1);
            while (read(finish[0], &c, 1) < 0 && errno == EINTR) {} /* the winner holds until all answered */
            if (rc == HPCLOCK_OK) hpclock_release(h);
            _exit(0);
        }
    }
    close(gate[0]);
    close(finish[0]);
    while (atomic_load(&r->ready) < n) usleep(1000);
    usleep(20000); /* let every child reach its read() */
    int64_t start = now_ns();
    close(gate[1]);
    while (atomic_load(&r->answered) < n) usleep(100);
    close(finish[1]);
    for (int i = 0; i < n; i++) waitpid(pids[i], NULL, 0);
    printf("%lld %d %d %d\n", (long long)(r->last_answer_ns - start), r->ok, r->busy, r->other);
    free(pids);
}

struct handoff {
    atomic_int waiting, acquired, round;
    atomic_llong released_ns, acquired_ns;
};

/* A holder and a timed waiter in two processes; the holder keeps the lock
 * 20 ms after the waiter starts waiting (so the waiter polls), releases, and
 * the latency is from just before hpclock_release to the waiter's HPCLOCK_OK. */
static void handoff_bench(const char *path, long k) {
    struct handoff *s = shared(sizeof *s);
    for (long i = 0; i < k; i++) {
        hpclock_handle h;
        if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) die("holder acquire");
        atomic_store(&s->waiting, 0);
        pid_t waiter = fork();
        if (waiter == 0) {
            hpclock_options opts;
            hpclock_options_init(&opts);
            opts.timeout_ms = 10000;
            hpclock_handle w;
            atomic_store(&s->waiting, 1);
            int32_t rc = hpclock_acquire(path, &opts, &w);
            atomic_store(&s->acquired_ns, now_ns());
            if (rc != HPCLOCK_OK) _exit(1);
            hpclock_release(w);
            _exit(0);
        }
        while (!atomic_load(&s->waiting)) usleep(100);
        usleep(20000);
        atomic_store(&s->released_ns, now_ns());
        if (hpclock_release(h) != HPCLOCK_OK) die("release");
        int status;
        waitpid(waiter, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("waiter");
        printf("%lld\n", (long long)(s->acquired_ns - s->released_ns));
    }
}

/* Marker writes strace shows as write(-1, "...") = -1 EBADF, so bench.py can
 * attribute every system call in between to one acquire or one release. */
static void marker(const char *text) {
    if (write(-1, text, strlen(text)) != -1) exit(1);
}

static void trace_bench(const char *path, long k, const char *what) {
    int use_hpclock = strcmp(what, "hpclock") == 0;
    if ((use_hpclock ? hpclock_cycle : raw_cycle)(path) != 0) die("warm-up");
    for (long i = 0; i < k; i++) {
        if (use_hpclock) {
            hpclock_handle h;
            marker("acquire{");
            int32_t rc = hpclock_try_acquire(path, &h);
            marker("}acquire");
            if (rc != HPCLOCK_OK) die("acquire");
            marker("release{");
            rc = hpclock_release(h);
            marker("}release");
            if (rc != HPCLOCK_OK) die("release");
        } else {
            marker("acquire{");
            int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            int locked = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;
            marker("}acquire");
            if (!locked) die("raw acquire");
            marker("release{");
            close(fd);
            marker("}release");
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_c raw|hpclock|flock1|holder_info|race|handoff|trace DIR N [WHAT]\n");
        return 2;
    }
    const char *what = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-%s.lock", argv[2], what);
    long n = atol(argv[3]);
    if (strcmp(what, "raw") == 0) per_op(path, n, raw_cycle);
    else if (strcmp(what, "hpclock") == 0) per_op(path, n, hpclock_cycle);
    else if (strcmp(what, "flock1") == 0) per_op(path, n, flock1_cycle);
    else if (strcmp(what, "holder_info") == 0) holder_info_bench(path, n);
    else if (strcmp(what, "race") == 0) race_bench(path, (int)n);
    else if (strcmp(what, "handoff") == 0) handoff_bench(path, n);
    else if (strcmp(what, "trace") == 0 && argc == 5) trace_bench(path, n, argv[4]);
    else if (strcmp(what, "fs") == 0) {
        hpclock_fs_info info;
        if (hpclock_fs_check(argv[2], &info) != HPCLOCK_OK) die("fs_check");
        printf("%s (hpclock: %s)\n", info.fs_type, info.detail);
    }
    else return 2;
    return 0;
}
