/* SIGSEGV (SEGV_MAPERR) at address 0: a store through a NULL pointer in crash_null_deref(). */
#include "crasher.h"

/* volatile so no compiler turns the known-NULL store into a trap or deletes it. */
static int *volatile null_target = NULL;

__attribute__((noinline)) void crash_null_deref(int *p)
{
    *p = 42;
}

int main(void)
{
    crasher_note_self();
    crasher_note_hex("fault_addr", 0);
    crash_null_deref(null_target);
    return 1;
}
