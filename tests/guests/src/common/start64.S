/*
 * Entry of the 64-bit long-mode C guests: the loader hands over long mode with identity-mapped
 * page tables for the first 4 GiB, CS = 0x18 (64-bit), interrupts off. Switch to our own stack,
 * clear .bss, run main().
 *
 * Also the interrupt entry stubs: isr_stub_table[v] is the entry for vector v (0-255). Each
 * pushes a dummy error code where the CPU does not push one, then the vector, and jumps to a
 * common path that saves the general registers into a struct isr_frame (common/idt.h) and
 * calls isr_dispatch(frame). The handler may change frame->rip (to skip a faulting
 * instruction); IRETQ resumes there.
 */
        .code64
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        cld
        lea     stack_top(%rip), %rsp
        lea     __bss_start(%rip), %rdi
        lea     __bss_end(%rip), %rcx
        sub     %rdi, %rcx
        xor     %eax, %eax
        rep stosb
        call    main
1:      cli
        hlt
        jmp     1b

        .text
/* Vectors for which the CPU pushes an error code: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13,
 * #PF 14, #AC 17, #CP 21, #VC 29, #SX 30. */
        .macro  stub v
        .balign 16
isr_stub_\v:
        .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
        .else
        push    $0
        .endif
        push    $\v
        jmp     isr_common
        .endm

        .altmacro
        .set    vec, 0
        .rept   256
        stub    %vec
        .set    vec, vec + 1
        .endr

isr_common:
        push    %rax
        push    %rbx
        push    %rcx
        push    %rdx
        push    %rsi
        push    %rdi
        push    %rbp
        push    %r8
        push    %r9
        push    %r10
        push    %r11
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, %rdi
        cld
        call    isr_dispatch
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %r11
        pop     %r10
        pop     %r9
        pop     %r8
        pop     %rbp
        pop     %rdi
        pop     %rsi
        pop     %rdx
        pop     %rcx
        pop     %rbx
        pop     %rax
        add     $16, %rsp               /* vector and error code */
        iretq

        .macro  stubaddr v
        .quad   isr_stub_\v
        .endm
        .section .rodata
        .balign 8
        .globl  isr_stub_table
isr_stub_table:
        .set    vec, 0
        .rept   256
        stubaddr %vec
        .set    vec, vec + 1
        .endr

        .section .bss
        .balign 16
stack:  .skip   16384
stack_top:
