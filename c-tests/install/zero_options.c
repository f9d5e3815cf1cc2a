/* Options zeroed rather than initialised: mode 0 means the default 0644 (the
 * umask applies), so the lock file this run creates can be locked by the
 * next run of the same user (a requeue). Takes the lock, then releases it.
 *
 * Usage: zero_options LOCKFILE */
#include <hpclock.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: zero_options LOCKFILE\n");
        return 2;
    }
    hpclock_options o = {0};
    hpclock_handle h;
    int32_t rc = hpclock_acquire(argv[1], &o, &h);
    if (rc != HPCLOCK_OK) {
        fprintf(stderr, "%s: %s\n", hpclock_status_name(rc), hpclock_last_error());
        return 1;
    }
    return hpclock_release(h) == HPCLOCK_OK ? 0 : 1;
}
