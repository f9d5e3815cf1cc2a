/* The library's load-time constructor (src/lifecycle.rs) must run in a
 * program linked with libhpclock.a too, static or not: it registers the fork
 * handlers before main, while the program is single-threaded. This program
 * catches the registration by defining pthread_atfork itself (its definition
 * wins over the C library's in the link) and passing it on to glibc's
 * __register_atfork, which is what the C library's own pthread_atfork does.
 * main checks that a registration came before it, then forks a child that
 * uses hpclock.
 *
 * Usage: constructor_runs LOCKFILE */
#include <hpclock.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

extern void *__dso_handle;
extern int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso);

static int registrations;

int pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void)) {
    registrations++;
    return __register_atfork(prepare, parent, child, __dso_handle);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: constructor_runs LOCKFILE\n");
        return 2;
    }
    if (registrations == 0) {
        fprintf(stderr, "no pthread_atfork before main: hpclock's constructor did not run\n");
        return 1;
    }
    hpclock_handle h;
    int32_t rc = hpclock_try_acquire(argv[1], &h);
    if (rc != HPCLOCK_OK) {
        fprintf(stderr, "%s: %s\n", hpclock_status_name(rc), hpclock_last_error());
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* The child's copy of the handle: releasing it only closes the copy. */
        hpclock_handle again;
        int ok = hpclock_try_acquire(argv[1], &again) == HPCLOCK_BUSY && hpclock_release(h) == HPCLOCK_OK;
        _exit(ok ? 0 : 1);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the forked child failed\n");
        return 1;
    }
    printf("constructor ran before main (%d pthread_atfork registration%s); fork and lock work\n",
           registrations, registrations == 1 ? "" : "s");
    return hpclock_release(h) == HPCLOCK_OK ? 0 : 1;
}
