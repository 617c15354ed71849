/*
 * long64-shutdown: the VM's answer to a triple fault. Prints, then loads an empty IDT
 * (limit 0) and executes UD2: the #UD cannot be delivered (#GP), nor can the #GP (#DF), nor
 * the #DF: a triple fault, which the processor turns into a shutdown and the VM reports as
 * exit kind 'shutdown'.
 *
 * DEVNOTE: UD2, not INT3: this build host's /dev/kvm (instruction emulation, no VMX/SVM)
 * reports "emulation failure" for an INT3 through an empty IDT instead of a triple fault.
 */
#include "common/platform.h"

int main(void) {
  uart_init();
  puts("long64-shutdown: triple fault on purpose\n");
  puts("DONE\n");
  struct { u16 limit; u64 base; } __attribute__((packed)) empty = { 0, 0 };
  __asm__ volatile("lidt %0; ud2" : : "m"(empty) : "memory");
  puts("FAIL: still running after the triple fault\n");
  halt_forever();
}
