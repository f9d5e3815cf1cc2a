/* Faults, injected for real: a full filesystem, a read-only one, another
 * user's symlink and hard link in a sticky directory, SIGKILL at random
 * moments, signal storms, 100,000 cycles for leaked descriptors, and random
 * bytes as lock files. Each must give a clear answer and lose nothing.
 * The full and read-only filesystems come from c-tests/fs_rig.sh. */
#include "harness.h"

#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/file.h>

static int count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* Is the lock on path free? Asked with plain flock from another process. */
static int lock_is_free(const char *path) {
    pid_t child = fork_or_die();
    if (child == 0) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) _exit(2);
        int primitive_free;
        if (primitive_here() == HPCLOCK_PRIMITIVE_OFD) {
            struct flock probe = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
            primitive_free = fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type == F_UNLCK;
        } else {
            primitive_free = flock(fd, LOCK_SH | LOCK_NB) == 0;
        }
        _exit(primitive_free ? 0 : 1);
    }
    return wait_status(child) == 0;
}

/* ---- a full filesystem ---- */

/* Fills the filesystem of dir to the last byte and the last inode. */
static void fill(const char *dir) {
    char path[PATH_MAX], block[4096];
    memset(block, 'f', sizeof block);
    for (int i = 0;; i++) { /* inodes first, then every block into one file */
        snprintf(path, sizeof path, "%s/filler-%d", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) break;
        close(fd);
    }
    snprintf(path, sizeof path, "%s/filler-0", dir);
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    while (fd >= 0 && write(fd, block, sizeof block) > 0) {}
    while (fd >= 0 && write(fd, block, 1) > 0) {}
    if (fd >= 0) close(fd);
}

static enum outcome full_filesystem_gives_enospc_and_loses_nothing(void) {
    const char *dir = rig("HPCLOCK_RIG_SMALL");
    if (!dir) return no_rig();
    char empty[PATH_MAX], recorded[PATH_MAX], fresh[PATH_MAX];
    snprintf(empty, sizeof empty, "%s/empty.lock", dir);
    snprintf(recorded, sizeof recorded, "%s/recorded.lock", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.lock", dir);
    /* Before the disk fills: an empty lock file (flock(1) style) and one with a record. */
    CHECK(write_bytes(empty, "", 0));
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(recorded, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    char before[4096];
    long before_len = read_bytes(recorded, before, sizeof before);
    fill(dir);

    /* A new lock file cannot be created. */
    CHECK_RC(hpclock_try_acquire(fresh, &h), HPCLOCK_E_OS);
    CHECK(hpclock_last_errno() == ENOSPC);
    CHECK(strstr(hpclock_last_error(), fresh) != NULL);
    CHECK(strstr(hpclock_last_error(), "No space left on device (ENOSPC)") != NULL);
    fprintf(stderr, "    new file: %s\n", hpclock_last_error());

    /* An empty lock file cannot take a record: the acquisition is undone. */
    CHECK_RC(hpclock_try_acquire(empty, &h), HPCLOCK_E_OS);
    CHECK(h == 0);
    CHECK(hpclock_last_errno() == ENOSPC);
    CHECK(strstr(hpclock_last_error(), "the lock was not taken") != NULL);
    fprintf(stderr, "    empty file: %s\n", hpclock_last_error());
    CHECK(lock_is_free(empty));
    char after[4096];
    CHECK(read_bytes(empty, after, sizeof after) == 0); /* nothing half-written left behind */

    /* A lock file that holds a record already has its page: it keeps working. */
    CHECK_RC(hpclock_try_acquire(recorded, &h), HPCLOCK_OK);
    hpclock_holder previous;
    CHECK_RC(hpclock_handle_info(h, NULL, &previous), HPCLOCK_OK);
    CHECK(previous.state == HPCLOCK_STATE_FREE && previous.generation == 1);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    hpclock_holder who;
    CHECK_RC(hpclock_holder_info(recorded, &who), HPCLOCK_OK);
    CHECK(who.generation == 2 && who.state == HPCLOCK_STATE_FREE);
    CHECK(before_len > 0);
    return PASS;
}

/* ---- a read-only filesystem ---- */

static enum outcome read_only_filesystem_gives_erofs_and_still_reads(void) {
    const char *source = rig("HPCLOCK_RIG_RO_SOURCE"), *ro = rig("HPCLOCK_RIG_RO");
    if (!source || !ro) return no_rig();
    char writable[PATH_MAX], readonly[PATH_MAX], fresh[PATH_MAX];
    snprintf(writable, sizeof writable, "%s/job.lock", source);
    snprintf(readonly, sizeof readonly, "%s/job.lock", ro);
    snprintf(fresh, sizeof fresh, "%s/new.lock", ro);
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(writable, &h), HPCLOCK_OK); /* held, through the writable view */
    char before[4096];
    long before_len = read_bytes(writable, before, sizeof before);

    hpclock_handle ro_handle = 5;
    int32_t rc = hpclock_try_acquire(readonly, &ro_handle);
    int32_t fresh_rc = hpclock_try_acquire(fresh, &ro_handle);
    int fresh_errno = hpclock_last_errno();
    char message[512];
    snprintf(message, sizeof message, "%s", hpclock_last_error());
    hpclock_holder who;
    int32_t info_rc = hpclock_holder_info(readonly, &who);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);

