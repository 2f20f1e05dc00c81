/* SIGFPE (FPE_INTDIV): integer division by zero; si_addr is the address of the idiv. */
#include "crasher.h"

static volatile int dividend = 1;
static volatile int divisor = 0;

__attribute__((noinline)) int crash_sigfpe(void)
{
    return dividend / divisor;
}

int main(void)
{
    crasher_note_self();
    return crash_sigfpe();
}
