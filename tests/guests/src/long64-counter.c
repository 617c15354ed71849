/*
 * long64-counter: the save/restore guest. Prints "count=N" lines with a busy-wait between
 * them, and carries the count in three more places than its general registers and RAM, each
 * checked before every line, so that a restore which loses any of them shows up as a FAIL line:
 *   - XMM5 (SSE state: the XSAVE area), which the compiler never touches (-mgeneral-regs-only),
 *     on processors whose CPUID offers FXSR, SSE and SSE2 (the emu backend does not yet: there
 *     the XMM5 check is left out and the transcript is the same);
 *   - IA32_KERNEL_GS_BASE (an MSR that is part of the VP state);
 *   - the LAPIC TPR (the local APIC page), as (N & 0xF) << 4.
 * How many lines: the test device's 32-bit scratch register, read once at start. 0 (its reset
 * value, as the guest suite runs it) means 16 lines, then "failures: 0", DONE and test exit
 * 0x66; 0xFFFFFFFF means count forever (tests/vmwp/saverestore.test.ts sets it before the run).
 */
#include "common/idt.h"

#define DEFAULT_LINES       16
#define COUNT_FOREVER       0xffffffffu
#define MSR_KERNEL_GS_BASE  0xc0000102
#define DELAY_LOOPS         500

static u64 rdmsr(u32 msr) {
  u32 lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr) : "memory");
  return (u64)hi << 32 | lo;
}

static void wrmsr(u32 msr, u64 v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

/* SSE on: CR0.EM clear, CR0.MP set, CR4.OSFXSR | CR4.OSXMMEXCPT. */
static void sse_enable(void) {
  u64 cr0, cr4;
  __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
  cr0 = (cr0 & ~(u64)(1 << 2)) | (1 << 1);
  __asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
  __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
  cr4 |= (1 << 9) | (1 << 10);
  __asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
}

/* MOVDQU through memory: this build host's KVM emulates every instruction, and its emulator
 * knows MOVDQU but not MOVQ between XMM and general registers. */
static void xmm5_set(u64 v) {
  volatile u64 buf[2] = { v, ~v };
  __asm__ volatile("movdqu %0, %%xmm5" : : "m"(buf) : "memory");
}
static u64 xmm5_get(void) {
  volatile u64 buf[2];
  __asm__ volatile("movdqu %%xmm5, %0" : "=m"(buf) : : "memory");
  return buf[1] == ~buf[0] ? buf[0] : 0xbad0bad0bad0bad0ull;
}

static int have_sse;

/* CPUID.1:EDX bits 24 (FXSR), 25 (SSE), 26 (SSE2). */
static int cpu_has_sse2(void) {
  u32 a = 1, b, c = 0, d;
  __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
  return (d & (7u << 24)) == (7u << 24);
}

static void mirror(u32 n) {
  if (have_sse) xmm5_set(n);
  wrmsr(MSR_KERNEL_GS_BASE, n);
  lapic_write(LAPIC_TPR, (n & 0xf) << 4);
}

int main(void) {
  uart_init();
  u32 limit = inl(TESTDEV_SCRATCH);
  if (limit == 0) limit = DEFAULT_LINES;
  have_sse = cpu_has_sse2();
  if (have_sse) sse_enable();
  puts("long64-counter: counting\n");
  mirror(0);
  for (u32 n = 0; limit == COUNT_FOREVER || n < limit; n++) {
    u64 x = have_sse ? xmm5_get() : n, m = rdmsr(MSR_KERNEL_GS_BASE);
    u32 tpr = lapic_read(LAPIC_TPR) & 0xff;
    if (x != n || m != n || tpr != ((n & 0xf) << 4)) {
      failures++;
      printf("FAIL: state lost before count %u: xmm5=%llu msr=%llu tpr=%02x\n", n, x, m, tpr);
    }
    printf("count=%u\n", n);
    mirror(n + 1);
    for (volatile u32 i = 0; i < DELAY_LOOPS; i++) {
    }
  }
  printf("failures: %u\n", failures);
  puts("DONE\n");
  test_exit(0x66);
}