    CHECK_RC(rc, HPCLOCK_E_OS);
    CHECK(ro_handle == 0);
    CHECK_RC(fresh_rc, HPCLOCK_E_OS);
    CHECK(fresh_errno == EROFS);
    fprintf(stderr, "    %s\n", message);
    CHECK(strstr(message, "Read-only file system (EROFS)") != NULL && strstr(message, "read-only") != NULL);
    CHECK_RC(info_rc, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_HELD && who.pid == getpid());
    char after[4096];
    CHECK(read_bytes(writable, after, sizeof after) > 0);
    CHECK(before_len > 0);
    return PASS;
}

/* ---- attacks in a sticky shared directory ---- */

/* Like /tmp: world-writable, sticky. */
static const char *sticky_dir(void) {
    const char *dir = tpath("shared");
    mkdir(dir, 0755);
    chmod(test_root, 0755);
    chmod(test_dir, 0755);
    chmod(dir, 01777);
    return dir;
}

/* Runs `what` as an ordinary user (nobody) when we are root; as ourselves otherwise. */
static int as_other_user(int (*what)(const char *, const char *), const char *a, const char *b) {
    pid_t child = fork_or_die();
    if (child == 0) {
        if (geteuid() == 0 && !become_nobody()) _exit(90);
        _exit(what(a, b) == 0 ? 0 : 91);
    }
    return wait_status(child);
}

static int plant_symlink(const char *target, const char *at) {
    return symlink(target, at);
}

static enum outcome another_users_symlink_is_refused_victim_untouched(void) {
    const char *dir = sticky_dir();
    char victim[PATH_MAX], lock[PATH_MAX];
    snprintf(victim, sizeof victim, "%s/results.dat", test_dir);
    snprintf(lock, sizeof lock, "%s/run.lock", dir);
    CHECK(write_bytes(victim, "precious results\n", 17));
    CHECK(as_other_user(plant_symlink, victim, lock) == 0);
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(lock, &h), HPCLOCK_E_OS);
    /* ELOOP from O_NOFOLLOW, or EACCES where fs.protected_symlinks stops it first */
    CHECK(h == 0 && (hpclock_last_errno() == ELOOP || hpclock_last_errno() == EACCES));
    fprintf(stderr, "    %s\n", hpclock_last_error());
    CHECK(strstr(hpclock_last_error(), "symbolic link") != NULL);
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = 200;
    CHECK_RC(hpclock_acquire(lock, &opts, &h), HPCLOCK_E_OS); /* waiting changes nothing */
    CHECK(file_equals(victim, "precious results\n"));
    return PASS;
}

