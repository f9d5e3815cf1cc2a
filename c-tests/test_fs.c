/* Where a lock holds, shown on real filesystems: a fresh tmpfs and ext4, a
 * btrfs subvolume, and a two-node rig (c-tests/fs_rig.sh) in which two
 * "nodes" — processes with their own hostname (unshare --uts) — reach one
 * backing directory through bindfs mounts that either keep locks node-local
 * or forward them. */
#include "harness.h"

#include <sched.h>
#include <sys/file.h>
#include <sys/sysmacros.h>

/* ---- the rig ---- */

static int have_rig(void) {
    return rig("HPCLOCK_RIG_SPLIT_A") && rig("HPCLOCK_RIG_SPLIT_B") && rig("HPCLOCK_RIG_SHARED_A") &&
           rig("HPCLOCK_RIG_SHARED_B") && rig("HPCLOCK_RIG_TMPFS") && rig("HPCLOCK_RIG_EXT4");
}

/* A file on a rig mount, per test. */
static const char *on(const char *mount, const char *file) {
    static char buffers[4][PATH_MAX];
    static int next;
    char *p = buffers[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", rig(mount), file);
    return p;
}

/* ---- node processes: a fresh program with its own hostname ---- */

/* Written whole or not at all (rename), so the parent never reads half. */
static void write_text(const char *path, const char *text) {
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs(text, f);
        if (fclose(f) == 0) rename(tmp, path);
    }
}

/* test_fs --node ACTION PATH OUT: what one "node" does. */
static int node_main(const char *action, const char *path, const char *out) {
    char line[1024];
    if (strcmp(action, "hold") == 0) { /* hpclock holds until killed */
        hpclock_handle h;
        int32_t rc = hpclock_try_acquire(path, &h);
        write_text(out, hpclock_status_name(rc));
        if (rc != HPCLOCK_OK) return 1;
        for (;;) pause();
    }
    if (strcmp(action, "flock-hold") == 0 || strcmp(action, "flock-try") == 0) { /* plain flock(2) */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        int won = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;
        write_text(out, won ? "WON" : "LOST");
        if (!won || strcmp(action, "flock-try") == 0) return won ? 0 : 1;
        for (;;) pause();
    }
    if (strcmp(action, "try") == 0) { /* look, then try once with hpclock */
        hpclock_holder who, previous;
        memset(&previous, 0, sizeof previous);
        if (hpclock_holder_info(path, &who) != HPCLOCK_OK) return 3;
        hpclock_handle h;
        int32_t rc = hpclock_try_acquire(path, &h);
        if (rc == HPCLOCK_OK) {
            hpclock_handle_info(h, NULL, &previous);
            hpclock_release(h);
        }
        snprintf(line, sizeof line, "%s seen=%d alive=%d pid=%lld host=%s previous=%d previous_host=%s\n",
                 hpclock_status_name(rc), who.state, who.alive, (long long)who.pid, who.host, previous.state,
                 previous.host[0] ? previous.host : "-");
        write_text(out, line);
        return 0;
    }
    return 2;
}

/* Starts `action` as a new process on "node" `host`. */
static pid_t start_node(const char *host, const char *action, const char *path, const char *out) {
    unlink(out);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        if (unshare(CLONE_NEWUTS) != 0 || sethostname(host, strlen(host)) != 0) _exit(40);
        execl(self_exe, "test_fs", "--node", action, path, out, (char *)NULL);
        _exit(41);
    }
    return pid;
}

/* Runs `action` on `host` to the end; its OUT text in `result`. */
static int run_node(const char *host, const char *action, const char *path, char *result, size_t size) {
    const char *out = tpath("node.out");
    int status = wait_status(start_node(host, action, path, out));
    FILE *f = fopen(out, "r");
    result[0] = 0;
    if (f) {
        if (!fgets(result, (int)size, f)) result[0] = 0;
        fclose(f);
    }
    return status;
}

/* What a "try" node wrote: its status, what holder_info showed before, and
 * the previous record when it got the lock. */
struct node_result {
    char rc[64], host[256], previous_host[256];
    int seen, alive, previous;
    long long pid;
};

