/* SIGSEGV (SEGV_MAPERR) with pc 0: an indirect call through a NULL function pointer.  The call
 * pushed its return address, so [rsp] points just after the call instruction in
 * crash_call_null_fp. */
#include "crasher.h"

typedef void (*fn_t)(void);

static volatile fn_t null_fn = NULL;

__attribute__((noinline)) void crash_call_null_fp(void)
{
    null_fn();
}

int main(void)
{
    crasher_note_self();
    crasher_note_hex("fault_addr", 0);
    crash_call_null_fp();
    return 1;
}
