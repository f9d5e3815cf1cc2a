/* The C side of `make bench`: each subcommand measures one thing through the
 * C ABI (or the raw system calls) and prints numbers on one line for
 * bench/bench.py, which interleaves the blocks and makes the table.
 *
 *   raw DIR K           ns per open + flock(LOCK_EX|LOCK_NB) + close
 *   hpclock DIR K       ns per hpclock_try_acquire + hpclock_release
 *   flock1 DIR K        ns per `flock -n FILE true` (spawned, as a script pays)
 *   holder_info DIR K   ns per hpclock_holder_info on a lock another process holds
 *   race DIR N          N start-gated processes race once: ns until all answered, winners
 *   handoff DIR K HOW   K hand-offs (HOW: timed|unlimited|forked|flock, see handoff_bench):
 *                       ns from release to acquired, one per line
 *   trace DIR K WHAT    K cycles with marker writes around each call, for strace
 *                       (WHAT: raw|hpclock|lease, the last with HPCLOCK_LEASE)
 *   lease DIR K         ns per hpclock_acquire with HPCLOCK_LEASE + hpclock_release
 *   lease_hold DIR MS L holds a lease of L ms for MS ms (strace -f counts its renewals)
 *   waitbusy DIR MS [L [HOLDER_DIR]]
 *                       a child holds the lock (in lease mode with a lease of L ms if
 *                       given, through HOLDER_DIR if given: another "node"); this
 *                       process waits MS ms for it and must get BUSY (strace counts tries)
 *   items DIR N HOW     8 workers claim N item locks in DIR/items-N, each item exactly
 *                       once (HOW: hpclock|raw): ns, processed, wrong, ns per file created
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
#include <sys/stat.h>
#include <sys/vfs.h>
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

/* Hand-off: a holder and a waiter, two processes forked before either opens
 * the lock file (so neither has the other's descriptor, as two jobs would not).
 * Each round the holder takes the lock, the waiter starts waiting for it, the
 * holder keeps it 20 ms more (the waiter is deep in its wait by then) and
 * releases; the latency is from just before the release to just after the
 * waiter holds it.
 *   HOW: timed      hpclock_acquire, timeout_ms = 10000
 *        unlimited  hpclock_acquire, timeout_ms = -1
 *        forked     timed, but the waiter is forked by the holder while it holds
 *                   the lock (it has the holder's descriptor: no close event)
 *        flock      C: open + blocking flock(LOCK_EX) / close, the floor
 *        protocol   C making hpclock's system calls without hpclock: the waiter
 *                   open, fstat, fstatfs, blocking flock, lstat, pread, pwrite;
 *                   the holder pwrite, flock(LOCK_UN), close (the record's
 *                   writes and reads are the protocol's, docs/protocol.md, the
 *                   rest is the library's) */
struct handoff {
    atomic_int round, held, waiting, done;
    atomic_llong released_ns, acquired_ns;
};

enum { HOLD_AFTER_WAITING_US = 20000 };

static void spin_until(atomic_int *flag, int value) {
    while (atomic_load(flag) != value) usleep(50);
}

static int32_t timed_or_unlimited(const char *path, int64_t timeout_ms, hpclock_handle *h) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = timeout_ms;
    return hpclock_acquire(path, &opts, h);
}

static void handoff_waiter(const char *path, struct handoff *s, long k, const char *how) {
    for (long i = 1; i <= k; i++) {
        spin_until(&s->held, (int)i);
        atomic_store(&s->waiting, (int)i);
        if (strcmp(how, "flock") == 0) {
            int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            while (fd >= 0 && flock(fd, LOCK_EX) != 0 && errno == EINTR) {}
            atomic_store(&s->acquired_ns, now_ns());
            if (fd < 0) _exit(1);
            close(fd);
        } else if (strcmp(how, "protocol") == 0) {
            int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK, 0644);
            struct stat st;
            struct statfs sf;
            char record[4097];
            if (fd < 0 || fstat(fd, &st) != 0 || fstatfs(fd, &sf) != 0) _exit(1);
            while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {}
            ssize_t n = lstat(path, &st) == 0 ? pread(fd, record, sizeof record, 0) : -1;
            if (n <= 0 || pwrite(fd, record, (size_t)n, 0) != n) _exit(1);
            atomic_store(&s->acquired_ns, now_ns());
            close(fd);
        } else {
            hpclock_handle h;
            int32_t rc = timed_or_unlimited(path, strcmp(how, "unlimited") == 0 ? -1 : 10000, &h);
            atomic_store(&s->acquired_ns, now_ns());
            if (rc != HPCLOCK_OK) _exit(1);
            hpclock_release(h);
        }
        atomic_store(&s->done, (int)i);
    }
    _exit(0);
}

