/* A signal handler runs and returns, then the thread crashes: the handler's signal frame is
 * left in the dead stack below the stack pointer.  Built for other architectures and run under
 * qemu-user, which writes the core (see make_sigframes.py).
 *
 *   dead_sigframe plain    SIGUSR1 with a plain sa_handler: the frame's siginfo is not written
 *   dead_sigframe siginfo  SIGUSR1 with SA_SIGINFO: the handler prints the saved pc and sp of
 *                          its ucontext ("interrupted_pc=0x... interrupted_sp=0x...")
 *
 * The signal comes from a one-shot timer while wait_for_signal() spins with a 1 KiB local
 * buffer (a deep frame); main then crashes in the shallow crash_after_signal(), whose frame is
 * above the dead signal frame.  SIGUSR1 stays blocked until wait_for_signal() unblocks it with
 * an inline `svc` (not libc's sigprocmask), so the interrupted pc is in wait_for_signal()
 * however early the timer fires. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

static int *volatile null_target;
static volatile sig_atomic_t handled;

static void on_plain(int sig)
{
    (void)sig;
    handled = 1;
}

static void on_siginfo(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
#if defined(__aarch64__)
    printf("interrupted_pc=%#llx interrupted_sp=%#llx\n", (unsigned long long)uc->uc_mcontext.pc,
           (unsigned long long)uc->uc_mcontext.sp);
#else
    (void)uc;
#endif
    fflush(stdout);
    handled = 1;
}

__attribute__((noinline)) void crash_after_signal(int *p)
{
    *p = 42;
}

__attribute__((noinline)) int wait_for_signal(void)
{
    volatile char deep[1024];
    unsigned long spins = 0;
    deep[0] = 1;
#if defined(__aarch64__)
    unsigned long mask = 1UL << (SIGUSR1 - 1);
    register long x0 __asm__("x0") = SIG_UNBLOCK;
    register long x1 __asm__("x1") = (long)&mask;
    register long x2 __asm__("x2") = 0;
    register long x3 __asm__("x3") = sizeof mask;
    register long x8 __asm__("x8") = SYS_rt_sigprocmask;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x1), "r"(x2), "r"(x3), "r"(x8) : "memory");
    if (x0 != 0)
        return 0;
#else
#error "add this architecture's unblocking system call"
#endif
    while (!handled && spins < 4000000000UL)
        spins++;
    return handled ? deep[0] : 0;
}

int main(int argc, char **argv)
{
    int siginfo = argc > 1 && strcmp(argv[1], "siginfo") == 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (siginfo) {
        sa.sa_sigaction = on_siginfo;
        sa.sa_flags = SA_SIGINFO;
    } else {
        sa.sa_handler = on_plain;
    }
    sigemptyset(&sa.sa_mask);
    timer_t timer;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    struct itimerspec when = {.it_value = {0, 20000000}}; /* one shot, 20 ms */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigprocmask(SIG_BLOCK, &usr1, NULL) != 0 ||
        timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0 ||
        timer_settime(timer, 0, &when, NULL) != 0) {
        perror("dead_sigframe: setup");
        return 2;
    }
    if (!wait_for_signal())
        return 3;
    crash_after_signal(null_target);
    return 1;
}
