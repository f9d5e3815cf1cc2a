/* signal_catcher: a COMMAND for test_cli.sh that catches signals with
 * sigaction(2), as a C or Fortran simulation does, and never relies on a
 * shell (dash and bash clear the signal mask at start-up, so a shell `trap`
 * hides what a C program would see).
 *
 * Usage: signal_catcher [-u] [-x STATUS] [-t SECONDS] PREFIX
 *
 * At start it writes
 *   PREFIX.status  the SigBlk, SigIgn and SigPnd lines of /proc/self/status,
 *                  read before it installs any handler (what it inherited);
 *   PREFIX.pid     its pid;
 *   PREFIX.ready   (empty) once its handlers for SIGTERM, SIGINT, SIGHUP,
 *                  SIGUSR1 and SIGUSR2 are in place.
 * Then it waits up to SECONDS (default 10) for one of those signals. On one it
 * appends the signal's name ("TERM", "INT", "HUP", "USR1", "USR2") and a
 * newline to PREFIX.got and exits STATUS (default 0), as a code that
 * checkpoints and exits cleanly does. If none arrives in time it exits 3, so a
 * signal that is lost fails a test instead of hanging it. With -t 0 it writes
 * the files and exits 0 at once.
 *
 * -u unblocks every signal once its handlers are in place, so that a test of what
 * happens after a signal does not depend on the signal mask COMMAND inherited.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t caught;

static void on_signal(int number) {
    if (caught == 0) {
        caught = number;
    }
}

static const struct {
    int number;
    const char *name;
} catchable[] = {
    {SIGTERM, "TERM"}, {SIGINT, "INT"}, {SIGHUP, "HUP"}, {SIGUSR1, "USR1"}, {SIGUSR2, "USR2"},
};

static void die(const char *what, const char *path) {
    fprintf(stderr, "signal_catcher: %s %s: %s\n", what, path, strerror(errno));
    exit(4);
}

static void write_file(const char *prefix, const char *suffix, const char *text, int append) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, suffix);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd < 0) {
        die("cannot open", path);
    }
    size_t length = strlen(text);
    if (write(fd, text, length) != (ssize_t)length) {
        die("cannot write", path);
    }
    close(fd);
}

/* The Sig* lines of /proc/self/status, as they are now. */
static void write_status(const char *prefix) {
    FILE *status = fopen("/proc/self/status", "r");
    if (status == NULL) {
        die("cannot open", "/proc/self/status");
    }
    char line[512], out[2048] = "";
    while (fgets(line, sizeof line, status) != NULL) {
        if (strncmp(line, "SigBlk:", 7) == 0 || strncmp(line, "SigIgn:", 7) == 0 ||
            strncmp(line, "SigPnd:", 7) == 0) {
            strncat(out, line, sizeof out - strlen(out) - 1);
        }
    }
    fclose(status);
    write_file(prefix, "status", out, 0);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int exit_status = 0, unblock = 0, option;
    double seconds = 10;
    while ((option = getopt(argc, argv, "ux:t:")) != -1) {
        switch (option) {
        case 'u': unblock = 1; break;
        case 'x': exit_status = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        default:
            fprintf(stderr, "usage: signal_catcher [-u] [-x STATUS] [-t SECONDS] PREFIX\n");
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: signal_catcher [-u] [-x STATUS] [-t SECONDS] PREFIX\n");
        return 2;
    }
    const char *prefix = argv[optind];

    write_status(prefix);
    for (size_t i = 0; i < sizeof catchable / sizeof catchable[0]; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = on_signal;
        sigemptyset(&action.sa_mask);
        if (sigaction(catchable[i].number, &action, NULL) != 0) {
            die("cannot catch", catchable[i].name);
        }
    }
    if (unblock) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }
    char pid[32];
    snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    write_file(prefix, "pid", pid, 0);
    write_file(prefix, "ready", "", 0);
    if (seconds <= 0) {
        return 0;
    }

    double deadline = now() + seconds;
    while (caught == 0 && now() < deadline) {
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL); /* a caught signal cuts it short (EINTR) */
    }
    if (caught == 0) {
        fprintf(stderr, "signal_catcher: no signal in %g s\n", seconds);
        return 3;
    }
    const char *name = "OTHER";
    for (size_t i = 0; i < sizeof catchable / sizeof catchable[0]; i++) {
        if (catchable[i].number == caught) {
            name = catchable[i].name;
        }
    }
    char line[16];
    snprintf(line, sizeof line, "%s\n", name);
    write_file(prefix, "got", line, 1);
    return exit_status;
}