static int parse_node_result(const char *text, struct node_result *r) {
    return sscanf(text, "%63s seen=%d alive=%d pid=%lld host=%255s previous=%d previous_host=%255s", r->rc,
                  &r->seen, &r->alive, &r->pid, r->host, &r->previous, r->previous_host) == 7;
}

/* Starts a holder on `host` and waits until it holds (or failed). */
static pid_t start_holder(const char *host, const char *action, const char *path, const char *out) {
    pid_t pid = start_node(host, action, path, out);
    if (!wait_for_file(out, 30)) {
        kill_and_reap(pid);
        return -1;
    }
    char text[64] = { 0 };
    FILE *f = fopen(out, "r");
    if (f) {
        if (!fgets(text, sizeof text, f)) text[0] = 0;
        fclose(f);
    }
    if (strcmp(text, "HPCLOCK_OK") != 0 && strcmp(text, "WON") != 0) {
        fprintf(stderr, "    holder on %s: %s\n", host, text);
        kill_and_reap(pid);
        return -1;
    }
    return pid;
}

/* hpclock_acquire with HPCLOCK_REQUIRE_CLUSTER; the handle it left in *h. */
static int32_t acquire_requiring_cluster(const char *path, hpclock_handle *h) {
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_REQUIRE_CLUSTER;
    *h = 5;
    return hpclock_acquire(path, &opts, h);
}

/* ---- node-private filesystems ---- */

static enum outcome check_node_private(const char *dir, const char *type, uint64_t magic) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/run.lock", dir);
    hpclock_fs_info info;
    CHECK_RC(hpclock_fs_check(path, &info), HPCLOCK_OK);
    fprintf(stderr, "    %s: scope %d, primitive %d, \"%s\"\n", type, info.scope, info.primitive, info.detail);
    CHECK(info.scope == HPCLOCK_SCOPE_NODE);
    CHECK(info.primitive == HPCLOCK_PRIMITIVE_FLOCK);
    CHECK(info.magic == magic);
    CHECK(strcmp(info.fs_type, type) == 0);
    CHECK(strstr(info.detail, dir) != NULL);
    CHECK(strstr(info.detail, "other nodes would lock a different file") != NULL);
    CHECK(access(path, F_OK) != 0); /* checking creates nothing */
    return PASS;
}

static enum outcome tmpfs_and_ext4_are_node_private_with_flock(void) {
    if (!have_rig()) return no_rig();
    if (check_node_private(rig("HPCLOCK_RIG_TMPFS"), "tmpfs", 0x01021994) != PASS) return FAIL;
    return check_node_private(rig("HPCLOCK_RIG_EXT4"), "ext4", 0xEF53);
}

static enum outcome require_cluster_refuses_a_node_private_directory(void) {
    const char *dir = have_rig() ? rig("HPCLOCK_RIG_TMPFS") : test_dir;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cluster.lock", dir);
    hpclock_fs_info info;
    CHECK_RC(hpclock_fs_check(path, &info), HPCLOCK_OK);
    if (info.scope != HPCLOCK_SCOPE_NODE) {
        fprintf(stderr, "    %s is not node-private here (%s): this test needs a node-private directory\n", dir,
                info.detail);
        return FAIL;
    }
    hpclock_handle h;
    CHECK_RC(acquire_requiring_cluster(path, &h), HPCLOCK_E_UNSAFE);
    CHECK(h == 0);
    const char *message = hpclock_last_error();
    fprintf(stderr, "    message: %s\n", message);
    CHECK(strstr(message, path) != NULL);
    CHECK(strstr(message, "HPCLOCK_REQUIRE_CLUSTER") != NULL);
    CHECK(strstr(message, "private to this node") != NULL);
    CHECK(strstr(message, "other nodes would lock a different file") != NULL);
    CHECK(access(path, F_OK) != 0); /* refused before anything was created */
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK); /* without the flag it is a node-local lock */
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    return PASS;
}

