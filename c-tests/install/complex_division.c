/* 1,000,000 double complex divisions of pseudo-random operands (fixed seed,
 * magnitudes 2^-20..2^20, all signs): prints one checksum of the bits of
 * every quotient. Built once plain and once linked with libhpclock.a
 * (-DWITH_HPCLOCK): linking hpclock must not change a single bit, so the two
 * checksums must be equal (c-tests/test_static.sh). The division is
 * compiled into a call to __divdc3, which must be libgcc's. */
#include <complex.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#ifdef WITH_HPCLOCK
#include <hpclock.h>
#endif

static uint64_t state = 0x9E3779B97F4A7C15u;

static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static double number(void) {
    uint64_t r = next();
    double m = 0.5 + (double)(r >> 11) / 9007199254740992.0; /* [0.5, 1.5) */
    int e = (int)(next() % 41) - 20;
    double v = m;
    for (int i = 0; i < (e < 0 ? -e : e); i++)
        v = e < 0 ? v / 2 : v * 2;
    return (r & 1) ? -v : v;
}

int main(void) {
    uint64_t sum = 1469598103934665603u; /* FNV-1a over the quotients' bits */
    for (int i = 0; i < 1000000; i++) {
        double complex a = number() + number() * I;
        double complex b = number() + number() * I;
        double complex q = a / b;
        double parts[2] = {creal(q), cimag(q)};
        uint64_t bits[2];
        memcpy(bits, parts, sizeof bits);
        for (int k = 0; k < 2; k++) {
            sum ^= bits[k];
            sum *= 1099511628211u;
        }
    }
    printf("%016llx\n", (unsigned long long)sum);
#ifdef WITH_HPCLOCK
    /* Uses the library, so that the link takes its object. */
    return hpclock_version()[0] != '\0' ? 0 : 1;
#else
    return 0;
#endif
}
