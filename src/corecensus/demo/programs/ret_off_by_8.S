/* checksum_block: builds a normal frame, tears it down, then executes `ret` with %rsp 8 bytes
 * low -- the symptom of the faulty CPU core in DESIGN.md. `ret` pops the saved %rbp (a stack
 * address) instead of the return address, which is left at [%rsp] after the fault. */
    .text
    .globl  checksum_block
    .type   checksum_block, @function
checksum_block:
    .cfi_startproc
    push    %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    mov     %rsp, %rbp
    .cfi_def_cfa_register %rbp
    sub     $16, %rsp
    movabs  $0x5eed5eed5eed5eed, %rax
    mov     %rax, -8(%rbp)
    leave
    .cfi_def_cfa %rsp, 8
    sub     $8, %rsp
    ret
    .cfi_endproc
    .size   checksum_block, .-checksum_block
    .section .note.GNU-stack,"",@progbits
