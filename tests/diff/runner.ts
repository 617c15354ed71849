/**
 * Differential runner: the same single instructions on the emu backend and on QEMU TCG (the
 * oracle), compared architecturally.
 *
 * Method (why not a literal instruction-by-instruction single step on both): emu has no
 * single-step interface (no TF, no debug API; blocks run whole), so every test *case* is one
 * instruction. All cases live in one flat image, each in its own 64-byte slot padded with HLT
 * (0xF4), so whatever the instruction does to RIP (fall through, branch taken or not, CALL,
 * RET to a slot address) it lands on a HLT. Per case both processors get the same 16 general
 * registers, RFLAGS and RIP = the slot, and the same 1 KiB data window (DATA_GPA) contents;
 * then:
 *   - QEMU (gdbstub): `G` registers, `M` window, `s` single step (repeated while RIP stays on
 *     the instruction: a REP string instruction steps one iteration at a time), `g`, `m`.
 *   - emu (Backend API): setState, write the window, run() until the HLT stops it (`halted`,
 *     RIP past the HLT), getState, read the window.
 * Compared: all 16 GPRs (except those the SDM leaves undefined for the case), RIP (emu's
 * minus the HLT's byte), RFLAGS bits 0-11 minus the flags the SDM leaves undefined for that
 * instruction, and the data window byte for byte. Differences only in undefined flags are
 * counted separately and reported as information, never as failures.
 *
 * Both machines are in the long64 state of src/loader/flat.ts (qemu.ts explains how QEMU gets
 * there), with the image at CODE_GPA.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gpa, MemoryBlock } from '../../src/guestmem/guestmem.js';
import type { Partition, VirtualProcessor } from '../../src/hv/backends/backend.js';
import type { VpState } from '../../src/hv/backends/state.js';
import { createEmuBackend, type EmuPartition } from '../../src/hv/backends/emu/index.js';
import { TEST_JIT_THRESHOLD } from '../../src/hv/backends/emu/testing.js';
import { loadFlatImage } from '../../src/loader/flat.js';
import { bigintToLe, leToBigint, type GdbClient } from './gdb-remote.js';
import { assembleFlat, startQemu, type QemuRun } from './qemu.js';

export const CODE_GPA = 0x100000;
export const DATA_GPA = 0x200000;
export const DATA_SIZE = 1024;
export const SLOT = 64;
/** Exception handlers: vector v's IDT gate points at the HLT at HANDLERS_GPA + v. */
export const HANDLERS_GPA = CODE_GPA;
export const IDT_GPA = CODE_GPA + 0x1000;
export const IDT_VECTORS = 64;
export const IDTR = { base: IDT_GPA, limit: IDT_VECTORS * 16 - 1 };
/** Cases start here. */
export const CASES_GPA = CODE_GPA + 0x2000;

export const GPRS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
export type Gpr = (typeof GPRS)[number];

const CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, DF = 0x400, OF = 0x800;
const ARITH = CF | PF | AF | ZF | SF | OF;
/** RFLAGS bits compared: CF..OF (bits 0-11, including TF, IF, DF and the fixed bit 1). */
const FLAGS_COMPARED = 0xfff;

export interface DiffCase {
  asm: string;
  regs: Record<Gpr, bigint>;
  rflags: bigint;
  /** Flags the SDM leaves undefined after this instruction with these operands. */
  undefFlags: number;
  /** Registers whose result is undefined (e.g. BSF's destination for a zero source). */
  undefRegs: Gpr[];
  /** Register to load with the address of a HLT in the slot (indirect branch targets). */
  targetReg?: Gpr;
  /** FS and GS bases (default 0). */
  fsBase?: bigint;
  gsBase?: bigint;
  /** Window bytes to set after the random fill (e.g. a RET's target). */
  patch?: { off: number; bytes: Uint8Array; /** The first 8 bytes become the address of a HLT in the slot. */ target?: boolean };
  seed: number;
}

// ---------------------------------------------------------------------------------------------
// Deterministic generation

class Rng {
  constructor(private s: number) { if (this.s === 0) this.s = 0x9e3779b9; }
  u32(): number { let x = this.s; x ^= x << 13; x ^= x >>> 17; x ^= x << 5; this.s = x >>> 0; return this.s; }
  int(n: number): number { return this.u32() % n; }
  pick<T>(a: readonly T[]): T { return a[this.int(a.length)]!; }
  chance(p: number): boolean { return this.u32() / 2 ** 32 < p; }
  u64(): bigint { return (BigInt(this.u32()) << 32n) | BigInt(this.u32()); }
  /** A value biased to edge cases of every width. */
  val(): bigint {
    const k = this.int(10);
    const edges = [0n, 1n, 2n, 0x7fn, 0x80n, 0xffn, 0x7fffn, 0x8000n, 0xffffn, 0x7fffffffn, 0x80000000n, 0xffffffffn,
      0x7fffffffffffffffn, 0x8000000000000000n, 0xffffffffffffffffn, 0xfffffffffffffffen];
    if (k < 3) return edges[this.int(edges.length)]!;
    if (k === 3) return BigInt(this.int(256));
    if (k === 4) return this.u64() | 0xffffffffffffff00n;
    return this.u64();
  }
}

const NAMES: Record<string, readonly [string, string, string, string]> = {
  rax: ['al', 'ax', 'eax', 'rax'], rbx: ['bl', 'bx', 'ebx', 'rbx'], rcx: ['cl', 'cx', 'ecx', 'rcx'], rdx: ['dl', 'dx', 'edx', 'rdx'],
  rsi: ['sil', 'si', 'esi', 'rsi'], rdi: ['dil', 'di', 'edi', 'rdi'],
  r8: ['r8b', 'r8w', 'r8d', 'r8'], r9: ['r9b', 'r9w', 'r9d', 'r9'], r10: ['r10b', 'r10w', 'r10d', 'r10'],
  r11: ['r11b', 'r11w', 'r11d', 'r11'], r14: ['r14b', 'r14w', 'r14d', 'r14'], r15: ['r15b', 'r15w', 'r15d', 'r15'],
};
/** Registers that hold random values (the others point into the data window). */
const VALUE_REGS: readonly Gpr[] = ['rax', 'rbx', 'rcx', 'rdx', 'r8', 'r9', 'r10', 'r11', 'r14', 'r15'];
const PTR = ['byte', 'word', 'dword', 'qword'] as const;
const CC = ['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g'] as const;
const M64 = (1n << 64n) - 1n;
const mask = (sz: number): bigint => (1n << BigInt(8 << sz)) - 1n;

function rname(r: string, sz: number): string { return NAMES[r]![sz]!; }

interface Ctx { rng: Rng; regs: Record<Gpr, bigint>; rflags: bigint }

