/* SIGSEGV (SEGV_MAPERR) with pc 0 by returning to NULL: crash_return_to_null() overwrites its own
 * saved return address with 0, so its `ret` pops 0.
 *
 * Built with -O0 -fno-omit-frame-pointer, so __builtin_frame_address(0) is %rbp and the return
 * address is at %rbp+8.  After `leave; ret`:
 *     rip == 0
 *     rsp == (callee's %rbp) + 16      -- exactly where a normal return would leave it
 *     [rsp-8] == 0 == rip               -- the slot ret popped
 * This is the shape of the libunwind _Ux86_64_setcontext race in DESIGN.md. */
#include "crasher.h"

__attribute__((noinline)) void crash_return_to_null(void)
{
    void **return_slot = (void **)__builtin_frame_address(0) + 1;
    crasher_note_hex("return_slot", (uint64_t)(uintptr_t)return_slot);
    crasher_note_hex("return_addr", (uint64_t)(uintptr_t)*return_slot);
    *return_slot = NULL;
}

int main(void)
{
    crasher_note_self();
    crasher_note_hex("fault_addr", 0);
    crash_return_to_null();
    return 1;
}
