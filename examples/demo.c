/* The seed's scenario, done right: several copies of a job start at once (a
 * Slurm requeue, a resubmitted array) and each walks the same list of URLs.
 * Every URL has its own lock file; a worker processes a URL only when
 * hpclock says HPCLOCK_OK, and marks it done with hpclock_complete, so that
 * each URL is processed exactly once, and the others are told by whom.
 * Then a worker is killed with SIGKILL mid-item, and the next one takes over
 * knowing that it does.
 *
 * Usage: demo [DIRECTORY]   (lock files go to a new temporary directory by default) */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hpclock.h"

static const char *const urls[] = {
    "https://data.example.org/run/0001", "https://data.example.org/run/0002",
    "https://data.example.org/run/0003", "https://data.example.org/run/0004",
    "https://data.example.org/run/0005", "https://data.example.org/run/0006",
    "https://data.example.org/run/0007", "https://data.example.org/run/0008",
    "https://data.example.org/run/0009", "https://data.example.org/run/0010",
    "https://data.example.org/run/0011", "https://data.example.org/run/0012",
};
enum { ITEMS = sizeof urls / sizeof urls[0], WORKERS = 4 };

struct tally {
    int times_processed[ITEMS];
    int processed_by[ITEMS];
};

static char dir[1024];

/* One write per line, so that lines from different processes never mix. */
static void say(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(STDOUT_FILENO, line, (size_t)n) < 0) _exit(3);
}

static void lock_path(char *out, size_t size, int item) {
    snprintf(out, size, "%s/item-%02d.lock", dir, item + 1);
}

static void clock_time(int64_t unix_ms, char *out, size_t size) {
    time_t seconds = (time_t)(unix_ms / 1000);
    struct tm tm;
    localtime_r(&seconds, &tm);
    size_t n = strftime(out, size, "%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03d", (int)(unix_ms % 1000));
}

/* What a worker that did not get the item is told about who has it. */
static void tell_about_holder(int worker, const char *url, const char *path, int32_t rc) {
    hpclock_holder who;
    if (hpclock_holder_info(path, &who) != HPCLOCK_OK) {
        say("worker %d: %s is %s; holder unknown: %s", worker, url,
            rc == HPCLOCK_DONE ? "done" : "busy", hpclock_last_error());
        return;
    }
    char since[32];
    clock_time(rc == HPCLOCK_DONE ? who.released_unix_ms : who.acquired_unix_ms, since, sizeof since);
    if (rc == HPCLOCK_DONE) {
        say("worker %d: %-36s already done by pid %lld (%s) at %s: skipped", worker, url,
            (long long)who.pid, who.label, since);
    } else {
        say("worker %d: %-36s busy: held by pid %lld on %s (%s) since %s", worker, url,
            (long long)who.pid, who.host, who.label, since);
    }
}

static void work(int worker, struct tally *tally) {
    char label[64];
    snprintf(label, sizeof label, "worker %d", worker);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.label = label;
    for (int k = 0; k < ITEMS; k++) {
        int item = (k + worker * 3) % ITEMS; /* each worker starts elsewhere, and they collide */
        char path[1200];
        lock_path(path, sizeof path, item);
        hpclock_handle h;
        int32_t rc = hpclock_acquire(path, &opts, &h);
        if (rc != HPCLOCK_OK) {
            if (rc < 0) {
                say("worker %d: %s: %s: %s", worker, urls[item], hpclock_status_name(rc), hpclock_last_error());
            } else {
                tell_about_holder(worker, urls[item], path, rc);
            }
            continue;
        }
        hpclock_holder mine;
        hpclock_handle_info(h, &mine, NULL);
        say("worker %d: %-36s processing (pid %d, generation %llu)", worker, urls[item], (int)getpid(),
            (unsigned long long)mine.generation);
        __atomic_fetch_add(&tally->times_processed[item], 1, __ATOMIC_SEQ_CST);
        tally->processed_by[item] = worker;
        struct timespec pause = { 0, (40 + 10 * worker) * 1000000L }; /* the download */
        nanosleep(&pause, NULL);
        if (hpclock_complete(h) != HPCLOCK_OK) say("worker %d: complete failed: %s", worker, hpclock_last_error());
    }
}

static int wait_child(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    return status;
}

/* A worker dies with SIGKILL while it holds an item; the next one is told. */
static void crash_and_take_over(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/checkpoint.lock", dir);
    int ready[2];
    if (pipe(ready) != 0) return;
    fflush(stdout);
    pid_t victim = fork();
    if (victim == 0) {
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.label = "doomed worker";
        hpclock_handle h;
        char c = hpclock_acquire(path, &opts, &h) == HPCLOCK_OK ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c = 'n';
    if (read(ready[0], &c, 1) != 1 || c != 'y') {
        say("crash demo: the doomed worker did not get the lock");
        return;
    }
    kill(victim, SIGKILL);
    wait_child(victim);
    say("\nkilled pid %d with SIGKILL while it held %s", (int)victim, path);

    hpclock_handle h;
    if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) {
        say("crash demo: take-over failed: %s", hpclock_last_error());
        return;
    }
    hpclock_holder mine, previous;
    hpclock_handle_info(h, &mine, &previous);
    say("pid %d took over: previous holder pid %lld (%s) is %s; this is generation %llu",
        (int)getpid(), (long long)previous.pid, previous.label,
        previous.state == HPCLOCK_STATE_STALE ? "STALE: it died holding the lock, resume from the checkpoint"
                                              : "not stale (unexpected)",
        (unsigned long long)mine.generation);
    hpclock_release(h);
}

static void show_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    say("\n$ cat %s", path);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[strspn(line, " ")] != 0) say("%s", line);
    }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        snprintf(dir, sizeof dir, "%s", argv[1]);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            perror(dir);
            return 2;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/hpclock-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 2;
        }
    }
    say("hpclock %s demo: %d workers race over %d URLs; lock files in %s\n", hpclock_version(), WORKERS,
        ITEMS, dir);

    struct tally *tally = mmap(NULL, sizeof *tally, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (tally == MAP_FAILED) return 2;
    memset(tally, 0, sizeof *tally);
    pid_t pids[WORKERS];
    fflush(stdout);
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            work(w + 1, tally);
            _exit(0);
        }
    }
    for (int w = 0; w < WORKERS; w++) wait_child(pids[w]);

    say("\nitem                                  processed  by");
    int exactly_once = 1;
    for (int i = 0; i < ITEMS; i++) {
        say("%-36s  %9d  worker %d", urls[i], tally->times_processed[i], tally->processed_by[i]);
        exactly_once &= tally->times_processed[i] == 1;
    }
    say("\n%s", exactly_once ? "every item was processed exactly once"
                             : "FAILURE: some item was processed more or less than once");

    crash_and_take_over();
    char first[1200];
    lock_path(first, sizeof first, 0);
    show_file(first);
    return exactly_once ? 0 : 1;
}