static void handoff_bench(const char *lock_path, long k, const char *how) {
    struct handoff *s = shared(sizeof *s);
    char path[4200]; /* a file of its own: the C contenders' bytes are no hpclock record */
    snprintf(path, sizeof path, "%s.%s", lock_path, how);
    int forked = strcmp(how, "forked") == 0;
    pid_t waiter = -1;
    if (!forked) {
        waiter = fork();
        if (waiter < 0) die("fork");
        if (waiter == 0) handoff_waiter(path, s, k, how);
    }
    for (long i = 1; i <= k; i++) {
        int fd = -1, protocol = strcmp(how, "protocol") == 0;
        hpclock_handle h = 0;
        if (strcmp(how, "flock") == 0 || protocol) {
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) die("holder flock");
            if (protocol && pwrite(fd, "hpclock-record 1\n", 17, 0) != 17) die("holder pwrite");
        } else if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) {
            die("holder acquire");
        }
        if (forked) { /* a new waiter each round, forked while we hold it */
            waiter = fork();
            if (waiter < 0) die("fork");
            if (waiter == 0) {
                atomic_store(&s->waiting, (int)i);
                hpclock_handle w;
                int32_t rc = timed_or_unlimited(path, 10000, &w);
                atomic_store(&s->acquired_ns, now_ns());
                if (rc != HPCLOCK_OK) _exit(1);
                hpclock_release(w);
                atomic_store(&s->done, (int)i);
                _exit(0);
            }
        }
        atomic_store(&s->held, (int)i);
        spin_until(&s->waiting, (int)i);
        usleep(HOLD_AFTER_WAITING_US);
        atomic_store(&s->released_ns, now_ns());
        if (protocol) {
            char record[329];
            memset(record, 'x', sizeof record);
            if (pwrite(fd, record, sizeof record, 0) != (ssize_t)sizeof record || flock(fd, LOCK_UN) != 0) {
                die("holder release");
            }
        }
        if (fd >= 0) {
            close(fd);
        } else if (hpclock_release(h) != HPCLOCK_OK) {
            die("release");
        }
        spin_until(&s->done, (int)i);
        printf("%lld\n", (long long)(s->acquired_ns - s->released_ns));
        if (forked) {
            int status;
            waitpid(waiter, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("waiter");
        }
    }
    if (!forked) {
        int status;
        waitpid(waiter, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("waiter");
    }
}

/* Marker writes strace shows as write(-1, "...") = -1 EBADF, so bench.py can
 * attribute every system call in between to one acquire or one release. */
static void marker(const char *text) {
    if (write(-1, text, strlen(text)) != -1) exit(1);
}

static int32_t lease_acquire(const char *path, int64_t lease_ms, int64_t timeout_ms, hpclock_handle *h) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_LEASE;
    opts.lease_ms = lease_ms;
    opts.timeout_ms = timeout_ms;
    return hpclock_acquire(path, &opts, h);
}

static int lease_cycle(const char *path) {
    hpclock_handle h;
    if (lease_acquire(path, 0, 0, &h) != HPCLOCK_OK) return -1;
    return hpclock_release(h) == HPCLOCK_OK ? 0 : -1;
}

