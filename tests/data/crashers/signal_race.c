/* SIGSEGV inside a SIGUSR1 handler.  A POSIX timer delivers SIGUSR1 while main spins in
 * spin_until_signal(); the SA_SIGINFO handler null-derefs in crash_in_handler().  So the live
 * stack above the crashing frames holds the kernel's rt_sigframe: the handler's return address
 * is glibc's __restore_rt, followed by the ucontext whose saved rip is the interrupted pc.
 * SIGUSR1 stays blocked from before the timer is armed until spin_until_signal() unblocks it
 * (CRASHER_UNBLOCK_HERE in crasher.h), so the interrupted pc is in spin_until_signal() even when
 * the timer expires before the loop starts; CRASHER_SIGNAL_EARLY=1 makes that case certain.
 * Notes: restorer_slot (address of the handler's return-address word), restorer (its value),
 * ucontext, interrupted_pc, interrupted_rsp. */
#include "crasher.h"

#include <signal.h>
#include <stdio.h>
#include <time.h>

static int *volatile null_target = NULL;
static volatile unsigned long spins;

__attribute__((noinline)) void crash_in_handler(int *p)
{
    *p = 42;
}

static void on_sigusr1(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    crasher_note_sigframe(__builtin_frame_address(0), context);
    crasher_note_hex("fault_addr", 0);
    crash_in_handler(null_target);
}

__attribute__((noinline)) void spin_until_signal(void)
{
    CRASHER_UNBLOCK_HERE(SIGUSR1);
    /* Bounded, so a lost signal fails the run (exit 3) instead of hanging the test suite. */
    while (spins < 20000000000UL)
        spins++;
}

int main(void)
{
    crasher_note_self();
    if (crasher_arm_sigusr1(on_sigusr1, "signal_race: setup") != 0)
        return 2;
    if (!crasher_wait_pending_if_early(SIGUSR1))
        return 3;
    spin_until_signal();
    return 3;
}