static enum outcome fs_check_answers_for_missing_files_and_refuses_bad_input(void) {
    hpclock_fs_info info;
    memset(&info, 0x55, sizeof info);
    CHECK_RC(hpclock_fs_check(tpath("not-yet.lock"), &info), HPCLOCK_OK);
    CHECK(info.scope >= HPCLOCK_SCOPE_UNKNOWN && info.scope <= HPCLOCK_SCOPE_NONE);
    CHECK(strlen(info.fs_type) > 0 && strlen(info.detail) > 0);
    CHECK(access(tpath("not-yet.lock"), F_OK) != 0);
    CHECK_RC(hpclock_fs_check(tpath("no/such/dir/x.lock"), &info), HPCLOCK_E_OS);
    CHECK(hpclock_last_errno() == ENOENT);
    CHECK(strstr(hpclock_last_error(), "no/such/dir/x.lock") != NULL);
    CHECK_RC(hpclock_fs_check(NULL, &info), HPCLOCK_E_INVALID);
    CHECK_RC(hpclock_fs_check(test_dir, NULL), HPCLOCK_E_INVALID);
    return PASS;
}

/* ---- btrfs: a subvolume's st_dev is not the superblock's ---- */

/* The device (major:minor) /proc/self/mountinfo gives for the mount at
 * `point`: the superblock's, which /proc/locks shows. */
static int mount_device(const char *point, unsigned *major_out, unsigned *minor_out) {
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f) return 0;
    char line[4096], mount_point[PATH_MAX];
    unsigned major, minor;
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &major, &minor, mount_point) == 3 &&
            strcmp(mount_point, point) == 0) {
            *major_out = major;
            *minor_out = minor;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* argv: LOCKFILE READYFILE. A POSIX lock, which OFD locks conflict with. */
static const char lockf_holder[] =
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(60)\n";

static enum outcome btrfs_subvolume_holders_are_matched_in_the_kernel_lock_table(void) {
    const char *dir = rig("HPCLOCK_RIG_BTRFS");
    if (!dir) return no_rig();
    const char *path = on("HPCLOCK_RIG_BTRFS", "sub.lock");
    hpclock_fs_info info;
    CHECK_RC(hpclock_fs_check(path, &info), HPCLOCK_OK);
    fprintf(stderr, "    btrfs subvolume: scope %d, primitive %d, \"%s\"\n", info.scope, info.primitive, info.detail);
    CHECK(info.scope == HPCLOCK_SCOPE_NODE);
    CHECK(info.magic == 0x9123683E);
    CHECK(strcmp(info.fs_type, "btrfs") == 0);

    /* The rig really has the case: the file's st_dev is the subvolume's
     * anonymous device, not the mount's (superblock's) device. */
    CHECK(write_bytes(path, "", 0));
    struct stat st;
    CHECK(stat(path, &st) == 0);
    char mount_point[PATH_MAX];
    snprintf(mount_point, sizeof mount_point, "%s", dir);
    char *slash = strrchr(mount_point, '/');
    CHECK(slash != NULL);
    *slash = 0;
    unsigned sb_major, sb_minor;
    CHECK(mount_device(mount_point, &sb_major, &sb_minor));
    fprintf(stderr, "    st_dev %u:%u, superblock %u:%u\n", major(st.st_dev), minor(st.st_dev), sb_major, sb_minor);
    CHECK(major(st.st_dev) != sb_major || minor(st.st_dev) != sb_minor);

    /* A live holder is HELD, alive; once killed, STALE. */
    pid_t holder = spawn_holder(path, -1);
    hpclock_holder who;
    memset(&who, 0, sizeof who);
    int32_t rc = hpclock_holder_info(path, &who);
    hpclock_handle h = 5;
    int32_t busy = hpclock_try_acquire(path, &h);
    kill_and_reap(holder);
    fprintf(stderr, "    live holder %d: state %d, alive %d, pid %lld\n", (int)holder, who.state, who.alive,
            (long long)who.pid);
    CHECK_RC(busy, HPCLOCK_BUSY);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.alive == 1);
    CHECK(who.pid == holder);
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_STALE && who.alive == 0 && who.pid == holder);

    /* A lock with no record (flock(1); a POSIX lock where hpclock uses OFD
     * locks, which flock(1)'s would not exclude): HELD, with the holder's pid. */
    const char *bare = on("HPCLOCK_RIG_BTRFS", "bare.lock");
    const char *ready = tpath("holder-ready");
    int ofd = info.primitive == HPCLOCK_PRIMITIVE_OFD;
    if (!have_program(ofd ? "python3" : "flock")) return missing_tool(ofd ? "python3" : "flock (util-linux)");
    char script[PATH_MAX + 64];
    snprintf(script, sizeof script, ": > '%s'; exec sleep 60", ready);
    char *flock_argv[] = { "flock", "-n", (char *)bare, "sh", "-c", script, NULL };
    char *python_argv[] = { "python3", "-c", (char *)lockf_holder, (char *)bare, (char *)ready, NULL };
    pid_t bare_holder = spawn_program(ofd ? python_argv : flock_argv);
    CHECK(bare_holder > 0);
    if (!wait_for_file(ready, 30)) {
        kill_group_and_reap(bare_holder);
        CHECK(!"the holder never took the lock");
    }
    memset(&who, 0, sizeof who);
    rc = hpclock_holder_info(bare, &who);
    busy = hpclock_try_acquire(bare, &h);
    kill_group_and_reap(bare_holder);
    fprintf(stderr, "    %s %d, no record: state %d, alive %d, pid %lld\n", ofd ? "lockf" : "flock(1)",
            (int)bare_holder, who.state, who.alive, (long long)who.pid);
    CHECK_RC(busy, HPCLOCK_BUSY);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.pid == bare_holder);
    CHECK(who.alive == 1);
    return PASS;
}

