/* SIGSEGV after a signal handler returned: the old rt_sigframe lies in dead stack below %rsp.
 * A POSIX timer delivers SIGUSR1 while wait_for_signal() spins (with a 1 KiB local buffer, so
 * its frame is deep); the handler records where its frame was and returns normally
 * (rt_sigreturn).  wait_for_signal() returns and main crashes in the shallow
 * crash_after_signal(), whose frame is well above the dead signal frame.
 * SIGUSR1 stays blocked from before the timer is armed until wait_for_signal() unblocks it
 * (CRASHER_UNBLOCK_HERE in crasher.h), so the interrupted pc is in wait_for_signal() even when
 * the timer expires before the loop starts; CRASHER_SIGNAL_EARLY=1 makes that case certain.
 * Notes: restorer_slot, restorer, ucontext, interrupted_pc, interrupted_rsp (as signal_race). */
#include "crasher.h"

#include <signal.h>
#include <stdio.h>
#include <time.h>

static int *volatile null_target = NULL;
static volatile sig_atomic_t handled;

__attribute__((noinline)) void crash_after_signal(int *p)
{
    *p = 42;
}

static void on_sigusr1(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    crasher_note_sigframe(__builtin_frame_address(0), context);
    handled = 1;
}

__attribute__((noinline)) int wait_for_signal(void)
{
    volatile char deep[1024];
    unsigned long spins = 0;
    deep[0] = 1;
    CRASHER_UNBLOCK_HERE(SIGUSR1);
    while (!handled && spins < 20000000000UL)
        spins++;
    return handled ? deep[0] : 0;
}

int main(void)
{
    crasher_note_self();
    if (crasher_arm_sigusr1(on_sigusr1, "dead_signal_frame: setup") != 0)
        return 2;
    if (!crasher_wait_pending_if_early(SIGUSR1))
        return 3;
    if (!wait_for_signal())
        return 3;
    crasher_note_hex("fault_addr", 0);
    crash_after_signal(null_target);
    return 1;
}
