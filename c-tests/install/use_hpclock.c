/* A program built against an installed hpclock (pkg-config, CMake, static):
 * takes the lock, reads it back, releases it. */
#include <hpclock.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: use_hpclock LOCKFILE\n");
        return 2;
    }
    hpclock_handle h;
    int32_t rc = hpclock_try_acquire(argv[1], &h);
    if (rc != HPCLOCK_OK) {
        fprintf(stderr, "%s: %s\n", hpclock_status_name(rc), hpclock_last_error());
        return 1;
    }
    hpclock_holder who;
    if (hpclock_holder_info(argv[1], &who) != HPCLOCK_OK || who.state != HPCLOCK_STATE_HELD || who.pid != getpid()) {
        fprintf(stderr, "holder_info does not name this process\n");
        return 1;
    }
    printf("hpclock %s: held %s (generation %llu)\n", hpclock_version(), argv[1], (unsigned long long)who.generation);
    return hpclock_release(h) == HPCLOCK_OK ? 0 : 1;
}
