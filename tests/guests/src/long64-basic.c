/*
 * long64-basic: 64-bit long mode. printf over COM1, CPUID (vendor, hypervisor-present bit),
 * port I/O and MMIO round trips of every width (8 to 64 bits), the bus
 * answering all-ones for a hole, the ROM check, control-register state as the
 * loader left it, then DONE and a test exit with code 0x64.
 */
#include "common/platform.h"

int main(void) {
  uart_init();
  puts("long64-basic: hello from 64-bit long mode\n");

  u64 cr0, cr4, efer_lo, efer_hi;
  __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
  __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
  __asm__ volatile("rdmsr" : "=a"(efer_lo), "=d"(efer_hi) : "c"(MSR_EFER));
  printf("cr0.pg=%llu cr4.pae=%llu efer.lma=%llu\n", cr0 >> 31 & 1, cr4 >> 5 & 1, efer_lo >> 10 & 1);

  u32 a, b, c, d;
  cpuid(0, 0, &a, &b, &c, &d);
  char vendor[13];
  memcpy(vendor, &b, 4);
  memcpy(vendor + 4, &d, 4);
  memcpy(vendor + 8, &c, 4);
  vendor[12] = 0;
  printf("cpuid vendor: %s\n", vendor);
  cpuid(1, 0, &a, &b, &c, &d);
  printf("cpuid hypervisor bit: %u\n", c >> 31);

  outb(TESTDEV_SCRATCH, 0x11);
  printf("pio8 scratch: %02x\n", inb(TESTDEV_SCRATCH));
  outw(TESTDEV_SCRATCH, 0x2233);
  printf("pio16 scratch: %04x\n", inw(TESTDEV_SCRATCH));
  outl(TESTDEV_SCRATCH, 0x44556677);
  printf("pio32 scratch: %08x\n", inl(TESTDEV_SCRATCH));

  mmio_write8(TESTDEV_MMIO_SCRATCH, 0x88);
  printf("mmio8 scratch: %02x\n", mmio_read8(TESTDEV_MMIO_SCRATCH));
  mmio_write16(TESTDEV_MMIO_SCRATCH, 0x99aa);
  printf("mmio16 scratch: %04x\n", mmio_read16(TESTDEV_MMIO_SCRATCH));
  mmio_write32(TESTDEV_MMIO_SCRATCH, 0xbbccddee);
  printf("mmio32 scratch: %08x\n", mmio_read32(TESTDEV_MMIO_SCRATCH));
  mmio_write64(TESTDEV_MMIO_SCRATCH, 0x0123456789abcdefULL);
  printf("mmio64 scratch: %016llx\n", mmio_read64(TESTDEV_MMIO_SCRATCH));
  mmio_write8(TESTDEV_MMIO_SCRATCH + 7, 0xfe);
  printf("mmio8 at +7 -> scratch %016llx\n", mmio_read64(TESTDEV_MMIO_SCRATCH));
  printf("mmio id: %08x\n", mmio_read32(TESTDEV_MMIO_ID));
  mmio_write32(TESTDEV_MMIO_ID, 0);
  printf("mmio id after write: %08x\n", mmio_read32(TESTDEV_MMIO_ID));
  printf("mmio no register: %08x\n", mmio_read32(TESTDEV_MMIO_INVALID));
  printf("pio id: %02x, pio reserved: %02x\n", inb(TESTDEV_PIO_ID), inb(TESTDEV_SCRATCH + 5));

  rom_test();

  printf("failures: %u\n", failures);
  puts("DONE\n");
  test_exit(0x64);
}
