/* Real use (docs/threat-model.md, docs/record.md), tried as a user would, with real processes: a lock
 * path typed where a results file was meant, records damaged by a crash or by
 * hand, a finished job whose lock somebody briefly holds to look, a holder
 * that dies while a forked helper keeps its descriptor, a holder known only
 * to the kernel, holder_info racing a process that takes and releases the
 * lock in a loop, and other programs' locks coming and going in /proc/locks.
 * Each test here fails against hpclock 0.1 (the last one where the lock is a
 * flock: an OFD lock is not looked up in /proc/locks). */
#include "harness.h"

#include <ctype.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/file.h>

/* ---- helpers ---- */

static int under_valgrind(void) {
    const char *v = getenv("HPCLOCK_UNDER_VALGRIND");
    return v && *v && strcmp(v, "0") != 0;
}

/* CRC-32 as zlib computes it (the record's checksum line, docs/record.md#grammar). */
static uint32_t crc32_zlib(const void *data, size_t len) {
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* A whole file, malloc'd (NUL-terminated for convenience); NULL if unreadable. */
static char *read_all(const char *path, long *size) {
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) return NULL;
    long n = read_bytes(path, buf, (size_t)st.st_size);
    if (n != (long)st.st_size) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *size = n;
    return buf;
}

/* What a file was: every byte, its size and its mtime. The mtime is first
 * set far in the past, so that any write at all shows. */
struct snapshot {
    char *bytes;
    long size;
    struct timespec mtime;
};

static int take_snapshot(const char *path, struct snapshot *s) {
    struct timespec old[2] = { { 978307200, 123456789 }, { 978307200, 123456789 } }; /* 2001-01-01 */
    struct stat st;
    if (utimensat(AT_FDCWD, path, old, 0) != 0 || stat(path, &st) != 0) return 0;
    s->mtime = st.st_mtim;
    s->bytes = read_all(path, &s->size);
    return s->bytes != NULL && s->size == (long)st.st_size;
}

/* Byte for byte, size and mtime as they were; frees the snapshot. */
static int untouched(const char *path, struct snapshot *s) {
    struct stat st;
    long size = -1;
    char *now = read_all(path, &size);
    int same = now && stat(path, &st) == 0 && size == s->size && (long)st.st_size == s->size &&
               memcmp(now, s->bytes, (size_t)size) == 0 && st.st_mtim.tv_sec == s->mtime.tv_sec &&
               st.st_mtim.tv_nsec == s->mtime.tv_nsec;
    if (!same) {
        fprintf(stderr, "    %s changed: %ld bytes before, %ld after%s\n", path, s->size, size,
                now && size == s->size && memcmp(now, s->bytes, (size_t)size) == 0 ? " (same bytes, new mtime)" : "");
    }
    free(now);
    free(s->bytes);
    s->bytes = NULL;
    return same;
}

/* Does text name the number n, as a whole number (not inside a longer one)? */
static int mentions_number(const char *text, long long n) {
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", n);
    size_t len = strlen(digits);
    for (const char *p = strstr(text, digits); p; p = strstr(p + 1, digits)) {
        if ((p == text || !isdigit((unsigned char)p[-1])) && !isdigit((unsigned char)p[len])) return 1;
    }
    return 0;
}

/* Reads one byte from fd, waiting at most `seconds`. */
static int read_ready(int fd, double seconds) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    double until = now_seconds() + seconds;
    for (;;) {
        int left = (int)((until - now_seconds()) * 1000);
        if (left <= 0) return 0;
        int n = poll(&pfd, 1, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        char c;
        ssize_t got;
        while ((got = read(fd, &c, 1)) < 0 && errno == EINTR) {}
        return got == 1;
    }
}

/* Is the process gone (or a zombie, which holds no descriptor)? */
static int process_is_gone(pid_t pid) {
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    long n = read_bytes(path, text, sizeof text - 1);
    if (n <= 0) return 1;
    text[n] = 0;
    char *close_paren = strrchr(text, ')');
    return close_paren && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

/* A lock taken and released once: the file holds a whole record (generation 1). */
static char *fresh_record(const char *path, long *size) {
    hpclock_handle h;
    if (hpclock_try_acquire(path, &h) != HPCLOCK_OK || hpclock_release(h) != HPCLOCK_OK) return NULL;
    return read_all(path, size);
}

/* Where the line starting with `prefix` begins in text, or NULL. */
static char *line_starting(char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, prefix, n) == 0) return line;
    }
    return NULL;
}

/* text with the whole line starting with `prefix` replaced by `line`
 * (which ends in '\n'); malloc'd, or NULL without such a line. */
static char *replace_line(const char *text, const char *prefix, const char *line) {
    char *copy = strdup(text);
    char *at = line_starting(copy, prefix);
    if (!at) {
        free(copy);
        return NULL;
    }
    char *end = strchr(at, '\n');
    end = end ? end + 1 : at + strlen(at);
    size_t out_len = (size_t)(at - copy) + strlen(line) + strlen(end);
    char *out = malloc(out_len + 1);
    snprintf(out, out_len + 1, "%.*s%s%s", (int)(at - copy), copy, line, end);
    free(copy);
    return out;
}

