/*
 * Anchor for `npm run bench:exits`: the cost of a port-I/O exit when a native VMM drives
 * /dev/kvm directly (one thread, no irqchip, the exit handled inline). The guest is the same
 * real-mode loop tshv runs: N times `OUT 0xF0, AL`, then HLT.
 * Usage: kvm-pio-loop N   -> prints "exits=<n> seconds=<s>"
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
  unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], 0, 0) : 20000;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) { perror("/dev/kvm"); return 2; }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) { perror("KVM_CREATE_VM"); return 2; }
  size_t memsz = 0x100000;
  unsigned char *mem = mmap(0, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  /* 66 B9 imm32: mov ecx, n;  E6 F0: out 0xF0, al;  66 49: dec ecx;  75 FA: jnz;  F4: hlt */
  unsigned char code[] = { 0x66, 0xB9, 0, 0, 0, 0, 0xE6, 0xF0, 0x66, 0x49, 0x75, 0xFA, 0xF4 };
  memcpy(code + 2, &n, 4);
  memcpy(mem + 0x10000, code, sizeof code);
  struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (unsigned long)mem };
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { perror("SET_USER_MEMORY_REGION"); return 2; }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(0, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct kvm_sregs sregs; ioctl(vcpu, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0x10000; sregs.cs.selector = 0x1000;
  ioctl(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs = { .rip = 0, .rflags = 2 };
  ioctl(vcpu, KVM_SET_REGS, &regs);
  unsigned exits = 0; unsigned scratch = 0;
  double t0 = now();
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 2; }
    if (run->exit_reason == KVM_EXIT_IO) { scratch ^= *((unsigned char *)run + run->io.data_offset); exits++; continue; }
    if (run->exit_reason == KVM_EXIT_HLT) break;
    fprintf(stderr, "unexpected exit %u\n", run->exit_reason); return 2;
  }
  double t1 = now();
  printf("exits=%u seconds=%.6f\n", exits, t1 - t0);
  return scratch == 0xFFFFFFFF;
}
