/* 64-bit IDT set-up and interrupt dispatch for the long-mode guests (start64.S has the stubs). */
#ifndef GUEST_IDT_H
#define GUEST_IDT_H
#include "platform.h"

/* What isr_common pushed, lowest address first. */
struct isr_frame {
  u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
  u64 vector, error_code;
  u64 rip, cs, rflags, rsp, ss;
};

typedef void (*isr_handler)(struct isr_frame *f);

/* Install all 256 gates (interrupt gates, current CS) and LIDT. */
void idt_init(void);
void idt_set_handler(u8 vector, isr_handler h);
/* Called by the stubs. An unhandled vector prints and powers off. */
void isr_dispatch(struct isr_frame *f);

static inline u32 lapic_read(u32 reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC_BASE + reg, v); }

#endif
