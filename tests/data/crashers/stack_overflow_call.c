/* SIGSEGV from recursion that only calls: each level pushes one return address and nothing else,
 * so the fault is always the `call` writing to sp - 8 with sp still at the lowest address of the
 * stack mapping.  stack_overflow.c (a 256-byte frame) may instead fault with sp already in the
 * guard gap, depending on where ASLR put the stack top; together they cover both shapes, and
 * neither may look like a hardware fault (a bit-flip candidate or a bad sp). */
#include "crasher.h"

void crash_call_recurse(void);

__asm__(".text\n"
        ".globl crash_call_recurse\n"
        ".type crash_call_recurse, @function\n"
        "crash_call_recurse:\n"
        "    call crash_call_recurse\n"
        "    ret\n"
        ".size crash_call_recurse, .-crash_call_recurse\n");

int main(void)
{
    crasher_note_self();
    crash_call_recurse();
    return 0;
}
