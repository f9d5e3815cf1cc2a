/* The cross-node lease of docs/lease.md, with real processes on the two-node rig
 * of c-tests/fs_rig.sh: one backing directory mounted twice with bindfs
 * without lock forwarding and with FUSE caching off (HPCLOCK_RIG_LEASE_A and
 * _B), so that the kernel's flock excludes only the processes of one mount,
 * like Lustre localflock, and each "node" is a process with its own hostname
 * (unshare(CLONE_NEWUTS)). The lease must exclude across them.
 *
 * A node's process is an *agent*: this program run again (--agent) on a node,
 * which takes commands one line at a time on a socket (acquire, release,
 * check, info, ...) and answers each in one line, so that a test can hold a
 * lease on one node, stop or kill that process, and watch from the other.
 * Every answer is awaited with a bound: no test hangs, however the library
 * behaves. The kill storm's workers are this program too (--storm).
 *
 * Lease 1 s throughout (docs/lease.md#timings). Timing is asserted only as bounds
 * in seconds. Besides the rig (root, unshare, bindfs), two tests need
 * strace (to delay one system call of one process) and two faketime (a
 * node's wall clock an hour off); without them they say SKIPPED, or fail
 * with CI=true. The tests of HPCLOCK_TEST_PRIMITIVE=none and of the flags
 * need no rig. Under valgrind (HPCLOCK_UNDER_VALGRIND) only this process
 * runs under it, the agents run natively, and the loops are shorter.
 * HPCLOCK_LEASE_ONLY=SUBSTRING runs only the tests whose names contain it. */
#include "harness.h"

#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#define LEASE_MS 1000

/* HPCLOCK_STATE_* by name, for messages. */
static const char *state_name(int state) {
    static const char *names[] = { "FREE", "HELD", "STALE", "DONE" };
    return state >= 0 && state <= 3 ? names[state] : "?";
}

static int under_valgrind(void) {
    return getenv("HPCLOCK_UNDER_VALGRIND") != NULL;
}

/* ---- the rig ---- */

static int have_lease_rig(void) {
    return rig("HPCLOCK_RIG_LEASE_A") && rig("HPCLOCK_RIG_LEASE_B");
}

/* Names of this run's files on the rig: a rig may run this program more
 * than once, and each run starts from fresh ladders. */
static char run_tag[32];

/* FILE on node 'a' or 'b' (the same file, through that node's mount). */
static const char *on_node(char node, const char *file) {
    static char buffers[16][PATH_MAX];
    static int next;
    char *p = buffers[next++ % 16];
    snprintf(p, PATH_MAX, "%s/%s-%s", rig(node == 'a' ? "HPCLOCK_RIG_LEASE_A" : "HPCLOCK_RIG_LEASE_B"), run_tag,
             file);
    return p;
}

/* ---- children: every process a test starts is killed when it ends ---- */

static pid_t children[512];
static int child_count;

static void track(pid_t pid) {
    if (pid > 0 && child_count < (int)(sizeof children / sizeof children[0])) children[child_count++] = pid;
}

/* Waits up to `seconds` for a child; its status (as wait_status), or -1 if
 * it is still running then. */
static int wait_within(pid_t pid, double seconds) {
    double until = now_seconds() + seconds;
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (got < 0 && errno != EINTR) return -2; /* not our child (any more) */
        if (now_seconds() > until) return -1;
        sleep_ms(5);
    }
}

/* ---- agents: this program on a node, answering commands ---- */

struct agent {
    pid_t child; /* what we forked (a wrapper such as strace or faketime, or the agent) */
    pid_t pid;   /* the agent itself, as it says in its greeting */
    int fd;      /* a socket: commands out, answers in */
    char host[64];
    char buffer[16384];
    size_t length;
};

static struct agent agent_table[64];
static int agent_count;

/* Kills every child the test started, agents included, and forgets them. */
static void end_children(void) {
    for (int i = 0; i < agent_count; i++) {
        if (agent_table[i].pid > 0) kill(agent_table[i].pid, SIGKILL);
        if (agent_table[i].fd >= 0) close(agent_table[i].fd);
    }
    for (int i = 0; i < child_count; i++) kill(children[i], SIGKILL);
    for (int i = 0; i < child_count; i++) {
        if (wait_within(children[i], 20) == -1) fprintf(stderr, "    child %d would not die\n", (int)children[i]);
    }
    /* Agents under a wrapper (strace) are its children, not ours. */
    for (int i = 0; i < agent_count; i++) {
        for (int n = 0; agent_table[i].pid > 0 && n < 400 && kill(agent_table[i].pid, 0) == 0; n++) sleep_ms(5);
    }
    child_count = 0;
    agent_count = 0;
}

/* Every test ends its children, whichever way it returns. */
#define LEASE_TEST(name)                                     \
    static enum outcome name##_body(void);                   \
    static enum outcome name(void) {                         \
        enum outcome result = name##_body();                 \
        end_children();                                      \
        return result;                                       \
    }                                                        \
    static enum outcome name##_body(void)

static int agent_send(struct agent *a, const char *format, ...) {
    char line[8192];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (n < 0 || n >= (int)sizeof line - 1) return 0;
    line[n++] = '\n';
    for (int done = 0; done < n;) {
        ssize_t w = send(a->fd, line + done, (size_t)(n - done), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            fprintf(stderr, "    cannot send to the agent on %s (pid %d): %s\n", a->host, (int)a->pid, strerror(errno));
            return 0;
        }
        done += (int)w;
    }
    return 1;
}

/* One answer line, waited for at most `seconds`. */
static int agent_reply(struct agent *a, double seconds, char *line, size_t size) {
    double until = now_seconds() + seconds;
    for (;;) {
        char *newline = memchr(a->buffer, '\n', a->length);
        if (newline) {
            size_t n = (size_t)(newline - a->buffer);
            size_t copy = n < size - 1 ? n : size - 1;
            memcpy(line, a->buffer, copy);
            line[copy] = 0;
            a->length -= n + 1;
            memmove(a->buffer, newline + 1, a->length);
            return 1;
        }
        double left = until - now_seconds();
        if (left <= 0) {
            fprintf(stderr, "    the agent on %s (pid %d) did not answer within %.1f s\n", a->host, (int)a->pid, seconds);
            return 0;
        }
        struct pollfd p = { .fd = a->fd, .events = POLLIN };
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "    cannot wait for the agent on %s (pid %d): %s\n", a->host, (int)a->pid, strerror(errno));
            return 0;
        }
        if (r <= 0) continue;
        ssize_t got = read(a->fd, a->buffer + a->length, sizeof a->buffer - a->length - 1);
        if (got <= 0) {
            fprintf(stderr, "    the agent on %s (pid %d) is gone\n", a->host, (int)a->pid);
            return 0;
        }
        a->length += (size_t)got;
    }
}

/* Starts an agent on node `host` (NULL: this machine's hostname), with
 * `env` ("NAME=VALUE", NULL-terminated; may be NULL) added to its
 * environment, and run under `wrapper` (argv prefix, NULL-terminated; may be
 * NULL). NULL if it does not greet within 30 s. */
static struct agent *agent_start_with(const char *host, const char *const env[], const char *const wrapper[]) {
    if (agent_count == (int)(sizeof agent_table / sizeof agent_table[0])) {
        fprintf(stderr, "    too many agents\n");
        return NULL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("socketpair");
        return NULL;
    }
    pid_t pid = fork_or_die();
    if (pid == 0) {
        if (host && (unshare(CLONE_NEWUTS) != 0 || sethostname(host, strlen(host)) != 0)) _exit(40);
        if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0) _exit(41);
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        const char *argv[16];
        int n = 0;
        for (int i = 0; wrapper && wrapper[i] && n < 12; i++) argv[n++] = wrapper[i];
        argv[n++] = self_exe;
        argv[n++] = "--agent";
        argv[n] = NULL;
        execvp(argv[0], (char *const *)argv);
        _exit(42);
    }
    close(sv[1]);
    track(pid);
    struct agent *a = &agent_table[agent_count++];
    memset(a, 0, sizeof *a);
    a->child = pid;
    a->pid = -1;
    a->fd = sv[0];
    snprintf(a->host, sizeof a->host, "%s", host ? host : "(this host)");
    char line[512];
    int agent_pid = 0;
    if (!agent_send(a, "hello") || !agent_reply(a, 30, line, sizeof line) ||
        sscanf(line, "hello %*s %d", &agent_pid) != 1) {
        fprintf(stderr, "    the agent for %s did not start (%s)\n", a->host, line);
        return NULL;
    }
    a->pid = agent_pid;
    return a;
}

static struct agent *agent_start(const char *host) {
    return agent_start_with(host, NULL, NULL);
}

/* What an acquire answered. */
struct acquired {
    int rc;
    unsigned long long generation;
    int previous_state, previous_alive;
    long long previous_pid;
    char previous_host[256];
    long long ms; /* how long the call took, on the agent's monotonic clock */
    char note[4096];
};

/* The note after " | " in an answer. */
static void note_of(const char *line, char *note, size_t size) {
    const char *bar = strstr(line, " | ");
    snprintf(note, size, "%s", bar ? bar + 3 : "");
}

static int send_acquire(struct agent *a, const char *path, uint32_t flags, int64_t timeout_ms, int64_t lease_ms) {
    return agent_send(a, "acquire %s %u %lld %lld", path, flags, (long long)timeout_ms, (long long)lease_ms);
}

static int read_acquired(struct agent *a, double seconds, struct acquired *r) {
    char line[8192];
    memset(r, 0, sizeof *r);
    r->rc = 99;
    if (!agent_reply(a, seconds, line, sizeof line)) return 0;
    if (sscanf(line, "%d %llu %d %d %lld %255s %lld", &r->rc, &r->generation, &r->previous_state,
               &r->previous_alive, &r->previous_pid, r->previous_host, &r->ms) != 7) {
        fprintf(stderr, "    unexpected answer from %s: %s\n", a->host, line);
        return 0;
    }
    note_of(line, r->note, sizeof r->note);
    return 1;
}

/* Acquire on agent `a`, waiting `seconds` at most for the answer. */
static int agent_acquire(struct agent *a, const char *path, uint32_t flags, int64_t timeout_ms, int64_t lease_ms,
                         double seconds, struct acquired *r) {
    return send_acquire(a, path, flags, timeout_ms, lease_ms) && read_acquired(a, seconds, r);
}

/* A command answered by a status and a time (release, complete, check,
 * checkuntil); the status, or 99 if there was no answer. */
static int agent_status(struct agent *a, double seconds, long long *ms, char *note, size_t note_size,
                        const char *command) {
    char line[8192];
    int rc = 99;
    long long elapsed = -1;
    if (!agent_send(a, "%s", command) || !agent_reply(a, seconds, line, sizeof line)) return 99;
    if (sscanf(line, "%d %lld", &rc, &elapsed) < 1) {
        fprintf(stderr, "    unexpected answer from %s to %s: %s\n", a->host, command, line);
        return 99;
    }
    if (ms) *ms = elapsed;
    if (note) note_of(line, note, note_size);
    return rc;
}

static int agent_release(struct agent *a) {
    return agent_status(a, 30, NULL, NULL, 0, "release");
}

static int agent_check(struct agent *a) {
    return agent_status(a, 10, NULL, NULL, 0, "check");
}

/* What holder_info answered on an agent. */
struct seen {
    int rc, state, alive;
    long long pid;
    unsigned long long generation;
    char host[256];
    char note[4096];
};

static int agent_info(struct agent *a, const char *path, struct seen *s) {
    char line[8192];
    memset(s, 0, sizeof *s);
    s->rc = 99;
    if (!agent_send(a, "info %s", path) || !agent_reply(a, 30, line, sizeof line)) return 0;
    if (sscanf(line, "%d %d %d %lld %llu %255s", &s->rc, &s->state, &s->alive, &s->pid, &s->generation, s->host) != 6) {
        fprintf(stderr, "    unexpected answer to info: %s\n", line);
        return 0;
    }
    note_of(line, s->note, sizeof s->note);
    return 1;
}

/* ---- the ladder, seen from outside ---- */

/* The rung numbers in PATH.hpclock (sorted, at most `max`); their count, or
 * -1 if the directory cannot be read. Other entries are counted in *others. */
static int list_rungs(const char *lock, unsigned long long *rungs, int max, int *others) {
    char dir_path[PATH_MAX];
    snprintf(dir_path, sizeof dir_path, "%s.hpclock", lock);
    DIR *dir = opendir(dir_path);
    if (!dir) return -1;
    int count = 0, other = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        size_t len = strlen(e->d_name);
        if (len != 20 || strspn(e->d_name, "0123456789") != 20) {
            other++;
            continue;
        }
        if (count < max) rungs[count] = strtoull(e->d_name, NULL, 10);
        count++;
    }
    closedir(dir);
    int kept = count < max ? count : max;
    for (int i = 1; i < kept; i++) { /* insertion sort: a handful of entries */
        unsigned long long v = rungs[i];
        int j = i - 1;
        for (; j >= 0 && rungs[j] > v; j--) rungs[j + 1] = rungs[j];
        rungs[j + 1] = v;
    }
    if (others) *others = other;
    return count;
}

static unsigned long long top_rung(const char *lock) {
    unsigned long long rungs[256];
    int n = list_rungs(lock, rungs, 256, NULL);
    return n > 0 ? rungs[(n < 256 ? n : 256) - 1] : 0;
}

static const char *rung_path(const char *lock, unsigned long long rung) {
    static char buffers[4][PATH_MAX];
    static int next;
    char *p = buffers[next++ % 4];
    snprintf(p, PATH_MAX, "%s.hpclock/%020llu", lock, rung);
    return p;
}

/* ---- the agent's side ---- */

static void answer(const char *format, ...) {
    char line[8192];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (n < 0) n = 0;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    for (int i = 0; i < n; i++) {
        if (line[i] == '\n') line[i] = ' ';
    }
    line[n++] = '\n';
    for (int done = 0; done < n;) {
        ssize_t w = write(1, line + done, (size_t)(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(3);
        done += (int)w;
    }
}

static long long monotonic_ms(void) {
    return (long long)(now_seconds() * 1000.0);
}

static long long realtime_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int agent_main(void) {
    hpclock_handle held = 0;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    FILE *in = fdopen(0, "r");
    if (!in) return 2;
    char line[8192];
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = 0;
        char command[32] = "", path[PATH_MAX] = "";
        sscanf(line, "%31s", command);
        if (strcmp(command, "hello") == 0) {
            answer("hello %s %d", host, (int)getpid());
        } else if (strcmp(command, "acquire") == 0) {
            unsigned flags = 0;
            long long timeout_ms = 0, lease_ms = 0;
            if (sscanf(line, "%*s %4095s %u %lld %lld", path, &flags, &timeout_ms, &lease_ms) != 4 || held) {
                answer("98 0 0 0 0 - 0 | bad acquire command, or a handle is held already");
                continue;
            }
            hpclock_options opts;
            hpclock_options_init(&opts);
            opts.flags = flags;
            opts.timeout_ms = timeout_ms;
            opts.lease_ms = lease_ms;
            opts.label = "lease test";
            long long start = monotonic_ms();
            hpclock_handle h = 0;
            int32_t rc = hpclock_acquire(path, &opts, &h);
            long long elapsed = monotonic_ms() - start;
            char note[4096];
            snprintf(note, sizeof note, "%s", hpclock_last_error());
            hpclock_holder mine, previous;
            memset(&mine, 0, sizeof mine);
            memset(&previous, 0, sizeof previous);
            if (rc == HPCLOCK_OK) {
                held = h;
                hpclock_handle_info(h, &mine, &previous);
            }
            answer("%d %llu %d %d %lld %s %lld | %s", rc, (unsigned long long)mine.generation, previous.state,
                   previous.alive, (long long)previous.pid, previous.host[0] ? previous.host : "-", elapsed, note);
        } else if (strcmp(command, "release") == 0 || strcmp(command, "complete") == 0) {
            long long start = monotonic_ms();
            int32_t rc = command[0] == 'r' ? hpclock_release(held) : hpclock_complete(held);
            held = 0;
            answer("%d %lld | %s", rc, monotonic_ms() - start, hpclock_last_error());
        } else if (strcmp(command, "check") == 0) {
            long long start = monotonic_ms();
            int32_t rc = hpclock_check(held);
            answer("%d %lld | %s", rc, monotonic_ms() - start, hpclock_last_error());
        } else if (strcmp(command, "checkuntil") == 0) { /* checkuntil STATUS MS: check until it says STATUS */
            int wanted = 0;
            long long within = 0;
            sscanf(line, "%*s %d %lld", &wanted, &within);
            long long start = monotonic_ms();
            int32_t rc;
            while ((rc = hpclock_check(held)) != wanted && monotonic_ms() - start < within) sleep_ms(10);
            answer("%d %lld | %s", rc, monotonic_ms() - start, hpclock_last_error());
        } else if (strcmp(command, "info") == 0) {
            sscanf(line, "%*s %4095s", path);
            hpclock_holder who;
            memset(&who, 0, sizeof who);
            int32_t rc = hpclock_holder_info(path, &who);
            answer("%d %d %d %lld %llu %s | %s", rc, who.state, who.alive, (long long)who.pid,
                   (unsigned long long)who.generation, who.host[0] ? who.host : "-", hpclock_last_error());
        } else if (strcmp(command, "tryloop") == 0) { /* tryloop PATH SECONDS FLAGS LEASE_MS: one-try calls */
            double seconds = 0;
            unsigned flags = 0;
            long long lease_ms = 0;
            sscanf(line, "%*s %4095s %lf %u %lld", path, &seconds, &flags, &lease_ms);
            hpclock_options opts;
            hpclock_options_init(&opts);
            opts.flags = flags;
            opts.lease_ms = lease_ms;
            long count = 0, ok = 0, busy = 0, other = 0, slowest = 0;
            char first_other[4096] = "";
            double until = now_seconds() + seconds;
            while (now_seconds() < until) {
                hpclock_handle h = 0;
                long long start = monotonic_ms();
                int32_t rc = hpclock_acquire(path, &opts, &h);
                long elapsed = (long)(monotonic_ms() - start);
                if (elapsed > slowest) slowest = elapsed;
                count++;
                if (rc == HPCLOCK_OK) {
                    ok++;
                    hpclock_release(h);
                } else if (rc == HPCLOCK_BUSY) {
                    busy++;
                } else {
                    if (!other++) snprintf(first_other, sizeof first_other, "%s: %s", hpclock_status_name(rc),
                                           hpclock_last_error());
                }
            }
            answer("%ld %ld %ld %ld %ld | %s", count, ok, busy, other, slowest, first_other);
        } else if (strcmp(command, "fscheck") == 0) {
            sscanf(line, "%*s %4095s", path);
            hpclock_fs_info info;
            memset(&info, 0, sizeof info);
            int32_t rc = hpclock_fs_check(path, &info);
            answer("%d %d %d | %s", rc, info.scope, info.primitive, info.detail);
        } else if (strcmp(command, "clock") == 0) {
            answer("%lld %lld", realtime_ms(), monotonic_ms());
        } else {
            answer("97 0 | unknown command %s", command);
        }
    }
    return 0;
}

/* ---- helpers of the tests ---- */

/* The lock FILE as node `host` ("node-a" or "node-b") reaches it. */
static const char *path_for(const char *host, const char *file) {
    return on_node(strcmp(host, "node-a") == 0 ? 'a' : 'b', file);
}

/* Acquire, printing what came back when it is not `expected`. */
#define CHECK_ACQUIRE(agent, path, flags, timeout_ms, lease_ms, seconds, r, expected)                         \
    do {                                                                                                   \
        CHECK(agent_acquire((agent), (path), (flags), (timeout_ms), (lease_ms), (seconds), (r)));           \
        if ((r)->rc != (expected)) {                                                                       \
            fprintf(stderr, "    acquire on %s answered %s after %lld ms, expected %s: \"%s\"\n",           \
                    (agent)->host, hpclock_status_name((r)->rc), (r)->ms, hpclock_status_name(expected),    \
                    (r)->note);                                                                            \
            CHECK((r)->rc == (expected));                                                                  \
        }                                                                                                  \
    } while (0)

/* One round of racers: every agent tries once at the same moment; the index
 * of the one winner in *winner (-1 if none), its answer in *won. FAIL if two
 * win or anyone answers other than OK or BUSY. `first` says whose command
 * goes out first (the node order alternates between rounds). */
static enum outcome race_once(struct agent **racers, int count, const char *file, int first, int *winner,
                              struct acquired *won) {
    *winner = -1;
    for (int k = 0; k < count; k++) {
        struct agent *a = racers[(first + k) % count];
        CHECK(send_acquire(a, path_for(a->host, file), HPCLOCK_LEASE, 0, LEASE_MS));
    }
    int busy = 0;
    for (int i = 0; i < count; i++) {
        struct acquired r;
        CHECK(read_acquired(racers[i], 15, &r));
        if (r.rc == HPCLOCK_OK) {
            if (*winner >= 0) {
                fprintf(stderr, "    two winners in one round: pid %d on %s (generation %llu) and pid %d on %s "
                        "(generation %llu)\n", (int)racers[*winner]->pid, racers[*winner]->host, won->generation,
                        (int)racers[i]->pid, racers[i]->host, r.generation);
                return FAIL;
            }
            *winner = i;
            *won = r;
        } else if (r.rc == HPCLOCK_BUSY) {
            busy++;
        } else {
            fprintf(stderr, "    racer on %s: %s \"%s\"\n", racers[i]->host, hpclock_status_name(r.rc), r.note);
            return FAIL;
        }
    }
    if (*winner < 0) {
        fprintf(stderr, "    nobody won a round of %d racers\n", count);
        return FAIL;
    }
    CHECK(busy == count - 1);
    return PASS;
}

/* ---- 1, 2: races across two nodes ---- */

LEASE_TEST(twenty_rounds_of_three_racers_per_node_have_exactly_one_winner) {
    if (!have_lease_rig()) return no_rig();
    int rounds = under_valgrind() ? 8 : 20;
    struct agent *racers[6];
    for (int i = 0; i < 6; i++) CHECK((racers[i] = agent_start(i < 3 ? "node-a" : "node-b")) != NULL);
    int wins_a = 0, wins_b = 0;
    for (int round = 0; round < rounds; round++) {
        int winner;
        struct acquired won;
        if (race_once(racers, 6, "race.lock", round % 2 ? 3 : 0, &winner, &won) != PASS) {
            fprintf(stderr, "    in round %d\n", round + 1);
            return FAIL;
        }
        *(winner < 3 ? &wins_a : &wins_b) += 1;
        CHECK_RC(agent_release(racers[winner]), HPCLOCK_OK);
    }
    fprintf(stderr, "    %d rounds: node-a won %d, node-b won %d\n", rounds, wins_a, wins_b);
    return PASS;
}

LEASE_TEST(generations_strictly_increase_across_the_winners_of_both_nodes) {
    if (!have_lease_rig()) return no_rig();
    int rounds = under_valgrind() ? 6 : 15;
    struct agent *racers[6];
    for (int i = 0; i < 6; i++) CHECK((racers[i] = agent_start(i < 3 ? "node-a" : "node-b")) != NULL);
    unsigned long long last = 0;
    int wins_a = 0, wins_b = 0, killed = 0;
    char tokens[2048] = "";
    for (int round = 0; round < rounds; round++) {
        int winner;
        struct acquired won;
        /* Now and then only the node that has won less races, so that
         * winners of both nodes are compared whatever the races gave (not
         * right after a winner was killed: then only its own node may take
         * over at once, rule 4). */
        int only = round % 5 == 4 && round % 3 != 0 ? (wins_a <= wins_b ? 0 : 3) : -1;
        if (race_once(only < 0 ? racers : racers + only, only < 0 ? 6 : 3, "tokens.lock", round % 2 ? 3 : 0, &winner,
                      &won) != PASS) {
            fprintf(stderr, "    in round %d\n", round + 1);
            return FAIL;
        }
        if (only > 0) winner += only;
        struct agent *w = racers[winner];
        size_t used = strlen(tokens);
        snprintf(tokens + used, sizeof tokens - used, " %llu%s", won.generation, winner < 3 ? "a" : "b");
        if (won.generation <= last) {
            fprintf(stderr, "    generations:%s\n    round %d: generation %llu after %llu\n", tokens, round + 1,
                    won.generation, last);
            return FAIL;
        }
        last = won.generation;
        *(winner < 3 ? &wins_a : &wins_b) += 1;
        /* The other node sees the same token in the ladder. */
        struct agent *observer = racers[winner < 3 ? 3 : 0];
        struct seen s;
        CHECK(agent_info(observer, path_for(observer->host, "tokens.lock"), &s));
        CHECK_RC(s.rc, HPCLOCK_OK);
        if (s.state != HPCLOCK_STATE_HELD || s.generation != won.generation || s.pid != w->pid ||
            strcmp(s.host, w->host) != 0) {
            fprintf(stderr, "    %s sees %s pid %lld on %s generation %llu; the winner is pid %d on %s generation %llu\n",
                    observer->host, state_name(s.state), s.pid, s.host, s.generation, (int)w->pid, w->host,
                    won.generation);
            return FAIL;
        }
        if (round % 3 == 2) {
            /* A winner that dies holding it: the next one takes over, and the
             * token still rises. A new racer takes the dead one's place. */
            pid_t dead = w->pid;
            kill(dead, SIGKILL);
            CHECK(wait_within(w->child, 10) >= 0);
            char host[64];
            snprintf(host, sizeof host, "%s", w->host);
            CHECK((racers[winner] = agent_start(host)) != NULL);
            killed++;
        } else {
            CHECK_RC(agent_release(w), HPCLOCK_OK);
        }
    }
    fprintf(stderr, "    generations:%s (%d winners killed holding it)\n", tokens, killed);
    CHECK(wins_a > 0 && wins_b > 0); /* winners of both nodes were compared */
    return PASS;
}

/* ---- 3, 4: hand-over by release, and after a kill ---- */

LEASE_TEST(a_release_on_one_node_lets_the_other_node_in_at_once) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && b);
    for (int i = 0; i < 4; i++) {
        struct agent *holder = i % 2 ? b : a, *taker = i % 2 ? a : b;
        struct acquired r;
        CHECK_ACQUIRE(holder, path_for(holder->host, "handover.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
        CHECK_ACQUIRE(taker, path_for(taker->host, "handover.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_BUSY);
        CHECK_RC(agent_release(holder), HPCLOCK_OK);
        CHECK_ACQUIRE(taker, path_for(taker->host, "handover.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
        fprintf(stderr, "    %s -> %s: one try took %lld ms, previous %s\n", holder->host, taker->host, r.ms,
                state_name(r.previous_state));
        CHECK(r.ms < LEASE_MS / 2); /* at once: well within a lease */
        CHECK(r.previous_state == HPCLOCK_STATE_FREE);
        CHECK_RC(agent_release(taker), HPCLOCK_OK);
    }
    return PASS;
}

LEASE_TEST(a_holder_killed_on_its_own_node_is_taken_over_at_once_as_stale) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a1 = agent_start("node-a"), *a2 = agent_start("node-a");
    CHECK(a1 && a2);
    const char *path = on_node('a', "killed-here.lock");
    struct acquired first, r;
    CHECK_ACQUIRE(a1, path, HPCLOCK_LEASE, 0, LEASE_MS, 10, &first, HPCLOCK_OK);
    CHECK_ACQUIRE(a2, path, HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_BUSY);
    kill(a1->pid, SIGKILL);
    CHECK(wait_within(a1->child, 10) == 128 + SIGKILL);
    CHECK_ACQUIRE(a2, path, HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    fprintf(stderr, "    take-over on the same node: %lld ms, previous %s pid %lld alive %d\n", r.ms,
            state_name(r.previous_state), r.previous_pid, r.previous_alive);
    CHECK(r.ms < LEASE_MS / 2); /* rule 4: a dead pid on this node, at once */
    CHECK(r.previous_state == HPCLOCK_STATE_STALE);
    CHECK(r.previous_pid == a1->pid && r.previous_alive == 0);
    CHECK(r.generation == first.generation + 1);
    CHECK_RC(agent_release(a2), HPCLOCK_OK);
    return PASS;
}

LEASE_TEST(a_holder_killed_on_another_node_is_taken_over_after_one_lease_within_three) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && b);
    struct acquired first, r;
    CHECK_ACQUIRE(a, on_node('a', "killed-there.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &first, HPCLOCK_OK);
    CHECK_ACQUIRE(b, on_node('b', "killed-there.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_BUSY);
    sleep_ms(LEASE_MS / 2); /* a renewal or so */
    kill(a->pid, SIGKILL);
    CHECK(wait_within(a->child, 10) == 128 + SIGKILL);
    CHECK_ACQUIRE(b, on_node('b', "killed-there.lock"), HPCLOCK_LEASE, 10000, LEASE_MS, 20, &r, HPCLOCK_OK);
    fprintf(stderr, "    take-over from the other node: %.2f s, previous %s pid %lld on %s alive %d: \"%s\"\n",
            r.ms / 1000.0, state_name(r.previous_state), r.previous_pid, r.previous_host, r.previous_alive, r.note);
    CHECK(r.ms >= 900);  /* never before a lease of watching (rule 4) */
    CHECK(r.ms <= 3000); /* and within three */
    CHECK(r.previous_state == HPCLOCK_STATE_STALE);
    CHECK(r.previous_pid == a->pid && strcmp(r.previous_host, "node-a") == 0);
    CHECK(r.generation == first.generation + 1);
    CHECK_RC(agent_release(b), HPCLOCK_OK);
    return PASS;
}

/* ---- 5: a holder stopped past three leases ---- */

LEASE_TEST(a_holder_stopped_past_three_leases_is_taken_over_and_told_lost) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a"), *a2 = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && a2 && b);
    struct acquired first, taken, r;
    CHECK_ACQUIRE(a, on_node('a', "stopped.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &first, HPCLOCK_OK);
    CHECK_RC(agent_check(a), HPCLOCK_OK);
    kill(a->pid, SIGSTOP);
    double stopped = now_seconds();
    CHECK_ACQUIRE(b, on_node('b', "stopped.lock"), HPCLOCK_LEASE, 10000, LEASE_MS, 20, &taken, HPCLOCK_OK);
    fprintf(stderr, "    node-b took over after %.2f s (previous %s)\n", taken.ms / 1000.0,
            state_name(taken.previous_state));
    CHECK(taken.ms >= 900 && taken.ms <= 3000);
    CHECK(taken.generation > first.generation);
    double left = stopped + 3.0 * LEASE_MS / 1000.0 + 0.2 - now_seconds();
    if (left > 0) sleep_ms((long)(left * 1000));
    kill(a->pid, SIGCONT);
    long long ms = -1;
    char note[4096] = "";
    int rc = agent_status(a, 10, &ms, note, sizeof note, "checkuntil -6 2000");
    fprintf(stderr, "    after SIGCONT, hpclock_check said %s within %lld ms: \"%s\"\n", hpclock_status_name(rc), ms,
            note);
    CHECK_RC(rc, HPCLOCK_E_LOST);
    CHECK(ms <= 2000);
    CHECK(strstr(note, "stopped.lock") != NULL);
    /* The stopped holder, awake again, takes nothing back. */
    sleep_ms(LEASE_MS / 2);
    CHECK_RC(agent_check(b), HPCLOCK_OK);
    struct seen s;
    CHECK(agent_info(a2, on_node('a', "stopped.lock"), &s));
    CHECK(s.state == HPCLOCK_STATE_HELD && s.pid == b->pid && s.generation == taken.generation);
    /* Rule 7: a lost handle lets go of its kernel lock at once, so once node-b
     * releases, a process on node-a gets in although the lost handle is
     * still open there. */
    CHECK_RC(agent_release(b), HPCLOCK_OK);
    CHECK_ACQUIRE(a2, on_node('a', "stopped.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    CHECK(r.ms < LEASE_MS / 2);
    CHECK_RC(agent_release(a2), HPCLOCK_OK);
    CHECK_RC(agent_release(a), HPCLOCK_E_LOST); /* and its release says so */
    return PASS;
}

/* ---- 6: the kill storm ---- */

/* One line to the shared log, in one write(2) of an O_APPEND descriptor, so
 * that lines of all nodes keep their real order. */
static void log_line(int fd, const char *format, ...) {
    char line[1024];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    for (int i = 0; i < n; i++) {
        if (line[i] == '\n') line[i] = ' ';
    }
    line[n++] = '\n';
    while (write(fd, line, (size_t)n) < 0 && errno == EINTR) {}
}

/* test_lease --storm LOCK LOG STOP: acquire (waiting), log "enter GEN PID
 * HOST", work a little, log "exit ..." (or "lost ..." if hpclock_check says
 * the lock is no longer ours), release; until STOP exists. */
static int storm_main(const char *path, const char *log_path, const char *stop_path) {
    int log = open(log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (log < 0) return 2;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    int pid = (int)getpid();
    srand((unsigned)pid ^ (unsigned)time(NULL));
    while (access(stop_path, F_OK) != 0) {
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.flags = HPCLOCK_LEASE;
        opts.timeout_ms = 2000;
        opts.lease_ms = LEASE_MS;
        hpclock_handle h;
        int32_t rc = hpclock_acquire(path, &opts, &h);
        if (rc == HPCLOCK_BUSY) continue;
        if (rc != HPCLOCK_OK) {
            log_line(log, "error acquire %s %d %s | %s", hpclock_status_name(rc), pid, host, hpclock_last_error());
            sleep_ms(20);
            continue;
        }
        hpclock_holder mine;
        memset(&mine, 0, sizeof mine);
        hpclock_handle_info(h, &mine, NULL);
        unsigned long long gen = (unsigned long long)mine.generation;
        if (hpclock_check(h) != HPCLOCK_OK) {
            log_line(log, "lost-before-enter %llu %d %s | %s", gen, pid, host, hpclock_last_error());
            hpclock_release(h);
            continue;
        }
        log_line(log, "enter %llu %d %s", gen, pid, host);
        sleep_ms(rand() % 30);
        if (hpclock_check(h) == HPCLOCK_OK) {
            log_line(log, "exit %llu %d %s", gen, pid, host);
        } else {
            log_line(log, "lost %llu %d %s | %s", gen, pid, host, hpclock_last_error());
        }
        rc = hpclock_release(h);
        if (rc != HPCLOCK_OK && rc != HPCLOCK_E_LOST) {
            log_line(log, "error release %s %d %s | %s", hpclock_status_name(rc), pid, host, hpclock_last_error());
        }
    }
    close(log);
    return 0;
}

static pid_t start_storm_worker(const char *host, const char *path, const char *log_path, const char *stop_path) {
    pid_t pid = fork_or_die();
    if (pid == 0) {
        if (unshare(CLONE_NEWUTS) != 0 || sethostname(host, strlen(host)) != 0) _exit(40);
        execl(self_exe, "test_lease", "--storm", path, log_path, stop_path, (char *)NULL);
        _exit(41);
    }
    track(pid);
    return pid;
}

/* The pid in the last "enter" of the log if no "exit" or "lost" followed it. */
static int holder_in_log(const char *log_path) {
    char tail[4097];
    int fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > 4096 ? size - 4096 : 0;
    ssize_t n = pread(fd, tail, 4096, from);
    close(fd);
    if (n <= 0) return 0;
    tail[n] = 0;
    int holder = 0;
    for (char *line = strtok(tail, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long long gen;
        int pid;
        if (sscanf(line, "enter %llu %d", &gen, &pid) == 2) holder = pid;
        else if (strncmp(line, "exit ", 5) == 0 || strncmp(line, "lost ", 5) == 0) holder = 0;
    }
    return holder;
}

/* Reads the storm's log and judges it: holders never overlap and tokens
 * rise in the order of entry. A worker killed inside ("dying PID" is logged
 * just before its SIGKILL) leaves an enter without exit: the next enter may
 * follow it, with a higher generation. A holder that lost its lease while
 * alive says "lost"; one that says "exit" after another entered was a second
 * holder. */
static enum outcome judge_storm_log(const char *log_path, int *enters_out, int *killed_inside_out) {
    FILE *f = fopen(log_path, "r");
    CHECK(f != NULL);
    struct { unsigned long long gen; int pid; } superseded[256];
    int superseded_count = 0;
    /* Workers the test has decided to kill: one that enters between its
     * "dying" line and the SIGKILL is as good as dead inside. */
    int doomed[1024], doomed_count = 0;
    int open_pid = 0, open_dying = 0;
    unsigned long long open_gen = 0, last_gen = 0;
    int enters = 0, exits = 0, lost = 0, killed_inside = 0, line_number = 0;
    enum outcome result = PASS;
    char line[2048];
    while (fgets(line, sizeof line, f) && result == PASS) {
        line_number++;
        line[strcspn(line, "\n")] = 0;
        unsigned long long gen = 0;
        int pid = 0;
        char host[64] = "";
        if (sscanf(line, "enter %llu %d %63s", &gen, &pid, host) == 3) {
            enters++;
            if (gen <= last_gen) {
                fprintf(stderr, "    line %d: \"%s\": the token did not rise (last %llu)\n", line_number, line, last_gen);
                result = FAIL;
            }
            if (open_pid) {
                if (open_dying) {
                    killed_inside++;
                } else if (superseded_count < 256) {
                    superseded[superseded_count].gen = open_gen;
                    superseded[superseded_count].pid = open_pid;
                    superseded_count++;
                }
            }
            last_gen = gen;
            open_pid = pid;
            open_gen = gen;
            open_dying = 0;
            for (int i = 0; i < doomed_count; i++) open_dying |= doomed[i] == pid;
        } else if (sscanf(line, "exit %llu %d", &gen, &pid) == 2 || sscanf(line, "lost %llu %d", &gen, &pid) == 2) {
            int is_exit = line[0] == 'e';
            exits += is_exit;
            lost += !is_exit;
            if (open_pid == pid && open_gen == gen) {
                open_pid = 0;
                continue;
            }
            int found = -1;
            for (int i = 0; i < superseded_count; i++) {
                if (superseded[i].pid == pid && superseded[i].gen == gen) found = i;
            }
            if (found >= 0 && !is_exit) { /* it learned it had lost it: fine */
                superseded[found] = superseded[--superseded_count];
                continue;
            }
            fprintf(stderr, "    line %d: \"%s\": %s\n", line_number, line,
                    found >= 0 ? "this holder still believed it held the lock after another one entered: two holders"
                               : "an exit without its enter");
            result = FAIL;
        } else if (sscanf(line, "dying %d", &pid) == 1) {
            if (open_pid == pid) open_dying = 1;
            if (doomed_count < 1024) doomed[doomed_count++] = pid;
        } else if (strncmp(line, "lost-before-enter", 17) == 0) {
            lost++;
        } else {
            fprintf(stderr, "    line %d: \"%s\"\n", line_number, line);
            result = FAIL;
        }
    }
    fclose(f);
    for (int i = 0; i < superseded_count && result == PASS; i++) {
        fprintf(stderr, "    pid %d (generation %llu) was still inside, alive, when the next holder entered\n",
                superseded[i].pid, superseded[i].gen);
        result = FAIL;
    }
    fprintf(stderr, "    %d enters, %d exits, %d lost, %d holders killed inside\n", enters, exits, lost, killed_inside);
    *enters_out = enters;
    *killed_inside_out = killed_inside;
    return result;
}

LEASE_TEST(a_kill_storm_over_two_nodes_keeps_holders_apart_and_tokens_rising) {
    if (!have_lease_rig()) return no_rig();
    double seconds = under_valgrind() ? 5 : 20;
    enum { PER_NODE = 3, WORKERS = 2 * PER_NODE };
    /* On the backing directory, where the rig names it: one file that every
     * node appends to in one real order (any local directory would do). */
    char log_path[PATH_MAX];
    if (rig("HPCLOCK_RIG_BACKING")) {
        snprintf(log_path, sizeof log_path, "%s/%s-storm.log", rig("HPCLOCK_RIG_BACKING"), run_tag);
    } else {
        snprintf(log_path, sizeof log_path, "%s", tpath("storm.log"));
    }
    char stop_path[PATH_MAX];
    snprintf(stop_path, sizeof stop_path, "%s", tpath("storm.stop"));
    int log = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    CHECK(log >= 0);
    pid_t workers[WORKERS];
    const char *hosts[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        hosts[i] = i < PER_NODE ? "node-a" : "node-b";
        workers[i] = start_storm_worker(hosts[i], path_for(hosts[i], "storm.lock"), log_path, stop_path);
    }
    srand((unsigned)getpid());
    int kills = 0, most_entries = 0, samples = 0, unexpected = 0;
    double start = now_seconds(), next_kill = start + 0.3;
    while (now_seconds() - start < seconds) {
        unsigned long long rungs[128];
        int others = 0;
        int n = list_rungs(on_node('a', "storm.lock"), rungs, 128, &others);
        if (n >= 0) {
            samples++;
            if (n + others > most_entries) most_entries = n + others;
        }
        for (int i = 0; i < WORKERS; i++) {
            int status;
            if (waitpid(workers[i], &status, WNOHANG) == workers[i]) {
                fprintf(stderr, "    worker %d on %s ended by itself (status %d)\n", (int)workers[i], hosts[i], status);
                unexpected++;
                workers[i] = start_storm_worker(hosts[i], path_for(hosts[i], "storm.lock"), log_path, stop_path);
            }
        }
        if (now_seconds() >= next_kill) {
            /* Half the kills hit the holder of the moment, the others anyone. */
            int victim = rand() % WORKERS;
            int holder = rand() % 2 ? holder_in_log(log_path) : 0;
            for (int i = 0; i < WORKERS; i++) {
                if (holder && workers[i] == holder) victim = i;
            }
            log_line(log, "dying %d", (int)workers[victim]);
            kill(workers[victim], SIGKILL);
            if (wait_within(workers[victim], 10) != 128 + SIGKILL) unexpected++;
            workers[victim] = start_storm_worker(hosts[victim], path_for(hosts[victim], "storm.lock"), log_path,
                                                 stop_path);
            kills++;
            next_kill = now_seconds() + 0.15 + (rand() % 500) / 1000.0;
        }
        sleep_ms(20);
    }
    CHECK(write_bytes(stop_path, "", 0));
    int stragglers = 0;
    for (int i = 0; i < WORKERS; i++) {
        int status = wait_within(workers[i], 15);
        if (status == -1) {
            log_line(log, "dying %d", (int)workers[i]);
            kill(workers[i], SIGKILL);
            wait_within(workers[i], 10);
            fprintf(stderr, "    worker %d on %s did not stop within 15 s\n", (int)workers[i], hosts[i]);
            stragglers++;
        } else if (status != 0) {
            fprintf(stderr, "    worker %d on %s ended with status %d\n", (int)workers[i], hosts[i], status);
            unexpected++;
        }
    }
    close(log);
    fprintf(stderr, "    %.0f s, %d workers, %d kills; the ladder held at most %d entries (%d samples)\n", seconds,
            WORKERS, kills, most_entries, samples);
    int enters = 0, killed_inside = 0;
    if (judge_storm_log(log_path, &enters, &killed_inside) != PASS) return FAIL;
    CHECK(unexpected == 0 && stragglers == 0);
    CHECK(samples > 0 && most_entries <= 70);
    CHECK(enters >= (under_valgrind() ? 5 : 20));
    CHECK(killed_inside >= 1);
    return PASS;
}

/* ---- 7: one-try calls against a live remote holder ---- */

LEASE_TEST(one_try_calls_against_a_live_remote_holder_all_answer_busy_at_once) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && b);
    struct acquired r;
    CHECK_ACQUIRE(a, on_node('a', "live.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    /* Several leases long, so that calls meet the holder's renewals: a rung
     * just created and not yet written, a rung pruned between a listing and
     * a read. */
    double seconds = under_valgrind() ? 2.0 : 3.5;
    CHECK(agent_send(b, "tryloop %s %.1f %u %d", on_node('b', "live.lock"), seconds, HPCLOCK_LEASE, LEASE_MS));
    char line[8192];
    CHECK(agent_reply(b, seconds + 15, line, sizeof line));
    long count = 0, ok = 0, busy = 0, other = 0, slowest = 0;
    CHECK(sscanf(line, "%ld %ld %ld %ld %ld", &count, &ok, &busy, &other, &slowest) == 5);
    fprintf(stderr, "    %ld one-try calls in %.1f s: %ld OK, %ld BUSY, %ld other; the slowest took %ld ms%s%s\n", count,
            seconds, ok, busy, other, slowest, other ? ": " : "", other ? strstr(line, " | ") + 3 : "");
    CHECK(ok == 0 && other == 0);
    CHECK(busy == count && count >= 20);
    CHECK(slowest < LEASE_MS / 2); /* each answers at once, well under a lease */
    /* A waiting call waits it out, and is BUSY too. */
    CHECK_ACQUIRE(b, on_node('b', "live.lock"), HPCLOCK_LEASE, 2000, LEASE_MS, 15, &r, HPCLOCK_BUSY);
    CHECK(r.ms >= 1900 && r.ms <= 3500);
    fprintf(stderr, "    a waiting call: BUSY after %.2f s: \"%s\"\n", r.ms / 1000.0, r.note);
    CHECK_RC(agent_check(a), HPCLOCK_OK);
    CHECK_RC(agent_release(a), HPCLOCK_OK);
    return PASS;
}

/* ---- 8: done across nodes; a replaced lock file ---- */

LEASE_TEST(complete_on_one_node_is_done_on_the_other) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && b);
    struct acquired first, r;
    CHECK_ACQUIRE(a, on_node('a', "done.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &first, HPCLOCK_OK);
    CHECK_RC(agent_status(a, 30, NULL, NULL, 0, "complete"), HPCLOCK_OK);
    CHECK_ACQUIRE(b, on_node('b', "done.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_DONE);
    CHECK(r.ms < LEASE_MS / 2);
    CHECK_ACQUIRE(b, on_node('b', "done.lock"), HPCLOCK_LEASE, 5000, LEASE_MS, 15, &r, HPCLOCK_DONE);
    CHECK(r.ms < LEASE_MS / 2); /* waiting for done work is pointless: at once */
    CHECK_ACQUIRE(a, on_node('a', "done.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_DONE);
    struct seen s;
    CHECK(agent_info(b, on_node('b', "done.lock"), &s));
    CHECK_RC(s.rc, HPCLOCK_OK);
    CHECK(s.state == HPCLOCK_STATE_DONE && s.generation == first.generation);
    /* IGNORE_DONE re-runs it, with a higher token. */
    CHECK_ACQUIRE(b, on_node('b', "done.lock"), HPCLOCK_LEASE | HPCLOCK_IGNORE_DONE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    CHECK(r.previous_state == HPCLOCK_STATE_DONE && r.generation > first.generation);
    CHECK_RC(agent_release(b), HPCLOCK_OK);
    return PASS;
}

/* Puts a new file where `path` is, as someone who deletes and recreates a
 * lock file does (`via` is the same path through another mount, or path). */
static int replace_file(const char *via) {
    char fresh[PATH_MAX];
    snprintf(fresh, sizeof fresh, "%s.new", via);
    return write_bytes(fresh, "", 0) && rename(fresh, via) == 0;
}

LEASE_TEST(check_says_lost_when_the_lock_file_is_replaced_in_lease_and_flock_mode) {
    /* flock mode (HPCLOCK_NO_LEASE) on a local filesystem, in this process. */
    const char *local = tpath("flock-replaced.lock");
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_NO_LEASE;
    hpclock_handle h;
    CHECK_RC(hpclock_acquire(local, &opts, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_check(h), HPCLOCK_OK);
    CHECK(replace_file(local));
    CHECK_RC(hpclock_check(h), HPCLOCK_E_LOST);
    fprintf(stderr, "    flock mode: \"%s\"\n", hpclock_last_error());
    CHECK(strstr(hpclock_last_error(), "flock-replaced.lock") != NULL);
    int32_t rc = hpclock_release(h);
    fprintf(stderr, "    flock mode: release of the replaced lock: %s\n", hpclock_status_name(rc));
    CHECK(rc == HPCLOCK_OK || rc == HPCLOCK_E_LOST);

    /* Lease mode, across nodes: node-b replaces the file node-a holds. */
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a");
    CHECK(a);
    struct acquired r;
    CHECK_ACQUIRE(a, on_node('a', "replaced.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    CHECK_RC(agent_check(a), HPCLOCK_OK);
    CHECK(replace_file(on_node('b', "replaced.lock")));
    long long ms = -1;
    char note[4096] = "";
    CHECK_RC(agent_status(a, 10, &ms, note, sizeof note, "checkuntil -6 2000"), HPCLOCK_E_LOST);
    fprintf(stderr, "    lease mode: E_LOST after %lld ms: \"%s\"\n", ms, note);
    CHECK(ms < LEASE_MS / 2);
    rc = agent_status(a, 30, NULL, note, sizeof note, "release");
    fprintf(stderr, "    lease mode: release of the replaced lock: %s \"%s\"\n", hpclock_status_name(rc), note);
    CHECK(rc == HPCLOCK_OK || rc == HPCLOCK_E_LOST);
    return PASS;
}

/* ---- 9: a node whose wall clock is an hour off ---- */

/* faketime(1) with the wall clock moved by `offset` and CLOCK_MONOTONIC
 * left alone (hpclock measures leases with it). */
static const char *const skewed_env[] = { "DONT_FAKE_MONOTONIC=1", NULL };

static struct agent *agent_with_clock(const char *host, const char *offset) {
    if (!offset) return agent_start(host);
    const char *wrapper[] = { "faketime", "-m", "-f", offset, NULL };
    return agent_start_with(host, skewed_env, wrapper);
}

/* The agent's wall clock, less ours, in seconds; its monotonic clock must be ours. */
static int clock_offset(struct agent *a, double *offset) {
    char line[256];
    long long wall = 0, mono = 0;
    if (!agent_send(a, "clock") || !agent_reply(a, 10, line, sizeof line) ||
        sscanf(line, "%lld %lld", &wall, &mono) != 2) return 0;
    *offset = (wall - realtime_ms()) / 1000.0;
    double mono_off = (mono - monotonic_ms()) / 1000.0;
    if (mono_off < -5 || mono_off > 5) {
        fprintf(stderr, "    the agent's CLOCK_MONOTONIC is off by %.1f s too: faketime did not leave it alone\n",
                mono_off);
        return 0;
    }
    return 1;
}

/* `holder` holds; `caller` on the other node tries, once and waiting:
 * always BUSY, never a take-over of the live holder. */
static enum outcome a_skewed_clock_never_takes_over(const char *holder_offset, const char *caller_offset,
                                                    const char *file) {
    struct agent *holder = agent_with_clock("node-a", holder_offset);
    struct agent *caller = agent_with_clock("node-b", caller_offset);
    CHECK(holder && caller);
    double off_h, off_c;
    CHECK(clock_offset(holder, &off_h) && clock_offset(caller, &off_c));
    fprintf(stderr, "    holder's wall clock %+.0f s, caller's %+.0f s\n", off_h, off_c);
    CHECK(holder_offset == NULL || off_h < -3500 || off_h > 3500);
    CHECK(caller_offset == NULL || off_c < -3500 || off_c > 3500);
    struct acquired held, r;
    CHECK_ACQUIRE(holder, on_node('a', file), HPCLOCK_LEASE, 0, LEASE_MS, 10, &held, HPCLOCK_OK);
    /* A waiting call waits out its timeout: BUSY, never a take-over. */
    CHECK_ACQUIRE(caller, on_node('b', file), HPCLOCK_LEASE, 3000, LEASE_MS, 15, &r, HPCLOCK_BUSY);
    fprintf(stderr, "    a waiting call (3 s): BUSY after %.2f s\n", r.ms / 1000.0);
    CHECK(r.ms >= 2900 && r.ms <= 4500);
    CHECK_RC(agent_check(holder), HPCLOCK_OK);
    struct seen s;
    CHECK(agent_info(caller, on_node('b', file), &s));
    fprintf(stderr, "    holder_info from the caller's node: %s alive %d pid %lld: \"%s\"\n", state_name(s.state), s.alive,
            s.pid, s.note);
    /* One-try calls: BUSY, at once or after watching a lease in which the
     * holder renewed (rule 4: a renewal that looks old is watched for a
     * lease, "so such a call may take up to a lease to answer"). */
    long long slowest = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(send_acquire(caller, on_node('b', file), HPCLOCK_LEASE, 0, LEASE_MS));
        if (!read_acquired(caller, 10, &r)) {
            fprintf(stderr, "    one-try call %d did not answer within 10 s (ten leases) while the holder lived\n",
                    i + 1);
            return FAIL;
        }
        if (r.rc != HPCLOCK_BUSY) {
            fprintf(stderr, "    one-try call %d: %s after %lld ms: \"%s\"\n", i + 1, hpclock_status_name(r.rc), r.ms,
                    r.note);
            CHECK(r.rc == HPCLOCK_BUSY);
        }
        if (r.ms > slowest) slowest = r.ms;
    }
    fprintf(stderr, "    3 one-try calls: BUSY, the slowest after %lld ms: \"%s\"\n", slowest, r.note);
    CHECK(slowest <= 2 * LEASE_MS + 500); /* a lease of watching at most, and some */
    CHECK_RC(agent_check(holder), HPCLOCK_OK);
    CHECK_RC(agent_release(holder), HPCLOCK_OK);
    return PASS;
}

LEASE_TEST(a_holder_whose_wall_clock_is_an_hour_behind_is_never_taken_over_while_alive) {
    if (!have_lease_rig()) return no_rig();
    if (!have_program("faketime")) return missing_tool("faketime (Debian package faketime)");
    return a_skewed_clock_never_takes_over("-1h", NULL, "skewed-holder.lock");
}

LEASE_TEST(a_caller_whose_wall_clock_is_an_hour_ahead_never_takes_over_a_live_holder) {
    if (!have_lease_rig()) return no_rig();
    if (!have_program("faketime")) return missing_tool("faketime (Debian package faketime)");
    return a_skewed_clock_never_takes_over(NULL, "+1h", "skewed-caller.lock");
}

/* ---- 10: no kernel locks at all: the ladder alone, on one node ---- */

static const char *const no_locks_env[] = { "HPCLOCK_TEST_PRIMITIVE=none", NULL };

LEASE_TEST(without_kernel_locks_the_ladder_alone_excludes_on_one_node) {
    const char *dir = rig("HPCLOCK_RIG_EXT4") ? rig("HPCLOCK_RIG_EXT4") : test_dir;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/no-kernel-locks.lock", dir);
    enum { RACERS = 4 };
    struct agent *racers[RACERS];
    for (int i = 0; i < RACERS; i++) CHECK((racers[i] = agent_start_with(NULL, no_locks_env, NULL)) != NULL);
    char line[8192];
    int rc = 0, scope = 0, primitive = 0;
    CHECK(agent_send(racers[0], "fscheck %s", path) && agent_reply(racers[0], 10, line, sizeof line));
    CHECK(sscanf(line, "%d %d %d", &rc, &scope, &primitive) == 3);
    fprintf(stderr, "    fs_check: %s\n", line);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(scope == HPCLOCK_SCOPE_NONE && primitive == HPCLOCK_PRIMITIVE_LEASE);

    /* A race of processes on one node: no flag needed, the lease is chosen. */
    int rounds = under_valgrind() ? 5 : 20;
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < RACERS; i++) CHECK(send_acquire(racers[i], path, 0, 0, LEASE_MS));
        int winner = -1;
        for (int i = 0; i < RACERS; i++) {
            struct acquired r;
            CHECK(read_acquired(racers[i], 15, &r));
            if (r.rc == HPCLOCK_OK) {
                if (winner >= 0) {
                    fprintf(stderr, "    round %d: two winners, pids %d and %d\n", round + 1, (int)racers[winner]->pid,
                            (int)racers[i]->pid);
                    return FAIL;
                }
                winner = i;
            } else if (r.rc != HPCLOCK_BUSY) {
                fprintf(stderr, "    round %d: %s \"%s\"\n", round + 1, hpclock_status_name(r.rc), r.note);
                return FAIL;
            }
        }
        CHECK(winner >= 0);
        CHECK_RC(agent_release(racers[winner]), HPCLOCK_OK);
    }

    /* REQUIRE_CLUSTER accepts it: the lease holds across nodes. */
    struct acquired r, held;
    CHECK_ACQUIRE(racers[0], path, HPCLOCK_REQUIRE_CLUSTER, 0, LEASE_MS, 10, &held, HPCLOCK_OK);
    CHECK_ACQUIRE(racers[1], path, HPCLOCK_REQUIRE_CLUSTER, 0, LEASE_MS, 10, &r, HPCLOCK_BUSY);
    /* With no kernel lock, a dead holder on this node is known dead from its pid. */
    kill(racers[0]->pid, SIGKILL);
    CHECK(wait_within(racers[0]->child, 10) == 128 + SIGKILL);
    CHECK_ACQUIRE(racers[1], path, 0, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    CHECK(r.ms < LEASE_MS / 2 && r.previous_state == HPCLOCK_STATE_STALE && r.previous_pid == racers[0]->pid);
    CHECK_RC(agent_release(racers[1]), HPCLOCK_OK);

    return PASS;
}

LEASE_TEST(without_kernel_locks_no_lease_does_not_claim_an_exclusion_it_lacks) {
    /* HPCLOCK_NO_LEASE where there is no kernel lock (as on a filesystem
     * that refuses locks, where acquire answers HPCLOCK_E_NOTSUP): two
     * processes of one node must not both be told they hold it. */
    const char *dir = rig("HPCLOCK_RIG_EXT4") ? rig("HPCLOCK_RIG_EXT4") : test_dir;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/no-kernel-locks-no-lease.lock", dir);
    struct agent *x = agent_start_with(NULL, no_locks_env, NULL), *y = agent_start_with(NULL, no_locks_env, NULL);
    CHECK(x && y);
    struct acquired first, second;
    CHECK(agent_acquire(x, path, HPCLOCK_NO_LEASE, 0, 0, 10, &first));
    CHECK(agent_acquire(y, path, HPCLOCK_NO_LEASE, 0, 0, 10, &second));
    fprintf(stderr, "    HPCLOCK_NO_LEASE without kernel locks: first %s \"%s\", second %s \"%s\"\n",
            hpclock_status_name(first.rc), first.note, hpclock_status_name(second.rc), second.note);
    if (first.rc == HPCLOCK_OK && second.rc == HPCLOCK_OK) {
        fprintf(stderr, "    two processes of one node both hold it: HPCLOCK_NO_LEASE claims an exclusion that "
                "nothing enforces (a filesystem that refuses locks would answer HPCLOCK_E_NOTSUP)\n");
        return FAIL;
    }
    CHECK(first.rc == HPCLOCK_E_NOTSUP || first.rc == HPCLOCK_OK);
    return PASS;
}

/* ---- 11: who holds it, seen from either node ---- */

/* Runs argv on node `host` with its output in `out`; its exit status, or
 * -1 if it did not end within 20 s. */
static int run_on_node(const char *host, char *const argv[], const char *out) {
    pid_t pid = fork_or_die();
    if (pid == 0) {
        if (unshare(CLONE_NEWUTS) != 0 || sethostname(host, strlen(host)) != 0) _exit(40);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0) _exit(41);
        execv(argv[0], argv);
        _exit(42);
    }
    track(pid);
    return wait_within(pid, 20);
}

/* The `hpclock` command beside this test program (build/bin/hpclock). */
static const char *hpclock_command(void) {
    static char path[PATH_MAX];
    const char *given = getenv("HPCLOCK_BIN");
    if (given) return given;
    snprintf(path, sizeof path, "%s", self_exe);
    char *slash = strrchr(path, '/');
    if (slash) snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "bin/hpclock");
    return path;
}

LEASE_TEST(holder_info_from_the_other_node_names_the_lease_holder_and_stale_after_a_kill) {
    if (!have_lease_rig()) return no_rig();
    struct agent *a = agent_start("node-a"), *a2 = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && a2 && b);
    struct acquired held;
    CHECK_ACQUIRE(a, on_node('a', "who.lock"), HPCLOCK_LEASE, 0, LEASE_MS, 10, &held, HPCLOCK_OK);
    sleep_ms(LEASE_MS / 2); /* after a renewal */
    struct seen s;
    CHECK(agent_info(b, on_node('b', "who.lock"), &s));
    fprintf(stderr, "    from node-b: %s alive %d pid %lld on %s generation %llu: \"%s\"\n", state_name(s.state), s.alive,
            s.pid, s.host, s.generation, s.note);
    CHECK_RC(s.rc, HPCLOCK_OK);
    CHECK(s.state == HPCLOCK_STATE_HELD && s.alive == -1);
    CHECK(s.pid == a->pid && strcmp(s.host, "node-a") == 0 && s.generation == held.generation);
    /* The note says why it is judged alive: rule 4's lease of watching, and
     * the age of the last renewal. */
    CHECK(strstr(s.note, "node-a") != NULL && strstr(s.note, "renewed") != NULL && strstr(s.note, "lease") != NULL);

    const char *json = tpath("info.json");
    char *argv[] = { (char *)hpclock_command(), "info", "--json", (char *)on_node('b', "who.lock"), NULL };
    CHECK(run_on_node("node-b", argv, json) == 0);
    char text[8192] = "";
    long n = read_bytes(json, text, sizeof text - 1);
    CHECK(n > 0);
    text[n] = 0;
    fprintf(stderr, "    hpclock info --json on node-b: %s", text);
    char pid_field[64], generation_field[64];
    snprintf(pid_field, sizeof pid_field, "\"pid\":%d", (int)a->pid);
    snprintf(generation_field, sizeof generation_field, "\"generation\":%llu", held.generation);
    CHECK(strstr(text, "\"state\":\"held\"") != NULL && strstr(text, "\"host\":\"node-a\"") != NULL);
    CHECK(strstr(text, pid_field) != NULL && strstr(text, generation_field) != NULL);
    CHECK(strstr(text, "\"note\"") != NULL);

    /* On its own node: alive; once killed, STALE. */
    CHECK(agent_info(a2, on_node('a', "who.lock"), &s));
    CHECK(s.state == HPCLOCK_STATE_HELD && s.alive == 1 && s.pid == a->pid);
    kill(a->pid, SIGKILL);
    CHECK(wait_within(a->child, 10) == 128 + SIGKILL);
    CHECK(agent_info(a2, on_node('a', "who.lock"), &s));
    fprintf(stderr, "    from node-a after the kill: %s alive %d pid %lld: \"%s\"\n", state_name(s.state), s.alive, s.pid,
            s.note);
    CHECK(s.state == HPCLOCK_STATE_STALE && s.alive == 0 && s.pid == a->pid && s.generation == held.generation);
    /* From node-b it cannot be known yet: not disproven, so held. */
    CHECK(agent_info(b, on_node('b', "who.lock"), &s));
    fprintf(stderr, "    from node-b after the kill: %s alive %d: \"%s\"\n", state_name(s.state), s.alive, s.note);
    CHECK(s.state == HPCLOCK_STATE_HELD && s.alive == -1);
    return PASS;
}

/* ---- 12: flags and periods ---- */

static enum outcome lease_flags_and_periods_are_checked_and_zero_means_sixty_seconds(void) {
    const char *path = tpath("flags.lock");
    hpclock_options opts;
    hpclock_options_init(&opts);
    CHECK(opts.lease_ms == 0);
    hpclock_handle h = 7;
    opts.flags = HPCLOCK_LEASE | HPCLOCK_NO_LEASE;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_E_INVALID);
    CHECK(h == 0 && access(path, F_OK) != 0);
    fprintf(stderr, "    both flags: \"%s\"\n", hpclock_last_error());
    opts.flags = HPCLOCK_LEASE;
    const int64_t bad[] = { 50, 99, -1, -60000 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        opts.lease_ms = bad[i];
        h = 7;
        CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_E_INVALID);
        CHECK(h == 0);
        if (i == 0) fprintf(stderr, "    lease_ms 50: \"%s\"\n", hpclock_last_error());
    }
    CHECK(access(path, F_OK) != 0);
    opts.lease_ms = 100; /* the shortest */
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);

    /* 0 is the default, 60 s: the rung says so. */
    const char *fresh = tpath("default.lock");
    opts.lease_ms = 0;
    CHECK_RC(hpclock_acquire(fresh, &opts, &h), HPCLOCK_OK);
    unsigned long long top = top_rung(fresh);
    CHECK(top >= 1);
    char rung[4096] = "";
    long n = read_bytes(rung_path(fresh, top), rung, sizeof rung - 1);
    CHECK(n > 0);
    rung[n] = 0;
    CHECK(strstr(rung, "\nlease_ms=60000\n") != NULL);
    CHECK(strstr(rung, "\nstate=held\n") != NULL);
    CHECK_RC(hpclock_check(h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);

    /* Without the lease, lease_ms is not used (docs/api.md#types: "ignored without a
     * lease"): say what a bad one does there. */
    opts.flags = HPCLOCK_NO_LEASE;
    opts.lease_ms = 50;
    int32_t rc = hpclock_acquire(tpath("no-lease.lock"), &opts, &h);
    fprintf(stderr, "    HPCLOCK_NO_LEASE with lease_ms 50: %s\n", hpclock_status_name(rc));
    if (rc == HPCLOCK_OK) hpclock_release(h);
    return PASS;
}

/* ---- rule 1: an empty rung ---- */

LEASE_TEST(an_empty_rung_left_by_a_dead_creator_is_taken_over_after_one_lease) {
    if (!have_lease_rig()) return no_rig();
    const char *file = "empty-rung.lock";
    struct agent *a = agent_start("node-a"), *b = agent_start("node-b");
    CHECK(a && b);
    struct acquired first, r;
    CHECK_ACQUIRE(a, on_node('a', file), HPCLOCK_LEASE, 0, LEASE_MS, 10, &first, HPCLOCK_OK);
    CHECK_RC(agent_release(a), HPCLOCK_OK);
    /* A creator that died between its O_EXCL create and its write. */
    unsigned long long top = top_rung(on_node('a', file));
    CHECK(top >= 2);
    CHECK(write_bytes(rung_path(on_node('a', file), top + 1), "", 0));
    struct seen s;
    CHECK(agent_info(b, on_node('b', file), &s));
    fprintf(stderr, "    holder_info: %s alive %d: \"%s\"\n", state_name(s.state), s.alive, s.note);
    CHECK(s.state == HPCLOCK_STATE_HELD && s.alive == -1 && strstr(s.note, "unreadable") != NULL);
    /* Either node: a holder that renews nothing, watched for a lease first. */
    CHECK_ACQUIRE(b, on_node('b', file), HPCLOCK_LEASE, 10000, LEASE_MS, 20, &r, HPCLOCK_OK);
    fprintf(stderr, "    taken over after %.2f s, previous %s, generation %llu (before: %llu)\n", r.ms / 1000.0,
            state_name(r.previous_state), r.generation, first.generation);
    CHECK(r.ms >= 900 && r.ms <= 3000);
    CHECK(r.previous_state == HPCLOCK_STATE_STALE && r.generation > first.generation);
    CHECK(top_rung(on_node('a', file)) == top + 2);
    CHECK_RC(agent_release(b), HPCLOCK_OK);
    /* The same from the node the dead creator could have been on. */
    top = top_rung(on_node('a', file));
    CHECK(write_bytes(rung_path(on_node('a', file), top + 1), "", 0));
    CHECK_ACQUIRE(a, on_node('a', file), HPCLOCK_LEASE, 10000, LEASE_MS, 20, &r, HPCLOCK_OK);
    CHECK(r.ms >= 900 && r.ms <= 3000);
    CHECK_RC(agent_release(a), HPCLOCK_OK);
    return PASS;
}

/* ---- the rules one at a time: each of these fails if its rule's line is
 * taken out of the code ---- */

/* Rule 2: a climber that listed the ladder, then was held up (strace delays
 * its create of the next rung by 3 s) while a holder on the other node
 * climbed far above and pruned, creates its pruned rung all the same: the
 * listing after its create shows the higher rungs, and it must yield. */
LEASE_TEST(a_climber_delayed_before_its_create_yields_to_the_higher_rung_it_finds) {
    if (!have_lease_rig()) return no_rig();
    if (!have_program("strace")) return missing_tool("strace");
    const char *file = "delayed.lock";
    struct agent *q = agent_start("node-b");
    CHECK(q);
    struct acquired r, p_result;
    /* Rung 1 held, rung 2 free: the delayed climber will want rung 3. */
    CHECK_ACQUIRE(q, on_node('b', file), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    CHECK_RC(agent_release(q), HPCLOCK_OK);
    CHECK(top_rung(on_node('a', file)) == 2);
    const char *wrapper[] = { "strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat",
                              "-e", "inject=openat:delay_enter=3s:when=1", "-P", "00000000000000000003", NULL };
    struct agent *p = agent_start_with("node-a", NULL, wrapper);
    CHECK(p);
    CHECK(send_acquire(p, on_node('a', file), HPCLOCK_LEASE, 0, LEASE_MS));
    sleep_ms(500); /* p has listed (top: rung 2, free) and waits in its create of rung 3 */
    CHECK_ACQUIRE(q, on_node('b', file), HPCLOCK_LEASE, 0, LEASE_MS, 10, &r, HPCLOCK_OK);
    CHECK(read_acquired(p, 15, &p_result));
    unsigned long long top = top_rung(on_node('a', file));
    fprintf(stderr, "    the delayed climber: %s after %.2f s (q holds generation %llu, top rung %llu): \"%s\"\n",
            hpclock_status_name(p_result.rc), p_result.ms / 1000.0, r.generation, top, p_result.note);
    CHECK(p_result.ms >= 2500); /* the delay was injected: this test tested something */
    CHECK(top > 4);             /* and rung 3 had been pruned meanwhile */
    CHECK_RC(p_result.rc, HPCLOCK_BUSY);
    CHECK(strstr(p_result.note, "rule 2") != NULL);
    CHECK_RC(agent_check(q), HPCLOCK_OK);
    CHECK_RC(agent_release(q), HPCLOCK_OK);
    return PASS;
}

/* Rule 3's EEXIST: a holder (lease 6 s, renewing every 2 s) whose two top
 * rungs are made unreadable (truncated) just after it renewed is, to a taker
 * with a 0.6 s lease, a holder that renews nothing and whose lease nothing
 * tells: the taker watches for its own lease, takes over with the next rung
 * (rule 1) and is then stopped, so that it climbs no further. The holder's
 * next renewal meets EEXIST on that rung and must say LOST. */
LEASE_TEST(a_holder_whose_next_rung_was_taken_says_lost_at_its_next_renewal) {
    if (!have_lease_rig()) return no_rig();
    const char *file = "taken.lock";
    struct agent *h = agent_start("node-a"), *t = agent_start("node-b");
    CHECK(h && t);
    struct acquired held, taken;
    CHECK_ACQUIRE(h, on_node('a', file), HPCLOCK_LEASE, 0, 6000, 10, &held, HPCLOCK_OK);
    unsigned long long first = top_rung(on_node('a', file)), renewed = first;
    double until = now_seconds() + 5;
    while ((renewed = top_rung(on_node('a', file))) == first && now_seconds() < until) sleep_ms(2);
    CHECK(renewed == first + 1);
    CHECK(truncate(rung_path(on_node('a', file), renewed), 0) == 0);
    CHECK(truncate(rung_path(on_node('a', file), first), 0) == 0);
    CHECK_ACQUIRE(t, on_node('b', file), HPCLOCK_LEASE, 3000, 600, 15, &taken, HPCLOCK_OK);
    kill(t->pid, SIGSTOP);
    unsigned long long top = top_rung(on_node('a', file));
    fprintf(stderr, "    the taker judged the unreadable rung %llu and took rung %llu after %.2f s: \"%s\"\n", renewed,
            top, taken.ms / 1000.0, taken.note);
    CHECK(top == renewed + 1); /* the taker's rung, and nothing above it */
    long long ms = -1;
    char note[4096] = "";
    int rc = agent_status(h, 15, &ms, note, sizeof note, "checkuntil -6 4000");
    fprintf(stderr, "    the holder's check: %s after %lld ms: \"%s\"\n", hpclock_status_name(rc), ms, note);
    CHECK_RC(rc, HPCLOCK_E_LOST);
    CHECK(strstr(note, "taken over") != NULL);
    CHECK(top_rung(on_node('a', file)) == renewed + 1); /* the holder created nothing above the taker */
    return PASS;
}

/* Rule 1 with mixed periods: an unreadable top rung is watched for the lease
 * of the readable rung below it (the holder's last renewal), not the
 * watcher's own shorter one: a holder (lease 6 s) whose renewal left an empty
 * rung is not taken over by a caller with a 0.6 s lease waiting 3 s. */
LEASE_TEST(an_unreadable_top_rung_is_watched_for_the_lease_of_the_rung_below_it) {
    if (!have_lease_rig()) return no_rig();
    const char *file = "torn-top.lock";
    struct agent *h = agent_start("node-a"), *t = agent_start("node-b");
    CHECK(h && t);
    struct acquired held, waited;
    CHECK_ACQUIRE(h, on_node('a', file), HPCLOCK_LEASE, 0, 6000, 10, &held, HPCLOCK_OK);
    unsigned long long first = top_rung(on_node('a', file)), top = first;
    double until = now_seconds() + 5;
    while ((top = top_rung(on_node('a', file))) == first && now_seconds() < until) sleep_ms(2);
    CHECK(top == first + 1); /* one renewal: the rung below the top is the holder's */
    kill(h->pid, SIGSTOP);   /* no renewal replaces the torn rung during the test */
    CHECK(truncate(rung_path(on_node('a', file), top), 0) == 0);
    CHECK_ACQUIRE(t, on_node('b', file), HPCLOCK_LEASE, 3000, 600, 15, &waited, HPCLOCK_BUSY);
    fprintf(stderr, "    a 0.6 s caller waited %.2f s on the unreadable rung %llu of a 6 s holder: %s\n",
            waited.ms / 1000.0, top, hpclock_status_name(waited.rc));
    kill(h->pid, SIGCONT);
    return PASS;
}

/* Rule 5: the top two rungs always stay. Sampled from the other node while a
 * holder renews for a few leases; a sample that misses one is listed again
 * at once (a listing may race a renewal's create and prune), and only two in
 * a row with the same top count. */
LEASE_TEST(the_top_two_rungs_always_stay_while_a_holder_renews_and_after_it_releases) {
    if (!have_lease_rig()) return no_rig();
    const char *file = "two.lock";
    struct agent *a = agent_start("node-a");
    CHECK(a);
    struct acquired held;
    CHECK_ACQUIRE(a, on_node('a', file), HPCLOCK_LEASE, 0, LEASE_MS, 10, &held, HPCLOCK_OK);
    int samples = 0, most = 0;
    double until = now_seconds() + (under_valgrind() ? 1.5 : 3.5);
    while (now_seconds() < until) {
        unsigned long long rungs[128];
        int n = list_rungs(on_node('b', file), rungs, 128, NULL);
        CHECK(n > 0);
        if (n > most) most = n;
        unsigned long long top = rungs[n - 1];
        int below = n >= 2 && rungs[n - 2] == top - 1;
        if (top >= 2 && !below) {
            n = list_rungs(on_node('b', file), rungs, 128, NULL);
            CHECK(n > 0);
            if (rungs[n - 1] == top && !(n >= 2 && rungs[n - 2] == top - 1)) {
                fprintf(stderr, "    the ladder holds %d rung(s), top %llu, without rung %llu below it\n", n, top,
                        top - 1);
                return FAIL;
            }
        }
        samples++;
        sleep_ms(7);
    }
    CHECK_RC(agent_release(a), HPCLOCK_OK);
    unsigned long long rungs[128];
    int n = list_rungs(on_node('b', file), rungs, 128, NULL);
    fprintf(stderr, "    %d samples, at most %d rungs; after the release %d rung(s), top %llu\n", samples, most, n,
            n > 0 ? rungs[n - 1] : 0);
    CHECK(n >= 2 && rungs[n - 2] == rungs[n - 1] - 1);
    CHECK(most <= 4); /* a handful */
    char text[4096] = "";
    long size = read_bytes(rung_path(on_node('b', file), rungs[n - 1]), text, sizeof text - 1);
    CHECK(size > 0);
    text[size] = 0;
    CHECK(strstr(text, "\nstate=free\n") != NULL); /* rule 6: the release is a rung */
    return PASS;
}

/* The tracer of a thread: TracerPid in /proc/PID/status. */
static int tracer_of(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    int tracer = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "TracerPid: %d", &tracer) == 1) break;
    }
    fclose(f);
    return tracer;
}

/* Rule 5: only rungs below one's own (less one) are pruned. A release whose
 * listing is slow (strace delays it by 1.5 s) lists after the next holder,
 * on the other node, has climbed above its free rung; that holder is then
 * stopped, so its rung is the top. The release must not prune it: a third
 * process would climb over the free rung while the next holder holds. */
LEASE_TEST(a_slow_release_never_prunes_the_rung_of_the_next_holder) {
    if (!have_lease_rig()) return no_rig();
    if (!have_program("strace")) return missing_tool("strace");
    const char *file = "slow-release.lock";
    struct agent *h = agent_start("node-a"), *m = agent_start("node-a"), *n = agent_start("node-b");
    struct agent *o = agent_start("node-b");
    CHECK(h && m && n && o);
    struct acquired held, next, third;
    CHECK_ACQUIRE(h, on_node('a', file), HPCLOCK_LEASE, 0, LEASE_MS, 10, &held, HPCLOCK_OK);
    CHECK(send_acquire(n, on_node('b', file), HPCLOCK_LEASE, 10000, LEASE_MS)); /* waits for h */
    CHECK(send_acquire(m, on_node('a', file), HPCLOCK_LEASE, 8000, LEASE_MS));  /* waits on node-a's kernel lock */
    /* Only h's main thread, which releases: its renewal thread runs free. */
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d", (int)h->pid);
    char *argv[] = { "strace", "-qq", "-o", "/dev/null", "-e", "trace=getdents64", "-e",
                     "inject=getdents64:delay_enter=1500ms", "-p", pid_text, NULL };
    pid_t tracer = spawn_program(argv);
    CHECK(tracer > 0);
    track(tracer);
    double until = now_seconds() + 10;
    while (tracer_of(h->pid) == 0 && now_seconds() < until) sleep_ms(10);
    CHECK(tracer_of(h->pid) != 0);
    long long release_ms = -1;
    CHECK(agent_send(h, "release"));
    CHECK(read_acquired(n, 15, &next));
    if (next.rc == HPCLOCK_OK) kill(n->pid, SIGSTOP); /* it climbs no further: its rung stays the top */
    fprintf(stderr, "    the next holder (node-b): %s after %.2f s\n", hpclock_status_name(next.rc), next.ms / 1000.0);
    CHECK_RC(next.rc, HPCLOCK_OK);
    char line[8192];
    int rc = 99;
    CHECK(agent_reply(h, 15, line, sizeof line) && sscanf(line, "%d %lld", &rc, &release_ms) == 2);
    fprintf(stderr, "    the slow release: %s after %.2f s\n", hpclock_status_name(rc), release_ms / 1000.0);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(release_ms >= 1200); /* the delay was injected: this test tested something */
    struct seen s;
    CHECK(agent_info(o, on_node('b', file), &s));
    fprintf(stderr, "    right after the release, from node-b: %s pid %lld on %s\n", state_name(s.state), s.pid, s.host);
    CHECK(s.state == HPCLOCK_STATE_HELD && s.pid == n->pid);
    CHECK(read_acquired(m, 15, &third));
    fprintf(stderr, "    the third (node-a): %s after %.2f s, previous %s pid %lld on %s\n", hpclock_status_name(third.rc),
            third.ms / 1000.0, state_name(third.previous_state), third.previous_pid, third.previous_host);
    /* It may take over only from the stopped holder, after watching it for
     * a lease — never by climbing over the released rung. */
    if (third.rc == HPCLOCK_OK) {
        CHECK(third.previous_pid == n->pid && third.previous_state == HPCLOCK_STATE_STALE);
        CHECK(third.generation > next.generation);
    } else {
        CHECK_RC(third.rc, HPCLOCK_BUSY);
    }
    return PASS;
}

static const struct test tests[] = {
    { "twenty_rounds_of_three_racers_per_node_have_exactly_one_winner",
      twenty_rounds_of_three_racers_per_node_have_exactly_one_winner },
    { "generations_strictly_increase_across_the_winners_of_both_nodes",
      generations_strictly_increase_across_the_winners_of_both_nodes },
    { "a_release_on_one_node_lets_the_other_node_in_at_once", a_release_on_one_node_lets_the_other_node_in_at_once },
    { "a_holder_killed_on_its_own_node_is_taken_over_at_once_as_stale",
      a_holder_killed_on_its_own_node_is_taken_over_at_once_as_stale },
    { "a_holder_killed_on_another_node_is_taken_over_after_one_lease_within_three",
      a_holder_killed_on_another_node_is_taken_over_after_one_lease_within_three },
    { "a_holder_stopped_past_three_leases_is_taken_over_and_told_lost",
      a_holder_stopped_past_three_leases_is_taken_over_and_told_lost },
    { "a_kill_storm_over_two_nodes_keeps_holders_apart_and_tokens_rising",
      a_kill_storm_over_two_nodes_keeps_holders_apart_and_tokens_rising },
    { "one_try_calls_against_a_live_remote_holder_all_answer_busy_at_once",
      one_try_calls_against_a_live_remote_holder_all_answer_busy_at_once },
    { "complete_on_one_node_is_done_on_the_other", complete_on_one_node_is_done_on_the_other },
    { "check_says_lost_when_the_lock_file_is_replaced_in_lease_and_flock_mode",
      check_says_lost_when_the_lock_file_is_replaced_in_lease_and_flock_mode },
    { "a_holder_whose_wall_clock_is_an_hour_behind_is_never_taken_over_while_alive",
      a_holder_whose_wall_clock_is_an_hour_behind_is_never_taken_over_while_alive },
    { "a_caller_whose_wall_clock_is_an_hour_ahead_never_takes_over_a_live_holder",
      a_caller_whose_wall_clock_is_an_hour_ahead_never_takes_over_a_live_holder },
    { "without_kernel_locks_the_ladder_alone_excludes_on_one_node",
      without_kernel_locks_the_ladder_alone_excludes_on_one_node },
    { "without_kernel_locks_no_lease_does_not_claim_an_exclusion_it_lacks",
      without_kernel_locks_no_lease_does_not_claim_an_exclusion_it_lacks },
    { "holder_info_from_the_other_node_names_the_lease_holder_and_stale_after_a_kill",
      holder_info_from_the_other_node_names_the_lease_holder_and_stale_after_a_kill },
    { "lease_flags_and_periods_are_checked_and_zero_means_sixty_seconds",
      lease_flags_and_periods_are_checked_and_zero_means_sixty_seconds },
    { "an_empty_rung_left_by_a_dead_creator_is_taken_over_after_one_lease",
      an_empty_rung_left_by_a_dead_creator_is_taken_over_after_one_lease },
    { "a_climber_delayed_before_its_create_yields_to_the_higher_rung_it_finds",
      a_climber_delayed_before_its_create_yields_to_the_higher_rung_it_finds },
    { "a_holder_whose_next_rung_was_taken_says_lost_at_its_next_renewal",
      a_holder_whose_next_rung_was_taken_says_lost_at_its_next_renewal },
    { "an_unreadable_top_rung_is_watched_for_the_lease_of_the_rung_below_it",
      an_unreadable_top_rung_is_watched_for_the_lease_of_the_rung_below_it },
    { "the_top_two_rungs_always_stay_while_a_holder_renews_and_after_it_releases",
      the_top_two_rungs_always_stay_while_a_holder_renews_and_after_it_releases },
    { "a_slow_release_never_prunes_the_rung_of_the_next_holder", a_slow_release_never_prunes_the_rung_of_the_next_holder },
};

int main(int argc, char **argv) {
    remember_self(argv[0]);
    if (argc == 2 && strcmp(argv[1], "--agent") == 0) return agent_main();
    if (argc == 5 && strcmp(argv[1], "--storm") == 0) return storm_main(argv[2], argv[3], argv[4]);
    snprintf(run_tag, sizeof run_tag, "run%d", (int)getpid());
    /* HPCLOCK_LEASE_ONLY=SUBSTRING: only the tests whose names contain it. */
    static struct test chosen[sizeof tests / sizeof tests[0]];
    size_t count = 0;
    const char *only = getenv("HPCLOCK_LEASE_ONLY");
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (!only || strstr(tests[i].name, only)) chosen[count++] = tests[i];
    }
    return run_tests("lease", chosen, count);
}
