/* The C side of the Fortran layout check (test_hpclock.f90): the sizes and
 * field offsets the C compiler gives hpclock.h's structs, for the Fortran
 * types to be compared with. The order is the one test_hpclock.f90 expects. */
#include <hpclock.h>
#include <stddef.h>
#include <stdint.h>

enum { N_LAYOUT = 18 };

int32_t ftest_c_layout(int64_t out[N_LAYOUT]) {
    const int64_t v[N_LAYOUT] = {
        sizeof(hpclock_options),
        offsetof(hpclock_options, flags),
        offsetof(hpclock_options, mode),
        offsetof(hpclock_options, timeout_ms),
        offsetof(hpclock_options, label),
        sizeof(hpclock_holder),
        offsetof(hpclock_holder, pid),
        offsetof(hpclock_holder, uid),
        offsetof(hpclock_holder, generation),
        offsetof(hpclock_holder, released_unix_ms),
        offsetof(hpclock_holder, host),
        offsetof(hpclock_holder, job_id),
        offsetof(hpclock_holder, label),
        sizeof(hpclock_fs_info),
        offsetof(hpclock_fs_info, magic),
        offsetof(hpclock_fs_info, fs_type),
        offsetof(hpclock_fs_info, detail),
        offsetof(hpclock_options, lease_ms),
    };
    for (int i = 0; i < N_LAYOUT; i++)
        out[i] = v[i];
    return N_LAYOUT;
}