/* The record with its checksum line computed again over what comes before
 * it: a valid record. Frees `text`. */
static char *with_checksum(char *text) {
    char *sum = line_starting(text, "checksum=crc32:");
    if (!sum) {
        free(text);
        return NULL;
    }
    char line[64];
    snprintf(line, sizeof line, "checksum=crc32:%08x\n", crc32_zlib(text, (size_t)(sum - text)));
    char *out = replace_line(text, "checksum=crc32:", line);
    free(text);
    return out;
}

/* Does the record's checksum line match (is it a valid record)? */
static int checksum_matches(const char *record) {
    char *copy = strdup(record);
    char *sum = line_starting(copy, "checksum=crc32:");
    int ok = sum && strtoul(sum + 15, NULL, 16) == crc32_zlib(copy, (size_t)(sum - copy));
    free(copy);
    return ok;
}

/* ---- never overwrite what is not a lock file (docs/threat-model.md#files-that-are-not-lock-files) ---- */

/* The file is refused by acquire, left exactly as it was, and still read
 * by holder_info (FREE, with a note). */
static enum outcome check_refused(const char *path, const char *what) {
    struct snapshot before;
    CHECK(take_snapshot(path, &before));
    long size = before.size;
    hpclock_handle h = 5;
    int32_t rc = hpclock_try_acquire(path, &h);
    char message[1024];
    snprintf(message, sizeof message, "%s", hpclock_last_error());
    fprintf(stderr, "    %s (%ld bytes): %s, \"%s\"\n", what, size, hpclock_status_name(rc), message);
    if (rc == HPCLOCK_OK) hpclock_release(h);
    /* no lock left behind: a second try is refused the same way, not BUSY */
    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_IGNORE_DONE;
    hpclock_handle again_h = 0;
    int32_t again = hpclock_acquire(path, &opts, &again_h);
    if (again == HPCLOCK_OK) hpclock_release(again_h);
    hpclock_holder who;
    memset(&who, 0, sizeof who);
    int32_t info = hpclock_holder_info(path, &who);
    char note[1024];
    snprintf(note, sizeof note, "%s", hpclock_last_error());
    int same = untouched(path, &before);

    CHECK_RC(rc, HPCLOCK_E_INVALID);
    CHECK(h == 0);
    char expected[128];
    snprintf(expected, sizeof expected, "is not a lock file: refusing to overwrite its %ld bytes", size);
    CHECK(strstr(message, expected) != NULL);
    CHECK(strstr(message, path) != NULL);
    CHECK_RC(again, HPCLOCK_E_INVALID);
    CHECK(same);
    if (info != HPCLOCK_OK || who.state != HPCLOCK_STATE_FREE) {
        fprintf(stderr, "    holder_info: %s, state %d, \"%s\"\n", hpclock_status_name(info), who.state, note);
    }
    CHECK_RC(info, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_FREE);
    CHECK(strstr(note, "no readable") != NULL && strstr(note, path) != NULL);
    return PASS;
}

/* The file is taken, and left holding a whole record of ours. */
static enum outcome check_taken(const char *path, const char *what) {
    hpclock_handle h = 0;
    int32_t rc = hpclock_try_acquire(path, &h);
    fprintf(stderr, "    %s: %s\n", what, hpclock_status_name(rc));
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    hpclock_holder who;
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(strcmp(hpclock_last_error(), "") == 0);
    CHECK(who.state == HPCLOCK_STATE_FREE && who.pid == getpid());
    return PASS;
}

/* `seq 100000` as a results file: 588,895 bytes. */
static char *seq_csv(size_t *len) {
    char *text = malloc(600000);
    size_t n = 0;
    for (int i = 1; i <= 100000; i++) n += (size_t)sprintf(text + n, "%d\n", i);
    *len = n;
    return text;
}

static enum outcome acquire_refuses_foreign_files_untouched_and_takes_empty_blank_legacy_and_torn(void) {
    int failures = 0;

    /* What a lock file may hold: taken. */
    const char *empty = tpath("empty.lock"), *blank = tpath("blank.lock"), *legacy = tpath("legacy.lock");
    const char *torn = tpath("torn.lock"), *padded = tpath("padded-4096.lock");
    CHECK(write_bytes(empty, "", 0));
    CHECK(write_bytes(blank, "  \n\t\n      \n", 12));
    CHECK(write_bytes(legacy, "4034097\n1764160000.25\n", 22));
    long record_len;
    char *record = fresh_record(torn, &record_len);
    CHECK(record != NULL);
    CHECK(write_bytes(torn, record, (size_t)record_len / 2)); /* a write cut short */
    char *big = malloc(4097);
    memcpy(big, record, (size_t)record_len);
    memset(big + record_len, ' ', 4097 - (size_t)record_len);
    big[4095] = '\n';
    CHECK(write_bytes(padded, big, 4096)); /* a whole record padded to 4 KiB: still a lock file */
    failures += check_taken(empty, "empty file") != PASS;
    failures += check_taken(blank, "whitespace only") != PASS;
    failures += check_taken(legacy, "legacy PID\\nTIME\\n") != PASS;
    failures += check_taken(torn, "record cut in half") != PASS;
    failures += check_taken(padded, "record padded to 4096 bytes") != PASS;

