/* SIGSEGV (a NULL store) in a thread of a program linked with -z execstack: PT_GNU_STACK asks
 * for executable stacks, so the kernel maps the main stack RWX and glibc maps thread stacks RWX
 * (with a PROT_NONE guard page below each).  An ordinary crash on a real stack: no anomaly.
 * Notes crash_tid. */
#include "crasher.h"

#include <pthread.h>

static int *volatile null_target = NULL;

__attribute__((noinline)) void crash_on_exec_stack(int *p)
{
    *p = 42;
}

static void *worker(void *arg)
{
    (void)arg;
    crasher_note_dec("crash_tid", (uint64_t)crasher_gettid());
    crasher_note_hex("fault_addr", 0);
    crash_on_exec_stack(null_target);
    return NULL;
}

int main(void)
{
    crasher_note_self();
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    pthread_join(t, NULL);
    return 1;
}
