/*
 * long64-msr: RDMSR/WRMSR of the host-intercepted scratch MSR (0x400000F0), #GP from the host
 * for another MSR of the intercepted range (caught through the IDT, the faulting instruction
 * skipped), and two architectural MSRs the loader set. DONE, then test exit with code 0x65.
 */
#include "common/idt.h"

static volatile u32 gp_count;

static void on_gp(struct isr_frame *f) {
  gp_count++;
  printf("#GP caught: error %llx at rdmsr/wrmsr, ecx=%llx\n", f->error_code, f->rcx);
  f->rip += 2;                                  /* RDMSR 0F 32 / WRMSR 0F 30: two bytes */
}

static u64 rdmsr(u32 msr) {
  u32 lo = 0xdeaddead, hi = 0xdeaddead;
  __asm__ volatile("rdmsr" : "+a"(lo), "+d"(hi) : "c"(msr) : "memory");
  return (u64)hi << 32 | lo;
}

static void wrmsr(u32 msr, u64 v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

int main(void) {
  uart_init();
  idt_init();
  idt_set_handler(13, on_gp);
  puts("long64-msr: MSR intercepts\n");

  wrmsr(MSR_TEST_SCRATCH, 0x1122334455667788ULL);
  printf("scratch msr: %016llx\n", rdmsr(MSR_TEST_SCRATCH));
  wrmsr(MSR_TEST_SCRATCH, 0xfedcba9876543210ULL);
  printf("scratch msr: %016llx\n", rdmsr(MSR_TEST_SCRATCH));
  check(gp_count == 0, "scratch MSR raised #GP");

  u64 v = rdmsr(MSR_TEST_SCRATCH + 1);
  printf("rdmsr 0x400000f1 -> gp=%u value %016llx\n", gp_count, v);
  wrmsr(MSR_TEST_SCRATCH + 1, 1);
  printf("wrmsr 0x400000f1 -> gp=%u\n", gp_count);
  check(gp_count == 2, "expected two #GPs");
  printf("scratch msr unchanged: %016llx\n", rdmsr(MSR_TEST_SCRATCH));

  printf("apic base msr: %016llx\n", rdmsr(MSR_APIC_BASE));
  printf("efer: %016llx\n", rdmsr(MSR_EFER) & 0x500);

  printf("failures: %u\n", failures);
  puts("DONE\n");
  test_exit(0x65);
}