    /* What a lock file never holds: refused, untouched. */
    size_t csv_len;
    char *csv = seq_csv(&csv_len);
    const char *results = tpath("results.csv");
    int csv_written = csv_len == 588895 && write_bytes(results, csv, csv_len);
    free(csv);
    const char *hello = tpath("hello.txt"), *binary = tpath("binary.dat"), *over = tpath("record-4097.lock");
    unsigned char random_bytes[3000];
    unsigned seed = 2718;
    for (size_t i = 0; i < sizeof random_bytes; i++) {
        seed = seed * 1103515245u + 12345u;
        random_bytes[i] = (unsigned char)(seed >> 16);
    }
    big[4095] = ' ';
    big[4096] = '\n';
    int written = write_bytes(hello, "hello\n", 6) && write_bytes(binary, random_bytes, sizeof random_bytes) &&
                  write_bytes(over, big, 4097); /* a record, but longer than any record can be */
    free(big);
    free(record);
    CHECK(csv_written && written);
    failures += check_refused(results, "seq 100000 as CSV") != PASS;
    failures += check_refused(hello, "\"hello\\n\"") != PASS;
    failures += check_refused(binary, "random bytes") != PASS;
    failures += check_refused(over, "a record padded to 4097 bytes") != PASS;
    CHECK(failures == 0);
    return PASS;
}

/* ---- damaged records never lower the token or forget done (docs/record.md#what-a-reader-does-with-what-it-finds) ---- */

static enum outcome damaged_done_record_still_answers_done_and_the_token_still_grows(void) {
    const char *path = tpath("done.lock");
    hpclock_handle h;
    for (int i = 0; i < 4; i++) {
        CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
        CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    }
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_complete(h), HPCLOCK_OK);
    long len;
    char *text = read_all(path, &len);
    CHECK(text != NULL);
    int shape = line_starting(text, "state=done\n") != NULL && line_starting(text, "generation=5\n") != NULL &&
                checksum_matches(text);
    /* One character changed outside the state and generation lines: the
     * year of acquired_utc, as a stray edit or bit rot would. */
    char *year = line_starting(text, "acquired_utc=2");
    if (year) year[strlen("acquired_utc=")] = '3';
    int damaged = year && !checksum_matches(text) && write_bytes(path, text, (size_t)len);
    free(text);
    CHECK(shape);
    CHECK(damaged);

    struct snapshot before;
    CHECK(take_snapshot(path, &before));
    h = 5;
    int32_t rc = hpclock_try_acquire(path, &h);
    if (rc == HPCLOCK_OK) {
        hpclock_holder mine;
        hpclock_handle_info(h, &mine, NULL);
        fprintf(stderr, "    try_acquire took the finished work again, generation %llu\n",
                (unsigned long long)mine.generation);
        hpclock_release(h);
    }
    int same = untouched(path, &before);
    CHECK_RC(rc, HPCLOCK_DONE);
    CHECK(h == 0);
    CHECK(same); /* DONE: nothing to do, nothing written */

    hpclock_options opts;
    hpclock_options_init(&opts);
    opts.flags = HPCLOCK_IGNORE_DONE;
    CHECK_RC(hpclock_acquire(path, &opts, &h), HPCLOCK_OK);
    hpclock_holder mine;
    CHECK_RC(hpclock_handle_info(h, &mine, NULL), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    fprintf(stderr, "    re-run with IGNORE_DONE: generation %llu\n", (unsigned long long)mine.generation);
    CHECK(mine.generation == 6);
    hpclock_holder who;
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.generation == 6 && who.state == HPCLOCK_STATE_FREE);
    return PASS;
}