function freshCtx(rng: Rng): Ctx {
  const regs = {} as Record<Gpr, bigint>;
  for (const g of GPRS) regs[g] = rng.val();
  // Pointers into the data window (DATA_GPA .. +1 KiB).
  regs.rbp = BigInt(DATA_GPA + 0x180 + rng.int(0x100));
  regs.r12 = BigInt(DATA_GPA + 0x100 + rng.int(0x40));
  regs.r13 = BigInt(rng.int(32));
  regs.rsp = BigInt(DATA_GPA + 0x200 + 8 * rng.int(32) + (rng.chance(0.1) ? rng.int(8) : 0));
  regs.rsi = BigInt(DATA_GPA + 0x100 + rng.int(0x100));
  regs.rdi = BigInt(DATA_GPA + 0x100 + rng.int(0x100));
  const rflags = 0x2n | BigInt(rng.u32() & (ARITH | DF));
  return { rng, regs, rflags };
}

/** A memory operand of the given size inside the window (several addressing forms). */
function memOp(c: Ctx, sz: number): string {
  const d = c.rng.int(96) - 48;
  const sd = d < 0 ? `- ${-d}` : `+ ${d}`;
  switch (c.rng.int(5)) {
    case 0: return `${PTR[sz]} ptr [rbp ${sd}]`;
    case 1: return `${PTR[sz]} ptr [r12 + r13*${c.rng.pick([1, 2, 4, 8])} ${sd}]`;
    case 2: return `${PTR[sz]} ptr [rsp + ${c.rng.int(64)}]`;
    case 3: return `${PTR[sz]} ptr [r13*8 + 0x${(DATA_GPA + 0x100).toString(16)}]`;
    default: return `${PTR[sz]} ptr [rbp]`;
  }
}

function imm(c: Ctx, sz: number): string {
  const v = c.rng.val();
  if (sz === 0) return String(Number(BigInt.asIntN(8, v)));
  if (sz === 1) return String(Number(BigInt.asIntN(16, v)));
  return String(Number(BigInt.asIntN(c.rng.chance(0.5) ? 8 : 32, v)));
}

function shiftCount(c: Ctx): number {
  return c.rng.pick([0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, c.rng.int(256)]);
}

type Gen = (c: Ctx, sz: number) => { asm: string; undef?: number; undefRegs?: Gpr[]; patch?: DiffCase['patch']; equal?: boolean; targetReg?: Gpr; seg?: boolean } | null;

const vreg = (c: Ctx): Gpr => c.rng.pick(VALUE_REGS);

const ALU = ['add', 'adc', 'sub', 'sbb', 'cmp', 'and', 'or', 'xor', 'test'] as const;
const LOGIC = new Set(['and', 'or', 'xor', 'test']);

/** Flags left undefined by a shift/rotate of `sz` by `count` (SDM: SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR). */
function shiftUndef(op: string, sz: number, count: number): number {
  const m = count & (sz === 3 ? 63 : 31);
  if (m === 0) return 0;
  if (op[0] === 'r') return m === 1 ? 0 : OF;
  let u = AF;
  if (m !== 1) u |= OF;
  if (sz < 2 && m >= 8 << sz && (op === 'shl' || op === 'shr')) u |= CF;
  return u;
}

