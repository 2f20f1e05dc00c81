/* SIGABRT via abort(): glibc raises it with tgkill, so si_code is SI_TKILL and there is no
 * fault address. */
#include "crasher.h"

__attribute__((noinline)) void crash_abort(void)
{
    abort();
}

int main(void)
{
    crasher_note_self();
    crash_abort();
    return 1;
}