static enum outcome hand_edited_record_with_two_generations_continues_above_the_highest(void) {
    const char *path = tpath("edited.lock");
    long len;
    char *text = fresh_record(path, &len);
    CHECK(text != NULL);
    /* generation=3 where it was, and a generation=40 line added after pid=;
     * the checksum line is left as it was, so it no longer matches. */
    char *three = replace_line(text, "generation=", "generation=3\n");
    free(text);
    CHECK(three != NULL);
    char *pid_line = line_starting(three, "pid=");
    char *after_pid = pid_line ? strchr(pid_line, '\n') + 1 : NULL;
    size_t edited_len = strlen(three) + strlen("generation=40\n");
    char *edited = malloc(edited_len + 1);
    if (after_pid) {
        snprintf(edited, edited_len + 1, "%.*sgeneration=40\n%s", (int)(after_pid - three), three, after_pid);
    }
    free(three);
    int ok = after_pid && !checksum_matches(edited) && write_bytes(path, edited, strlen(edited));
    free(edited);
    CHECK(ok);

    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    hpclock_holder mine;
    CHECK_RC(hpclock_handle_info(h, &mine, NULL), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    fprintf(stderr, "    after generation=3 and generation=40: generation %llu\n",
            (unsigned long long)mine.generation);
    CHECK(mine.generation == 41);
    return PASS;
}

/* Writes a valid record (checksum recomputed) with this generation. */
static int write_valid_record_with_generation(const char *path, const char *template_record, const char *generation) {
    char line[64];
    snprintf(line, sizeof line, "generation=%s\n", generation);
    char *text = with_checksum(replace_line(template_record, "generation=", line));
    int ok = text && checksum_matches(text) && write_bytes(path, text, strlen(text));
    free(text);
    return ok;
}

static enum outcome generation_at_the_top_of_its_range_is_refused_never_repeated(void) {
    const char *path = tpath("top.lock");
    long len;
    char *record = fresh_record(path, &len);
    CHECK(record != NULL);
    int written = write_valid_record_with_generation(path, record, "18446744073709551615");
    CHECK(written);
    /* The record is valid: holder_info reads it whole. */
    hpclock_holder who;
    int32_t rc = hpclock_holder_info(path, &who);
    int valid = rc == HPCLOCK_OK && strcmp(hpclock_last_error(), "") == 0 && who.generation == UINT64_MAX &&
                who.state == HPCLOCK_STATE_FREE;
    if (!valid) free(record);
    CHECK(valid); /* our record is a valid one: its checksum is right */

    struct snapshot before;
    int snapped = take_snapshot(path, &before);
    hpclock_handle h = 5;
    rc = hpclock_try_acquire(path, &h);
    char message[1024];
    snprintf(message, sizeof message, "%s", hpclock_last_error());
    if (rc == HPCLOCK_OK) {
        hpclock_holder mine;
        hpclock_handle_info(h, &mine, NULL);
        fprintf(stderr, "    acquired with fencing token %llu: a token repeated\n", (unsigned long long)mine.generation);
        hpclock_release(h);
    } else {
        fprintf(stderr, "    %s: \"%s\"\n", hpclock_status_name(rc), message);
    }
    int same = snapped && untouched(path, &before);
    if (rc != HPCLOCK_E_INVALID || !same) free(record);
    CHECK(snapped);
    CHECK_RC(rc, HPCLOCK_E_INVALID);
    CHECK(h == 0);
    if (!strstr(message, path)) free(record);
    CHECK(strstr(message, path) != NULL);
    CHECK(same);

    /* One below the top: the last token there is. */
    written = write_valid_record_with_generation(path, record, "18446744073709551614");
    free(record);
    CHECK(written);
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    hpclock_holder mine;
    CHECK_RC(hpclock_handle_info(h, &mine, NULL), HPCLOCK_OK);
    CHECK_RC(hpclock_release(h), HPCLOCK_OK);
    CHECK(mine.generation == UINT64_MAX);
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_E_INVALID); /* and after it, nothing */
    return PASS;
}

/* ---- done is seen without the lock (docs/protocol.md#lock-and-if-busy-read-without-the-lock) ---- */

/* argv: LOCKFILE READYFILE flock|lockf. Holds the kernel lock, writes nothing. */
static const char looker_script[] =
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'r+')\n"
    "getattr(fcntl, sys.argv[3])(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(60)\n";

