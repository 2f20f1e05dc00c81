/* Driver for crash_ret_sp_off_by_8 (ret_sp_off_by_8_ret.S documents the crash state). */
#include "crasher.h"

void crash_ret_sp_off_by_8(void);

/* Called by the assembly with S, the address of its return address, before the faulty ret. */
void crasher_record_return_slot(void **slot)
{
    crasher_note_hex("return_slot", (uint64_t)(uintptr_t)slot);
    crasher_note_hex("return_addr", (uint64_t)(uintptr_t)slot[0]);
    crasher_note_hex("saved_rbp", (uint64_t)(uintptr_t)slot[-1]);
    crasher_note_hex("expected_rsp", (uint64_t)(uintptr_t)(slot + 1));
    crasher_note_hex("fault_addr", (uint64_t)(uintptr_t)slot[-1]);
}

int main(void)
{
    crasher_note_self();
    crash_ret_sp_off_by_8();
    return 1;
}