static enum outcome hard_link_to_another_file_is_refused_victim_untouched(void) {
    const char *dir = sticky_dir();
    char victim[PATH_MAX], lock[PATH_MAX];
    snprintf(victim, sizeof victim, "%s/shadow.dat", test_dir);
    snprintf(lock, sizeof lock, "%s/job.lock", dir);
    CHECK(write_bytes(victim, "do not overwrite\n", 17));
    /* With fs.protected_hardlinks=1 the kernel stops an ordinary user from
     * linking a file it does not own; the planted link is made here with our
     * own rights, as a user could where that protection is off. */
    CHECK(link(victim, lock) == 0);
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(lock, &h), HPCLOCK_E_INVALID);
    CHECK(h == 0);
    CHECK(strstr(hpclock_last_error(), "hard links") != NULL);
    CHECK(file_equals(victim, "do not overwrite\n"));
    hpclock_holder who; /* reading is harmless, and allowed */
    CHECK_RC(hpclock_holder_info(lock, &who), HPCLOCK_OK);
    return PASS;
}

static enum outcome unwritable_lock_file_gives_eacces_and_still_reads(void) {
    const char *dir = sticky_dir();
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s/owned.lock", dir);
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(lock, &h), HPCLOCK_OK); /* ours, mode 0644 */
    pid_t child = fork_or_die();
    if (child == 0) {
        if (geteuid() == 0) {
            if (!become_nobody()) _exit(90);
        } else if (chmod(lock, 0444) != 0) {
            _exit(91);
        }
        hpclock_handle mine;
        if (hpclock_try_acquire(lock, &mine) != HPCLOCK_E_OS || hpclock_last_errno() != EACCES) _exit(92);
        if (!strstr(hpclock_last_error(), "Permission denied (EACCES)") || !strstr(hpclock_last_error(), lock)) _exit(93);
        hpclock_holder who;
        if (hpclock_holder_info(lock, &who) != HPCLOCK_OK || who.state != HPCLOCK_STATE_HELD) _exit(94);
        _exit(0);
    }
    int status = wait_status(child);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    if (status) fprintf(stderr, "    unprivileged child exited %d\n", status);
    CHECK(status == 0);
    return PASS;
}

/* ---- SIGKILL at random moments ---- */

struct storm {
    atomic_int holder;          /* pid of the process that believes it holds the lock, or 0 */
    atomic_int killed;          /* the victim the parent is killing, set before the SIGKILL */
    atomic_int overlaps, cycles, competitor_errors;
    atomic_int stop;
};

static int process_is_gone(int pid) {
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    long n = read_bytes(path, text, sizeof text - 1);
    if (n <= 0) return 1;
    text[n] = 0;
    char *close_paren = strrchr(text, ')');
    return close_paren && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

/* Inside the lock: claim the holder slot, stay a while (so that a second
 * holder would meet us there), and check that nobody else claimed it. A
 * holder killed inside the lock leaves its pid behind; it is gone, so that is
 * no overlap. The kernel releases a dying process's lock when it closes its
 * files, before /proc shows it as a zombie: the victim the parent is killing
 * counts as gone from the moment it was chosen. */
static void enter(struct storm *s) {
    int me = (int)getpid();
    int previous = atomic_exchange(&s->holder, me);
    if (previous != 0 && previous != atomic_load(&s->killed) && !process_is_gone(previous))
        atomic_fetch_add(&s->overlaps, 1);
    for (int i = 0; i < 3; i++) sched_yield();
    if (atomic_load(&s->holder) != me) atomic_fetch_add(&s->overlaps, 1);
}

static void leave(struct storm *s) {
    int me = (int)getpid();
    atomic_compare_exchange_strong(&s->holder, &me, 0);
}

static void storm_victim(struct storm *s, const char *path, unsigned seed) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = (seed & 1) ? 50 : 0; /* half of them wait, polling */
    opts.flags = HPCLOCK_IGNORE_DONE;      /* and keep taking it after a complete */
    for (;;) {
        hpclock_handle h;
        if (hpclock_acquire(path, &opts, &h) != HPCLOCK_OK) continue;
        enter(s);
        leave(s);
        if (seed & 2) hpclock_complete(h); else hpclock_release(h);
    }
}

static enum outcome kill_storm_of_1000_never_wedges_or_doubles_the_lock(void) {
    const char *path = tpath("storm.lock");
    struct storm *s = shared_alloc(sizeof *s);
    pid_t competitor = fork_or_die();
    if (competitor == 0) { /* contends throughout, and checks for a second holder */
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.timeout_ms = 20;
        opts.flags = HPCLOCK_IGNORE_DONE;
        while (!atomic_load(&s->stop)) {
            hpclock_handle h;
            int32_t rc = hpclock_acquire(path, &opts, &h);
            if (rc == HPCLOCK_BUSY) continue;
            if (rc != HPCLOCK_OK) {
                atomic_fetch_add(&s->competitor_errors, 1);
                continue;
            }
            enter(s);
            leave(s);
            if (hpclock_release(h) != HPCLOCK_OK) atomic_fetch_add(&s->competitor_errors, 1);
        }
        _exit(0);
    }
    unsigned seed = 12345;
    int not_acquirable = 0, info_failures = 0;
    hpclock_options wait;
    hpclock_options_init(&wait);
    wait.timeout_ms = 10000;
    wait.flags = HPCLOCK_IGNORE_DONE;
    for (int cycle = 0; cycle < 1000; cycle++) {
        seed = seed * 1103515245u + 12345u;
        pid_t victim = fork_or_die();
        if (victim == 0) storm_victim(s, path, seed >> 16);
        /* 0 to ~1.5 ms: somewhere in acquiring, writing the record, or releasing */
        struct timespec delay = { 0, (long)((seed >> 8) % 1500) * 1000L };
        nanosleep(&delay, NULL);
        atomic_store(&s->killed, (int)victim);
        kill(victim, SIGKILL);
        wait_status(victim);
        hpclock_holder who;
        if (hpclock_holder_info(path, &who) != HPCLOCK_OK) info_failures++;
        if (cycle % 10 == 0) { /* the lock is never wedged */
            hpclock_handle h;
            if (hpclock_acquire(path, &wait, &h) == HPCLOCK_OK) {
                enter(s);
                leave(s);
                hpclock_release(h);
            } else {
                not_acquirable++;
            }
        }
        atomic_fetch_add(&s->cycles, 1);
    }
    atomic_store(&s->stop, 1);
    CHECK(wait_status(competitor) == 0);
    hpclock_handle h;
    CHECK_RC(hpclock_acquire(path, &wait, &h), HPCLOCK_OK);
    hpclock_holder previous;
    CHECK_RC(hpclock_handle_info(h, NULL, &previous), HPCLOCK_OK);
    CHECK(previous.generation > 1000); /* the storm really took the lock over and over */
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    fprintf(stderr, "    1000 kills, %llu acquisitions in all, %d overlaps\n",
            (unsigned long long)previous.generation, s->overlaps);
    CHECK(s->overlaps == 0);
    CHECK(not_acquirable == 0);
    CHECK(info_failures == 0);
    CHECK(s->competitor_errors == 0);
    return PASS;
}

/* ---- signal storms ---- */

static atomic_int signals_seen;

static void count_signal(int sig) {
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

/* In a child: SIGUSR1 without SA_RESTART, so every blocking call is
 * interrupted (EINTR); a storm process sends it every 20 µs. */
static enum outcome under_signal_storm(int32_t (*body)(const char *path), const char *path) {
    pid_t child = fork_or_die();
    if (child == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = count_signal; /* no SA_RESTART */
        sigaction(SIGUSR1, &sa, NULL);
        pid_t target = getpid();
        pid_t storm = fork();
        if (storm == 0) {
            for (;;) {
                if (kill(target, SIGUSR1) != 0) _exit(0);
                usleep(20);
            }
        }
        int32_t result = body(path);
        kill(storm, SIGKILL);
        waitpid(storm, NULL, 0);
        fprintf(stderr, "    %d signals arrived during the call\n", atomic_load(&signals_seen));
        _exit(result == 0 && atomic_load(&signals_seen) > 100 ? 0 : 1);
    }
    return wait_status(child) == 0 ? PASS : FAIL;
}

static int32_t timed_wait_times_out_honestly(const char *path) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = 700;
    hpclock_handle h = 5;
    double start = now_seconds();
    int32_t rc = hpclock_acquire(path, &opts, &h);
    double waited = now_seconds() - start;
    fprintf(stderr, "    timed wait: %s after %.2fs\n", hpclock_status_name(rc), waited);
    return rc == HPCLOCK_BUSY && h == 0 && waited >= 0.7 && waited < 10.0 ? 0 : 1;
}