static enum outcome done_is_done_while_another_process_holds_the_lock_to_look(void) {
    if (!have_program("python3")) return missing_tool("python3");
    const char *path = tpath("finished.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_complete(h), HPCLOCK_OK);
    struct snapshot before;
    CHECK(take_snapshot(path, &before));
    const char *ready = tpath("looker-ready");
    char *argv[] = { "python3", "-c", (char *)looker_script, (char *)path, (char *)ready,
                     (char *)python_lock_call(), NULL };
    pid_t looker = spawn_program(argv);
    if (looker <= 0 || !wait_for_file(ready, 30)) {
        if (looker > 0) kill_group_and_reap(looker);
        free(before.bytes);
        CHECK(!"python3 never took the lock to look");
    }
    h = 5;
    int32_t rc = hpclock_try_acquire(path, &h);
    hpclock_holder who;
    memset(&who, 0, sizeof who);
    int32_t info = hpclock_holder_info(path, &who);
    char message[512];
    snprintf(message, sizeof message, "%s", hpclock_last_error());
    kill_group_and_reap(looker);
    fprintf(stderr, "    while %s holds it: try_acquire %s, holder_info state %d (\"%s\")\n", python_lock_call(),
            hpclock_status_name(rc), who.state, message);
    int same = untouched(path, &before);
    CHECK_RC(rc, HPCLOCK_DONE);
    CHECK(h == 0);
    CHECK_RC(info, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_DONE);
    CHECK(same);
    return PASS;
}

struct answers {
    atomic_int done, busy, ok, other;
};

static enum outcome requeued_copies_racing_on_a_done_lock_all_get_done_never_busy(void) {
    const char *path = tpath("requeued.lock");
    hpclock_handle h;
    CHECK_RC(hpclock_try_acquire(path, &h), HPCLOCK_OK);
    CHECK_RC(hpclock_complete(h), HPCLOCK_OK);
    enum { COPIES = 6 };
    int tries = under_valgrind() ? 150 : 3000;
    struct answers *a = shared_alloc(sizeof *a);
    struct gate start;
    gate_init(&start);
    pid_t pids[COPIES];
    for (int i = 0; i < COPIES; i++) {
        pids[i] = fork_or_die();
        if (pids[i] == 0) {
            gate_wait(&start);
            double until = now_seconds() + 60;
            for (int k = 0; k < tries && now_seconds() < until; k++) {
                hpclock_handle mine = 0;
                int32_t rc = hpclock_try_acquire(path, &mine);
                if (rc == HPCLOCK_OK) hpclock_release(mine);
                atomic_fetch_add(rc == HPCLOCK_DONE ? &a->done
                                 : rc == HPCLOCK_BUSY ? &a->busy
                                 : rc == HPCLOCK_OK   ? &a->ok
                                                      : &a->other, 1);
            }
            _exit(0);
        }
    }
    gate_open(&start);
    int bad_exits = 0;
    for (int i = 0; i < COPIES; i++) bad_exits += wait_status(pids[i]) != 0;
    fprintf(stderr, "    %d copies x %d tries: %d DONE, %d BUSY, %d OK, %d other\n", COPIES, tries, a->done,
            a->busy, a->ok, a->other);
    CHECK(bad_exits == 0);
    CHECK(a->busy == 0);
    CHECK(a->ok == 0 && a->other == 0);
    CHECK(a->done == COPIES * tries);
    return PASS;
}

/* ---- one consistent answer from holder_info (docs/protocol.md#reading-who-holds-it) ---- */

struct cycling {
    atomic_int stop, cycles, errors;
    atomic_int aligned, phase; /* phase: CYCLING, HOLDING (waiting for a probe), PROBING */
    atomic_int delay_ns;       /* a release comes up to this long after a probe starts */
};

enum { CYCLING, HOLDING, PROBING };

struct probe_counts {
    int done, held, freed, stale, stale_alive, failed, wrong;
};

static void probe_once(const char *path, pid_t cycler, struct probe_counts *n) {
    hpclock_holder who;
    n->done++;
    if (hpclock_holder_info(path, &who) != HPCLOCK_OK) {
        n->failed++;
        return;
    }
    /* whoever is named is the cycler (0: not known at that instant) */
    n->wrong += who.pid != cycler && who.pid != 0;
    if (who.state == HPCLOCK_STATE_STALE) {
        n->stale++;
        n->stale_alive += who.alive == 1;
    } else if (who.state == HPCLOCK_STATE_HELD) {
        n->held++;
        /* held by the cycler: running; by a holder not known yet: never "gone" */
        n->wrong += who.pid == cycler ? who.alive != 1 : who.alive == 0;
    } else if (who.state == HPCLOCK_STATE_FREE) {
        n->freed++;
    } else {
        n->wrong++;
    }
}

/* Two CPUs this process may run on, one in each set (and how many there
 * were, up to 2); `original` keeps the mask to put back. A race between two
 * processes needs them to run at the same time, not take turns on one CPU
 * (what the scheduler may choose on a busy machine). */
static int two_cpus(cpu_set_t *original, cpu_set_t cpu[2]) {
    int cpus = 0;
    if (sched_getaffinity(0, sizeof *original, original) != 0) return 0;
    for (int i = 0; i < CPU_SETSIZE && cpus < 2; i++) {
        if (CPU_ISSET(i, original)) {
            CPU_ZERO(&cpu[cpus]);
            CPU_SET(i, &cpu[cpus]);
            cpus++;
        }
    }
    return cpus;
}

static void spin_us(double us) {
    double until = now_seconds() + us / 1e6;
    while (now_seconds() < until) {}
}

/* One process takes and releases the lock in a loop, alive all along, every
 * release a normal one; holder_info is asked 20,000 times meanwhile, then
 * 20,000 times more with each release timed to land while a holder_info
 * call is under way (at a random moment within as long as a call takes on
 * average), so that the race is run on every call whatever else the machine
 * is doing. */
static enum outcome holder_info_never_says_stale_while_the_holder_takes_and_releases(void) {
    const char *path = tpath("cycling.lock");
    struct cycling *c = shared_alloc(sizeof *c);
    cpu_set_t original, cpu[2];
    int cpus = two_cpus(&original, cpu);
    pid_t cycler = fork_or_die();
    if (cycler == 0) {
        if (cpus == 2) sched_setaffinity(0, sizeof cpu[0], &cpu[0]);
        unsigned seed = (unsigned)getpid();
        double until = now_seconds() + 300;
        while (!atomic_load(&c->stop) && now_seconds() < until) {
            hpclock_handle h;
            if (hpclock_try_acquire(path, &h) != HPCLOCK_OK) {
                atomic_fetch_add(&c->errors, 1);
                continue;
            }
            if (atomic_load(&c->aligned)) {
                atomic_store(&c->phase, HOLDING);
                double wait_until = now_seconds() + 10;
                while (atomic_load(&c->phase) != PROBING && !atomic_load(&c->stop) && now_seconds() < wait_until) {
                    sched_yield();
                }
                seed = seed * 1103515245u + 12345u;
                spin_us((double)((seed >> 16) % 1000) * atomic_load(&c->delay_ns) / 1e6);
            }
            if (hpclock_release(h) != HPCLOCK_OK) atomic_fetch_add(&c->errors, 1);
            atomic_store(&c->phase, CYCLING);
            atomic_fetch_add(&c->cycles, 1);
        }
        _exit(0);
    }
    if (cpus == 2) sched_setaffinity(0, sizeof cpu[1], &cpu[1]);
    double until = now_seconds() + 30;
    while (atomic_load(&c->cycles) < 10 && now_seconds() < until) sleep_ms(1);
    int probes = under_valgrind() ? 2000 : 20000;
    struct probe_counts loose = { 0 }, timed = { 0 };
    double give_up = now_seconds() + 120, start = now_seconds();
    while (loose.done < probes && now_seconds() < give_up) probe_once(path, cycler, &loose);
    int loose_cycles = atomic_load(&c->cycles);
    /* as long as a holder_info call takes here, on average */
    double call_ns = (now_seconds() - start) * 1e9 / (loose.done ? loose.done : 1);
    atomic_store(&c->delay_ns, (int)(call_ns < 1000 ? 1000 : call_ns > 1e6 ? 1e6 : call_ns));

