/* SIGBUS (BUS_ADRERR): read a shared file mapping whose file was truncated to 0 bytes, so the
 * page has no backing; si_addr is the start of the mapping. */
#include "crasher.h"

#include <stdio.h>
#include <sys/mman.h>

__attribute__((noinline)) int crash_sigbus(volatile char *p)
{
    return *p;
}

int main(void)
{
    crasher_note_self();
    const char *path = "sigbus.data";
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) {
        perror("sigbus: create");
        return 2;
    }
    char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("sigbus: mmap");
        return 2;
    }
    if (ftruncate(fd, 0) != 0) {
        perror("sigbus: ftruncate");
        return 2;
    }
    crasher_note_hex("fault_addr", (uint64_t)(uintptr_t)map);
    return crash_sigbus(map);
}
