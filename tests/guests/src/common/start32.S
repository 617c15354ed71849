/*
 * Entry of the 32-bit protected-mode C guests: the loader hands over flat CS/DS/SS (GDT at
 * 0x1000), paging off, interrupts off. Switch to our own stack, clear .bss, run main().
 */
        .code32
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        cld
        mov     $stack_top, %esp
        mov     $__bss_start, %edi
        mov     $__bss_end, %ecx
        sub     %edi, %ecx
        xor     %eax, %eax
        rep stosb
        call    main
1:      cli
        hlt
        jmp     1b

        .section .bss
        .balign 16
stack:  .skip   16384
stack_top:
