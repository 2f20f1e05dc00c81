/*
 * sdc_shim: an LD_PRELOAD library that makes one logical CPU compute wrongly, so the screen's
 * detection can be tested on hardware that is (we hope) healthy.  It stands in for a defective
 * core, which cannot be had on demand; everything else in the tests is real.
 *
 * It wraps two paths a real defect has been seen in:
 *   pow()    from libm  (a fleet operator reported a core where Int(1.1^53) was 0 instead of 156,
 *                        only when the thread ran on that core: Dixit et al., "Silent Data
 *                        Corruptions at Scale", 2021)
 *   crc32()  from zlib  (checksums, as used by compression and storage code)
 * and corrupts a result only when the calling thread is on the chosen CPU (sched_getcpu()).
 *
 * Environment (read once, at load):
 *   SDC_SHIM_CPU       logical CPU to corrupt on; "all" for every CPU (a "library bug");
 *                      unset or empty: pass everything through unchanged
 *   SDC_SHIM_RATE      probability per call that an eligible call is corrupted (default 1)
 *   SDC_SHIM_FUNCS     comma list of wrapped paths to corrupt: pow,crc32 (default both)
 *   SDC_SHIM_POW_MODE  "bitflip" (default): flip mantissa bit 20 of the result;
 *                      "story": only pow(1.1, 53) is wrong, and it returns 0 -- the data-dependent
 *                      defect from the report, invisible to checks that use random arguments
 *   SDC_SHIM_SEED      seed of the per-thread generator that draws the faults (default 1)
 *   SDC_SHIM_COUNT_DIR if set, each process writes "<pow calls> <crc32 calls> <corrupted>"
 *                      (calls made on the chosen CPU) to DIR/<pid> when it exits normally, so a
 *                      benchmark can relate detection to the number of calls at risk
 *
 * Build: cc -O2 -shared -fPIC -o sdc_shim.so sdc_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

enum { F_POW = 1u, F_CRC32 = 2u };
enum { POW_BITFLIP = 0, POW_STORY = 1 };

static int enabled;        /* 0: pass through */
static int all_cpus;       /* corrupt on every CPU */
static int target_cpu = -1;
static uint64_t threshold; /* a draw below this corrupts; UINT64_MAX means always */
static unsigned funcs = F_POW | F_CRC32;
static int pow_mode = POW_BITFLIP;
static uint64_t seed = 1;

static __thread uint64_t rng_state;

static const char *count_dir;
static unsigned long n_pow, n_crc32, n_corrupted; /* approximate under threads: only a report */

static double (*real_pow)(double, double);
static unsigned long (*real_crc32)(unsigned long, const unsigned char *, unsigned int);

__attribute__((constructor)) static void shim_init(void)
{
    const char *cpu = getenv("SDC_SHIM_CPU");
    const char *rate = getenv("SDC_SHIM_RATE");
    const char *fl = getenv("SDC_SHIM_FUNCS");
    const char *mode = getenv("SDC_SHIM_POW_MODE");
    const char *sd = getenv("SDC_SHIM_SEED");

    if (cpu != NULL && *cpu != '\0') {
        enabled = 1;
        if (strcmp(cpu, "all") == 0)
            all_cpus = 1;
        else
            target_cpu = atoi(cpu);
    }
    double r = rate != NULL && *rate != '\0' ? strtod(rate, NULL) : 1.0;
    if (r >= 1.0)
        threshold = UINT64_MAX;
    else if (r <= 0.0)
        enabled = 0;
    else
        threshold = (uint64_t)(r * 18446744073709551616.0);
    if (fl != NULL && *fl != '\0') {
        funcs = 0;
        if (strstr(fl, "pow") != NULL)
            funcs |= F_POW;
        if (strstr(fl, "crc32") != NULL)
            funcs |= F_CRC32;
    }
    if (mode != NULL && strcmp(mode, "story") == 0)
        pow_mode = POW_STORY;
    if (sd != NULL && *sd != '\0')
        seed = strtoull(sd, NULL, 0);
    count_dir = getenv("SDC_SHIM_COUNT_DIR");
}

__attribute__((destructor)) static void shim_report(void)
{
    if (count_dir == NULL || *count_dir == '\0')
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%d", count_dir, (int)getpid());
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "%lu %lu %lu\n", n_pow, n_crc32, n_corrupted);
        fclose(f);
    }
}

/* splitmix64: a per-thread stream, seeded from the seed and the thread id. */
static uint64_t draw(void)
{
    if (rng_state == 0)
        rng_state = seed ^ ((uint64_t)syscall(SYS_gettid) * 0x9E3779B97F4A7C15ull) ^ 0xD1B54A32D192ED03ull;
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int armed(unsigned func)
{
    if (!enabled || (funcs & func) == 0)
        return 0;
    if (!all_cpus && sched_getcpu() != target_cpu)
        return 0;
    if (func == F_POW)
        n_pow++;
    else
        n_crc32++;
    if (threshold == UINT64_MAX || draw() < threshold) {
        n_corrupted++;
        return 1;
    }
    return 0;
}

/* Python loads zlib through an extension module opened RTLD_LOCAL, so libz is not in the global
 * scope that RTLD_NEXT searches; fall back to the already-loaded libz itself. */
static void *resolve_zlib(const char *name)
{
    void *sym = dlsym(RTLD_NEXT, name);
    if (sym == NULL) {
        void *libz = dlopen("libz.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (libz == NULL)
            libz = dlopen("libz.so.1", RTLD_NOW);
        if (libz != NULL)
            sym = dlsym(libz, name);
    }
    if (sym == NULL)
        abort(); /* a shim that cannot reach the real function must not return garbage */
    return sym;
}

double pow(double x, double y)
{
    if (real_pow == NULL)
        real_pow = (double (*)(double, double))dlsym(RTLD_NEXT, "pow");
    double r = real_pow(x, y);
    if (pow_mode == POW_STORY) {
        if (x == 1.1 && y == 53.0 && armed(F_POW))
            return 0.0;
        return r;
    }
    if (armed(F_POW)) {
        uint64_t bits;
        memcpy(&bits, &r, sizeof bits);
        bits ^= 1ull << 20;
        memcpy(&r, &bits, sizeof r);
    }
    return r;
}

unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len)
{
    if (real_crc32 == NULL)
        real_crc32 = (unsigned long (*)(unsigned long, const unsigned char *, unsigned int))resolve_zlib("crc32");
    unsigned long r = real_crc32(crc, buf, len);
    if (buf != NULL && len > 0 && armed(F_CRC32))
        r ^= 1ul << 7;
    return r;
}