/* ---- the two-node rig ---- */

static enum outcome rig_mounts_report_unknown_and_require_cluster_refuses(void) {
    if (!have_rig()) return no_rig();
    const char *mounts[] = { "HPCLOCK_RIG_SPLIT_A", "HPCLOCK_RIG_SHARED_A" };
    for (int i = 0; i < 2; i++) {
        const char *path = on(mounts[i], "unsafe.lock");
        hpclock_fs_info info;
        CHECK_RC(hpclock_fs_check(path, &info), HPCLOCK_OK);
        fprintf(stderr, "    %s: \"%s\"\n", mounts[i], info.detail);
        CHECK(info.scope == HPCLOCK_SCOPE_UNKNOWN);
        CHECK(info.magic == 0x65735546);
        CHECK(strncmp(info.fs_type, "fuse", 4) == 0);
        CHECK(strstr(info.detail, "FUSE") != NULL);
        hpclock_handle h;
        CHECK_RC(acquire_requiring_cluster(path, &h), HPCLOCK_E_UNSAFE);
        CHECK(h == 0);
        CHECK(strstr(hpclock_last_error(), "cannot tell whether other nodes are excluded") != NULL);
        CHECK(access(path, F_OK) != 0);
    }
    return PASS;
}

static enum outcome split_mounts_let_both_nodes_win_with_plain_flock(void) {
    if (!have_rig()) return no_rig();
    const char *out_a = tpath("a.out");
    pid_t a = start_holder("node-a", "flock-hold", on("HPCLOCK_RIG_SPLIT_A", "plain.lock"), out_a);
    CHECK(a > 0);
    char result[1024];
    int b = run_node("node-b", "flock-try", on("HPCLOCK_RIG_SPLIT_B", "plain.lock"), result, sizeof result);
    /* The same file, through the other "node": its flock should have failed. */
    int same_node = run_node("node-a", "flock-try", on("HPCLOCK_RIG_SPLIT_A", "plain.lock"), result, sizeof result);
    kill_and_reap(a);
    CHECK(b == 0);         /* the hazard is real: node B won too */
    CHECK(same_node == 1); /* while within node A the lock excludes */
    return PASS;
}