static void trace_bench(const char *path, long k, const char *what) {
    int use_lease = strcmp(what, "lease") == 0;
    int use_hpclock = use_lease || strcmp(what, "hpclock") == 0;
    if ((use_lease ? lease_cycle : use_hpclock ? hpclock_cycle : raw_cycle)(path) != 0) die("warm-up");
    for (long i = 0; i < k; i++) {
        if (use_hpclock) {
            hpclock_handle h;
            marker("acquire{");
            int32_t rc = use_lease ? lease_acquire(path, 0, 0, &h) : hpclock_try_acquire(path, &h);
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

/* Holds a lease of lease_ms for ms, then releases: under strace -f, the
 * renewal thread's calls (every lease/3) are all that happens meanwhile. */
static void lease_hold_bench(const char *path, long ms, long lease_ms) {
    hpclock_handle h;
    if (lease_acquire(path, lease_ms, 0, &h) != HPCLOCK_OK) die("lease acquire");
    usleep((useconds_t)ms * 1000);
    if (hpclock_release(h) != HPCLOCK_OK) die("lease release");
}

/* A child holds the lock; we wait `ms` for it, and must be told BUSY at the
 * deadline, not before. Prints the time waited. */
static void waitbusy_bench(const char *path, const char *holder_path, long ms, long lease_ms) {
    int ready[2];
    if (pipe(ready) != 0) die("pipe");
    pid_t holder = fork();
    if (holder < 0) die("fork");
    if (holder == 0) {
        hpclock_handle h;
        int32_t rc = lease_ms > 0 ? lease_acquire(holder_path, lease_ms, 0, &h) : hpclock_try_acquire(holder_path, &h);
        if (rc != HPCLOCK_OK || write(ready[1], "r", 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c;
    if (read(ready[0], &c, 1) != 1) die("holder");
    hpclock_handle h;
    int32_t rc;
    int64_t start = now_ns();
    if (lease_ms > 0) {
        rc = lease_acquire(path, lease_ms, ms, &h);
    } else {
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.timeout_ms = ms;
        rc = hpclock_acquire(path, &opts, &h);
    }
    int64_t waited = now_ns() - start;
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    if (rc != HPCLOCK_BUSY) die("waitbusy: not BUSY");
    if (waited < ms * 1000000LL) die("waitbusy: BUSY before the deadline");
    printf("%lld\n", (long long)waited);
}

/* The task farm of examples/demo.c at scale: WORKERS processes, started
 * together, each walk all n items from their own offset, and process an item
 * only when they get its lock and it is not done yet (hpclock: OK, then
 * hpclock_complete; raw: flock, then an empty file means not done, and a
 * byte written marks it done). Every item must be processed exactly once. */
enum { WORKERS = 8 };

static void item_path(char *out, size_t size, const char *dir, long item) {
    snprintf(out, size, "%s/item-%07ld.lock", dir, item);
}

static void items_worker(const char *dir, long n, int w, int raw, atomic_int *count, atomic_int *errors) {
    for (long k = 0; k < n; k++) {
        long item = (k + w * (n / WORKERS)) % n;
        char path[4200];
        item_path(path, sizeof path, dir, item);
        if (raw) {
            int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0) {
                atomic_fetch_add(errors, 1);
                continue;
            }
            struct stat st;
            if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st) == 0 && st.st_size == 0) {
                atomic_fetch_add(&count[item], 1);
                if (pwrite(fd, "d", 1, 0) != 1) atomic_fetch_add(errors, 1);
            }
            close(fd);
        } else {
            hpclock_handle h;
            int32_t rc = hpclock_try_acquire(path, &h);
            if (rc == HPCLOCK_OK) {
                atomic_fetch_add(&count[item], 1);
                if (hpclock_complete(h) != HPCLOCK_OK) atomic_fetch_add(errors, 1);
            } else if (rc != HPCLOCK_DONE && rc != HPCLOCK_BUSY) {
                atomic_fetch_add(errors, 1);
            }
        }
    }
}

/* The item lock files are made beforehand, outside the timing (creating a
 * file costs the filesystem the same for both contenders, and on a
 * long-used ext4 it can cost half a millisecond: it would hide the rest), and
 * emptied before each run: DIR/items-N is kept for the next run. */
static void items_bench(const char *parent, long n, const char *how) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/items-%ld", parent, n);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die("mkdir");
    int64_t create_ns = 0;
    for (long i = 0; i < n; i++) {
        char path[4200];
        item_path(path, sizeof path, dir, i);
        int64_t t = now_ns();
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            create_ns += now_ns() - t;
        }
        if (fd < 0 || ftruncate(fd, 0) != 0) die("item file");
        close(fd);
    }
    int raw = strcmp(how, "raw") == 0;
    atomic_int *count = shared(sizeof(atomic_int) * (size_t)n + sizeof(atomic_int));
    atomic_int *errors = &count[n];
    struct race *r = shared(sizeof *r);
    int gate[2];
    if (pipe(gate) != 0) die("pipe");
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] < 0) die("fork");
        if (pids[w] == 0) {
            close(gate[1]);
            char c;
            atomic_fetch_add(&r->ready, 1);
            while (read(gate[0], &c, 1) < 0 && errno == EINTR) {}
            items_worker(dir, n, w, raw, count, errors);
            _exit(0);
        }
    }
    close(gate[0]);
    while (atomic_load(&r->ready) < WORKERS) usleep(1000);
    usleep(20000);
    int64_t start = now_ns();
    close(gate[1]);
    for (int w = 0; w < WORKERS; w++) waitpid(pids[w], NULL, 0);
    int64_t total = now_ns() - start;
    long processed = 0, wrong = atomic_load(errors);
    for (long i = 0; i < n; i++) {
        int c = atomic_load(&count[i]);
        processed += c;
        wrong += c != 1;
    }
    printf("%lld %ld %ld %lld\n", (long long)total, processed, wrong, (long long)(create_ns / n));
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
    else if (strcmp(what, "handoff") == 0 && argc == 5) handoff_bench(path, n, argv[4]);
    else if (strcmp(what, "trace") == 0 && argc == 5) trace_bench(path, n, argv[4]);
    else if (strcmp(what, "lease") == 0) per_op(path, n, lease_cycle);
    else if (strcmp(what, "lease_hold") == 0 && argc == 5) lease_hold_bench(path, n, atol(argv[4]));
    else if (strcmp(what, "waitbusy") == 0 && argc >= 4) {
        char holder_path[4096];
        snprintf(holder_path, sizeof holder_path, "%s/bench-%s.lock", argc >= 6 ? argv[5] : argv[2], what);
        waitbusy_bench(path, holder_path, n, argc >= 5 ? atol(argv[4]) : 0);
    }
    else if (strcmp(what, "items") == 0 && argc == 5) items_bench(argv[2], n, argv[4]);
    else if (strcmp(what, "fs") == 0) {
        hpclock_fs_info info;
        if (hpclock_fs_check(argv[2], &info) != HPCLOCK_OK) die("fs_check");
        printf("%s (hpclock: %s)\n", info.fs_type, info.detail);
    }
    else return 2;
    return 0;
}
