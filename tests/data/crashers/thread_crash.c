/* SIGSEGV in the second of two worker threads, while the main thread and the first worker are
 * blocked in system calls.  Three threads in the core; the kernel writes the crashing thread's
 * NT_PRSTATUS first.  Notes crash_tid (the crashing thread), blocked_tid (first worker). */
#include "crasher.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

static int block_pipe[2];
static volatile long blocked_tid;
static int *volatile null_target = NULL;

/* True once thread `tid` of this process sleeps in the kernel ('S' in /proc/self/task/TID/stat). */
static int is_sleeping(long tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *paren = strrchr(buf, ')'); /* comm may contain spaces; the state follows the last ')' */
    return paren != NULL && paren[1] == ' ' && paren[2] == 'S';
}

static void *blocked_worker(void *arg)
{
    (void)arg;
    blocked_tid = crasher_gettid();
    char c;
    (void)!read(block_pipe[0], &c, 1); /* nobody ever writes: blocks until the crash */
    return NULL;
}

__attribute__((noinline)) void crash_in_thread(int *p)
{
    *p = 42;
}

static void *crashing_worker(void *arg)
{
    (void)arg;
    /* Wait (at most ~2 s) until the other two threads sleep, so every core has the same shape. */
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 2000; i++) {
        if (blocked_tid != 0 && is_sleeping(blocked_tid) && is_sleeping(getpid()))
            break;
        nanosleep(&ms, NULL);
    }
    crasher_note_dec("crash_tid", (uint64_t)crasher_gettid());
    crasher_note_dec("blocked_tid", (uint64_t)blocked_tid);
    crasher_note_hex("fault_addr", 0);
    crash_in_thread(null_target);
    return NULL;
}

int main(void)
{
    crasher_note_self();
    if (pipe(block_pipe) != 0) {
        perror("thread_crash: pipe");
        return 2;
    }
    pthread_t first, second;
    if (pthread_create(&first, NULL, blocked_worker, NULL) != 0 ||
        pthread_create(&second, NULL, crashing_worker, NULL) != 0) {
        perror("thread_crash: pthread_create");
        return 2;
    }
    pthread_join(first, NULL); /* never returns: the first worker blocks forever */
    return 1;
}