static enum outcome split_mounts_hpclock_sees_the_other_node_but_cannot_exclude_it(void) {
    if (!have_rig()) return no_rig();
    pid_t a = start_holder("node-a", "hold", on("HPCLOCK_RIG_SPLIT_A", "hazard.lock"), tpath("a.out"));
    CHECK(a > 0);
    char result[1024];
    int status = run_node("node-b", "try", on("HPCLOCK_RIG_SPLIT_B", "hazard.lock"), result, sizeof result);
    kill_and_reap(a);
    fprintf(stderr, "    node-b: %s", result);
    CHECK(status == 0);
    struct node_result r;
    CHECK(parse_node_result(result, &r));
    CHECK(r.seen == HPCLOCK_STATE_HELD && r.alive == -1); /* node A's record, from another host */
    CHECK(r.pid == a && strcmp(r.host, "node-a") == 0);
    /* and yet node B gets the lock: only hpclock_fs_check (UNKNOWN) and
     * HPCLOCK_REQUIRE_CLUSTER stand between a user and this. */
    CHECK(strcmp(r.rc, "HPCLOCK_OK") == 0);
    CHECK(strcmp(r.previous_host, "node-a") == 0);
    return PASS;
}

static enum outcome forwarding_mounts_exclude_across_nodes(void) {
    if (!have_rig()) return no_rig();
    const char *path_a = on("HPCLOCK_RIG_SHARED_A", "coherent.lock");
    const char *path_b = on("HPCLOCK_RIG_SHARED_B", "coherent.lock");
    pid_t a = start_holder("node-a", "hold", path_a, tpath("a.out"));
    CHECK(a > 0);
    char plain[64], result[1024];
    int plain_status = run_node("node-b", "flock-try", path_b, plain, sizeof plain);
    int status = run_node("node-b", "try", path_b, result, sizeof result);
    kill_and_reap(a);
    fprintf(stderr, "    node-b while node-a holds: %s", result);
    CHECK(plain_status == 1); /* plain flock from node B is kept out */
    CHECK(status == 0);
    struct node_result r;
    CHECK(parse_node_result(result, &r));
    CHECK(strcmp(r.rc, "HPCLOCK_BUSY") == 0);
    CHECK(r.seen == HPCLOCK_STATE_HELD && r.pid == a && strcmp(r.host, "node-a") == 0 && r.alive == -1);

    /* node A died (kill -9): node B takes over and is told so. */
    status = run_node("node-b", "try", path_b, result, sizeof result);
    fprintf(stderr, "    node-b after node-a died: %s", result);
    CHECK(status == 0);
    CHECK(parse_node_result(result, &r));
    CHECK(strcmp(r.rc, "HPCLOCK_OK") == 0);
    CHECK(r.previous == HPCLOCK_STATE_STALE && strcmp(r.previous_host, "node-a") == 0);
    return PASS;
}

static const struct test tests[] = {
    { "tmpfs_and_ext4_are_node_private_with_flock", tmpfs_and_ext4_are_node_private_with_flock },
    { "btrfs_subvolume_holders_are_matched_in_the_kernel_lock_table",
      btrfs_subvolume_holders_are_matched_in_the_kernel_lock_table },
    { "require_cluster_refuses_a_node_private_directory", require_cluster_refuses_a_node_private_directory },
    { "fs_check_answers_for_missing_files_and_refuses_bad_input",
      fs_check_answers_for_missing_files_and_refuses_bad_input },
    { "rig_mounts_report_unknown_and_require_cluster_refuses", rig_mounts_report_unknown_and_require_cluster_refuses },
    { "split_mounts_let_both_nodes_win_with_plain_flock", split_mounts_let_both_nodes_win_with_plain_flock },
    { "split_mounts_hpclock_sees_the_other_node_but_cannot_exclude_it",
      split_mounts_hpclock_sees_the_other_node_but_cannot_exclude_it },
    { "forwarding_mounts_exclude_across_nodes", forwarding_mounts_exclude_across_nodes },
};

int main(int argc, char **argv) {
    remember_self(argv[0]);
    if (argc == 5 && strcmp(argv[1], "--node") == 0) return node_main(argv[2], argv[3], argv[4]);
    return run_tests("fs", tests, sizeof tests / sizeof tests[0]);
}
