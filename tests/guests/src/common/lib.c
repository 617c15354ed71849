/*
 * The shared runtime of the C guests: COM1 output (polling LSR.THRE like a real driver), a
 * small printf (%c %s %d %u %x %p, with 0-padding, width, l and ll), exits, and the ROM check.
 * Built for both 32-bit (prot32) and 64-bit (long64) guests.
 */
#include "platform.h"

u32 failures;

void uart_init(void) {
  outb(COM1_IER, 0x00);
  outb(COM1_LCR, 0x80);        /* DLAB */
  outb(COM1_THR, 0x01);        /* DLL: 115200 baud */
  outb(COM1_IER, 0x00);        /* DLM */
  outb(COM1_LCR, 0x03);        /* 8N1 */
  outb(COM1_FCR, 0xc7);        /* FIFOs on, cleared */
  outb(COM1_MCR, 0x03);        /* DTR | RTS */
}

void putc(char c) {
  while ((inb(COM1_LSR) & LSR_THRE) == 0) {
  }
  outb(COM1_THR, (u8)c);
}

void puts(const char *s) {
  while (*s) putc(*s++);
}

/* Divide by 10 without libgcc (32-bit guests have no 64-bit division instruction). */
static u64 divmod10(u64 n, u32 *rem) {
  u64 q = 0, r = 0;
  for (int i = 63; i >= 0; i--) {
    r = (r << 1) | ((n >> i) & 1);
    if (r >= 10) { r -= 10; q |= 1ULL << i; }
  }
  *rem = (u32)r;
  return q;
}

static void put_padded(const char *digits, int len, int width, char pad, int neg) {
  int total = len + neg;
  if (pad == '0' && neg) putc('-');
  for (int i = total; i < width; i++) putc(pad);
  if (pad != '0' && neg) putc('-');
  while (len > 0) putc(digits[--len]);
}

void vprintf(const char *fmt, va_list ap) {
  char buf[24];
  for (; *fmt; fmt++) {
    if (*fmt != '%') { putc(*fmt); continue; }
    fmt++;
    char pad = ' ';
    int width = 0, longs = 0;
    if (*fmt == '0') { pad = '0'; fmt++; }
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    while (*fmt == 'l') { longs++; fmt++; }
    char conv = *fmt;
    if (conv == 0) break;
    u64 v = 0;
    int neg = 0, len = 0;
    switch (conv) {
      case '%': putc('%'); continue;
      case 'c': putc((char)va_arg(ap, int)); continue;
      case 's': {
        const char *s = va_arg(ap, const char *);
        int n = 0;
        while (s[n]) n++;
        for (int i = n; i < width; i++) putc(' ');
        puts(s);
        continue;
      }
      case 'p':
        v = (uptr)va_arg(ap, void *);
        puts("0x");
        break;
      case 'd': {
        i64 s = longs >= 2 ? va_arg(ap, long long) : longs == 1 ? va_arg(ap, long) : va_arg(ap, int);
        if (s < 0) { neg = 1; v = (u64)0 - (u64)s; } else v = (u64)s;
        break;
      }
      default:
        v = longs >= 2 ? va_arg(ap, unsigned long long) : longs == 1 ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
        break;
    }
    if (conv == 'x' || conv == 'p') {
      do { buf[len++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    } else if (conv == 'd' || conv == 'u') {
      do { u32 r; v = divmod10(v, &r); buf[len++] = (char)('0' + r); } while (v);
    } else {
      putc('%'); putc(conv);
      continue;
    }
    put_padded(buf, len, width, pad, neg);
  }
}

void printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
}

void check(int ok, const char *what) {
  if (!ok) {
    failures++;
    printf("FAIL: %s\n", what);
  }
}

void halt_forever(void) {
  for (;;) __asm__ volatile("cli; hlt");
}

void poweroff(void) {
  outb(I8042_CMD, I8042_RESET);
  halt_forever();
}

void test_exit(u32 code) {
  outl(TESTDEV_EXIT, code);
  halt_forever();
}

void rom_test(void) {
  volatile u8 *rom = (volatile u8 *)TESTROM_GPA;
  char sig[9];
  for (int i = 0; i < 8; i++) sig[i] = (char)rom[i];
  sig[8] = 0;
  printf("rom signature: %s\n", sig);
  printf("rom[0x10]=%02x rom[0xfff0]=%02x\n", rom[0x10], rom[0xfff0]);
  rom[0x10] = 0xaa;
  printf("rom[0x10] after write of aa: %02x\n", rom[0x10]);
  mmio_write32(TESTROM_GPA + 0x20, 0xdeadbeef);
  printf("rom dword 0x20 after write: %08x\n", mmio_read32(TESTROM_GPA + 0x20));
  check(rom[0x10] == 0x10 && mmio_read32(TESTROM_GPA + 0x20) == 0x23222120, "rom writes were not dropped");
}

void *memset(void *d, int c, usize n) {
  u8 *p = d;
  while (n--) *p++ = (u8)c;
  return d;
}

void *memcpy(void *d, const void *s, usize n) {
  u8 *p = d;
  const u8 *q = s;
  while (n--) *p++ = *q++;
  return d;
}

int memcmp(const void *a, const void *b, usize n) {
  const u8 *p = a, *q = b;
  for (; n; n--, p++, q++) if (*p != *q) return *p < *q ? -1 : 1;
  return 0;
}
