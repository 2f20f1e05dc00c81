/* SIGBUS with si_code BUS_MCEERR_AR (4), the machine-check "action required" signal, produced by
 * software-injecting a memory error: madvise(MADV_HWPOISON) on a populated anonymous page, then
 * touching it.  Needs CAP_SYS_ADMIN and a kernel with CONFIG_MEMORY_FAILURE; without them
 * madvise fails (EPERM / EINVAL) and the program exits 77 after noting unsupported=<reason>.
 * Note: each successful run leaves one physical page marked poisoned until reboot (or
 * debugfs hwpoison/unpoison-pfn); that is the cost of a real MCE signal. */
#include "crasher.h"

#include <errno.h>
#include <sys/mman.h>

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif

__attribute__((noinline)) int crash_mce_sigbus(volatile char *p)
{
    return *p;
}

int main(void)
{
    crasher_note_self();
    long page_size = sysconf(_SC_PAGESIZE);
    char *page =
        mmap(NULL, (size_t)page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return 2;
    page[0] = 1; /* populate it: only a present page can be poisoned */
    crasher_note_hex("fault_addr", (uint64_t)(uintptr_t)page);
    if (madvise(page, (size_t)page_size, MADV_HWPOISON) != 0) {
        int err = errno;
        crasher_note_str("unsupported", err == EPERM    ? "madvise(MADV_HWPOISON): EPERM (needs CAP_SYS_ADMIN)"
                                        : err == EINVAL ? "madvise(MADV_HWPOISON): EINVAL (kernel without CONFIG_MEMORY_FAILURE)"
                                                        : strerror(err));
        return CRASHER_UNSUPPORTED;
    }
    return crash_mce_sigbus(page);
}
