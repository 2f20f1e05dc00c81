/* A load from a non-canonical address (a valid heap pointer with bit 63 flipped).  The CPU
 * raises #GP, not #PF, so the kernel has no fault address: it sends SIGSEGV with
 * si_code SI_KERNEL (0x80) and si_addr 0 (arch/x86/kernel/traps.c, exc_general_protection ->
 * force_sig(SIGSEGV)).  Notes valid_addr and the address it loads from, noncanonical_addr. */
#include "crasher.h"

__attribute__((noinline)) long crash_noncanonical(volatile long *p)
{
    return *p;
}

int main(void)
{
    crasher_note_self();
    long *valid = malloc(64);
    if (valid == NULL)
        return 2;
    *valid = 7;
    uintptr_t bad = (uintptr_t)valid ^ (1UL << 63);
    crasher_note_hex("valid_addr", (uint64_t)(uintptr_t)valid);
    crasher_note_hex("noncanonical_addr", (uint64_t)bad);
    return (int)crash_noncanonical((volatile long *)bad);
}