    atomic_store(&c->aligned, 1);
    give_up = now_seconds() + 120;
    while (timed.done < probes && now_seconds() < give_up) {
        int holding = HOLDING;
        if (!atomic_compare_exchange_strong(&c->phase, &holding, PROBING)) {
            sched_yield();
            continue;
        }
        probe_once(path, cycler, &timed);
    }
    atomic_store(&c->stop, 1);
    int status = wait_status(cycler);
    sched_setaffinity(0, sizeof original, &original);
    fprintf(stderr, "    %d probes during %d cycles: %d HELD, %d FREE, %d STALE (%d of them alive=1), %d failed, %d wrong\n",
            loose.done, loose_cycles, loose.held, loose.freed, loose.stale, loose.stale_alive, loose.failed, loose.wrong);
    fprintf(stderr, "    %d probes, each with a release 0-%.1f µs after it began: %d HELD, %d FREE, %d STALE (%d of them alive=1), %d failed, %d wrong\n",
            timed.done, atomic_load(&c->delay_ns) / 1e3, timed.held, timed.freed, timed.stale, timed.stale_alive, timed.failed, timed.wrong);
    CHECK(status == 0 && c->errors == 0);
    CHECK(loose.stale == 0 && timed.stale == 0);
    CHECK(loose.failed == 0 && loose.wrong == 0 && timed.failed == 0 && timed.wrong == 0);
    CHECK(loose.held + timed.held > 0 && loose.freed + timed.freed > 0); /* the holder really cycled */
    if (timed.done < probes) fprintf(stderr, "    only %d of %d timed probes in 120 s\n", timed.done, probes);
    CHECK(timed.done == probes);
    return PASS;
}

/* /proc/locks is one table for the whole node: other programs' locks come and
 * go in it all the time. A reader that takes it in several read() calls can
 * skip a line when one before it goes away in between: a steady holder must
 * never be missed for that. */
static enum outcome holder_info_sees_a_steady_holder_while_other_locks_come_and_go(void) {
    const char *path = tpath("steady.lock");
    pid_t holder = spawn_holder(path, -1);
    cpu_set_t original, cpu[2];
    int cpus = two_cpus(&original, cpu);
    enum { CHURNERS = 3 };
    atomic_int *stop = shared_alloc(sizeof *stop);
    pid_t churners[CHURNERS];
    for (int i = 0; i < CHURNERS; i++) {
        churners[i] = fork_or_die();
        if (churners[i] == 0) { /* someone else's flock(2) users, on their own files */
            if (cpus == 2) sched_setaffinity(0, sizeof cpu[0], &cpu[0]);
            int fds[4];
            for (int k = 0; k < 4; k++) {
                char name[64];
                snprintf(name, sizeof name, "other-%d-%d.lock", i, k);
                fds[k] = open(tpath(name), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
                if (fds[k] < 0) _exit(2);
            }
            double until = now_seconds() + 120;
            while (!atomic_load(stop) && now_seconds() < until) {
                for (int k = 0; k < 4; k++) flock(fds[k], LOCK_EX);
                for (int k = 0; k < 4; k++) flock(fds[k], LOCK_UN);
            }
            _exit(0);
        }
    }
    int probes = under_valgrind() ? 2000 : 20000;
    if (cpus == 2) sched_setaffinity(0, sizeof cpu[1], &cpu[1]);
    int held = 0, missed = 0, failed = 0, wrong = 0, done = 0;
    double give_up = now_seconds() + 120;
    for (; done < probes && now_seconds() < give_up; done++) {
        hpclock_holder who;
        if (hpclock_holder_info(path, &who) != HPCLOCK_OK) {
            failed++;
        } else if (who.state != HPCLOCK_STATE_HELD) {
            missed++;
        } else if (who.pid != holder || who.alive != 1) {
            wrong++;
        } else {
            held++;
        }
    }
    atomic_store(stop, 1);
    sched_setaffinity(0, sizeof original, &original);
    int bad_exits = 0;
    for (int i = 0; i < CHURNERS; i++) bad_exits += wait_status(churners[i]) != 0;
    kill_and_reap(holder);
    fprintf(stderr, "    %d probes while other locks churned: %d HELD by the holder, %d not HELD, %d wrong, %d failed\n",
            done, held, missed, wrong, failed);
    CHECK(bad_exits == 0);
    CHECK(missed == 0);
    CHECK(wrong == 0 && failed == 0);
    CHECK(held == done && done > 0);
    return PASS;
}

/* ---- a dead holder whose forked helper still has the descriptor (docs/api.md#fork-and-exec) ---- */

static enum outcome dead_holder_whose_forked_helper_keeps_the_descriptor_is_held_by_the_helper(void) {
    const char *path = tpath("helper.lock");
    int ready[2], life[2];
    CHECK(pipe(ready) == 0);
    CHECK(pipe2(life, O_CLOEXEC) == 0);
    atomic_int *helper_pid = shared_alloc(sizeof *helper_pid);
    pid_t holder = fork_or_die();
    if (holder == 0) {
        close(ready[0]);
        close(life[1]);
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.label = "parent of a helper";
        hpclock_handle h;
        if (hpclock_acquire(path, &opts, &h) != HPCLOCK_OK) _exit(4);
        pid_t helper = fork(); /* no exec: it keeps the lock's descriptor */
        if (helper < 0) _exit(5);
        if (helper == 0) {
            close(ready[1]);
            char b;
            /* works until the test closes its end of `life` */
            while (read(life[0], &b, 1) < 0 && errno == EINTR) {}
            _exit(0);
        }
        atomic_store(helper_pid, (int)helper);
        if (write(ready[1], "r", 1) != 1) _exit(6);
        for (;;) pause();
    }
    close(life[0]);
    close(ready[1]);
    int got_ready = read_ready(ready[0], 30);
    close(ready[0]);
    pid_t helper = (pid_t)atomic_load(helper_pid);
    kill_and_reap(holder); /* SIGKILL: the recorded holder dies; its helper runs on */
    if (!got_ready || helper <= 0) {
        close(life[1]);
        if (helper > 0) kill(helper, SIGKILL);
        CHECK(!"the holder never took the lock and forked its helper");
    }