static int32_t unlimited_wait_gets_the_lock(const char *path) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = -1;
    hpclock_handle h;
    int32_t rc = hpclock_acquire(path, &opts, &h);
    fprintf(stderr, "    unlimited wait: %s\n", hpclock_status_name(rc));
    return rc == HPCLOCK_OK && hpclock_release(h) == HPCLOCK_OK ? 0 : 1;
}

static int32_t timed_wait_gets_the_lock(const char *path) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.timeout_ms = 30000;
    hpclock_handle h;
    int32_t rc = hpclock_acquire(path, &opts, &h);
    return rc == HPCLOCK_OK && hpclock_release(h) == HPCLOCK_OK ? 0 : 1;
}

static enum outcome signal_storm_keeps_timeouts_and_outcomes_right(void) {
    const char *path = tpath("signals.lock");
    pid_t holder = spawn_holder(path, -1);
    enum outcome timed = under_signal_storm(timed_wait_times_out_honestly, path);
    kill_and_reap(holder);
    CHECK(timed == PASS);
    holder = spawn_holder(path, 800); /* lets go while the waiter is in the kernel */
    enum outcome unlimited = under_signal_storm(unlimited_wait_gets_the_lock, path);
    wait_status(holder);
    CHECK(unlimited == PASS);
    holder = spawn_holder(path, 800);
    enum outcome timed_ok = under_signal_storm(timed_wait_gets_the_lock, path);
    wait_status(holder);
    CHECK(timed_ok == PASS);
    return PASS;
}

/* ---- descriptors ---- */

static enum outcome hundred_thousand_cycles_leak_no_descriptor(void) {
    const char *path = tpath("cycles.lock");
    const char *busy = tpath("busy.lock");
    const char *missing = tpath("no/such/dir/x.lock");
    pid_t holder = spawn_holder(busy, -1);
    int before = count_open_fds();
    int wrong = 0;
    for (int i = 0; i < 100000; i++) {
        hpclock_handle h;
        if (hpclock_try_acquire(path, &h) != HPCLOCK_OK || hpclock_release(h) != HPCLOCK_OK) wrong++;
        if (i % 100 == 0) { /* and the ways out that are not success */
            hpclock_holder who;
            wrong += hpclock_try_acquire(busy, &h) != HPCLOCK_BUSY;
            wrong += hpclock_try_acquire(missing, &h) != HPCLOCK_E_OS;
            wrong += hpclock_holder_info(busy, &who) != HPCLOCK_OK;
            wrong += hpclock_release(h) != HPCLOCK_E_INVALID;
        }
    }
    int after = count_open_fds();
    kill_and_reap(holder);
    fprintf(stderr, "    descriptors before %d, after %d\n", before, after);
    CHECK(wrong == 0);
    CHECK(after == before);
    return PASS;
}

/* ---- hostile lock files ---- */

/* What a lock file may hold (docs/threat-model.md#files-that-are-not-lock-files), at most 4 KiB of it: nothing or
 * blank padding; hpclock's own record, whole, torn or damaged (its first
 * line starts with "hpclock-record "); or the legacy "PID\nTIME\n". */
static int may_be_a_lock_file(const unsigned char *bytes, size_t len) {
    if (len > 4096) return 0;
    size_t k = 0;
    while (k < len && (bytes[k] == ' ' || (bytes[k] >= '\t' && bytes[k] <= '\r'))) k++;
    if (k == len) return 1;
    if (len >= 15 && memcmp(bytes, "hpclock-record ", 15) == 0) return 1;
    char text[4097], *end;
    for (k = 0; k < len; k++) {
        if (bytes[k] == 0 || bytes[k] >= 0x7f) return 0;
    }
    memcpy(text, bytes, len);
    text[len] = 0;
    long long pid = strtoll(text, &end, 10);
    if (end == text || pid <= 0 || !strchr(" \t\n\v\f\r", *end)) return 0;
    char *time_text = end;
    double t = strtod(time_text, &end);
    if (end == time_text || !(t >= 0 && t < 1e300)) return 0;
    while (*end && strchr(" \t\n\v\f\r", *end)) end++;
    return *end == 0;
}

