/* PID 1 of the throw-away virtual machine that make_multiarch.py boots (qemu-system) to get a
 * core dump written by a real Linux kernel of a foreign architecture.
 *
 * It runs CRASH_EXE (a file in the initramfs, in /work) with a clean environment and an unlimited
 * RLIMIT_CORE, so the kernel writes /work/core (core_pattern's default "core"), then copies the
 * core to the first virtio disk as: the 8 bytes "COREDUMP", the size as 8 little-endian bytes,
 * the core's bytes. The host reads the disk image back. Then it restarts the machine, which ends
 * qemu-system (-no-reboot) on every board, where power-off needs a driver per board.
 *
 * Compiled with -DCRASH_EXE=\"crash-<arch>\", statically, for the guest's architecture. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CRASH_EXE
#error "build with -DCRASH_EXE=\"crash-<arch>\""
#endif

static void say(const char *what)
{
    fprintf(stderr, "vm_init: %s (errno %d: %s)\n", what, errno, strerror(errno));
}

static int copy_core(const char *core_path, const char *disk_path)
{
    static char buf[65536];
    unsigned char header[16];
    struct stat st;
    int in = open(core_path, O_RDONLY);
    int out = open(disk_path, O_WRONLY);
    unsigned long long size;
    ssize_t n;

    if (in < 0 || out < 0 || fstat(in, &st) != 0) {
        say("cannot open the core or the disk");
        return 1;
    }
    size = (unsigned long long)st.st_size;
    memcpy(header, "COREDUMP", 8);
    for (int i = 0; i < 8; i++)
        header[8 + i] = (unsigned char)(size >> (8 * i));
    if (write(out, header, sizeof header) != (ssize_t)sizeof header) {
        say("short write of the header");
        return 1;
    }
    while ((n = read(in, buf, sizeof buf)) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            say("short write of the core");
            return 1;
        }
    }
    fsync(out);
    close(out);
    close(in);
    fprintf(stderr, "vm_init: copied %llu bytes of core\n", size);
    return 0;
}

int main(void)
{
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    char *const argv[] = {"./" CRASH_EXE, "alpha", "beta", NULL};
    char *const envp[] = {NULL};
    int status = 0;
    pid_t pid;

    mkdir("/proc", 0555);
    mkdir("/dev", 0755);
    if (mount("proc", "/proc", "proc", 0, NULL) != 0)
        say("mount /proc");
    if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) != 0)
        say("mount /dev");
    if (setrlimit(RLIMIT_CORE, &unlimited) != 0)
        say("setrlimit");
    if (chdir("/work") != 0)
        say("chdir /work");

    pid = fork();
    if (pid == 0) {
        execve(argv[0], argv, envp);
        say("execve");
        _exit(127);
    }
    waitpid(pid, &status, 0);
    fprintf(stderr, "vm_init: child %d ended, signaled=%d signal=%d core=%d\n", (int)pid,
            WIFSIGNALED(status), WIFSIGNALED(status) ? WTERMSIG(status) : 0,
            WIFSIGNALED(status) ? WCOREDUMP(status) : 0);
    copy_core("/work/core", "/dev/vda");
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
