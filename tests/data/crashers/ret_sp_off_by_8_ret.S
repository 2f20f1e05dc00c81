/* crash_ret_sp_off_by_8: a function whose `ret` runs with %rsp 8 bytes too low, emulating the
 * faulty CPU of DESIGN.md ("crashed on return ... with %rsp off by 8").
 *
 * Let S be %rsp on entry, so [S] is the return address the call pushed (a valid address in
 * main, just after `call crash_ret_sp_off_by_8`).  The function builds an ordinary frame:
 *
 *     [S]    return address into main
 *     [S-8]  saved %rbp (main's frame pointer: a stack address)      <- push %rbp
 *     [S-16] marker 0x0ff80ff80ff80ff8 (a local)                      <- mov %rax,-8(%rbp)
 *
 * then tears it down normally with `leave` (%rsp = S, pointing at the return address), and
 * here the "CPU" gets %rsp wrong by 8: `sub $8,%rsp` stands in for the miscomputed stack
 * pointer.  `ret` then pops [S-8], the stale saved %rbp, instead of [S].
 *
 * Resulting crash state (SIGSEGV, si_code SEGV_ACCERR: the stack is mapped but not executable):
 *     rip      == main's %rbp (a stack address) == si_addr
 *     rsp      == S           -- 8 lower than the correct post-return value S+8
 *     [rsp]    == the valid return address into main (right after a call instruction)
 *     [rsp-8]  == rip         -- the slot `ret` popped
 *     [rsp-16] == 0x0ff80ff80ff80ff8
 * The default SIGSEGV action pushes no signal frame, so these dead words survive into the core.
 * Before crashing it calls crasher_record_return_slot(S) so the test knows S independently.
 */
    .text
    .globl  crash_ret_sp_off_by_8
    .type   crash_ret_sp_off_by_8, @function
crash_ret_sp_off_by_8:
    .cfi_startproc
    push    %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    mov     %rsp, %rbp
    .cfi_def_cfa_register %rbp
    sub     $16, %rsp                   /* keeps %rsp 16-byte aligned for the call below */
    movabs  $0x0ff80ff80ff80ff8, %rax
    mov     %rax, -8(%rbp)
    lea     8(%rbp), %rdi               /* S: where the return address lives */
    call    crasher_record_return_slot
    leave
    .cfi_def_cfa %rsp, 8
    sub     $8, %rsp                    /* the fault: %rsp 8 bytes low at the ret */
    ret
    .cfi_endproc
    .size   crash_ret_sp_off_by_8, .-crash_ret_sp_off_by_8

    .section .note.GNU-stack,"",@progbits