static enum outcome random_files_never_crash_foreign_ones_are_refused_damaged_records_replaced(void) {
    const char *path = tpath("random.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    char valid[4096];
    long valid_len = read_bytes(path, valid, sizeof valid);
    CHECK(valid_len > 0);
    size_t first_line = (size_t)((char *)memchr(valid, '\n', (size_t)valid_len) - valid) + 1;
    unsigned seed = 99;
    static unsigned char bytes[12000], after[12001];
    int refused = 0, replaced = 0;
    for (int i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 8) % sizeof bytes;
        if (i % 3 == 0) { /* a valid record, damaged below its first line */
            memcpy(bytes, valid, (size_t)valid_len);
            len = (size_t)valid_len;
            for (int k = 0; k < 3; k++) {
                seed = seed * 1103515245u + 12345u;
                bytes[first_line + (seed >> 8) % (len - first_line)] ^= (unsigned char)(1u << ((seed >> 4) % 8));
            }
        } else {
            for (size_t k = 0; k < len; k++) {
                seed = seed * 1103515245u + 12345u;
                bytes[k] = (unsigned char)(seed >> 16);
            }
        }
        CHECK(write_bytes(path, bytes, len));
        hpclock_holder who;
        CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
        CHECK(who.state >= HPCLOCK_STATE_FREE && who.state <= HPCLOCK_STATE_DONE);
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.flags = HPCLOCK_IGNORE_DONE;
        if (!may_be_a_lock_file(bytes, len)) { /* refused, and left as it was */
            h = 5;
            CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_E_INVALID);
            CHECK(h == 0);
            CHECK(strstr(hpclock_last_error(), "is not a lock file") != NULL);
            CHECK(read_bytes(path, (char *)after, sizeof after) == (long)len);
            CHECK(memcmp(after, bytes, len) == 0);
            CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
            refused++;
            continue;
        }
        CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
        CHECK_RC(hpclock_release(h), HPCLOCK_OK);
        CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
        CHECK(strcmp(hpclock_last_error(), "") == 0); /* a whole record again */
        CHECK(who.state == HPCLOCK_STATE_FREE && who.pid == getpid());
        replaced++;
    }
    fprintf(stderr, "    %d foreign files refused, %d damaged records replaced\n", refused, replaced);
    CHECK(refused == 200 && replaced == 100); /* as the seed has it */
    return PASS;
}

static const struct test tests[] = {
    { "full_filesystem_gives_enospc_and_loses_nothing", full_filesystem_gives_enospc_and_loses_nothing },
    { "read_only_filesystem_gives_erofs_and_still_reads", read_only_filesystem_gives_erofs_and_still_reads },
    { "another_users_symlink_is_refused_victim_untouched", another_users_symlink_is_refused_victim_untouched },
    { "hard_link_to_another_file_is_refused_victim_untouched",
      hard_link_to_another_file_is_refused_victim_untouched },
    { "unwritable_lock_file_gives_eacces_and_still_reads", unwritable_lock_file_gives_eacces_and_still_reads },
    { "kill_storm_of_1000_never_wedges_or_doubles_the_lock", kill_storm_of_1000_never_wedges_or_doubles_the_lock },
    { "signal_storm_keeps_timeouts_and_outcomes_right", signal_storm_keeps_timeouts_and_outcomes_right },
    { "hundred_thousand_cycles_leak_no_descriptor", hundred_thousand_cycles_leak_no_descriptor },
    { "random_files_never_crash_foreign_ones_are_refused_damaged_records_replaced",
      random_files_never_crash_foreign_ones_are_refused_damaged_records_replaced },
};

int main(void) {
    return run_tests("faults", tests, sizeof tests / sizeof tests[0]);
}
