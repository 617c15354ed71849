/*
 * The test platform as the guests see it (tests/guests/README.md has the contract), and the
 * small runtime the C guests share (lib.c). Freestanding: no libc, no SSE, no floating point.
 * Keep the addresses in sync with platform.inc.
 */
#ifndef GUEST_PLATFORM_H
#define GUEST_PLATFORM_H

#include <stdarg.h>

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned long uptr;
typedef unsigned long usize;

#define COM1             0x3f8
#define COM1_THR         (COM1 + 0)
#define COM1_IER         (COM1 + 1)
#define COM1_FCR         (COM1 + 2)
#define COM1_LCR         (COM1 + 3)
#define COM1_MCR         (COM1 + 4)
#define COM1_LSR         (COM1 + 5)
#define LSR_THRE         0x20
#define I8042_CMD        0x64
#define I8042_RESET      0xfe
#define TESTDEV_SCRATCH  0xf0
#define TESTDEV_EXIT     0xf4
#define TESTDEV_DOORBELL 0xf6
#define TESTDEV_PIO_ID   0xf7          /* read-only: 0x54 */
#define TESTDEV_MMIO     0xfeb00000UL
#define TESTDEV_MMIO_ID  (TESTDEV_MMIO + 0)      /* read-only: 0x56485354 */
#define TESTDEV_MMIO_SCRATCH (TESTDEV_MMIO + 8)  /* 64-bit, any aligned sub-access */
#define TESTDEV_MMIO_INVALID (TESTDEV_MMIO + 0x100) /* no register: the bus answers all-ones */
#define TESTROM_GPA      0xffff0000UL
#define LAPIC_BASE       0xfee00000UL
#define LAPIC_ID         0x020
#define LAPIC_TPR        0x080
#define LAPIC_EOI        0x0b0
#define LAPIC_SVR        0x0f0
#define LAPIC_ISR        0x100
#define LAPIC_IRR        0x200

#define MSR_APIC_BASE    0x0000001b
#define MSR_EFER         0xc0000080
#define MSR_TEST_SCRATCH 0x400000f0

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* MMIO: volatile accesses of exactly the named width (one instruction each). */
static inline void mmio_write8(uptr a, u8 v) { *(volatile u8 *)a = v; }
static inline void mmio_write16(uptr a, u16 v) { *(volatile u16 *)a = v; }
static inline void mmio_write32(uptr a, u32 v) { *(volatile u32 *)a = v; }
#if defined(__x86_64__)
static inline void mmio_write64(uptr a, u64 v) { *(volatile u64 *)a = v; }
static inline u64 mmio_read64(uptr a) { return *(volatile u64 *)a; }
#endif
static inline u8 mmio_read8(uptr a) { return *(volatile u8 *)a; }
static inline u16 mmio_read16(uptr a) { return *(volatile u16 *)a; }
static inline u32 mmio_read32(uptr a) { return *(volatile u32 *)a; }

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
/* STI; HLT back to back: the STI shadow keeps an interrupt from slipping in before HLT. */
static inline void sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }

void uart_init(void);
void putc(char c);
void puts(const char *s);
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprintf(const char *fmt, va_list ap);

/* Power off through the i8042 reset pulse; does not return. */
void poweroff(void) __attribute__((noreturn));
/* Leave with a code through the test device's exit register; does not return. */
void test_exit(u32 code) __attribute__((noreturn));
void halt_forever(void) __attribute__((noreturn));

void *memset(void *d, int c, usize n);
void *memcpy(void *d, const void *s, usize n);
int memcmp(const void *a, const void *b, usize n);

/* Count of failed checks (check() prints a FAIL line for each). */
extern u32 failures;
void check(int ok, const char *what);

/* Read the test ROM's signature and check that writes (8- and 32-bit) are dropped. */
void rom_test(void);

int main(void);

#endif
