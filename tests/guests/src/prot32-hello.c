/*
 * prot32-hello: 32-bit protected mode, flat segments, paging off. Serial output, port I/O
 * round trips of 8, 16 and 32 bits on the test device's scratch register, an MMIO round trip
 * and the read-only ID register, the ROM read and write-drop check, then DONE and power-off.
 */
#include "common/platform.h"

int main(void) {
  uart_init();
  puts("prot32-hello: hello from 32-bit protected mode\n");
  u32 cr0;
  __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
  u16 cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  printf("cs=%04x cr0.pe=%u cr0.pg=%u\n", cs, cr0 & 1, cr0 >> 31);

  outb(TESTDEV_SCRATCH, 0x5a);
  printf("pio8 scratch: %02x\n", inb(TESTDEV_SCRATCH));
  outw(TESTDEV_SCRATCH, 0xbeef);
  printf("pio16 scratch: %04x\n", inw(TESTDEV_SCRATCH));
  outl(TESTDEV_SCRATCH, 0xdeadbeef);
  printf("pio32 scratch: %08x\n", inl(TESTDEV_SCRATCH));
  outb(TESTDEV_SCRATCH + 2, 0x01);
  printf("pio8 at +2 -> scratch %08x\n", inl(TESTDEV_SCRATCH));
  printf("pio id: %02x\n", inb(TESTDEV_PIO_ID));

  mmio_write32(TESTDEV_MMIO_SCRATCH, 0xcafef00d);
  printf("mmio32 scratch: %08x\n", mmio_read32(TESTDEV_MMIO_SCRATCH));
  printf("mmio id: %08x\n", mmio_read32(TESTDEV_MMIO_ID));

  rom_test();

  printf("failures: %u\n", failures);
  puts("DONE\n");
  poweroff();
}
