/*
 * real-hello: 16-bit real mode. Loaded at 0x10000 with CS = DS = ES = 0x1000, IP = 0.
 * Prints a greeting on COM1, round-trips the test device's scratch port with 8-, 16- and
 * 32-bit IN/OUT, prints DONE and powers off through the i8042 (0xFE to port 0x64).
 */
#include "common/platform.inc"

        .code16
        .section .text.start, "ax"
        .globl _start
_start:
        cli
        cld
        mov     %cs, %ax
        mov     %ax, %ds
        mov     %ax, %es
        call    uart_init

        mov     $msg_hello, %si
        call    puts

        /* 8-bit round trip */
        mov     $msg_pio8, %si
        call    puts
        mov     $0xa5, %al
        out     %al, $TESTDEV_SCRATCH
        xor     %ax, %ax
        in      $TESTDEV_SCRATCH, %al
        call    puthex8
        call    newline

        /* 16-bit round trip */
        mov     $msg_pio16, %si
        call    puts
        mov     $0xbeef, %ax
        out     %ax, $TESTDEV_SCRATCH
        xor     %ax, %ax
        in      $TESTDEV_SCRATCH, %ax
        call    puthex16
        call    newline

        /* 32-bit round trip (operand-size prefix in 16-bit code) */
        mov     $msg_pio32, %si
        call    puts
        mov     $0x12345678, %eax
        out     %eax, $TESTDEV_SCRATCH
        xor     %eax, %eax
        in      $TESTDEV_SCRATCH, %eax
        push    %ax
        shr     $16, %eax
        call    puthex16
        pop     %ax
        call    puthex16
        call    newline

        /* the test device's ID port */
        mov     $msg_id, %si
        call    puts
        in      $TESTDEV_PIO_ID, %al
        call    puthex8
        call    newline

        /* where are we: CS */
        mov     $msg_cs, %si
        call    puts
        mov     %cs, %ax
        call    puthex16
        call    newline

        mov     $msg_done, %si
        call    puts

        mov     $I8042_RESET, %al
        out     %al, $I8042_CMD
1:      hlt
        jmp     1b

/* 8N1, 115200 baud, FIFOs on, interrupts off: what a real driver programs. */
uart_init:
        mov     $COM1_IER, %dx
        xor     %al, %al
        out     %al, %dx
        mov     $COM1_LCR, %dx
        mov     $0x80, %al              /* DLAB */
        out     %al, %dx
        mov     $COM1_THR, %dx          /* DLL */
        mov     $0x01, %al
        out     %al, %dx
        mov     $COM1_IER, %dx          /* DLM */
        xor     %al, %al
        out     %al, %dx
        mov     $COM1_LCR, %dx
        mov     $0x03, %al              /* 8N1, DLAB off */
        out     %al, %dx
        mov     $COM1_FCR, %dx
        mov     $0xc7, %al
        out     %al, %dx
        mov     $COM1_MCR, %dx
        mov     $0x03, %al              /* DTR | RTS */
        out     %al, %dx
        ret

/* putc: AL -> COM1, polling LSR.THRE first. Preserves everything but flags. */
putc:
        push    %dx
        push    %ax
        mov     $COM1_LSR, %dx
1:      in      %dx, %al
        test    $LSR_THRE, %al
        jz      1b
        pop     %ax
        mov     $COM1_THR, %dx
        out     %al, %dx
        pop     %dx
        ret

/* puts: DS:SI -> COM1 up to NUL. */
puts:
        push    %ax
        push    %si
1:      lodsb
        test    %al, %al
        jz      2f
        call    putc
        jmp     1b
2:      pop     %si
        pop     %ax
        ret

newline:
        push    %ax
        mov     $'\n', %al
        call    putc
        pop     %ax
        ret

/* puthex4: low nibble of AL as one lowercase hex digit. */
puthex4:
        push    %ax
        and     $0x0f, %al
        add     $'0', %al
        cmp     $'9', %al
        jbe     1f
        add     $('a' - '9' - 1), %al
1:      call    putc
        pop     %ax
        ret

puthex8:
        push    %ax
        push    %ax
        shr     $4, %al
        call    puthex4
        pop     %ax
        call    puthex4
        pop     %ax
        ret

puthex16:
        push    %ax
        xchg    %al, %ah
        call    puthex8
        xchg    %al, %ah
        call    puthex8
        pop     %ax
        ret

        .section .rodata
msg_hello:  .asciz "real-hello: hello from 16-bit real mode\n"
msg_pio8:   .asciz "pio8 scratch: "
msg_pio16:  .asciz "pio16 scratch: "
msg_pio32:  .asciz "pio32 scratch: "
msg_id:     .asciz "pio id: "
msg_cs:     .asciz "cs: "
msg_done:   .asciz "DONE\n"
