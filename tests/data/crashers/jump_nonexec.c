/* SIGSEGV (SEGV_ACCERR) on instruction fetch: call a function pointer that points into a
 * PROT_READ|PROT_WRITE page.  pc == si_addr == the page; [rsp] is the return address into
 * crash_jump_nonexec. */
#include "crasher.h"

#include <stdio.h>
#include <sys/mman.h>

typedef void (*fn_t)(void);

__attribute__((noinline)) void crash_jump_nonexec(fn_t fn)
{
    fn();
}

int main(void)
{
    crasher_note_self();
    unsigned char *page =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("jump_nonexec: mmap");
        return 2;
    }
    memset(page, 0xc3, 4096); /* valid code (ret) that the missing PROT_EXEC must stop */
    crasher_note_hex("fault_addr", (uint64_t)(uintptr_t)page);
    crash_jump_nonexec((fn_t)(void *)page);
    return 1;
}
