/* SIGSEGV with pc 0 (a return to NULL) while a stale return address lies in the live stack
 * between the crash and the real callers: the case a stack scan must not take for a caller.
 *
 * main() first calls leave_stale(), whose call to leaf() writes a return address into
 * leave_stale() at some depth.  Both return; main() then calls victim(), whose uninitialized
 * 512-byte buffer covers that depth, so the stale word survives inside a live frame.  victim()
 * calls crash_return_to_null(), which overwrites its own return address with 0 and returns.
 * At the crash, scanning up from %rsp meets the stale address (after `call leaf`, in
 * leave_stale) before victim()'s real return address into main (after `call victim`).
 * Notes: stale_ret (the stale word's value), real_ret (victim's return address into main). */
#include "crasher.h"

__attribute__((noinline)) void leaf(void)
{
    crasher_note_hex("stale_ret", (uint64_t)(uintptr_t)__builtin_return_address(0));
}

__attribute__((noinline)) void leave_stale(void)
{
    volatile char pad[96];
    pad[0] = 1;
    leaf();
}

__attribute__((noinline)) void crash_return_to_null(void)
{
    void **return_slot = (void **)__builtin_frame_address(0) + 1;
    *return_slot = NULL;
}

__attribute__((noinline)) void victim(void)
{
    volatile char buf[512]; /* uninitialized: keeps what leave_stale() left there */
    (void)buf;
    crasher_note_hex("real_ret", (uint64_t)(uintptr_t)__builtin_return_address(0));
    crash_return_to_null();
}

int main(void)
{
    crasher_note_self();
    leave_stale();
    victim();
    return 1;
}