    hpclock_handle h = 5;
    int32_t rc = hpclock_try_acquire(path, &h);
    if (rc == HPCLOCK_OK) hpclock_release(h);
    hpclock_holder who;
    memset(&who, 0, sizeof who);
    int32_t info = hpclock_holder_info(path, &who);
    char message[1024];
    snprintf(message, sizeof message, "%s", hpclock_last_error());
    int helper_alive = !process_is_gone(helper);

    close(life[1]); /* the helper finishes */
    double until = now_seconds() + 10;
    while (!process_is_gone(helper) && now_seconds() < until) sleep_ms(2);
    kill(helper, SIGKILL);
    until = now_seconds() + 10;
    while (!process_is_gone(helper) && now_seconds() < until) sleep_ms(2);

    fprintf(stderr, "    holder %d killed, helper %d: try_acquire %s; holder_info state %d alive %d pid %lld: \"%s\"\n",
            (int)holder, (int)helper, hpclock_status_name(rc), who.state, who.alive, (long long)who.pid, message);
    CHECK(helper_alive);
    CHECK_RC(rc, HPCLOCK_BUSY); /* the kernel lock lives on in the helper */
    CHECK_RC(info, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.alive == 1);
    CHECK(who.pid == helper);
    CHECK(mentions_number(message, holder));
    CHECK(mentions_number(message, helper));

