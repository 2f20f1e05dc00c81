/* ledger: a tiny "service" that crashes in one of three ways, for `corecensus demo`.
 *
 *   ledger parse    a software bug: a NULL record pointer dereferenced in parse_record()
 *                   (present in every version, on every host)
 *   ledger commit   a regression of version 2.0: commit_batch() returns through a saved
 *                   return address that a stray write zeroed (returns to NULL, as the
 *                   libunwind setcontext race of DESIGN.md does)
 *   ledger faulty   what a faulty CPU core does: checksum_block() executes `ret` with %rsp
 *                   8 bytes low (see ret_off_by_8.S), so it "returns" to a stack address
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct record { const char *key; long amount; };

extern void checksum_block(void);

__attribute__((noinline)) long parse_record(struct record *r) {
    return r->amount * 2;  /* r is NULL for a malformed line */
}

__attribute__((noinline)) static struct record *lookup(const char *line) {
    static struct record ok = {"k", 1};
    return strchr(line, '=') ? &ok : NULL;
}

__attribute__((noinline)) void commit_batch(volatile long *journal) {
    volatile long local[2] = {0, 0};
    /* The bug: an off-by-three index writes past `local` onto the saved return address. */
    long *slot = (long *)__builtin_frame_address(0) + 1;
    *slot = journal[0];
    local[0] = journal[1];
}

__attribute__((noinline)) void handle(const char *mode) {
    if (strcmp(mode, "parse") == 0) {
        printf("%ld\n", parse_record(lookup("malformed line")));
    } else if (strcmp(mode, "commit") == 0) {
        volatile long journal[2] = {0, 0};
        commit_batch(journal);
    } else if (strcmp(mode, "faulty") == 0) {
        checksum_block();
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ledger parse|commit|faulty\n");
        return 2;
    }
    handle(argv[1]);
    return 0;
}
