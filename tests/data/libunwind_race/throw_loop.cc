/* C++ exceptions unwound by GNU libunwind under a signal timer: the program behind libunwind
 * issue #927 (fixed by PR #928, still in Debian's libunwind 1.6.2).
 *
 * Linked with -lunwind, libunwind's _Unwind_RaiseException replaces libgcc's: every `throw`
 * ends in _Ux86_64_setcontext, which loads the landing pad's %rsp and only then reads the
 * landing pad's %rip from the unw_context_t that now lies below %rsp, in dead stack.  A signal
 * delivered in that window writes its frame over the context; after the handler returns, the
 * `ret` jumps to whatever the frame left there (0 on the kernels seen so far) and the thread
 * dies with rip = 0.
 *
 * Usage: throw_loop PATH HZ [N [PAD]]
 *   PATH  (1..3) which of three callers runs the throwing loop, so cores of different runs
 *         carry different callers on their stacks, as a fleet's cores do;
 *   HZ    > 0 arms a CPU-time timer raising SIGUSR2 HZ times per second (the natural race);
 *         0 arms none (a debugger delivers the signal at the one instruction instead);
 *   N     throws before exiting (default 2e9); a run that survives prints
 *         "throws N signals S", so bench/race_natural_bench.py can measure both rates;
 *   PAD   bytes of stack the thrower takes before it throws (default 0), which moves libunwind's
 *         context that much further below the landing pad's %rsp.  Whether the signal frame
 *         lands on the context's %rip slot depends on the CPU's XSAVE layout: on a CPU without
 *         MPX (Sapphire Rapids, AVX-512 and AMX) the slot falls in the unused MPX area of the
 *         frame's fpstate, the kernel writes nothing there and the race is benign at PAD 0;
 *         tests/libunwind_race.py tries paddings until the frame zeroes the slot.
 * SIGUSR2 has a plain sa_handler (no SA_SIGINFO), as profilers and the original service had:
 * the kernel then leaves the frame's siginfo unwritten. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t ticks;
static long pad_bytes;

static void on_sigusr2(int sig)
{
    (void)sig;
    ticks = ticks + 1;
}

__attribute__((noinline)) void thrower(long i)
{
    if (pad_bytes > 0) {
        volatile char *pad = (volatile char *)__builtin_alloca(pad_bytes);
        pad[0] = 0;
    }
    if (i >= 0)
        throw i;
}

__attribute__((noinline)) long catcher(long i)
{
    try {
        thrower(i);
    } catch (long v) {
        return v;
    }
    return -1;
}

/* Three code paths that throw: the frames above the landing pad differ between them. */
__attribute__((noinline)) long via_parse(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += catcher(i);
    return sum;
}

__attribute__((noinline)) long via_lookup(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum -= catcher(i);
    return sum;
}

__attribute__((noinline)) long via_commit(long n)
{
    long sum = 1;
    for (long i = 0; i < n; i++)
        sum ^= catcher(i);
    return sum;
}

int main(int argc, char **argv)
{
    int path = argc > 1 ? atoi(argv[1]) : 1;
    long hz = argc > 2 ? atol(argv[2]) : 0;
    const long n = argc > 3 ? atol(argv[3]) : 2000000000L;
    pad_bytes = argc > 4 ? atol(argv[4]) : 0;
    if (path < 1 || path > 3 || hz < 0 || hz > 1000000 || n < 1 || pad_bytes < 0 ||
        pad_bytes > 65536)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL) != 0)
        return 2;
    if (hz > 0) {
        timer_t timer;
        struct sigevent sev;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_SIGNAL;
        sev.sigev_signo = SIGUSR2;
        long ns = 1000000000L / hz;
        struct itimerspec every = {{ns / 1000000000L, ns % 1000000000L},
                                   {ns / 1000000000L, ns % 1000000000L}};
        if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &timer) != 0 ||
            timer_settime(timer, 0, &every, NULL) != 0)
            return 2;
    }
    /* Bounded: a run that never hits the window exits 3 instead of hanging a test. */
    long sum = path == 1 ? via_parse(n) : path == 2 ? via_lookup(n) : via_commit(n);
    printf("throws %ld signals %ld\n", n, (long)ticks);
    return sum == 42 ? 4 : 3;
}
