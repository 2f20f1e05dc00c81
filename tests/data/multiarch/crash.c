/* Crashes on purpose with SIGSEGV in a second thread: a non-inlined function stores through a
 * null pointer while the main thread waits in pthread_join.
 *
 * Built for every architecture by make_multiarch.py (-g -O0 -static -pthread -Wl,--build-id).
 * Two threads so a reader must pick the crashing thread (not simply the first or the main one);
 * the worker's stack is small so emulator-written cores, which dump whole stacks, stay small.
 * The arguments are printed only so the command line in the core (NT_PRPSINFO pr_psargs) is
 * something a test can check. */
#include <pthread.h>
#include <stdio.h>

__attribute__((noinline)) void crash_here(volatile int *p, int value)
{
    *p = value; /* p is NULL: the store faults at address 0 */
}

static void *worker(void *arg)
{
    crash_here((volatile int *)arg, 42);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_attr_t attr;
    pthread_t thread;

    printf("crash: %d args, first %s\n", argc, argc > 1 ? argv[1] : "(none)");
    fflush(stdout);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024); /* >= PTHREAD_STACK_MIN everywhere */
    if (pthread_create(&thread, &attr, worker, NULL) != 0)
        return 2;
    pthread_join(thread, NULL);
    return 0;
}
