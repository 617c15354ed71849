/* 64-bit IDT: 256 interrupt gates through start64.S's stubs, a handler table, dispatch. */
#include "idt.h"

struct gate {
  u16 offset_lo, selector;
  u8 ist, type_attr;
  u16 offset_mid;
  u32 offset_hi, zero;
} __attribute__((packed));

static struct gate idt[256] __attribute__((aligned(16)));
static isr_handler handlers[256];
extern const u64 isr_stub_table[256];

void idt_init(void) {
  u16 cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  for (int v = 0; v < 256; v++) {
    u64 a = isr_stub_table[v];
    idt[v].offset_lo = (u16)a;
    idt[v].selector = cs;
    idt[v].ist = 0;
    idt[v].type_attr = 0x8e;            /* present, DPL 0, 64-bit interrupt gate */
    idt[v].offset_mid = (u16)(a >> 16);
    idt[v].offset_hi = (u32)(a >> 32);
    idt[v].zero = 0;
  }
  struct { u16 limit; u64 base; } __attribute__((packed)) idtr = { sizeof(idt) - 1, (u64)(uptr)idt };
  __asm__ volatile("lidt %0" : : "m"(idtr));
}

void idt_set_handler(u8 vector, isr_handler h) { handlers[vector] = h; }

void isr_dispatch(struct isr_frame *f) {
  isr_handler h = handlers[f->vector & 0xff];
  if (h) { h(f); return; }
  printf("unexpected exception/interrupt: vector %lu error %lx rip %lx\n",
         (unsigned long)f->vector, (unsigned long)f->error_code, (unsigned long)f->rip);
  poweroff();
}
