/*
 * CPU benchmark guest (bench/cpu.ts): a freestanding long-mode program doing a realistic
 * integer mix, run identically on tshv's emu backend and on QEMU TCG.
 *
 * Each round runs, on data derived from the round number:
 *   - a bytecode interpreter (switch dispatch, a register file in memory) running a loop
 *     program: indirect branches, loads and stores, compares;
 *   - quicksort of 2048 pseudo-random 64-bit keys (recursive calls, data-dependent branches);
 *   - an open-addressing hash table (FNV-1a of short strings, insert then look up);
 *   - CRC-32 (table-driven) over a 16 KiB buffer;
 *   - memcpy with REP MOVSQ, memset with REP STOSB, strlen with REPNE SCASB, plus a byte-loop
 *     memcmp.
 * Every kernel folds its result into a 64-bit checksum, printed to COM1 as
 * "checksum: <16 hex digits>" at the end; then the guest writes 0x31 to the exit port 0xF4
 * (tshv's test device; QEMU's isa-debug-exit). The checksum is the same on every correct x86.
 *
 * ROUNDS is set by the build (-DROUNDS=...); -DTRIVIAL gives the guest that exits at once (QEMU's
 * start-up reference).
 */
#include "common/platform.h"

#ifndef ROUNDS
#define ROUNDS 1500
#endif

typedef unsigned long long u64t;
typedef unsigned int u32t;
typedef unsigned char u8t;

static u64t rng_state;
static u64t rnd(void) {
  u64t x = rng_state;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return rng_state = x;
}

/* ---------------------------------------------------------------- interpreter */
enum { OP_LI, OP_ADD, OP_SUB, OP_MUL, OP_XOR, OP_SHR, OP_LD, OP_ST, OP_JNZ, OP_DEC, OP_HALT };
struct insn { u8t op, a, b, c; u32t imm; };

static u64t vm_mem[256];

static __attribute__((noinline)) u64t interp(const struct insn *prog, u64t seed) {
  u64t r[8] = { seed, 0, 0, 0, 0, 0, 0, 0 };
  const struct insn *pc = prog;
  for (;;) {
    const struct insn *i = pc++;
    switch (i->op) {
      case OP_LI: r[i->a] = i->imm; break;
      case OP_ADD: r[i->a] = r[i->b] + r[i->c]; break;
      case OP_SUB: r[i->a] = r[i->b] - r[i->c]; break;
      case OP_MUL: r[i->a] = r[i->b] * r[i->c]; break;
      case OP_XOR: r[i->a] = r[i->b] ^ r[i->c]; break;
      case OP_SHR: r[i->a] = r[i->b] >> (i->imm & 63); break;
      case OP_LD: r[i->a] = vm_mem[(r[i->b] + i->imm) & 255]; break;
      case OP_ST: vm_mem[(r[i->b] + i->imm) & 255] = r[i->a]; break;
      case OP_JNZ: if (r[i->a] != 0) pc = prog + i->imm; break;
      case OP_DEC: r[i->a]--; break;
      case OP_HALT: return r[0] ^ r[1] ^ r[2];
      default: return 0;
    }
  }
}

static const struct insn program[] = {
  { OP_LI, 3, 0, 0, 3000 },        /* r3 = loop count */
  { OP_LI, 4, 0, 0, 0x9e3779b9 },  /* r4 = multiplier */
  { OP_LI, 1, 0, 0, 1 },
  /* loop: */
  { OP_MUL, 0, 0, 4, 0 },          /* r0 *= r4 */
  { OP_SHR, 2, 0, 0, 29 },         /* r2 = r0 >> 29 */
  { OP_XOR, 0, 0, 2, 0 },          /* r0 ^= r2 */
  { OP_ST, 0, 3, 0, 7 },           /* mem[r3 + 7] = r0 */
  { OP_LD, 5, 3, 0, 11 },          /* r5 = mem[r3 + 11] */
  { OP_ADD, 1, 1, 5, 0 },          /* r1 += r5 */
  { OP_SUB, 1, 1, 3, 0 },          /* r1 -= r3 */
  { OP_DEC, 3, 0, 0, 0 },
  { OP_JNZ, 3, 0, 0, 3 },
  { OP_HALT, 0, 0, 0, 0 },
};

/* ---------------------------------------------------------------- quicksort */
#define NKEYS 2048
static u64t keys[NKEYS];

