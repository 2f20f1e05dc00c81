/* SIGSEGV from unbounded recursion.  The kernel cannot push a signal frame on the exhausted stack
 * (no sigaltstack), so it forces the default action.  Run with RLIMIT_STACK 8 MiB (tests/crashers.py
 * sets it) so the dumped stack, and so the core, stays about 8 MiB. */
#include "crasher.h"

#pragma GCC diagnostic ignored "-Winfinite-recursion"

__attribute__((noinline)) unsigned long crash_stack_overflow(unsigned long depth)
{
    volatile char pad[256];
    pad[0] = (char)depth;
    /* The addition after the call keeps it from being a tail call at any optimisation level. */
    return crash_stack_overflow(depth + 1) + pad[0];
}

int main(void)
{
    crasher_note_self();
    return (int)crash_stack_overflow(0);
}
