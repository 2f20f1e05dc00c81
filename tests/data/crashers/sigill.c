/* SIGILL (ILL_ILLOPN): ud2, the instruction defined to be undefined; si_addr is its address. */
#include "crasher.h"

__attribute__((noinline)) void crash_sigill(void)
{
    __asm__ volatile("ud2");
}

int main(void)
{
    crasher_note_self();
    crash_sigill();
    return 1;
}