const GENS: Record<string, Gen> = {
  alu_rr: (c, sz) => { const op = c.rng.pick(ALU); return { asm: `${op} ${rname(vreg(c), sz)}, ${rname(vreg(c), sz)}`, undef: LOGIC.has(op) ? AF : 0 }; },
  alu_ri: (c, sz) => { const op = c.rng.pick(ALU); return { asm: `${op} ${rname(vreg(c), sz)}, ${imm(c, sz)}`, undef: LOGIC.has(op) ? AF : 0 }; },
  alu_mr: (c, sz) => { const op = c.rng.pick(ALU); return { asm: `${c.rng.chance(0.2) && op !== 'cmp' && op !== 'test' ? 'lock ' : ''}${op} ${memOp(c, sz)}, ${rname(vreg(c), sz)}`, undef: LOGIC.has(op) ? AF : 0 }; },
  alu_rm: (c, sz) => { const op = c.rng.pick(ALU.filter((o) => o !== 'test')); return { asm: `${op} ${rname(vreg(c), sz)}, ${memOp(c, sz)}`, undef: LOGIC.has(op) ? AF : 0 }; },
  alu_mi: (c, sz) => { const op = c.rng.pick(ALU); return { asm: `${op} ${memOp(c, sz)}, ${imm(c, sz)}`, undef: LOGIC.has(op) ? AF : 0 }; },
  unary: (c, sz) => { const op = c.rng.pick(['inc', 'dec', 'neg', 'not']); return { asm: `${op} ${c.rng.chance(0.5) ? rname(vreg(c), sz) : memOp(c, sz)}` }; },
  shift_cl: (c, sz) => {
    const op = c.rng.pick(['shl', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']);
    const n = shiftCount(c);
    c.regs.rcx = (c.regs.rcx & ~0xffn) | BigInt(n);
    const dst = c.rng.chance(0.7) ? rname(c.rng.pick(VALUE_REGS.filter((r) => r !== 'rcx')), sz) : memOp(c, sz);
    return { asm: `${op} ${dst}, cl`, undef: shiftUndef(op, sz, n) };
  },
  shift_1: (c, sz) => { const op = c.rng.pick(['shl', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']); return { asm: `${op} ${rname(vreg(c), sz)}, 1`, undef: shiftUndef(op, sz, 1) }; },
  shift_i: (c, sz) => {
    const op = c.rng.pick(['shl', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']);
    const n = shiftCount(c);
    return { asm: `${op} ${c.rng.chance(0.7) ? rname(vreg(c), sz) : memOp(c, sz)}, ${n}`, undef: shiftUndef(op, sz, n) };
  },
  shld: (c, sz) => {
    if (sz === 0) return null;
    const op = c.rng.pick(['shld', 'shrd']);
    const bits = 8 << sz;
    let n = shiftCount(c) & (sz === 3 ? 63 : 31);
    if (n > bits) n = bits;            // larger counts give undefined results (16-bit)
    const byCl = c.rng.chance(0.5);
    if (byCl) c.regs.rcx = (c.regs.rcx & ~0xffn) | BigInt(n);
    const src = rname(c.rng.pick(VALUE_REGS.filter((r) => r !== 'rcx')), sz);
    const dst = c.rng.chance(0.6) ? rname(c.rng.pick(VALUE_REGS.filter((r) => r !== 'rcx')), sz) : memOp(c, sz);
    let undef = n === 0 ? 0 : AF | (n === 1 ? 0 : OF);
    if (n === bits && sz === 1) undef |= ARITH;
    return { asm: `${op} ${dst}, ${src}, ${byCl ? 'cl' : String(n)}`, undef };
  },
  mul: (c, sz) => {
    const op = c.rng.pick(['mul', 'imul']);
    return { asm: `${op} ${c.rng.chance(0.6) ? rname(vreg(c), sz) : memOp(c, sz)}`, undef: SF | ZF | AF | PF };
  },
  imul2: (c, sz) => {
    if (sz === 0) return null;
    const form = c.rng.int(3);
    const d = rname(vreg(c), sz);
    if (form === 0) return { asm: `imul ${d}, ${rname(vreg(c), sz)}`, undef: SF | ZF | AF | PF };
    if (form === 1) return { asm: `imul ${d}, ${memOp(c, sz)}`, undef: SF | ZF | AF | PF };
    return { asm: `imul ${d}, ${c.rng.chance(0.5) ? rname(vreg(c), sz) : memOp(c, sz)}, ${imm(c, sz)}`, undef: SF | ZF | AF | PF };
  },
  div: (c, sz) => {
    const signed = c.rng.chance(0.5);
    const bits = BigInt(8 << sz);
    const m = mask(sz);
    const src = c.rng.pick(VALUE_REGS.filter((r) => r !== 'rax' && r !== 'rdx'));
    let d = c.rng.val() & m;
    if (d === 0n) d = 3n;
    if (signed && d === m) d = m - 2n;   // not -1
    c.regs[src] = (c.regs[src] & ~m) | d;
    const a = c.regs.rax;
    if (!signed) {
      const hi = (c.rng.u64() & m) % d;
      if (sz === 0) c.regs.rax = (a & ~0xff00n) | (hi << 8n);
      else c.regs.rdx = (c.regs.rdx & ~m) | hi;
    } else {
      let lo = a & m;
      if (lo === 1n << (bits - 1n)) lo ^= 1n;
      const neg = (lo >> (bits - 1n)) === 1n;
      if (sz === 0) c.regs.rax = (a & ~0xffffn) | lo | (neg ? 0xff00n : 0n);
      else { c.regs.rax = (a & ~m) | lo; c.regs.rdx = (c.regs.rdx & ~m) | (neg ? m : 0n); }
    }
    return { asm: `${signed ? 'idiv' : 'div'} ${rname(src, sz)}`, undef: ARITH };
  },
  bt: (c, sz) => {
    if (sz === 0) return null;
    const op = c.rng.pick(['bt', 'bts', 'btr', 'btc']);
    const form = c.rng.int(4);
    const undef = OF | SF | AF | PF;
    const lockp = op !== 'bt' && c.rng.chance(0.3) ? 'lock ' : '';
    if (form === 0) return { asm: `${op} ${rname(vreg(c), sz)}, ${rname(vreg(c), sz)}`, undef };
    if (form === 1) return { asm: `${op} ${rname(vreg(c), sz)}, ${c.rng.int(256)}`, undef };
    if (form === 2) return { asm: `${lockp}${op} ${memOp(c, sz)}, ${c.rng.int(256)}`, undef };
    // Register bit offset into memory: keep it inside the window (-256..+255 bits).
    const r = c.rng.pick(VALUE_REGS);
    c.regs[r] = BigInt.asUintN(64, BigInt(c.rng.int(512) - 256));
    return { asm: `${lockp}${op} ${memOp(c, sz)}, ${rname(r, sz)}`, undef };
  },
  bsf: (c, sz) => {
    if (sz === 0) return null;
    const op = c.rng.pick(['bsf', 'bsr']);
    const d = vreg(c);
    const s = vreg(c);
    if (c.rng.chance(0.15)) c.regs[s] = c.regs[s] & ~mask(sz);
    const zero = (c.regs[s] & mask(sz)) === 0n;
    return { asm: `${op} ${rname(d, sz)}, ${rname(s, sz)}`, undef: CF | OF | SF | AF | PF, undefRegs: zero ? [d] : [] };
  },
  popcnt: (c, sz) => (sz === 0 ? null : { asm: `popcnt ${rname(vreg(c), sz)}, ${c.rng.chance(0.5) ? rname(vreg(c), sz) : memOp(c, sz)}` }),
  cmov: (c, sz) => (sz === 0 ? null : { asm: `cmov${c.rng.pick(CC)} ${rname(vreg(c), sz)}, ${c.rng.chance(0.7) ? rname(vreg(c), sz) : memOp(c, sz)}` }),
  setcc: (c) => ({ asm: `set${c.rng.pick(CC)} ${c.rng.chance(0.7) ? rname(vreg(c), 0) : memOp(c, 0)}` }),
  jcc: (c) => ({ asm: `j${c.rng.pick(CC)} 1f\n.byte 0xf4, 0xf4\n1:` }),
  loop: (c) => {
    if (c.rng.chance(0.3)) c.regs.rcx = BigInt(c.rng.int(3));
    return { asm: `${c.rng.pick(['loop', 'loope', 'loopne', 'jrcxz', 'jecxz'])} 1f\n.byte 0xf4, 0xf4\n1:` };
  },
  call: () => ({ asm: 'call 1f\n.byte 0xf4, 0xf4\n1:' }),
  ret: (c) => {
    const off = Number(c.regs.rsp) - DATA_GPA;
    return { asm: c.rng.chance(0.5) ? 'ret' : 'ret 16', patch: { off, bytes: new Uint8Array(8), target: true } };
  },
  xchg: (c, sz) => ({ asm: `xchg ${c.rng.chance(0.5) ? rname(vreg(c), sz) : memOp(c, sz)}, ${rname(vreg(c), sz)}` }),
  cmpxchg: (c, sz) => {
    const d = vreg(c), s = vreg(c);
    if (c.rng.chance(0.5)) c.regs.rax = c.regs[d];
    return { asm: c.rng.chance(0.5) ? `cmpxchg ${rname(d, sz)}, ${rname(s, sz)}` : `${c.rng.chance(0.5) ? 'lock ' : ''}cmpxchg ${memOp(c, sz)}, ${rname(s, sz)}` };
  },
  xadd: (c, sz) => ({ asm: c.rng.chance(0.5) ? `xadd ${rname(vreg(c), sz)}, ${rname(vreg(c), sz)}` : `lock xadd ${memOp(c, sz)}, ${rname(vreg(c), sz)}` }),
  bswap: (c, sz) => (sz < 2 ? null : { asm: `bswap ${rname(vreg(c), sz)}` }),
  movx: (c, sz) => {
    if (sz === 0) return null;
    const op = c.rng.pick(['movzx', 'movsx']);
    const ssz = sz === 1 ? 0 : c.rng.int(2);
    const src = c.rng.chance(0.6) ? rname(vreg(c), ssz) : memOp(c, ssz);
    if (sz === 3 && c.rng.chance(0.3)) return { asm: `movsxd ${rname(vreg(c), 3)}, ${c.rng.chance(0.5) ? rname(vreg(c), 2) : memOp(c, 2)}` };
    return { asm: `${op} ${rname(vreg(c), sz)}, ${src}` };
  },
  lea: (c, sz) => {
    if (sz === 0) return null;
    const base = c.rng.pick(['rax', 'rbx', 'rcx', 'rbp', 'rsp', 'r12', 'r13', 'r8']);
    const idx = c.rng.pick(['rax', 'rdx', 'rsi', 'r9', 'r13', 'r15']);
    const d = c.rng.pick([0, 1, -1, 0x7f, -0x80, 0x12345, -0x7fffffff]);
    const a32 = c.rng.chance(0.3);
    const r32 = (r: string): string => (/^r\d/.test(r) ? `${r}d` : `e${r.slice(1)}`);
    const bn = a32 ? r32(base) : base;
    const inr = a32 ? r32(idx) : idx;
    const form = c.rng.int(3);
    const addr = form === 0 ? `[${bn} + ${d}]` : form === 1 ? `[${bn} + ${inr}*${c.rng.pick([1, 2, 4, 8])} + ${d}]` : `[${inr}*${c.rng.pick([2, 4, 8])} + ${d}]`;
    return { asm: `lea ${rname(vreg(c), sz)}, ${addr}` };
  },
  push: (c, sz) => {
    if (sz !== 1 && sz !== 3) return null;
    const k = c.rng.int(3);
    if (k === 0) return { asm: `push ${rname(vreg(c), sz)}` };
    if (k === 1) return { asm: `push ${memOp(c, sz)}` };
    return { asm: sz === 3 ? `push ${imm(c, 2)}` : `pushw ${imm(c, 1)}` };
  },
  pop: (c, sz) => {
    if (sz !== 1 && sz !== 3) return null;
    return { asm: c.rng.chance(0.7) ? `pop ${rname(vreg(c), sz)}` : `pop ${memOp(c, sz)}` };
  },
  string: (c, sz) => {
    const op = c.rng.pick(['movs', 'stos', 'lods', 'cmps', 'scas']);
    const suf = 'bwdq'[sz]!;
    const rep = c.rng.pick(op === 'cmps' || op === 'scas' ? ['', 'repe ', 'repne '] : ['', 'rep ']);
    c.regs.rcx = BigInt(c.rng.int(9));
    if (c.rng.chance(0.5)) {   // make repe/repne stop early sometimes: a copy of the source
      c.regs.rax = c.regs.rax & ~mask(sz);
    }
    return { asm: `${rep}${op}${suf}`, undef: 0 };
  },
  stack: (c) => {
    const k = c.rng.int(5);
    if (k === 0) return { asm: 'leave' };
    if (k === 1) return { asm: `enter ${8 * c.rng.int(8)}, ${c.rng.int(4)}` };
    if (k === 2) return { asm: 'pushfq' };
    if (k === 3) {   // POPFQ of random flags (arithmetic flags and DF only: TF/IF would change the run)
      const off = Number(c.regs.rsp) - DATA_GPA;
      return { asm: 'popfq', patch: { off, bytes: bigintToLe(0x2n | BigInt(c.rng.u32() & (ARITH | DF)), 8) } };
    }
    c.regs.rbx = BigInt(DATA_GPA + 0x100 + c.rng.int(0x100));
    return { asm: 'xlatb' };
  },
  cmpxchg8b: (c) => {
    c.regs.r13 = BigInt(2 * c.rng.int(16));
    const wide = c.rng.chance(0.5);
    if (c.rng.chance(0.5)) {   // make the comparison succeed: edx:eax (rdx:rax) = the memory operand
      return { asm: `${wide ? 'cmpxchg16b' : 'cmpxchg8b'} [r13*8 + 0x${(DATA_GPA + 0x100).toString(16)}]`, equal: true };
    }
    return { asm: `${c.rng.chance(0.5) ? 'lock ' : ''}${wide ? 'cmpxchg16b' : 'cmpxchg8b'} [r13*8 + 0x${(DATA_GPA + 0x100).toString(16)}]` };
  },
  string32: (c, sz) => {
    const op = c.rng.pick(['movs', 'stos', 'lods', 'cmps', 'scas']);
    c.regs.rcx = (c.rng.u64() & ~0xffffffffn) | BigInt(c.rng.int(6));
    const rep = c.rng.pick(op === 'cmps' || op === 'scas' ? ['repe ', 'repne '] : ['rep ']);
    return { asm: `addr32 ${rep}${op}${'bwdq'[sz]!}` };
  },
  indirect: (c) => {
    const r = c.rng.pick(VALUE_REGS);
    const k = c.rng.int(3);
    if (k === 0) return { asm: `jmp ${r}`, targetReg: r };
    if (k === 1) return { asm: `call ${r}`, targetReg: r };
    // Through memory: the runner stores the slot address at [rsp].
    return { asm: `${c.rng.pick(['jmp', 'call'])} qword ptr [rsp]`, patch: { off: Number(c.regs.rsp) - DATA_GPA, bytes: new Uint8Array(8), target: true } };
  },
  segment: (c, sz) => {
    // FS/GS-relative accesses: the base is chosen so that base + offset lies in the window.
    const seg = c.rng.pick(['fs', 'gs']);
    const op = c.rng.pick(['mov', 'add', 'xor', 'cmp']);
    const regs = rname(vreg(c), sz);
    const d = c.rng.int(64);
    const form = c.rng.int(2);
    const mem = `${PTR[sz]} ptr ${seg}:[${form === 0 ? `rbp + ${d}` : `${d}`}]`;
    return { asm: c.rng.chance(0.5) ? `${op} ${mem}, ${regs}` : `${op} ${regs}, ${mem}`, undef: op === 'xor' ? AF : 0, seg: true };
  },
  fault_de: (c, sz) => {
    const src = c.rng.pick(VALUE_REGS.filter((r) => r !== 'rax' && r !== 'rdx'));
    if (c.rng.chance(0.5)) { c.regs[src] &= ~mask(sz); return { asm: `${c.rng.pick(['div', 'idiv'])} ${rname(src, sz)}` }; }
    // Quotient overflow: high half of the dividend >= divisor (div), or MIN / -1 (idiv).
    if (c.rng.chance(0.5)) {
      c.regs[src] = (c.regs[src] & ~mask(sz)) | 1n;
      if (sz === 0) c.regs.rax |= 0x100n; else c.regs.rdx |= 1n;
      return { asm: `div ${rname(src, sz)}` };
    }
    c.regs[src] |= mask(sz);
    const min = 1n << BigInt((8 << sz) - 1);
    if (sz === 0) c.regs.rax = (c.regs.rax & ~0xffffn) | 0xff00n | min;
    else { c.regs.rax = (c.regs.rax & ~mask(sz)) | min; c.regs.rdx |= mask(sz); }
    return { asm: `idiv ${rname(src, sz)}` };
  },
  fault_misc: (c) => c.rng.pick([
    { asm: 'ud2' }, { asm: 'int3' }, { asm: 'int 0x21' }, { asm: '.byte 0xce' },  // INTO (invalid in 64-bit mode)
    { asm: '.byte 0xf0, 0x48, 0x01, 0xd8' },            // LOCK ADD RAX, RBX: #UD
    { asm: '.byte 0x0f, 0x0b' }, { asm: '.byte 0x62, 0x00' }, // BOUND (invalid in 64-bit mode)
    { asm: '.byte 0x06' }, { asm: '.byte 0x1f' }, { asm: '.byte 0x27' }, { asm: '.byte 0xd6' },
  ]),
  fault_mem: (c, sz) => {
    const r = c.rng.pick<Gpr>(['rbx', 'r8', 'r14']);
    const k = c.rng.int(4);
    if (k === 0) c.regs[r] = 0x0000800000000000n + (c.rng.u64() & 0xffffffffn);            // non-canonical: #GP(0)
    else if (k === 1) c.regs[r] = 0xffff7fff00000000n + (c.rng.u64() & 0xffffffffn);       // non-canonical
    else c.regs[r] = 0x100000000n + (c.rng.u64() & 0x7fffffffffn);                         // above the 4 GiB map: #PF
    // Read-modify-write forms (op 2 and 3 except PUSH) only with non-canonical addresses: on a
    // not-present page QEMU's TCG reports the #PF as a read (error code 0: it loads first),
    // where emu, like hardware doing the read with write intent, reports W (error code 2).
    const op = k < 2 ? c.rng.int(4) : c.rng.pick(sz === 3 ? [0, 1, 3] : [0, 1]);
    const m = `${PTR[sz]} ptr [${r}${c.rng.chance(0.3) ? ` + ${c.rng.int(8)}` : ''}]`;
    if (op === 0) return { asm: `mov ${rname('rax', sz)}, ${m}` };
    if (op === 1) return { asm: `mov ${m}, ${rname('rcx', sz)}` };
    if (op === 2) return { asm: `add ${m}, ${rname('rdx', sz)}` };
    return { asm: sz === 3 ? `push ${m}` : `inc ${m}` };
  },
  fault_stack: (c) => {
    // Misaligned CMPXCHG16B: #GP(0). (Non-canonical SS-relative addresses are left out: the SDM
    // says #SS(0), QEMU's TCG raises #GP(0), and so does emu today; the oracle cannot judge.)
    c.regs.r13 = BigInt(2 * c.rng.int(16) + 1);
    return { asm: `${c.rng.chance(0.3) ? 'lock ' : ''}cmpxchg16b [r13*8 + 0x${(DATA_GPA + 0x100).toString(16)}]` };
  },
  farret: (c) => {
    // IRETQ (RIP, CS, RFLAGS, RSP, SS) and RETFQ (RIP, CS) to the same privilege level.
    const off = Number(c.regs.rsp) - DATA_GPA;
    const newRsp = BigInt(DATA_GPA + 0x100 + 8 * c.rng.int(16));
    const fl = 0x2n | BigInt(c.rng.u32() & (ARITH | DF));
    const q = (v: bigint[]): Uint8Array => { const b = new Uint8Array(v.length * 8); v.forEach((x, i) => b.set(bigintToLe(x, 8), i * 8)); return b; };
    if (c.rng.chance(0.5)) return { asm: 'iretq', patch: { off, bytes: q([0n, 0x18n, fl, newRsp, 0x10n]), target: true } };
    return { asm: c.rng.chance(0.5) ? 'lretq' : 'lretq 8', patch: { off, bytes: q([0n, 0x18n]), target: true } };
  },
  segcheck: (c, sz) => {
    // LAR/LSL/VERR/VERW on the loader's GDT (limit 0x2F: 0x30 and above are outside it).
    const sel = BigInt(c.rng.pick([0, 3, 8, 0x10, 0x13, 0x18, 0x20, 0x28, 0x30, 0x38, c.rng.int(0x10000)]));
    c.regs.rbx = (c.regs.rbx & ~0xffffn) | sel;
    const k = c.rng.int(3);
    const dsz = sz < 1 ? 1 : sz;
    if (k === 0) return { asm: `lar ${rname('rax', dsz)}, bx` };
    if (k === 1) return { asm: `lsl ${rname('rax', dsz)}, bx` };
    return { asm: c.rng.chance(0.5) ? 'verr bx' : 'verw bx' };
  },
  encodings: (c) => {
    // Prefix and encoding corner cases the decoder must get right.
    const raw = c.rng.pick([
      '0x66, 0x48, 0x01, 0xd8',        // 66 + REX.W: REX.W wins (add rax, rbx)
      '0x40, 0x88, 0xe0',              // mov al, spl (any REX turns AH into SPL)
      '0x88, 0xe0',                    // mov al, ah
      '0x87, 0xc0',                    // xchg eax, eax: zero-extends RAX
      '0x90',                          // nop: does not
      '0x41, 0x90',                    // xchg r8d, eax
      '0x49, 0x90',                    // xchg r8, rax
      '0x66, 0x90',                    // xchg ax, ax (PAUSE, F3 90, is left out: QEMU's gdbstub never completes a single step of it)
      '0x0f, 0x1f, 0x44, 0x00, 0x00',  // multi-byte nop
      '0x63, 0xc3',                    // movsxd without REX.W: mov eax, ebx
      '0x2e, 0x3e, 0x26, 0x48, 0x8b, 0x45, 0x00', // ignored segment prefixes: mov rax, [rbp]
      '0x64, 0x67, 0x8b, 0x07',        // fs: addr32 mov eax, [edi]
      '0xf2, 0x48, 0x01, 0xd8',        // ignored REPNE on add
      '0x48, 0x0f, 0xc3, 0x45, 0x00',  // movnti [rbp], rax
      '0x0f, 0x0d, 0x4d, 0x00',        // prefetchw [rbp]
      '0x0f, 0x18, 0x45, 0x00',        // prefetchnta [rbp]
      '0x0f, 0xae, 0xf8',              // sfence
      '0x0f, 0xae, 0xe8',              // lfence
      '0x0f, 0xae, 0xf0',              // mfence
      '0x0f, 0xae, 0x7d, 0x00',        // clflush [rbp]
    ]);
    const wrap = c.rng.chance(0.3);
    if (wrap) {
      // 32-bit addressing wraps at 4 GiB: esi + ecx lands in the window.
      const ecx = BigInt(0x80000000 + c.rng.int(0x10000000));
      c.regs.rcx = (c.rng.u64() & ~0xffffffffn) | ecx;
      c.regs.rsi = (0x100000000n + BigInt(DATA_GPA + 0x100 + c.rng.int(0x100)) - ecx) & 0xffffffffn;
      return { asm: `${c.rng.pick(['mov eax', 'add eax', 'mov rax'])}, [esi + ecx]`.replace('mov rax, [esi + ecx]', 'mov rax, qword ptr [esi + ecx]') };
    }
    if (c.rng.chance(0.2)) {
      return { asm: c.rng.pick([`movabs al, byte ptr [0x${(DATA_GPA + 0x123).toString(16)}]`, `movabs eax, dword ptr [0x${(DATA_GPA + 0x140).toString(16)}]`,
        `movabs qword ptr [0x${(DATA_GPA + 0x1f8).toString(16)}], rax`, 'mov rax, qword ptr [rip - 16]', 'mov ecx, dword ptr [rip + 3]']) };
    }
    return { asm: `.byte ${raw}` };
  },
  rexorder: (c) => ({
    // A REX prefix not immediately before the opcode is ignored (SDM vol. 2, 2.2.1).
    asm: `.byte ${c.rng.pick(['0x48, 0x66, 0x01, 0xd8' /* add ax, bx */, '0x41, 0x66, 0x89, 0xc8' /* mov ax, cx */, '0x48, 0xf3, 0x0f, 0xb8, 0xc3' /* popcnt eax, ebx */])}`,
  }),
  system: (c) => {
    const k = c.rng.int(3);
    if (k === 0) return { asm: `${c.rng.pick(['sgdt', 'sidt'])} [rbp]` };
    // SMSW to a 32/64-bit register leaves the bits above 15 undefined (SDM): 16-bit forms only.
    if (k === 1) return { asm: `smsw ${c.rng.chance(0.5) ? 'ax' : 'word ptr [rbp]'}` };
    c.regs.rcx = BigInt(c.rng.pick([0xc0000080, 0x1b, 0x277, 0xc0000081, 0xc0000082, 0xc0000084, 0xc0000102]));
    return { asm: 'rdmsr' };
  },
  convert: (c) => ({ asm: c.rng.pick(['cbw', 'cwde', 'cdqe', 'cwd', 'cdq', 'cqo']) }),
  flagops: (c) => ({ asm: c.rng.pick(['lahf', 'sahf', 'cmc', 'clc', 'stc', 'cld', 'std']) }),
  movimm: (c, sz) => ({ asm: sz === 3 && c.rng.chance(0.5) ? `movabs ${rname(vreg(c), 3)}, 0x${c.rng.u64().toString(16)}` : `mov ${c.rng.chance(0.5) ? rname(vreg(c), sz) : memOp(c, sz)}, ${imm(c, sz)}` }),
  movrm: (c, sz) => ({ asm: c.rng.chance(0.5) ? `mov ${rname(vreg(c), sz)}, ${memOp(c, sz)}` : `mov ${memOp(c, sz)}, ${rname(vreg(c), sz)}` }),
  highbyte: (c) => {
    const op = c.rng.pick(['add', 'sub', 'xor', 'mov', 'cmp', 'adc']);
    const a = c.rng.pick(['ah', 'bh', 'ch', 'dh']), b = c.rng.pick(['al', 'bl', 'ah', 'dh', 'cl']);
    return { asm: `${op} ${a}, ${b}`, undef: op === 'xor' ? AF : 0 };
  },
};

/**
 * Generators left out unless asked for (`--gaps`), each with the reason; the suite stays a
 * regression test.
 * - rexorder: a REX prefix followed by a legacy prefix (`48 66 01 d8`). The SDM (vol. 2,
 *   2.2.1) says such a REX is ignored, and the host CPU agrees (add ax, bx); QEMU 7.2's TCG
 *   decoder applies it (add rax, rbx). emu follows the hardware, so QEMU is not the oracle
 *   here; the host-CPU differential test (src/hv/backends/emu/diff.test.ts) covers it.
 */
export const KNOWN_GAPS: readonly string[] = ['rexorder'];

/** `perForm` cases of every generator and operand size, from `seed`. */
export function generateCases(seed: number, perForm: number, opts: { includeGaps?: boolean } = {}): DiffCase[] {
  const rng = new Rng(seed);
  const out: DiffCase[] = [];
  for (let k = 0; k < perForm; k++) {
    for (const [name, gen] of Object.entries(GENS)) {
      if (opts.includeGaps !== true && KNOWN_GAPS.includes(name)) continue;
      for (let sz = 0; sz < 4; sz++) {
        const caseSeed = rng.u32();
        const c = freshCtx(new Rng(caseSeed));
        const g = gen(c, sz);
        if (g === null) continue;
        const dc: DiffCase = { asm: g.asm, regs: c.regs, rflags: c.rflags, undefFlags: g.undef ?? 0, undefRegs: g.undefRegs ?? [], seed: caseSeed };
        if (g.patch !== undefined) dc.patch = g.patch;
        if (g.targetReg !== undefined) dc.targetReg = g.targetReg;
        if (g.seg === true) {
          // rbp-relative: a small base; absolute: a base inside the window.
          dc.fsBase = g.asm.includes('rbp') ? BigInt(c.rng.int(0x80)) : BigInt(DATA_GPA + 0x100 + c.rng.int(0x100));
          dc.gsBase = dc.fsBase + BigInt(c.rng.int(0x40));
        }
        if (g.equal === true) {
          // CMPXCHG8B/16B that succeeds: write rdx:rax (edx:eax) into the operand.
          const off = 0x100 + Number(c.regs.r13) * 8;
          const b = new Uint8Array(16);
          b.set(bigintToLe(c.regs.rax, 8), 0);
          b.set(bigintToLe(c.regs.rdx, 8), 8);
          if (!g.asm.includes('16b')) { b.set(bigintToLe(c.regs.rax, 4), 0); b.set(bigintToLe(c.regs.rdx, 4), 4); }
          dc.patch = { off, bytes: b.subarray(0, g.asm.includes('16b') ? 16 : 8) };
        }
        out.push(dc);
      }
    }
  }
  return out;
}

/** Number of generator families (for reporting coverage). */
export const GENERATOR_NAMES = Object.keys(GENS);

// ---------------------------------------------------------------------------------------------
// Program image

export interface Program { image: Uint8Array; start: number[]; end: number[] }

export function buildProgram(cases: readonly DiffCase[]): Program {
  const lines = ['.intel_syntax noprefix', '.code64', '.text', `.fill ${IDT_VECTORS}, 1, 0xf4`, '.balign 4096, 0xf4'];
  for (let v = 0; v < IDT_VECTORS; v++) {
    // 64-bit interrupt gate (type 0xE, P, DPL 0), selector 0x18, IST 0.
    const off = HANDLERS_GPA + v;
    const lo = BigInt(off & 0xffff) | (0x18n << 16n) | (0x8e00n << 32n) | (BigInt(off >>> 16) << 48n);
    lines.push(`.quad 0x${lo.toString(16)}, 0`);
  }
  lines.push('.balign 4096, 0xf4');
  cases.forEach((c, k) => {
    lines.push(`.balign ${SLOT}, 0xf4`, `c${k}:`, c.asm, `e${k}:`, '.byte 0xf4');
  });
  lines.push(`.balign ${SLOT}, 0xf4`, '.fill 64, 1, 0xf4');
  const { bytes, symbols } = assembleFlat(lines.join('\n') + '\n', CODE_GPA);
  const start: number[] = [], end: number[] = [];
  cases.forEach((c, k) => {
    const s = symbols.get(`c${k}`), e = symbols.get(`e${k}`);
    if (s === undefined || e === undefined) throw new Error(`case ${k} (${c.asm}) has no symbols`);
    if (e - s > SLOT - 8) throw new Error(`case ${k} (${c.asm}) is too long`);
    start.push(s); end.push(e);
  });
  return { image: bytes, start, end };
}

/** The case's data window: random bytes from its seed, then its patch (a `target` patch starts with the address of a HLT in the slot). */
function windowFor(c: DiffCase, end: number): Uint8Array {
  const w = new Uint8Array(DATA_SIZE);
  const r = new Rng(c.seed ^ 0x5bd1e995);
  for (let i = 0; i < w.length; i += 4) new DataView(w.buffer).setUint32(i, r.u32(), true);
  if (c.patch !== undefined) {
    const b = c.patch.bytes.slice();
    if (c.patch.target === true) b.set(bigintToLe(BigInt(end + 8), 8), 0);
    w.set(b, c.patch.off);
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// The two machines

export interface Snapshot { regs: Record<Gpr, bigint>; rip: bigint; rflags: bigint; cr2: bigint; mem: Uint8Array; note?: string }

export class EmuMachine {
  private constructor(readonly partition: Partition, readonly vp: VirtualProcessor, readonly base: VpState) {}

  static async create(image: Uint8Array, memoryMiB = 16): Promise<EmuMachine> {
    const backend = createEmuBackend();
    const partition = await backend.createPartition({ vpCount: 1, cpuid: [...backend.supportedCpuid()], interceptMsrs: [], hypercallPort: 0x9e });
    // Compile after TEST_JIT_THRESHOLD runs, so that emuRuns stays small (see runDifferential).
    for (const v of (partition as EmuPartition).vps) v.cpu.jitThreshold = TEST_JIT_THRESHOLD;
    partition.mapMemory(gpa(0), new MemoryBlock(memoryMiB << 20, 'ram'), true);
    const vp = partition.vps[0]!;
    const st = loadFlatImage(partition.memory, image, { mode: 'long64', loadGpa: CODE_GPA, base: await vp.getState() });
    st.sregs.idt = { base: BigInt(IDTR.base), limit: IDTR.limit };
    await vp.setState(st);
    return new EmuMachine(partition, vp, st);
  }

  async runCase(regs: Record<Gpr, bigint>, rflags: bigint, rip: number, window: Uint8Array, seg: { fs: bigint; gs: bigint } = { fs: 0n, gs: 0n }): Promise<Snapshot> {
    const st = structuredClone(this.base);
    st.sregs.fs.base = seg.fs;
    st.sregs.cr2 = 0n;
    st.sregs.gs.base = seg.gs;
    for (const g of GPRS) st.regs[g] = regs[g];
    st.regs.rip = BigInt(rip);
    st.regs.rflags = rflags;
    this.partition.memory.write(DATA_GPA, window);
    await this.vp.setState(st);
    const r = await this.vp.run();
    const after = await this.vp.getState();
    const out = {} as Record<Gpr, bigint>;
    for (const g of GPRS) out[g] = after.regs[g];
    const snap: Snapshot = { regs: out, rip: after.regs.rip - 1n, rflags: after.regs.rflags, cr2: after.sregs.cr2, mem: this.partition.memory.read(DATA_GPA, DATA_SIZE) };
    if (r.kind !== 'halted') snap.note = `emu stopped with ${JSON.stringify(r)}`;
    return snap;
  }

  dispose(): void { this.partition.dispose(); }
}

export class QemuMachine {
  private constructor(readonly q: QemuRun, readonly gdb: GdbClient, readonly template: Uint8Array) {}

  static async create(image: Uint8Array, memoryMiB = 16): Promise<QemuMachine> {
    const q = await startQemu({ image, loadGpa: CODE_GPA, entryGpa: CODE_GPA, memoryMiB, gdb: true, idt: IDTR });
    try {
      const gdb = q.gdb!;
      await gdb.readRegisterLayout();
      await gdb.setBreakpoint(BigInt(CODE_GPA));
      await gdb.cont();
      await gdb.clearBreakpoint(BigInt(CODE_GPA));
      const rip = (await gdb.readRegisters()).get('rip');
      if (rip !== BigInt(CODE_GPA)) throw new Error(`qemu did not reach the image entry (rip ${String(rip)})`);
      return new QemuMachine(q, gdb, await gdb.readRegistersRaw());
    } catch (e) {
      q.dispose();
      throw e;
    }
  }

  async runCase(regs: Record<Gpr, bigint>, rflags: bigint, rip: number, window: Uint8Array, seg: { fs: bigint; gs: bigint } = { fs: 0n, gs: 0n }): Promise<Snapshot> {
    const g = this.gdb;
    const raw = this.template.slice();
    const put = (name: string, v: bigint): void => { const d = g.reg(name); raw.set(bigintToLe(v, d.bits / 8), d.offset); };
    for (const r of GPRS) put(r, regs[r]);
    put('rip', BigInt(rip));
    put('eflags', rflags);
    put('fs_base', seg.fs);
    put('cr2', 0n);
    put('gs_base', seg.gs);
    await g.writeRegistersRaw(raw);
    await g.writeMemory(BigInt(DATA_GPA), window);
    let after = await g.readRegistersRaw();
    let steps = 0;
    do {
      await g.step();
      after = await g.readRegistersRaw();
      steps++;
    } while (leToBigint(after.subarray(g.reg('rip').offset, g.reg('rip').offset + 8)) === BigInt(rip) && steps < 64);
    const get = (name: string): bigint => { const d = g.reg(name); return leToBigint(after.subarray(d.offset, d.offset + d.bits / 8)); };
    const out = {} as Record<Gpr, bigint>;
    for (const r of GPRS) out[r] = get(r);
    return { regs: out, rip: get('rip'), rflags: get('eflags'), cr2: get('cr2'), mem: await g.readMemory(BigInt(DATA_GPA), DATA_SIZE) };
  }

  dispose(): void { this.q.dispose(); }
}

// ---------------------------------------------------------------------------------------------
// Comparison and reporting

export interface Mismatch { index: number; case: DiffCase; bytes: Uint8Array; diffs: string[]; qemu: Snapshot; emu: Snapshot }

const h = (v: bigint): string => `0x${v.toString(16)}`;

/** Differences that matter (undefined flags and registers excluded). Empty = agree. */
export function compareSnapshots(c: DiffCase, q: Snapshot, e: Snapshot): { diffs: string[]; undefinedOnly: boolean } {
  const diffs: string[] = [];
  for (const r of GPRS) {
    if (q.regs[r] !== e.regs[r] && !c.undefRegs.includes(r)) diffs.push(`${r}: qemu ${h(q.regs[r])} emu ${h(e.regs[r])}`);
  }
  if (q.rip !== e.rip) diffs.push(`rip: qemu ${h(q.rip)} emu ${h(e.rip)} (emu's stop RIP minus the HLT)${ripNote(q.rip)}${ripNote(e.rip)}`);
  if (q.cr2 !== e.cr2) diffs.push(`cr2: qemu ${h(q.cr2)} emu ${h(e.cr2)}`);
  const fm = BigInt(FLAGS_COMPARED & ~c.undefFlags);
  const fx = (q.rflags ^ e.rflags) & fm;
  if (fx !== 0n) diffs.push(`rflags: qemu ${h(q.rflags)} emu ${h(e.rflags)} differ in ${flagNames(Number(fx))} (compared ${h(fm)})`);
  for (let i = 0; i < DATA_SIZE; i++) {
    if (q.mem[i] !== e.mem[i]) {
      let j = i;
      while (j < DATA_SIZE && q.mem[j] !== e.mem[j]) j++;
      diffs.push(`memory 0x${(DATA_GPA + i).toString(16)}..+${j - i}: qemu ${hexBytes(q.mem.subarray(i, j))} emu ${hexBytes(e.mem.subarray(i, j))}`);
      i = j;
      if (diffs.length > 24) break;
    }
  }
  if (e.note !== undefined) diffs.push(e.note);
  const undefinedOnly = diffs.length === 0 && (((q.rflags ^ e.rflags) & BigInt(FLAGS_COMPARED)) !== 0n || c.undefRegs.some((r) => q.regs[r] !== e.regs[r]));
  return { diffs, undefinedOnly };
}

/** " [#GP handler]" when `rip` is an exception handler's address. */
function ripNote(rip: bigint): string {
  const v = Number(rip) - HANDLERS_GPA;
  const names = ['#DE', '#DB', 'NMI', '#BP', '#OF', '#BR', '#UD', '#NM', '#DF', 'vec9', '#TS', '#NP', '#SS', '#GP', '#PF', 'vec15', '#MF', '#AC', '#MC', '#XM'];
  return v >= 0 && v < IDT_VECTORS ? ` [${names[v] ?? `vector ${v}`} handler]` : '';
}

function hexBytes(b: Uint8Array): string { return [...b].map((x) => x.toString(16).padStart(2, '0')).join(' '); }

export function flagNames(f: number): string {
  const n: string[] = [];
  for (const [bit, name] of [[CF, 'CF'], [PF, 'PF'], [AF, 'AF'], [ZF, 'ZF'], [SF, 'SF'], [0x100, 'TF'], [0x200, 'IF'], [DF, 'DF'], [OF, 'OF']] as const) if ((f & bit) !== 0) n.push(name);
  return n.join('|') || h(BigInt(f));
}

/** objdump's reading of the bytes (Intel syntax), or a note when objdump is missing. */
export function disassemble(bytes: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), 'qdiff-dis-'));
  try {
    const f = join(dir, 'b.bin');
    writeFileSync(f, bytes);
    const out = execFileSync('objdump', ['-D', '-b', 'binary', '-mi386:x86-64', '-Mintel', f], { encoding: 'utf8' });
    return out.split('\n').filter((l) => /^\s+[0-9a-f]+:/.test(l)).map((l) => l.trim()).join(' | ');
  } catch (e) {
    return `(objdump failed: ${e instanceof Error ? e.message : String(e)})`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatMismatch(m: Mismatch): string {
  const regs = (s: Snapshot): string => GPRS.map((r) => `${r}=${h(s.regs[r])}`).join(' ') + ` rip=${h(s.rip)} rflags=${h(s.rflags)}`;
  const init = GPRS.map((r) => `${r}=${h(m.case.regs[r])}`).join(' ') + ` rflags=${h(m.case.rflags)}`;
  return [
    `case ${m.index}: ${m.case.asm.replace(/\n/g, '; ')}`,
    `  bytes: ${hexBytes(m.bytes)}   objdump: ${disassemble(m.bytes)}`,
    `  before: ${init}`,
    `  qemu:   ${regs(m.qemu)}`,
    `  emu:    ${regs(m.emu)}`,
    ...m.diffs.map((d) => `  DIFF ${d}`),
  ].join('\n');
}

export interface DiffResult {
  cases: number;
  mismatches: Mismatch[];
  undefinedOnly: number;
  /** Undefined-only differences by mnemonic and what differed ("bsr: rflags AF|PF"). */
  undefinedSummary: Map<string, number>;
  /** Blocks emu's JIT compiled during the run (jit.ts). */
  emuCompiledBlocks: number;
  ms: number;
}

/** Run `cases` on both machines and compare each (emu's result from its `emuRuns`th run). */
export async function runDifferential(cases: readonly DiffCase[], opts: { log?: (s: string) => void; emuRuns?: number } = {}): Promise<DiffResult> {
  const t0 = performance.now();
  const prog = buildProgram(cases);
  const emu = await EmuMachine.create(prog.image);
  let qemu: QemuMachine | null = null;
  try {
    qemu = await QemuMachine.create(prog.image);
    const mismatches: Mismatch[] = [];
    let undefinedOnly = 0;
    const undefinedSummary = new Map<string, number>();
    for (let k = 0; k < cases.length; k++) {
      const c = cases[k]!;
      const win = windowFor(c, prog.end[k]!);
      const regs = { ...c.regs };
      if (c.targetReg !== undefined) regs[c.targetReg] = BigInt(prog.end[k]! + 8);
      const seg = { fs: c.fsBase ?? 0n, gs: c.gsBase ?? 0n };
      let q: Snapshot;
      try {
        q = await qemu.runCase(regs, c.rflags, prog.start[k]!, win, seg);
      } catch (e) {
        throw new Error(`QEMU failed on case ${k} (${c.asm.replace(/\n/g, '; ')}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      // emuRuns > 1: run the case again and again (TEST_JIT_THRESHOLD + a few makes emu compile
      // the block, jit.ts) and compare the last run.
      let e = await emu.runCase(regs, c.rflags, prog.start[k]!, win, seg);
      for (let n = 1; n < (opts.emuRuns ?? 1); n++) e = await emu.runCase(regs, c.rflags, prog.start[k]!, win, seg);
      const r = compareSnapshots(c, q, e);
      if (r.undefinedOnly) {
        undefinedOnly++;
        const what = [flagNames(Number((q.rflags ^ e.rflags) & BigInt(FLAGS_COMPARED))), ...c.undefRegs.filter((x) => q.regs[x] !== e.regs[x]).map((x) => `dest ${x}`)];
        const key = `${c.asm.split(/\s/)[0] ?? ''}${/[^0-9]\d*$/.test(c.asm) ? '' : ''}: ${what.filter((w) => w !== '0x0').join(', ')}`;
        undefinedSummary.set(key, (undefinedSummary.get(key) ?? 0) + 1);
      }
      if (r.diffs.length > 0) {
        const m = { index: k, case: { ...c, regs }, bytes: prog.image.slice(prog.start[k]! - CODE_GPA, prog.end[k]! - CODE_GPA), diffs: r.diffs, qemu: q, emu: e };
        mismatches.push(m);
        opts.log?.(formatMismatch(m));
      }
    }
    const emuCompiledBlocks = (emu.partition as EmuPartition).cache.stats.compiled;
    return { cases: cases.length, mismatches, undefinedOnly, undefinedSummary, emuCompiledBlocks, ms: performance.now() - t0 };
  } finally {
    qemu?.dispose();
    emu.dispose();
  }
}

export { M64 };