static void quicksort(u64t *a, long lo, long hi) {
  while (lo < hi) {
    u64t p = a[(lo + hi) / 2];
    long i = lo, j = hi;
    while (i <= j) {
      while (a[i] < p) i++;
      while (a[j] > p) j--;
      if (i <= j) { u64t t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
    }
    if (j - lo < hi - i) { quicksort(a, lo, j); lo = i; }
    else { quicksort(a, i, hi); hi = j; }
  }
}

/* ---------------------------------------------------------------- hash table */
#define HSIZE 1024
static u64t hkeys[HSIZE];
static u32t hvals[HSIZE];

static u64t fnv(const char *s) {
  u64t h = 0xcbf29ce484222325ULL;
  while (*s) { h ^= (u8t)*s++; h *= 0x100000001b3ULL; }
  return h;
}

static void make_name(char *buf, u32t n) {
  static const char alpha[] = "abcdefghijklmnopqrstuvwxyz012345";
  int k = 0;
  buf[k++] = 'k';
  do { buf[k++] = alpha[n & 31]; n >>= 5; } while (n);
  buf[k] = 0;
}

static u64t hash_round(u32t base) {
  char name[16];
  for (int i = 0; i < HSIZE; i++) hkeys[i] = 0;
  for (u32t n = 0; n < 600; n++) {
    make_name(name, base + n * 7);
    u64t h = fnv(name) | 1;
    u32t s = (u32t)h & (HSIZE - 1);
    while (hkeys[s] != 0 && hkeys[s] != h) s = (s + 1) & (HSIZE - 1);
    hkeys[s] = h; hvals[s] = n;
  }
  u64t sum = 0;
  for (u32t n = 0; n < 900; n++) {
    make_name(name, base + n * 5);
    u64t h = fnv(name) | 1;
    u32t s = (u32t)h & (HSIZE - 1);
    while (hkeys[s] != 0) {
      if (hkeys[s] == h) { sum += hvals[s] + 1; break; }
      s = (s + 1) & (HSIZE - 1);
    }
  }
  return sum;
}

/* ---------------------------------------------------------------- CRC-32 and string ops */
static u32t crc_table[256];
#define BUFSZ 16384
static u8t buf_a[BUFSZ], buf_b[BUFSZ];
static char text[512];

static void crc_init(void) {
  for (u32t i = 0; i < 256; i++) {
    u32t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

static u32t crc32(const u8t *p, u64t n) {
  u32t c = 0xffffffffu;
  while (n--) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

static void copy_movsq(void *d, const void *s, u64t qwords) {
  __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(qwords) : : "memory");
}

static void fill_stosb(void *d, u8t v, u64t n) {
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(v) : "memory");
}

static u64t strlen_scasb(const char *s) {
  u64t n = ~0ULL;
  const char *p = s;
  __asm__ volatile("repne scasb" : "+D"(p), "+c"(n) : "a"(0) : "memory");
  return ~n - 1;
}

static int bytes_equal(const u8t *a, const u8t *b, u64t n) {
  for (u64t i = 0; i < n; i++) if (a[i] != b[i]) return 0;
  return 1;
}

int main(void) {
  uart_init();
#ifdef TRIVIAL
  printf("checksum: %016llx\n", 0ULL);  /* start-up/shutdown reference: exits at once */
  test_exit(0x31);
#endif
  crc_init();
  u64t sum = 0;
  for (u32t round = 0; round < ROUNDS; round++) {
    rng_state = 0x2545f4914f6cdd1dULL + round;
    sum = sum * 31 + interp(program, round + 1);

    for (int i = 0; i < NKEYS; i++) keys[i] = rnd();
    quicksort(keys, 0, NKEYS - 1);
    for (int i = 1; i < NKEYS; i++) if (keys[i - 1] > keys[i]) sum ^= 0xbad;
    sum = sum * 31 + keys[NKEYS / 3];

    sum = sum * 31 + hash_round(round * 1000);

    for (int i = 0; i < BUFSZ; i += 8) *(u64t *)(buf_a + i) = rnd();
    copy_movsq(buf_b, buf_a, BUFSZ / 8);
    sum = sum * 31 + crc32(buf_b, BUFSZ);
    sum = sum * 31 + (u64t)bytes_equal(buf_a, buf_b, BUFSZ);
    fill_stosb(text, 'a' + (round % 26), sizeof text - 1);
    text[100 + round % 300] = 0;
    sum = sum * 31 + strlen_scasb(text);
  }
  printf("checksum: %016llx\n", sum);
  test_exit(0x31);
  return 0;
}
