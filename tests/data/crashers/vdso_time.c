/* SIGSEGV inside the vDSO: time() with a bad result pointer. On x86-64 glibc resolves time() to
 * the kernel's __vdso_time (an IFUNC), which stores the time through the pointer itself, so the
 * fault, and the first frame, are in [vdso] (the case issue 8 names: `__vdso_time`). */
#include "crasher.h"

/* volatile so the compiler neither warns about nor folds the bad pointer. */
static time_t *volatile bad_target = (time_t *)16;

__attribute__((noinline)) time_t crash_vdso_time(time_t *t)
{
    time_t now = time(t);
    __asm__ volatile("" ::: "memory"); /* keep the call a call, not a tail jump */
    return now;
}

int main(void)
{
    crasher_note_self();
    crasher_note_hex("fault_addr", 16);
    crash_vdso_time(bad_target);
    return 1;
}