    /* Once the helper is gone too, the record's holder is what is left: stale. */
    CHECK(process_is_gone(helper));
    CHECK_RC(hpclock_holder_info(path, &who), HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_STALE && who.alive == 0 && who.pid == holder);
    return PASS;
}

/* ---- a holder known only to the kernel gets its uid from /proc (docs/protocol.md#reading-who-holds-it) ---- */

static enum outcome holder_without_a_record_running_as_nobody_is_reported_with_its_uid(void) {
    if (geteuid() != 0) return missing_tool("root (to run the holder as user nobody)");
    int ofd = primitive_here() == HPCLOCK_PRIMITIVE_OFD;
    if (!ofd && !have_program("flock")) return missing_tool("flock (util-linux)");
    const char *path = tpath("nobody.lock");
    CHECK(write_bytes(path, "", 0));
    CHECK(chmod(path, 0666) == 0);
    CHECK(chmod(test_root, 0755) == 0 && chmod(test_dir, 0755) == 0);
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t holder = fork_or_die();
    if (holder == 0) {
        close(ready[0]);
        setpgid(0, 0);
        if (!become_nobody()) _exit(30);
        if (ofd) {
            /* flock(1)'s lock does not exclude OFD locks: a classic POSIX
             * lock does, and the kernel names its owner's pid. */
            int fd = open(path, O_RDWR);
            struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
            if (fd < 0 || fcntl(fd, F_SETLK, &lk) != 0) _exit(31);
            if (write(ready[1], "r", 1) != 1) _exit(32);
            for (;;) pause();
        }
        if (dup2(ready[1], STDOUT_FILENO) < 0) _exit(33);
        close(ready[1]);
        execlp("flock", "flock", "-n", path, "sh", "-c", "echo r; exec sleep 60", (char *)NULL);
        _exit(34);
    }
    close(ready[1]);
    int got_ready = read_ready(ready[0], 30);
    close(ready[0]);
    hpclock_holder who;
    memset(&who, 0, sizeof who);
    int32_t rc = hpclock_holder_info(path, &who);
    kill(-holder, SIGKILL);
    kill(holder, SIGKILL);
    int status = wait_status(holder);
    if (!got_ready) fprintf(stderr, "    the holder never took the lock (exit %d)\n", status);
    CHECK(got_ready);
    fprintf(stderr, "    %s as nobody: state %d, pid %lld (holder %d), uid %u, alive %d\n",
            ofd ? "a POSIX lock" : "flock(1)", who.state, (long long)who.pid, (int)holder, who.uid, who.alive);
    CHECK_RC(rc, HPCLOCK_OK);
    CHECK(who.state == HPCLOCK_STATE_HELD);
    CHECK(who.pid == holder);
    CHECK(who.alive == 1);
    CHECK(who.uid == 65534);
    return PASS;
}

/* ---- holder_info on a directory: the OS error, as acquire gives it ---- */

static enum outcome holder_info_on_a_directory_is_eisdir_like_acquire(void) {
    const char *dir = tpath("a-directory");
    CHECK(mkdir(dir, 0755) == 0);
    hpclock_handle h = 5;
    CHECK_RC(hpclock_try_acquire(dir, &h), HPCLOCK_E_OS);
    CHECK(hpclock_last_errno() == EISDIR);
    hpclock_holder who;
    int32_t rc = hpclock_holder_info(dir, &who);
    fprintf(stderr, "    holder_info: %s, errno %d, \"%s\"\n", hpclock_status_name(rc), hpclock_last_errno(),
            hpclock_last_error());
    CHECK_RC(rc, HPCLOCK_E_OS);
    CHECK(hpclock_last_errno() == EISDIR);
    CHECK(strstr(hpclock_last_error(), dir) != NULL);
    CHECK(strstr(hpclock_last_error(), "(EISDIR)") != NULL);
    return PASS;
}

static const struct test tests[] = {
    { "acquire_refuses_foreign_files_untouched_and_takes_empty_blank_legacy_and_torn",
      acquire_refuses_foreign_files_untouched_and_takes_empty_blank_legacy_and_torn },
    { "damaged_done_record_still_answers_done_and_the_token_still_grows",
      damaged_done_record_still_answers_done_and_the_token_still_grows },
    { "hand_edited_record_with_two_generations_continues_above_the_highest",
      hand_edited_record_with_two_generations_continues_above_the_highest },
    { "generation_at_the_top_of_its_range_is_refused_never_repeated",
      generation_at_the_top_of_its_range_is_refused_never_repeated },
    { "done_is_done_while_another_process_holds_the_lock_to_look",
      done_is_done_while_another_process_holds_the_lock_to_look },
    { "requeued_copies_racing_on_a_done_lock_all_get_done_never_busy",
      requeued_copies_racing_on_a_done_lock_all_get_done_never_busy },
    { "holder_info_never_says_stale_while_the_holder_takes_and_releases",
      holder_info_never_says_stale_while_the_holder_takes_and_releases },
    { "holder_info_sees_a_steady_holder_while_other_locks_come_and_go",
      holder_info_sees_a_steady_holder_while_other_locks_come_and_go },
    { "dead_holder_whose_forked_helper_keeps_the_descriptor_is_held_by_the_helper",
      dead_holder_whose_forked_helper_keeps_the_descriptor_is_held_by_the_helper },
    { "holder_without_a_record_running_as_nobody_is_reported_with_its_uid",
      holder_without_a_record_running_as_nobody_is_reported_with_its_uid },
    { "holder_info_on_a_directory_is_eisdir_like_acquire", holder_info_on_a_directory_is_eisdir_like_acquire },
};

int main(int argc, char **argv) {
    (void)argc;
    remember_self(argv[0]);
    return run_tests("real_use", tests, sizeof tests / sizeof tests[0]);
}
