/* SIGSEGV (a NULL store) on the main thread of a program linked with -z execstack: the kernel
 * maps its stack RWX.  An ordinary crash on a real stack: no anomaly. */
#include "crasher.h"

static int *volatile null_target = NULL;

__attribute__((noinline)) void crash_on_exec_stack(int *p)
{
    *p = 42;
}

int main(void)
{
    crasher_note_self();
    crasher_note_hex("fault_addr", 0);
    crash_on_exec_stack(null_target);
    return 1;
}
