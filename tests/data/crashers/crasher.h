/* Shared helpers for the crashing programs in this directory.
 *
 * Each program crashes on purpose so the kernel writes a real core dump (tests/crashers.py builds
 * and runs them).  Before crashing, a program appends "key=value" lines to the file named by the
 * environment variable CRASHER_INFO (if set), so tests can compare the core against facts only
 * the live process knew (the crashing thread's tid, the address it is about to touch, ...).
 *
 * The writer below uses only write(2) and hand-formatted hex so it is async-signal-safe: the
 * signal programs call it from inside their handlers.
 */
#ifndef CRASHER_H
#define CRASHER_H

/* Include this header first: _GNU_SOURCE must precede every system header (REG_RIP, gettid). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* Exit status meaning "this kernel cannot produce the crash"; tests skip on it (autotools' 77). */
#define CRASHER_UNSUPPORTED 77

__attribute__((unused)) static inline long crasher_gettid(void) { return syscall(SYS_gettid); }

__attribute__((unused)) static void crasher_note_str(const char *key, const char *value)
{
    const char *path = getenv("CRASHER_INFO");
    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[512];
    size_t n = 0;
    for (const char *s = key; *s && n < sizeof line - 2; s++)
        line[n++] = *s;
    line[n++] = '=';
    for (const char *s = value; *s && n < sizeof line - 1; s++)
        line[n++] = *s;
    line[n++] = '\n';
    (void)!write(fd, line, n);
    close(fd);
}

/* Writes key=0x<hex>; hex so addresses read naturally and Python parses them with int(v, 0). */
__attribute__((unused)) static void crasher_note_hex(const char *key, uint64_t value)
{
    char buf[19] = "0x";
    char digits[16];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[value & 0xf];
        value >>= 4;
    } while (value != 0);
    for (int i = 0; i < n; i++)
        buf[2 + i] = digits[n - 1 - i];
    buf[2 + n] = '\0';
    crasher_note_str(key, buf);
}

__attribute__((unused)) static void crasher_note_dec(const char *key, uint64_t value)
{
    char digits[21];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    char buf[21];
    for (int i = 0; i < n; i++)
        buf[i] = digits[n - 1 - i];
    buf[n] = '\0';
    crasher_note_str(key, buf);
}

/* Unblocks signal `sig` with an rt_sigprocmask system call issued by a `syscall` instruction
 * written right here, not through a libc wrapper.  A signal already pending is delivered on the
 * return from this very instruction, so the interrupted pc lies in the function that expands the
 * macro whenever the signal comes.  (A macro, not a function: gdb would show an inline function
 * as a frame of its own.)  The signal crashers block their timer's signal before arming it and
 * unblock it here, inside the loop that waits: a timer that expires early (this process was
 * descheduled for more than the timer's 2 ms right after arming it) then still interrupts that
 * loop, never libc's timer_settime() or main(). */
#define CRASHER_UNBLOCK_HERE(sig)                                                                  \
    do {                                                                                           \
        unsigned long crasher_mask_ = 1UL << ((sig) - 1);                                          \
        register long crasher_r10_ __asm__("r10") = (long)sizeof crasher_mask_;                    \
        long crasher_ret_ = SYS_rt_sigprocmask;                                                    \
        __asm__ volatile("syscall"                                                                 \
                         : "+a"(crasher_ret_)                                                      \
                         : "D"((long)SIG_UNBLOCK), "S"(&crasher_mask_), "d"(0L), "r"(crasher_r10_) \
                         : "rcx", "r11", "memory");                                                \
        if (crasher_ret_ != 0)                                                                     \
            _exit(2);                                                                              \
    } while (0)

/* With CRASHER_SIGNAL_EARLY=1 in the environment, the signal crashers wait until their timer's
 * signal is pending (blocked, so not yet delivered) before entering the loop that unblocks it:
 * the shape of a run descheduled right after arming the timer, made certain.  Returns 0 when the
 * signal never became pending within about 2 s. */
__attribute__((unused)) static int crasher_wait_pending_if_early(int sig)
{
    const char *early = getenv("CRASHER_SIGNAL_EARLY");
    if (early == NULL || strcmp(early, "1") != 0)
        return 1;
    crasher_note_str("early", "1");
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 2000; i++) {
        sigset_t pending;
        if (sigpending(&pending) == 0 && sigismember(&pending, sig) == 1)
            return 1;
        nanosleep(&ms, NULL);
    }
    return 0;
}

/* The signal crashers' set-up: install `handler` for SIGUSR1 (SA_SIGINFO), block SIGUSR1 until
 * the loop it must interrupt unblocks it (CRASHER_UNBLOCK_HERE), and arm a one-shot 2 ms timer
 * that raises it.  Returns 0, or -1 after perror(who) when any step fails. */
__attribute__((unused)) static int crasher_arm_sigusr1(void (*handler)(int, siginfo_t *, void *),
                                                       const char *who)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    timer_t timer;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    struct itimerspec when = {.it_value = {0, 2000000}}; /* one shot, 2 ms */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigprocmask(SIG_BLOCK, &usr1, NULL) != 0 ||
        timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0 ||
        timer_settime(timer, 0, &when, NULL) != 0) {
        perror(who);
        return -1;
    }
    return 0;
}

/* What a signal crasher's handler notes about the rt_sigframe the kernel built for it: its
 * return-address word (at %rbp+8 with -O0 -fno-omit-frame-pointer), which the kernel pointed at
 * sa_restorer (glibc's __restore_rt), and the ucontext with the interrupted pc and sp.  `frame`
 * is the handler's own __builtin_frame_address(0).  Notes restorer_slot, restorer, ucontext,
 * interrupted_pc, interrupted_rsp. */
__attribute__((unused)) static void crasher_note_sigframe(void *frame, const ucontext_t *uc)
{
    void **restorer_slot = (void **)frame + 1;
    crasher_note_hex("restorer_slot", (uint64_t)(uintptr_t)restorer_slot);
    crasher_note_hex("restorer", (uint64_t)(uintptr_t)*restorer_slot);
    crasher_note_hex("ucontext", (uint64_t)(uintptr_t)uc);
    crasher_note_hex("interrupted_pc", (uint64_t)uc->uc_mcontext.gregs[REG_RIP]);
    crasher_note_hex("interrupted_rsp", (uint64_t)uc->uc_mcontext.gregs[REG_RSP]);
}

/* Every program records who it is, so tests can match the core's NT_PRSTATUS pid/tid. */
__attribute__((unused)) static void crasher_note_self(void)
{
    crasher_note_dec("pid", (uint64_t)getpid());
    crasher_note_dec("tid", (uint64_t)crasher_gettid());
}

#endif
