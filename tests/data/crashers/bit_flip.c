/* SIGSEGV (SEGV_MAPERR) at an address one bit away from a valid heap pointer: bit 33 flipped,
 * the kind of single-bit error a bad DIMM or CPU produces.  Notes valid_addr and fault_addr. */
#include "crasher.h"

#include <stdio.h>

#define FLIPPED_BIT 33

__attribute__((noinline)) long crash_bit_flip(volatile long *p)
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
    uintptr_t flipped = (uintptr_t)valid ^ (1UL << FLIPPED_BIT);
    crasher_note_hex("valid_addr", (uint64_t)(uintptr_t)valid);
    crasher_note_hex("fault_addr", (uint64_t)flipped);
    crasher_note_dec("flipped_bit", FLIPPED_BIT);
    return (int)crash_bit_flip((volatile long *)flipped);
}
