/**
 * The compiling tier (ADR 0007): a hot decoded block becomes one JavaScript function.
 *
 * What is emitted inline, with the decoded fields as constants:
 *  - MOV/MOVZX/MOVSX/LEA/XCHG/BSWAP/CBW/CWD, PUSH/POP/CALL/RET/JMP (direct and indirect) in
 *    64-bit code, effective addresses (incl. RIP-relative) with their canonical checks;
 *  - ALU (ADD..CMP), TEST, INC/DEC, NEG/NOT, shifts and rotates by a constant, IMUL: the lazy
 *    flag record (`fOp`, `fDst`...) is written through to the processor at once, exactly as
 *    the interpreter writes it, and also kept in locals, so Jcc/SETcc/CMOVcc/ADC/SBB after a
 *    flag-setting instruction of the same block test the operands directly (a CMP followed by
 *    JB is one unsigned compare) without calling `cond`;
 *  - a block that ends with a branch back to its own first byte (a loop) runs as a JavaScript
 *    loop for up to LOOP_ITERATIONS iterations before it returns to the dispatcher;
 *  - the hottest SSE2 forms (128-bit moves, PXOR/POR/PAND/PANDN/PCMPEQB/PCMPEQD/PADDD/PSUBD,
 *    PMOVMSKB), behind an inline check of CR0.EM/TS and CR4.OSFXSR.
 * Other SSE instructions call `cpu.sse(i)`, and every other instruction `cpu.step(i)`, so the
 * compiled block has exactly the interpreter's semantics, instruction by instruction; the
 * differential tests run the same programs hot and cold and compare.
 *
 * Return value of a compiled block (`BlockFn`):
 *   0 <= r < DONE : the block ended at instruction r with RIP already set (branch, fallback exit)
 *   r == DONE     : ran to the end; the caller sets RIP to the end of the block
 *   r < 0         : instruction -(r+1) raised the exception in cpu.excVec/excCode
 * Completed loop iterations add to `instret` themselves; the caller counts the last one.
 *
 * DEVNOTE: the source is built only from integers of the decoded record (never guest
 * strings), so `new Function` cannot be steered into running anything but these templates.
 */
import {
  F_BASE, F_DISP, F_FL, F_IMM, F_IMM2, F_IMMHI, F_INDEX, F_IOFF, F_LEN, F_OP, F_REG, F_RM, F_SCALE, F_SUB, FL_ASZ_MASK,
  FL_ASZ_SHIFT, FL_MEM, FL_RIPREL, FL_SEG_MASK, FL_SEG_SHIFT, LOG_STRIDE, SEG_NONE, SEG_SS,
  OP_ALU_R_RM, OP_ALU_RM_I, OP_ALU_RM_R, OP_DEC_RM, OP_INC_RM, OP_JCC, OP_JMP_REL, OP_MOV_R_I, OP_MOV_R_RM,
  OP_MOV_RM_R, OP_NOP, OP_POP_R, OP_PUSH_R, OP_TEST_RM_I, OP_TEST_RM_R, OP_MOVZX, OP_MOVSX, OP_SETCC, OP_CMOVCC,
  OP_LEA, OP_CALL_REL, OP_RET, OP_MOV_RM_I, OP_SSE, OP_JMP_RM, OP_CALL_RM, OP_SHIFT, OP_IMUL_R_RM, OP_IMUL_R_RM_I,
  OP_CBW, OP_CWD, OP_MUL_RM, OP_NOT_RM, OP_NEG_RM, OP_XCHG_RM_R, OP_XCHG_AX, OP_BSWAP, OP_PUSH_I,
  FOP_ADC, FOP_ADD, FOP_DEC, FOP_INC, FOP_LOGIC, FOP_SBB, FOP_SUB, TLB_MASK,
} from './ops.js';

/**
 * What compiled code uses of the processor (cpu.ts implements it). An interface rather than
 * the class so that this module does not depend on cpu.ts (no import cycle).
 */
export interface JitCpu {
  excVec: number; excCode: number; brk: number; rip: number; ripBase: number; vhi: number; rhi: number;
  t0: number; t1: number; instret: number; eflags: number;
  /** Translation generation (cpu.ts): changes whenever decoded blocks are dropped. */
  readonly gen: number;
  /** Code generation (cpu.ts): changes whenever decoded blocks are dropped. */
  readonly codeGen: number;
  /** The block a compiled function is running (a region moves it from member to member). */
  rgnBlk: number;
  fOp: number; fSz: number; fDst: number; fDstHi: number; fSrc: number; fSrcHi: number; fRes: number; fResHi: number; fCin: number;
  readonly sBase: Float64Array;
  /** The software TLB (cpu.ts): slot bases of the data read and write parts, tags, RAM region and offset per slot. */
  tlbR: number; tlbW: number;
  readonly tlbI: Int32Array;
  readonly phys: { readonly dv: DataView[] };
  readonly xmm: { readonly x: Int32Array };
  cr0: number; cr4: number;
  wrapIp(v: number): number;
  ea(i: number): number;
  step(i: number): number;
  /** One SSE instruction (sse.ts), without the interpreter's dispatch. */
  sse(i: number): number;
  rd8(lin: number): number; rd16(lin: number): number; rd32(lin: number): number; rd64(lin: number): number;
  wr8(lin: number, v: number): void; wr16(lin: number, v: number): void; wr32(lin: number, v: number): void;
  wr64(lin: number, lo: number, hi: number): void; wrN(lin: number, sz: number, lo: number, hi: number): void;
  probeW(lin: number, sz: number): boolean;
  cond(cc: number): boolean;
  getCF(): number;
  materialize(): void;
  imulTrunc(sz: number, a: number, aHi: number, b: number, bHi: number): void;
  push(sz: number, lo: number, hi: number): boolean;
  pop(sz: number): number;
}

/** A compiled block: `F` is the pool index of its first record. */
export type BlockFn = (c: JitCpu, R: Int32Array, F: number) => number;
export const DONE = 0x10000;
/**
 * Executions of a block before it is compiled. V8 runs a new function in its interpreter and
 * baseline tiers for hundreds of calls, where every property, element and arithmetic operation
 * is a stub call, several times slower than this emulator's interpreter; compiling only blocks
 * that will run long enough after that pays (kernel boot, main-thread CPU, runs side by side:
 * 1000 -> 3000 about 7% less, 3000 -> 10000 about 4% less; ADR 0007).
 */
export const JIT_THRESHOLD = 10000;
/** Iterations a self-looping compiled block runs before it gives the dispatcher a turn (interrupts, timers). */
export const LOOP_ITERATIONS = 64;
/**
 * Source size a region stops growing at: V8 optimizes no function of more than 60 KB of
 * bytecode (--max-optimized-bytecode-size), about 0.9 byte per character of this source, and
 * a region it does not optimize runs several times slower than the blocks it replaced.
 */
const MAX_REGION_SOURCE = 40000;
/** Runs of a compiled block from the dispatcher before it and the hot blocks of its page become a region. */
export const REGION_THRESHOLD = 500000;
/** Branches from member to member a region call takes before it gives the dispatcher a turn. */
export const REGION_TRANSFERS = 64;

/**
 * The pool index of record `i` in generated code: relative to the block's first record (the
 * parameter F), so that the source of a block does not depend on where the block sits in the
 * pool and identical code shares one compiled function (see `compiled`).
 */
// DEVNOTE: set by compileBlock for the block being compiled (compilation is synchronous and
// never reentrant), read by the templates through recRef.
let recBase = 0;
function recRef(i: number): string { return `F + ${i - recBase}`; }

/** Register operand read into consts `lo`/`hi` (hi is 0 below 64 bits). */
function rdReg(r: number, sz: number, lo: string, hi: string): string {
  if (sz === 3) return `const ${lo} = R[${r * 2}], ${hi} = R[${r * 2 + 1}];`;
  if (sz === 2) return `const ${lo} = R[${r * 2}], ${hi} = 0;`;
  if (sz === 1) return `const ${lo} = R[${r * 2}] & 0xffff, ${hi} = 0;`;
  return r < 16 ? `const ${lo} = R[${r * 2}] & 0xff, ${hi} = 0;` : `const ${lo} = (R[${(r - 16) * 2}] >> 8) & 0xff, ${hi} = 0;`;
}
/** Register write as the interpreter's setR: 32-bit writes zero the high half, 8/16-bit ones merge. */
function wrReg(r: number, sz: number, lo: string, hi: string): string {
  if (sz === 3) return `R[${r * 2}] = ${lo}; R[${r * 2 + 1}] = ${hi};`;
  if (sz === 2) return `R[${r * 2}] = ${lo}; R[${r * 2 + 1}] = 0;`;
  if (sz === 1) return `R[${r * 2}] = (R[${r * 2}] & -65536) | ((${lo}) & 0xffff);`;
  if (r < 16) return `R[${r * 2}] = (R[${r * 2}] & -256) | ((${lo}) & 0xff);`;
  const k = (r - 16) * 2;
  return `R[${k}] = (R[${k}] & -65281) | (((${lo}) & 0xff) << 8);`;
}
/**
 * An address in generated code: its int32 halves (the fast TLB probe) and the same address as
 * a double (the processor's rd, wr and probeW methods take one). eaCode defines `el`/`eh`/`lin`;
 * the double is only computed on the paths that use it (V8 schedules it there).
 */
interface Addr { lo: string; hi: string; lin: string }
const EA: Addr = { lo: 'el', hi: 'eh', lin: 'lin' };
/** Code reading 2^sz bytes at `o` of `dv` into v (and vh for 64 bits). */
function getCode(sz: number, v: string, vh: string): string {
  return sz === 0 ? `${v} = dv.getUint8(o);` : sz === 1 ? `${v} = dv.getUint16(o, true);` : sz === 2 ? `${v} = dv.getInt32(o, true);`
    : `${v} = dv.getInt32(o, true); ${vh} = dv.getInt32(o + 4, true);`;
}
/** Code writing 2^sz bytes of v (and vh for 64 bits) at `o` of `dv`. */
function setCode(sz: number, v: string, vh: string): string {
  return sz === 0 ? `dv.setUint8(o, ${v});` : sz === 1 ? `dv.setUint16(o, ${v}, true);` : sz === 2 ? `dv.setInt32(o, ${v}, true);`
    : `dv.setInt32(o, ${v}, true); dv.setInt32(o + 4, ${vh}, true);`;
}
/**
 * The int-keyed TLB probe (cpu.ts tlbI: tag lo, tag hi, region, offset per slot) of the slot part `part` for 2^sz bytes at
 * `a`: a boolean expression, true when the access is to plain RAM within one page, with consts
 * `dv`/`o` then defined by `at`.
 */
function probe(part: string, sz: number, a: Addr): { hit: string; at: string } {
  const n = 1 << sz;
  return {
    hit: `T[ts = (c.${part} + ((tg = (${a.lo} >>> 12) | (${a.hi} << 20)) & ${TLB_MASK})) << 2] === tg && T[ts + 1] === (${a.hi} >> 12)${n > 1 ? ` && (${a.lo} & 4095) <= ${4096 - n}` : ''}`,
    at: `const dv = c.phys.dv[T[ts + 2]], o = T[ts + 3] + (${a.lo} & 4095);`,
  };
}
/**
 * A data read of 2^sz bytes at `a` into `let` variables v/vh (vh is 0 below 64 bits) as the
 * processor's rd8..rd64 do: a TLB hit on plain RAM inline, everything else (miss, page
 * crossing, MMIO, faults) through the processor's method.
 */
function load(sz: number, v: string, vh: string, exc: string, a: Addr = EA): string {
  const call = `${v} = c.${['rd8', 'rd16', 'rd32', 'rd64'][sz]!}(${a.lin}); if (c.excVec !== -1) ${exc} ${sz === 3 ? `${vh} = c.vhi;` : ''}`;
  const p = probe('tlbR', sz, a);
  return `let ${v} = 0, ${vh} = 0; { let tg = 0, ts = 0; const T = c.tlbI; if (${p.hit}) { ${p.at} ${getCode(sz, v, vh)} } else { ${call} } }`;
}
/** A data write of 2^sz bytes of v/vh at `a`, as wr8..wr64: RAM TLB hits inline (code pages never hit: cpu.ts). */
function store(sz: number, v: string, vh: string, exc: string, brkCheck: string, a: Addr = EA): string {
  const slow = sz === 3 ? `c.wr64(${a.lin}, ${v}, ${vh})` : `c.${['wr8', 'wr16', 'wr32'][sz]!}(${a.lin}, ${v})`;
  const p = probe('tlbW', sz, a);
  return `{ let tg = 0, ts = 0; const T = c.tlbI; if (${p.hit}) { ${p.at} ${setCode(sz, v, vh)} } else { ${slow}; if (c.excVec !== -1) ${exc} ${brkCheck} } }`;
}
/**
 * Read-modify-write of 2^sz bytes at `el`/`eh`: `body` computes consts r/rh from a/ah. The
 * write permission is checked before the read (as the hardware does); a hit on the write part
 * of the TLB reads and writes RAM through it.
 */
function rmw(sz: number, body: string, exc: string, brkCheck: string): string {
  const p = probe('tlbW', sz, EA);
  const slowRd = `if (!c.probeW(lin, ${sz})) ${exc} a = c.${['rd8', 'rd16', 'rd32', 'rd64'][sz]!}(lin); if (c.excVec !== -1) ${exc} ${sz === 3 ? 'ah = c.vhi;' : ''}`;
  const slowWr = `${sz === 3 ? 'c.wr64(lin, r, rh)' : `c.${['wr8', 'wr16', 'wr32'][sz]!}(lin, r)`}; if (c.excVec !== -1) ${exc} ${brkCheck}`;
  return `let a = 0, ah = 0, dv = null, o = 0; { let tg = 0, ts = 0; const T = c.tlbI; if (${p.hit}) { dv = c.phys.dv[T[ts + 2]]; o = T[ts + 3] + (el & 4095); ${getCode(sz, 'a', 'ah')} } else { ${slowRd} } }
    ${body} if (dv !== null) { ${setCode(sz, 'r', 'rh')} } else { ${slowWr} }`;
}
/** Sign extension of an expression from operand size `sz` (< 3) to 32 bits. */
function sxc(e: string, sz: number): string {
  return sz === 0 ? `(((${e}) << 24) >> 24)` : sz === 1 ? `(((${e}) << 16) >> 16)` : `((${e}) | 0)`;
}

/**
 * The linear address of record `i`'s memory operand as inline code into int32 `el`/`eh` and
 * the double `lin` (64-bit addressing in 64-bit mode, RIP-relative included, all in 32-bit
 * integer arithmetic with explicit carries); other forms call the interpreter's `ea`.
 * A non-canonical address raises #GP(0), or #SS(0) for an SS-based operand, as `ea` does.
 */
function eaCode(D: Int32Array, i: number, mode: number, exc: string): string {
  const fl = D[i + F_FL]!;
  const asz = (fl & FL_ASZ_MASK) >> FL_ASZ_SHIFT;
  const seg = (fl & FL_SEG_MASK) >> FL_SEG_SHIFT;
  // Below 64-bit addressing the address is under 2^32.
  if (mode !== 2 || asz !== 3) return `const lin = c.ea(${recRef(i)}); if (c.excVec !== -1) ${exc} const el = lin | 0, eh = 0;`;
  const vec = seg === SEG_SS ? 12 : 13;
  const fault = `{ c.excVec = ${vec}; c.excCode = 0; ${exc} }`;
  // Terms as [lo, hi] int32 expressions, summed with carries.
  const terms: [string, string][] = [];
  let pre = '';
  if ((fl & FL_RIPREL) !== 0) {
    const off = D[i + F_IOFF]! + D[i + F_LEN]! + D[i + F_DISP]!;
    if (seg === SEG_NONE) {
      return `const lin = c.ripBase + ${off}; if (lin < -140737488355328 || lin >= 140737488355328) ${fault}
        const el = lin | 0, eh = Math.floor(lin / 4294967296) | 0;`;
    }
    pre = `const t = c.ripBase + ${off};`;
    terms.push(['(t | 0)', '(Math.floor(t / 4294967296) | 0)']);
  } else {
    const b = D[i + F_BASE]!, x = D[i + F_INDEX]!, sh = D[i + F_SCALE]!, d = D[i + F_DISP]!;
    if (b >= 0) terms.push([`R[${b * 2}]`, `R[${b * 2 + 1}]`]);
    if (x >= 0) {
      terms.push(sh === 0 ? [`R[${x * 2}]`, `R[${x * 2 + 1}]`]
        : [`(R[${x * 2}] << ${sh})`, `((R[${x * 2 + 1}] << ${sh}) | (R[${x * 2}] >>> ${32 - sh}))`]);
    }
    if (d !== 0 || terms.length === 0) terms.push([String(d), String(d >> 31)]);
  }
  if (seg !== SEG_NONE) {
    pre += ` const sb = c.sBase[${seg}];`;
    terms.push(['(sb | 0)', '(Math.floor(sb / 4294967296) | 0)']);
  }
  let code = `${pre} let el = ${terms[0]![0]}, eh = ${terms[0]![1]};`;
  for (let k = 1; k < terms.length; k++) {
    const [lo, hi] = terms[k]!;
    code += ` { const n = (el + ${lo}) | 0; eh = (eh + ${hi} + ((n >>> 0) < (el >>> 0) ? 1 : 0)) | 0; el = n; }`;
  }
  return `${code} if (((eh << 16) >> 16) !== eh) ${fault} const lin = eh * 4294967296 + (el >>> 0);`;
}

/** Inline 64-bit PUSH in 64-bit mode (values in `lo`/`hi`); RSP changes only after the store. */
function push64(lo: string, hi: string, exc: string): string {
  return `{ const pl = (R[8] - 8) | 0, ph = (R[9] - ((R[8] >>> 0) < 8 ? 1 : 0)) | 0;
    if (((ph << 16) >> 16) !== ph) { c.excVec = 12; c.excCode = 0; ${exc} }
    const pd = ph * 4294967296 + (pl >>> 0);
    ${store(3, lo, hi, `{ if (c.excVec === 13) c.excVec = 12; ${exc} }`, '', { lo: 'pl', hi: 'ph', lin: 'pd' })}
    R[8] = pl; R[9] = ph; }`;
}
/**
 * Inline 64-bit POP in 64-bit mode into `let`s v/vh; RSP changes only after the load and after
 * `check` (code that may leave with a fault, e.g. RET's check of its target).
 */
function pop64(exc: string, check = ''): string {
  return `const ql = R[8], qh = R[9]; if (((qh << 16) >> 16) !== qh) { c.excVec = 12; c.excCode = 0; ${exc} }
    const qd = qh * 4294967296 + (ql >>> 0); ${load(3, 'v', 'vh', exc, { lo: 'ql', hi: 'qh', lin: 'qd' })} ${check}
    { const n = (ql + 8) | 0; R[9] = (qh + ((n >>> 0) < (ql >>> 0) ? 1 : 0)) | 0; R[8] = n; }`;
}

/** 64-bit shift left of locals lo/hi by a constant 0 < n < 64 into consts `rl`/`rh` of the given names. */
function shl64c(lo: string, hi: string, n: number, rl: string, rh: string): string {
  return n < 32 ? `const ${rh} = (${hi} << ${n}) | (${lo} >>> ${32 - n}), ${rl} = ${lo} << ${n};` : `const ${rh} = ${lo} << ${n - 32}, ${rl} = 0;`;
}
/** 64-bit logical/arithmetic shift right by a constant 0 < n < 64. */
function shr64c(lo: string, hi: string, n: number, arith: boolean, rl: string, rh: string): string {
  const sr = arith ? '>>' : '>>>';
  return n < 32 ? `const ${rl} = ((${lo} >>> ${n}) | (${hi} << ${32 - n})) | 0, ${rh} = (${hi} ${sr} ${n}) | 0;`
    : `const ${rl} = (${hi} ${sr} ${n - 32}) | 0, ${rh} = ${arith ? `${hi} >> 31` : '0'};`;
}
/** Bit n (constant, 0..63) of lo/hi. */
function bit64c(lo: string, hi: string, n: number): string {
  return n < 32 ? `((${lo} >>> ${n}) & 1)` : `((${hi} >>> ${n - 32}) & 1)`;
}
/** PF of the low byte of int expression `r`: 4 when it has an even number of set bits. */
function pfOf(r: string): string {
  return `(((0x9669 >>> ((((${r}) & 0xff) ^ (((${r}) & 0xff) >>> 4)) & 15)) & 1) << 2)`;
}
/**
 * EFLAGS of a result with explicit CF/OF, as cpu.ts #resultFlags: SF/ZF/PF from the result,
 * AF clear; the lazy record becomes FOP_NONE. `r` is sign-extended to 32 bits below 64-bit
 * operands, `rh` its high half for 64-bit ones.
 */
function resultFlags(r: string, rh: string | null, cf: string, of: string): string {
  const zf = rh === null ? `(${r}) === 0` : `((${r}) | (${rh})) === 0`;
  const sf = rh === null ? `(${r}) < 0` : `(${rh}) < 0`;
  return `c.eflags = (c.eflags & -2262) | ((${cf}) & 1) | ${pfOf(r)} | (${zf} ? 64 : 0) | (${sf} ? 128 : 0) | ((${of}) !== 0 ? 2048 : 0); c.fOp = 0;`;
}

/** Dword-lane bodies of the inlined SSE2 forms (66 0F xx): r = f(a, b) on each 32-bit lane. */
const SSE_LANE: Record<number, string> = {
  0xef: 'a ^ b', 0xeb: 'a | b', 0xdb: 'a & b', 0xdf: '~a & b', 0x76: 'a === b ? -1 : 0', 0xfe: '(a + b) | 0',
  0xfa: '(a - b) | 0',
  // PCMPEQB on four bytes at once: bytes of a ^ b that are zero become 0xFF.
  0x74: 'Math.imul(~((((a ^ b) & 0x7f7f7f7f) + 0x7f7f7f7f) | (a ^ b) | 0x7f7f7f7f) >>> 7, 255)',
};

/**
 * Inline code for the hottest SSE2 forms (glibc's string loops and the kernel's copies):
 * MOVDQA/MOVDQU/MOVAPS/MOVUPS loads and stores, PXOR/POR/PAND/PANDN/PCMPEQB/PCMPEQD/PADDD/
 * PSUBD and PMOVMSKB. Anything else, and every case where SSE is disabled (the interpreter
 * raises the fault), goes to `c.sse(i)`. Semantics are sse.ts's, lane for lane.
 */
function sseCode(D: Int32Array, i: number, mode: number, exc: string, brkCheck: string, slow: string): string | null {
  const sub = D[i + F_SUB]!, opb = sub & 0xff, pfx = sub >> 8;
  const fl = D[i + F_FL]!, mem = (fl & FL_MEM) !== 0;
  const d = D[i + F_REG]! * 4, r = D[i + F_RM]! * 4;
  const guard = (body: string): string => `if ((c.cr0 & 12) !== 0 || (c.cr4 & 512) === 0) ${slow} else { const X = c.xmm.x; ${body} }`;
  const load = (aligned: boolean): string => mem
    ? `${eaCode(D, i, mode, exc)} ${aligned ? `if ((lin % 16) !== 0) { c.excVec = 13; c.excCode = 0; ${exc} }` : ''}
       const s0 = c.rd64(lin), s1 = c.vhi; if (c.excVec !== -1) ${exc} const s2 = c.rd64(lin + 8), s3 = c.vhi; if (c.excVec !== -1) ${exc}`
    : `const s0 = X[${r}], s1 = X[${r + 1}], s2 = X[${r + 2}], s3 = X[${r + 3}];`;
  // Loads: MOVDQA (66 6F), MOVDQU (F3 6F), MOVAPS (28), MOVUPS (10).
  if ((opb === 0x6f && (pfx === 1 || pfx === 2)) || ((opb === 0x28 || opb === 0x10) && pfx === 0)) {
    return guard(`${load(opb === 0x28 || (opb === 0x6f && pfx === 1))} X[${d}] = s0; X[${d + 1}] = s1; X[${d + 2}] = s2; X[${d + 3}] = s3;`);
  }
  // Stores to memory: MOVDQA (66 7F), MOVDQU (F3 7F), MOVAPS (29), MOVUPS (11).
  if (mem && ((opb === 0x7f && (pfx === 1 || pfx === 2)) || ((opb === 0x29 || opb === 0x11) && pfx === 0))) {
    const aligned = opb === 0x29 || (opb === 0x7f && pfx === 1);
    return guard(`${eaCode(D, i, mode, exc)} ${aligned ? `if ((lin % 16) !== 0) { c.excVec = 13; c.excCode = 0; ${exc} }` : ''}
      if (!c.probeW(lin, 4)) ${exc} c.wr64(lin, X[${d}], X[${d + 1}]); if (c.excVec !== -1) ${exc}
      c.wr64(lin + 8, X[${d + 2}], X[${d + 3}]); if (c.excVec !== -1) ${exc} ${brkCheck}`);
  }
  if (pfx !== 1) return null;
  const lane = SSE_LANE[opb];
  if (lane !== undefined) {
    const body = [0, 1, 2, 3].map((k) => `{ const a = X[${d + k}], b = s${k}; X[${d + k}] = ${lane}; }`).join(' ');
    return guard(`${load(true)} ${body}`);
  }
  if (opb === 0xd7 && !mem) {
    // PMOVMSKB r32, xmm: the top bit of each byte.
    const g = (k: number): string => `((X[${r + k}] >>> 7) & 1 | (X[${r + k}] >>> 14) & 2 | (X[${r + k}] >>> 21) & 4 | (X[${r + k}] >>> 28) & 8)`;
    return guard(`R[${D[i + F_REG]! * 2}] = ${g(0)} | ${g(1)} << 4 | ${g(2)} << 8 | ${g(3)} << 12; R[${D[i + F_REG]! * 2 + 1}] = 0;`);
  }
  return null;
}


/**
 * Compile-time knowledge of the lazy flags: after an inline flag-setting instruction, its
 * record is in the locals fa/fah (destination), fb/fbh (source), fr/frh (result), fc (carry
 * in) as well as in the processor; `kind` is its FOP_* (-1: only the processor knows).
 */
class FlagState {
  kind = -1;
  sz = 0;

  /** Code that records a lazy flag operation in the locals and writes it through. */
  /** False while compiling an instruction whose flags nothing can observe in the processor (see deadFlags). */
  through = true;

  set(op: number, sz: number, d: string, dh: string, s: string, sh: string, r: string, rh: string, cin: string): string {
    this.kind = op; this.sz = sz;
    const locals = `fa = ${d}; fah = ${dh}; fb = ${s}; fbh = ${sh}; fr = ${r}; frh = ${rh}; fc = ${cin};`;
    if (!this.through) return locals;
    return `${locals}
      c.fOp = ${op}; c.fSz = ${sz}; c.fDst = fa; c.fDstHi = fah; c.fSrc = fb; c.fSrcHi = fbh; c.fRes = fr; c.fResHi = frh; c.fCin = fc;`;
  }
  forget(): void { this.kind = -1; }

  #ult(x: string, xh: string, y: string, yh: string): string {
    switch (this.sz) {
      case 3: return `((${xh} >>> 0) < (${yh} >>> 0) || (${xh} === ${yh} && (${x} >>> 0) < (${y} >>> 0)))`;
      case 2: return `((${x} >>> 0) < (${y} >>> 0))`;
      case 1: return `((${x} & 0xffff) < (${y} & 0xffff))`;
      default: return `((${x} & 0xff) < (${y} & 0xff))`;
    }
  }
  /** CF as a boolean expression, or null when only the processor knows it. */
  #cf(): string | null {
    switch (this.kind) {
      case FOP_ADD: return this.#ult('fr', 'frh', 'fa', 'fah');
      case FOP_SUB: return this.#ult('fa', 'fah', 'fb', 'fbh');
      case FOP_LOGIC: return 'false';
      case FOP_INC: case FOP_DEC: return '(fc !== 0)';
      default: return null;
    }
  }
  /** CF as 0/1. */
  cfNum(): string {
    const e = this.#cf();
    return e === null ? 'c.getCF()' : `(${e} ? 1 : 0)`;
  }
  /** PF|AF|ZF|SF of the recorded operation as an expression, or null when only the processor knows them. */
  arithBits(): string | null {
    const k = this.kind;
    if (k !== FOP_ADD && k !== FOP_SUB && k !== FOP_LOGIC && k !== FOP_INC && k !== FOP_DEC) return null;
    const w = this.sz === 3;
    const zf = w ? '((fr | frh) === 0)' : '(fr === 0)';
    const sf = w ? '(frh < 0)' : '(fr < 0)';
    const af = k === FOP_LOGIC ? '0' : '((fa ^ fb ^ fr) & 16)';
    return `(${pfOf('fr')} | ${af} | (${zf} ? 64 : 0) | (${sf} ? 128 : 0))`;
  }
  /** Condition `cc` (Jcc encoding) as a boolean expression. */
  cond(cc: number): string {
    const k = this.kind;
    if (k !== FOP_ADD && k !== FOP_SUB && k !== FOP_LOGIC && k !== FOP_INC && k !== FOP_DEC) return `c.cond(${cc})`;
    const w = this.sz === 3;
    const zf = w ? '((fr | frh) === 0)' : '(fr === 0)';
    const sf = w ? '(frh < 0)' : '(fr < 0)';
    const of = k === FOP_LOGIC ? 'false'
      : k === FOP_ADD || k === FOP_INC ? '(((fah ^ frh) & (fbh ^ frh)) < 0)' : '(((fah ^ fbh) & (fah ^ frh)) < 0)';
    const cf = this.#cf()!;
    const slt = w ? '(fah < fbh || (fah === fbh && (fa >>> 0) < (fb >>> 0)))' : '(fa < fb)';
    let r: string;
    switch (cc >> 1) {
      case 0: r = of; break;
      case 1: r = cf; break;
      case 2: r = zf; break;
      case 3: r = `(${cf} || ${zf})`; break;
      case 4: r = sf; break;
      case 5: r = `(${pfOf('fr')} !== 0)`; break;
      case 6: r = k === FOP_SUB ? slt : `(${sf} !== ${of})`; break;
      default: r = k === FOP_SUB ? `(${slt} || ${zf})` : `(${zf} || ${sf} !== ${of})`; break;
    }
    return (cc & 1) !== 0 ? `!${r}` : r;
  }
}

/**
 * ALU kind `k` (0 ADD 1 OR 2 ADC 3 SBB 4 AND 5 SUB 6 XOR 7 CMP) on consts a/ah, b/bh of size
 * `sz` into consts r/rh, with the lazy flags as cpu.ts `alu` records them.
 */
function aluCode(f: FlagState, k: number, sz: number): string {
  if (k === 1 || k === 4 || k === 6) {
    const o = k === 1 ? '|' : k === 4 ? '&' : '^';
    const calc = sz === 3 ? `const r = a ${o} b, rh = ah ${o} bh;` : `const r = ${sxc(`a ${o} b`, sz)}, rh = r >> 31;`;
    return `${calc} ${f.set(FOP_LOGIC, sz, '0', '0', '0', '0', 'r', 'rh', '0')}`;
  }
  const add = k === 0 || k === 2;
  const withCarry = k === 2 || k === 3;
  const op = k === 0 ? FOP_ADD : k === 2 ? FOP_ADC : k === 3 ? FOP_SBB : FOP_SUB;
  const ci = `const ci = ${withCarry ? f.cfNum() : '0'};`;
  if (sz !== 3) {
    const e = add ? 'a + b + ci' : 'a - b - ci';
    return `${ci} const r = ${sxc(e, sz)}, da = ${sxc('a', sz)}, db = ${sxc('b', sz)}, rh = 0;
      ${f.set(op, sz, 'da', 'da >> 31', 'db', 'db >> 31', 'r', 'r >> 31', 'ci')}`;
  }
  const calc = add
    ? 'const s = (a >>> 0) + (b >>> 0) + ci; const r = s | 0, rh = (ah + bh + (s > 4294967295 ? 1 : 0)) | 0;'
    : 'const s = (a >>> 0) - (b >>> 0) - ci; const r = s | 0, rh = (ah - bh - (s < 0 ? 1 : 0)) | 0;';
  return `${ci} ${calc} ${f.set(op, 3, 'a', 'ah', 'b', 'bh', 'r', 'rh', 'ci')}`;
}

/** INC/DEC of consts a/ah into r/rh; CF is kept (recorded as the carry-in, as cpu.ts incdec does). */
function incDecCode(f: FlagState, sz: number, dec: boolean): string {
  const cf = `const cf = ${f.cfNum()};`;
  const op = dec ? FOP_DEC : FOP_INC;
  if (sz !== 3) {
    return `${cf} const r = ${sxc(dec ? 'a - 1' : 'a + 1', sz)}, da = ${sxc('a', sz)}, rh = 0;
      ${f.set(op, sz, 'da', 'da >> 31', '1', '0', 'r', 'r >> 31', 'cf')}`;
  }
  const calc = dec
    ? 'const s = (a >>> 0) - 1; const r = s | 0, rh = (ah - (s < 0 ? 1 : 0)) | 0;'
    : 'const s = (a >>> 0) + 1; const r = s | 0, rh = (ah + (s > 4294967295 ? 1 : 0)) | 0;';
  return `${cf} ${calc} ${f.set(op, 3, 'a', 'ah', '1', '0', 'r', 'rh', 'cf')}`;
}

/**
 * Shift or rotate of register `rm` by a constant count (already masked as the hardware does),
 * 32- and 64-bit operands; SHL/SHR/SAR/ROL/ROR (RCL/RCR stay in the interpreter).
 * Returns null for what is not inlined. Flags as cpu.ts #shift32/#shift64.
 */
function shiftCode(f: FlagState, op: number, sz: number, rm: number, cnt: number, dead: boolean): string | null {
  if (sz < 2 || op === 2 || op === 3) return null;
  const lo = `R[${rm * 2}]`, hi = `R[${rm * 2 + 1}]`;
  if (cnt === 0) return sz === 2 ? `${hi} = 0;` : '';
  // A rotate keeps SF/ZF/AF/PF: from the locals when the last flag writer of the block is
  // known, else from the processor's copy made whole (c.materialize()).
  const kept = f.arithBits();
  const rotFlags = kept === null ? 'c.materialize(); c.eflags = (c.eflags & -2050) | cf | (of !== 0 ? 2048 : 0);'
    : `c.eflags = (c.eflags & -2262) | ${kept} | cf | (of !== 0 ? 2048 : 0); c.fOp = 0;`;
  f.forget();
  // Flags nothing reads (see deadFlags): only the result.
  if (dead && op <= 1) {
    if (sz === 2) return `{ const v = ${lo}; ${lo} = ${op === 0 ? `(v << ${cnt}) | (v >>> ${32 - cnt})` : `(v >>> ${cnt}) | (v << ${32 - cnt})`}; ${hi} = 0; }`;
    const n = op === 0 ? cnt : 64 - cnt;
    return `{ const l = ${lo}, h = ${hi}; ${shl64c('l', 'h', n, 'al', 'ah')} ${shr64c('l', 'h', 64 - n, false, 'bl', 'bh')} ${lo} = al | bl; ${hi} = ah | bh; }`;
  }
  if (dead && op >= 4) {
    if (sz === 2) return `${lo} = ${lo} ${op === 5 ? '>>>' : op === 7 ? '>>' : '<<'} ${cnt}; ${hi} = 0;`;
    const body = op === 4 || op === 6 ? shl64c('l', 'h', cnt, 'r', 'rh') : shr64c('l', 'h', cnt, op === 7, 'r', 'rh');
    return `{ const l = ${lo}, h = ${hi}; ${body} ${lo} = r; ${hi} = rh; }`;
  }
  if (sz === 2) {
    switch (op) {
      case 0: case 1: {
        const r = op === 0 ? `(v << ${cnt}) | (v >>> ${32 - cnt})` : `(v >>> ${cnt}) | (v << ${32 - cnt})`;
        const flags = op === 0 ? 'const cf = r & 1, of = (r >>> 31) ^ cf;' : 'const cf = r >>> 31, of = cf ^ ((r >>> 30) & 1);';
        return `{ const v = ${lo}; const r = (${r}) | 0; ${flags} ${rotFlags} ${lo} = r; ${hi} = 0; }`;
      }
      case 4: case 6:
        return `{ const v = ${lo}; const r = v << ${cnt}; const cf = (v >>> ${32 - cnt}) & 1; ${resultFlags('r', null, 'cf', '(r >>> 31) ^ cf')} ${lo} = r; ${hi} = 0; }`;
      case 5:
        return `{ const v = ${lo}; const r = v >>> ${cnt}; const cf = (v >>> ${cnt - 1}) & 1; ${resultFlags('r', null, 'cf', 'v >>> 31')} ${lo} = r; ${hi} = 0; }`;
      default:
        return `{ const v = ${lo}; const r = v >> ${cnt}; const cf = (v >> ${cnt - 1}) & 1; ${resultFlags('r', null, 'cf', '0')} ${lo} = r; ${hi} = 0; }`;
    }
  }
  switch (op) {
    case 0: case 1: {
      const n = op === 0 ? cnt : 64 - cnt;
      const flags = op === 0 ? 'const cf = r & 1, of = (rh >>> 31) ^ cf;' : 'const cf = rh >>> 31, of = cf ^ ((rh >>> 30) & 1);';
      return `{ const l = ${lo}, h = ${hi}; ${shl64c('l', 'h', n, 'al', 'ah')} ${shr64c('l', 'h', 64 - n, false, 'bl', 'bh')}
        const r = al | bl, rh = ah | bh; ${flags} ${rotFlags} ${lo} = r; ${hi} = rh; }`;
    }
    case 4: case 6:
      return `{ const l = ${lo}, h = ${hi}; const cf = ${bit64c('l', 'h', 64 - cnt)}; ${shl64c('l', 'h', cnt, 'r', 'rh')}
        ${resultFlags('r', 'rh', 'cf', '(rh >>> 31) ^ cf')} ${lo} = r; ${hi} = rh; }`;
    case 5:
      return `{ const l = ${lo}, h = ${hi}; const cf = ${bit64c('l', 'h', cnt - 1)}; ${shr64c('l', 'h', cnt, false, 'r', 'rh')}
        ${resultFlags('r', 'rh', 'cf', 'h >>> 31')} ${lo} = r; ${hi} = rh; }`;
    default:
      return `{ const l = ${lo}, h = ${hi}; const cf = ${bit64c('l', 'h', cnt - 1)}; ${shr64c('l', 'h', cnt, true, 'r', 'rh')}
        ${resultFlags('r', 'rh', 'cf', '0')} ${lo} = r; ${hi} = rh; }`;
  }
}

/**
 * Unsigned 32 x 32 -> 64-bit product of the expressions x (already unsigned) and y (int32 or
 * unsigned) as consts `lo` and `hi` (unsigned 32-bit digits): two 32 x 16-bit partial products,
 * each below 2^48 and so exact in a double.
 */
function mulU32(x: string, y: string, lo: string, hi: string): string {
  return `const ${lo}_l = ${x} * (${y} & 0xffff), ${lo}_h = ${x} * (${y} >>> 16); const ${lo} = Math.imul(${x}, ${y}) >>> 0, ${hi} = Math.floor(${lo}_h / 65536) + Math.floor((${lo}_l + (${lo}_h & 0xffff) * 65536) / 4294967296);`;
}

const FLAG_PURE = 0, FLAG_FULL = 1, FLAG_BARRIER = 2;
/**
 * How record `i` (64-bit code) relates to the flags as compiled inline: FLAG_PURE neither
 * touches the flags nor can leave the block (register moves, LEA, SETcc/CMOVcc into registers,
 * which read the flags from locals...); FLAG_FULL replaces all of them without observing the
 * processor's copy and without being able to fault (register-only ALU/TEST/INC/DEC/NEG, IMUL,
 * SHL/SHR/SAR by a non-zero constant); FLAG_BARRIER is everything else (memory operands can
 * fault, branches leave, fallbacks and rotates read the processor's flags). Must stay in step
 * with what compileBlock emits inline.
 */
function flagClass(D: Int32Array, i: number): number {
  const op = D[i + F_OP]!, fl = D[i + F_FL]!, sz = fl & 3;
  if ((fl & FL_MEM) !== 0) return FLAG_BARRIER;
  switch (op) {
    case OP_NOP: case OP_MOV_R_I: case OP_MOV_RM_I: case OP_MOV_R_RM: case OP_MOV_RM_R: case OP_SETCC: case OP_NOT_RM:
      return FLAG_PURE;
    case OP_MOVZX: case OP_MOVSX: return sz >= 1 ? FLAG_PURE : FLAG_BARRIER;
    case OP_LEA: return sz >= 2 && ((fl & FL_ASZ_MASK) >> FL_ASZ_SHIFT) === 3 ? FLAG_PURE : FLAG_BARRIER;
    case OP_CMOVCC: case OP_XCHG_RM_R: case OP_XCHG_AX: case OP_BSWAP: case OP_CBW: case OP_CWD:
      return sz >= 2 ? FLAG_PURE : FLAG_BARRIER;
    case OP_ALU_RM_R: case OP_ALU_RM_I: case OP_ALU_R_RM: case OP_TEST_RM_R: case OP_TEST_RM_I:
    case OP_INC_RM: case OP_DEC_RM: case OP_NEG_RM:
      return FLAG_FULL;
    case OP_IMUL_R_RM: case OP_IMUL_R_RM_I: return sz >= 2 ? FLAG_FULL : FLAG_BARRIER;
    case OP_SHIFT: {
      const src = D[i + F_IMM2]!, sub = D[i + F_SUB]!;
      if (sz < 2 || src === 1 || sub < 4) return FLAG_BARRIER;
      return ((src === 0 ? 1 : D[i + F_IMM]! & 0xff) & (sz === 3 ? 0x3f : 0x1f)) !== 0 ? FLAG_FULL : FLAG_PURE;
    }
    default: return FLAG_BARRIER;
  }
}

/** ROL/ROR of a 32- or 64-bit register by a constant that is not 0 after masking (compiled inline by shiftCode). */
function isRotateImm(D: Int32Array, i: number): boolean {
  const fl = D[i + F_FL]!, sz = fl & 3, src = D[i + F_IMM2]!, sub = D[i + F_SUB]!;
  if (D[i + F_OP] !== OP_SHIFT || (fl & FL_MEM) !== 0 || sz < 2 || src === 1 || sub > 1) return false;
  return ((src === 0 ? 1 : D[i + F_IMM]! & 0xff) & (sz === 3 ? 0x3f : 0x1f)) !== 0;
}

/** Whether record `i` reads the flags (conditions, the carry in, INC/DEC's kept CF). */
function readsFlags(D: Int32Array, i: number): boolean {
  const op = D[i + F_OP]!;
  if (op === OP_SETCC || op === OP_CMOVCC || op === OP_INC_RM || op === OP_DEC_RM) return true;
  return (op === OP_ALU_RM_R || op === OP_ALU_RM_I || op === OP_ALU_R_RM) && (D[i + F_SUB] === 2 || D[i + F_SUB] === 3);
}

/**
 * Compiled functions by source, shared by every block (of every partition in the process) with
 * the same code: the same kernel or library code decoded again after an invalidation or a cache
 * flush, or at another physical address, reuses the function and the machine code V8 has
 * already optimized for it. Bounded: cleared when full.
 */
const compiled = new Map<string, BlockFn>();
const MAX_SHARED_FNS = 1 << 16;

/**
 * A region (ADR 0007): hot blocks of one physical code page compiled into one function, so
 * that a branch from one to another stays inside it instead of returning to the dispatcher.
 */
export interface RegionMember {
  /** Block id in the code cache. */
  blk: number;
  /** Pool index of its first record. */
  first: number;
  count: number;
  /** Offset of its first byte in the page. */
  pageOff: number;
}

/** The region being compiled and the page offset of the member being emitted. */
interface RegionCtx { byOff: Map<number, RegionMember>; pageOff: number }

/** Code for a transfer to the member at `m` (a direct branch to its first byte), or to the dispatcher. */
function directExit(rg: RegionCtx | null, target: number, k: number, exc: string): string {
  const m = rg?.byOff.get(rg.pageOff + target);
  const canon = `if (t < -140737488355328 || t >= 140737488355328) { c.excVec = 13; c.excCode = 0; ${exc} }`;
  if (m === undefined) return `{ const t = c.ripBase + ${target}; ${canon} c.rip = t; return ${k}; }`;
  // Same page as a canonical RIP: canonical. The generation check stops at the first
  // transfer after any code invalidation (a member may have been dropped).
  return `{ const t = c.ripBase + ${target}; if (c.gen === g0 && c.codeGen === k0 && ++it < ${REGION_TRANSFERS}) {
    c.instret += ${k + 1}; c.ripBase = t; c.rgnBlk = ${m.blk}; F = ${m.first << LOG_STRIDE}; continue outer; } c.rip = t; return ${k}; }`;
}
/** Code after an indirect transfer (RIP already in c.rip): into the region if the target is a member's first byte. */
function indirectExit(rg: RegionCtx | null, k: number): string {
  if (rg === null) return `return ${k};`;
  return `if (c.gen === g0 && c.codeGen === k0 && ++it < ${REGION_TRANSFERS}) { io = c.rip - (c.ripBase - ${rg.pageOff}); if (io >= 0 && io < 4096) { xr = ${k}; F = -1; continue outer; } } return ${k};`;
}

/** Compile a decoded block; returns null when nothing in it benefits. */
export function compileBlock(D: Int32Array, first: number, count: number, mode: number): BlockFn | null {
  const e = emitBlock(D, first, count, mode, null);
  if (e.inline === 0) return null;
  const body = e.dispatch ? `let pc = 0, it = 0; for (;;) { switch (pc) {\n${e.code}\n} }` : e.code;
  return make(`let fa = 0, fah = 0, fb = 0, fbh = 0, fr = 0, frh = 0, fc = 0;\n${body}`);
}

/**
 * Compile the members of a region (64-bit code, one physical page, no member crossing into
 * the next page) into one function: a switch on the entry record inside a loop. A direct or
 * indirect branch to a member's first byte continues there, up to REGION_TRANSFERS times per
 * call; the member running is in `c.rgnBlk`, and return values are relative to it.
 */
export function compileRegion(D: Int32Array, candidates: readonly RegionMember[]): { fn: BlockFn; members: RegionMember[] } {
  // The first candidates whose code fits MAX_REGION_SOURCE (sized with every candidate a
  // possible target: transfers and exits are about the same length).
  const all = new Map<number, RegionMember>();
  for (const m of candidates) all.set(m.pageOff, m);
  const members: RegionMember[] = [];
  let size = 0;
  for (const m of candidates) {
    size += emitBlock(D, m.first, m.count, 2, { byOff: all, pageOff: m.pageOff }).code.length + 200;
    if (size > MAX_REGION_SOURCE && members.length > 0) break;
    members.push(m);
  }
  const byOff = new Map<number, RegionMember>();
  for (const m of members) byOff.set(m.pageOff, m);
  const out: string[] = [];
  for (const m of members) {
    const e = emitBlock(D, m.first, m.count, 2, { byOff, pageOff: m.pageOff });
    const body = e.dispatch ? `let pc = 0; for (;;) { switch (pc) {\n${e.code}\n} }` : e.code;
    out.push(`case ${m.first << LOG_STRIDE}: {\n${body}\n}`);
  }
  const ind = members.map((m) => `case ${m.pageOff}: c.instret += xr + 1; c.ripBase = c.rip; c.rgnBlk = ${m.blk}; F = ${m.first << LOG_STRIDE}; continue outer;`);
  out.push(`default: switch (io) {\n${ind.join('\n')}\n} return xr;`);
  const fn = make(`let fa = 0, fah = 0, fb = 0, fbh = 0, fr = 0, frh = 0, fc = 0, it = 0, io = 0, xr = 0; const g0 = c.gen, k0 = c.codeGen;
    outer: for (;;) { switch (F) {\n${out.join('\n')}\n} }`);
  return { fn, members };
}

/** The function for a source, shared when the same source was compiled before (see `compiled`). */
function make(src: string): BlockFn {
  let fn = compiled.get(src);
  if (fn === undefined) {
    if (compiled.size >= MAX_SHARED_FNS) compiled.clear();
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the compiling tier of ADR 0007; source holds only integers from decoded records
    fn = new Function('c', 'R', 'F', src) as BlockFn;
    compiled.set(src, fn);
  }
  return fn;
}

/**
 * The code of one block: its instructions in order, with a case label at each instruction an
 * internal branch targets (`dispatch`: the caller wraps it in a switch on `pc` inside a loop).
 * Ends with `return DONE`.
 */
function emitBlock(D: Int32Array, first: number, count: number, mode: number, rg: RegionCtx | null): { code: string; inline: number; dispatch: boolean } {
  const out: string[] = [];
  const f = new FlagState();
  recBase = first << LOG_STRIDE;
  let inline = 0;
  // Branches to an instruction of the same block (a loop back to its head, a skip forward)
  // stay inside the compiled function: its body is a switch on the instruction index inside a
  // loop, with a case label at each such target.
  const offToIdx = new Map<number, number>();
  for (let k = 0; k < count; k++) offToIdx.set(D[((first + k) << LOG_STRIDE) + F_IOFF]!, k);
  const targets = new Set<number>();
  const internal = (k: number): number => {
    const i = (first + k) << LOG_STRIDE;
    const op = D[i + F_OP]!;
    if (mode !== 2 || (op !== OP_JCC && op !== OP_JMP_REL) || (D[i + F_FL]! & 3) !== 3) return -1;
    return offToIdx.get(D[i + F_IOFF]! + D[i + F_LEN]! + D[i + F_IMM]!) ?? -1;
  };
  // A JMP to the next record is a jump the decoder followed (cpu.ts #decodeBlock): it falls through.
  const followed = (k: number): boolean => D[((first + k) << LOG_STRIDE) + F_OP] === OP_JMP_REL && internal(k) === k + 1;
  for (let k = 0; k < count; k++) { const j = internal(k); if (j >= 0 && !followed(k)) targets.add(j); }
  const dispatch = targets.size > 0;
  // Flag-setting instructions whose lazy record nothing can read from the processor: the next
  // full flag writer comes before any instruction that can leave the block or read the
  // processor's flags, and before any branch target. Their record stays in locals only.
  // ADC/SBB producers always write through (conditions after them read the processor's copy).
  const deadFlags = new Uint8Array(count);
  if (mode === 2) {
    // Rotates by a constant first: they keep SF/ZF/AF/PF, so with live flags they make the
    // processor's copy whole first (c.materialize()); with dead ones they are only a result,
    // and what comes before them sees through them (below).
    for (let k = 0; k < count; k++) {
      if (!isRotateImm(D, (first + k) << LOG_STRIDE)) continue;
      for (let m = k + 1; m < count; m++) {
        if (targets.has(m)) break;
        const j = (first + m) << LOG_STRIDE;
        const c = flagClass(D, j);
        if (c === FLAG_BARRIER || readsFlags(D, j)) break;
        if (c === FLAG_FULL) { deadFlags[k] = 1; break; }
      }
    }
    for (let k = 0; k < count; k++) {
      const i = (first + k) << LOG_STRIDE;
      if (flagClass(D, i) !== FLAG_FULL) continue;
      const op = D[i + F_OP]!;
      if ((op === OP_ALU_RM_R || op === OP_ALU_RM_I || op === OP_ALU_R_RM) && (D[i + F_SUB] === 2 || D[i + F_SUB] === 3)) continue;
      // IMUL and shifts set EFLAGS directly and leave no record in locals: what follows them
      // must not read the flags at all (SETcc/CMOVcc, ADC/SBB and INC/DEC, which keep CF, would
      // read the processor's copy).
      const direct = op === OP_IMUL_R_RM || op === OP_IMUL_R_RM_I || op === OP_SHIFT;
      for (let m = k + 1; m < count; m++) {
        if (targets.has(m)) break;
        const j = (first + m) << LOG_STRIDE;
        const c = flagClass(D, j);
        if (c === FLAG_BARRIER && !(deadFlags[m] === 1 && isRotateImm(D, j))) break;
        if (direct && readsFlags(D, j)) break;
        if (c === FLAG_FULL) { deadFlags[k] = 1; break; }
      }
    }
  }
  for (let k = 0; k < count; k++) {
    const i = (first + k) << LOG_STRIDE;
    const op = D[i + F_OP]!, fl = D[i + F_FL]!, sz = fl & 3, mem = (fl & FL_MEM) !== 0;
    const exc = `return ${-(k + 1)};`;
    const next = D[i + F_IOFF]! + D[i + F_LEN]!;
    const memCheck = `if (c.excVec !== -1) ${exc}`;
    const brkCheck = `if (c.brk !== 0) { c.brk = 0; c.rip = c.wrapIp(c.ripBase + ${next}); return ${k}; }`;
    const reg = D[i + F_REG]!, rm = D[i + F_RM]!;
    if (dispatch && (k === 0 || targets.has(k))) { out.push(`case ${k}:`); f.forget(); }
    f.through = deadFlags[k] === 0;
    let code: string | null = null;
    switch (op) {
      case OP_NOP: code = ''; break;
      case OP_MOV_RM_I:
        if (!mem) { code = wrReg(rm, sz, String(D[i + F_IMM]!), String(D[i + F_IMMHI]!)); break; }
        code = `{ ${eaCode(D, i, mode, exc)} const v = ${D[i + F_IMM]!}, vh = ${D[i + F_IMMHI]!}; ${store(sz, 'v', 'vh', exc, brkCheck)} }`;
        break;
      case OP_MOV_R_I:
        code = wrReg(reg, sz, String(D[i + F_IMM]!), String(D[i + F_IMMHI]!));
        break;
      case OP_MOV_R_RM:
        code = mem ? `{ ${eaCode(D, i, mode, exc)} ${load(sz, 'v', 'vh', exc)} ${wrReg(reg, sz, 'v', 'vh')} }`
          : `{ ${rdReg(rm, sz, 'v', 'vh')} ${wrReg(reg, sz, 'v', 'vh')} }`;
        break;
      case OP_MOV_RM_R:
        code = mem ? `{ ${eaCode(D, i, mode, exc)} ${rdReg(reg, sz, 'v', 'vh')} ${store(sz, 'v', 'vh', exc, brkCheck)} }`
          : `{ ${rdReg(reg, sz, 'v', 'vh')} ${wrReg(rm, sz, 'v', 'vh')} }`;
        break;
      case OP_MOVZX: case OP_MOVSX: {
        if (sz < 1) break;
        const ssz = D[i + F_SUB]!;
        const ext = op === OP_MOVZX ? 'const r = v, rh = 0;'
          : ssz === 0 ? 'const r = (v << 24) >> 24, rh = r >> 31;' : ssz === 1 ? 'const r = (v << 16) >> 16, rh = r >> 31;' : 'const r = v | 0, rh = r >> 31;';
        const src = mem ? `${eaCode(D, i, mode, exc)} ${load(ssz, 'v', 'vh', exc)}` : rdReg(rm, ssz === 2 ? 2 : ssz, 'v', 'vh');
        code = `{ ${src} ${ext} ${wrReg(reg, sz, 'r', 'rh')} }`;
        break;
      }
      case OP_SETCC:
        if (mem) break;
        code = wrReg(rm, 0, `${f.cond(D[i + F_SUB]!)} ? 1 : 0`, '0');
        break;
      case OP_CMOVCC: {
        if (sz < 2) break;
        const src = mem ? `${eaCode(D, i, mode, exc)} ${load(sz, 'v', 'vh', exc)}` : rdReg(rm, sz, 'v', 'vh');
        code = `{ ${src} if (${f.cond(D[i + F_SUB]!)}) { ${wrReg(reg, sz, 'v', 'vh')} } ${sz === 2 ? `else R[${reg * 2 + 1}] = 0;` : ''} }`;
        break;
      }
      case OP_LEA: {
        if (mode !== 2 || sz < 2) break;
        if (((fl & FL_ASZ_MASK) >> FL_ASZ_SHIFT) !== 3) break;
        if ((fl & FL_RIPREL) !== 0) {
          code = `{ const t = c.ripBase + ${next + D[i + F_DISP]!}; ${wrReg(reg, sz, '(t >>> 0) | 0', 'Math.floor(t / 4294967296) | 0')} }`;
          break;
        }
        const b = D[i + F_BASE]!, x = D[i + F_INDEX]!, sc = 1 << D[i + F_SCALE]!;
        const lo: string[] = [String(D[i + F_DISP]!)], hi: string[] = ['0'];
        if (b >= 0) { lo.push(`(R[${b * 2}] >>> 0)`); hi.push(`R[${b * 2 + 1}]`); }
        if (x >= 0) { lo.push(`(R[${x * 2}] >>> 0) * ${sc}`); hi.push(`R[${x * 2 + 1}] * ${sc}`); }
        code = sz === 2 ? `R[${reg * 2}] = (${lo.join(' + ')}) | 0; R[${reg * 2 + 1}] = 0;`
          : `{ const sl = ${lo.join(' + ')}; ${wrReg(reg, sz, 'sl | 0', `(${hi.join(' + ')} + Math.floor(sl / 4294967296)) | 0`)} }`;
        break;
      }
      case OP_CALL_REL: {
        if (mode !== 2 || sz !== 3) break;
        const target = next + D[i + F_IMM]!;
        code = `{ const ret = c.ripBase + ${next}; const rl = (ret >>> 0) | 0, rh = Math.floor(ret / 4294967296) | 0; ${push64('rl', 'rh', exc)}
          ${directExit(rg, target, k, exc)} }`;
        break;
      }
      case OP_JMP_RM: case OP_CALL_RM: {
        if (mode !== 2 || sz !== 3) break;
        const src = mem ? `${eaCode(D, i, mode, exc)} ${load(3, 'v', 'vh', exc)}` : rdReg(rm, 3, 'v', 'vh');
        const call = op === OP_CALL_RM
          ? `{ const ret = c.ripBase + ${next}; const rl = (ret >>> 0) | 0, rh = Math.floor(ret / 4294967296) | 0; ${push64('rl', 'rh', exc)} }` : '';
        code = `{ ${src} if (((vh << 16) >> 16) !== vh) { c.excVec = 13; c.excCode = 0; ${exc} } ${call}
          c.rip = vh * 4294967296 + (v >>> 0); ${indirectExit(rg, k)} }`;
        break;
      }
      case OP_ALU_RM_R: case OP_ALU_RM_I: case OP_ALU_R_RM: {
        const kind = D[i + F_SUB]!;
        if (mem && op !== OP_ALU_R_RM) {
          // Read-modify-write (or CMP) on memory.
          const src = op === OP_ALU_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};` : rdReg(reg, sz, 'b', 'bh');
          const alu = aluCode(f, kind, sz);
          code = kind === 7 ? `{ ${src} ${eaCode(D, i, mode, exc)} ${load(sz, 'a', 'ah', exc)} ${alu} }`
            : `{ ${src} ${eaCode(D, i, mode, exc)} ${rmw(sz, alu, exc, brkCheck)} }`;
          break;
        }
        const dst = op === OP_ALU_R_RM ? reg : rm;
        const src = op === OP_ALU_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};`
          : op === OP_ALU_RM_R ? rdReg(reg, sz, 'b', 'bh')
          : mem ? `${eaCode(D, i, mode, exc)} ${load(sz, 'b', 'bh', exc)}`
          : rdReg(rm, sz, 'b', 'bh');
        // XOR/SUB of a register with itself: the result is 0 whatever the register held.
        const alu = aluCode(f, kind, sz);
        code = `{ ${src} ${rdReg(dst, sz, 'a', 'ah')} ${alu} ${kind === 7 ? '' : wrReg(dst, sz, 'r', 'rh')} }`;
        break;
      }
      case OP_TEST_RM_R: case OP_TEST_RM_I: {
        const src = op === OP_TEST_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};` : rdReg(reg, sz, 'b', 'bh');
        const dst = mem ? `${eaCode(D, i, mode, exc)} ${load(sz, 'a', 'ah', exc)}` : rdReg(rm, sz, 'a', 'ah');
        code = `{ ${src} ${dst} ${aluCode(f, 4, sz)} }`;
        break;
      }
      case OP_INC_RM: case OP_DEC_RM:
        if (mem) {
          const body = incDecCode(f, sz, op === OP_DEC_RM);
          code = `{ ${eaCode(D, i, mode, exc)} ${rmw(sz, body, exc, brkCheck)} }`;
          break;
        }
        code = `{ ${rdReg(rm, sz, 'a', 'ah')} ${incDecCode(f, sz, op === OP_DEC_RM)} ${wrReg(rm, sz, 'r', 'rh')} }`;
        break;
      case OP_NEG_RM: case OP_NOT_RM: {
        if (mem) break;
        if (op === OP_NOT_RM) { code = `{ ${rdReg(rm, sz, 'v', 'vh')} ${wrReg(rm, sz, '~v', '~vh')} }`; break; }
        code = `{ ${rdReg(rm, sz, 'b', 'bh')} const a = 0, ah = 0; ${aluCode(f, 5, sz)} ${wrReg(rm, sz, 'r', 'rh')} }`;
        break;
      }
      case OP_SHIFT: {
        const src = D[i + F_IMM2]!;
        if (mem || src === 1) break;
        const cnt = (src === 0 ? 1 : D[i + F_IMM]! & 0xff) & (sz === 3 ? 0x3f : 0x1f);
        code = shiftCode(f, D[i + F_SUB]!, sz, rm, cnt, deadFlags[k] === 1);
        break;
      }
      case OP_IMUL_R_RM: case OP_IMUL_R_RM_I: {
        if (sz < 2) break;
        const a = mem ? `${eaCode(D, i, mode, exc)} ${load(sz, 'a', 'ah', exc)}` : rdReg(rm, sz, 'a', 'ah');
        const b = op === OP_IMUL_R_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};` : rdReg(reg, sz, 'b', 'bh');
        f.forget();
        // Flags nothing reads (see deadFlags): only the product.
        const flags = (r: string, rh: string | null, of: string): string => deadFlags[k] === 1 ? '' : resultFlags(r, rh, of, of);
        code = sz === 2
          // The product fits in 32 bits exactly when the double product (exact below 2^53, else >= 2^31 in magnitude) equals it.
          ? `{ ${a} ${b} const p = Math.imul(a, b); const of = (a * b) !== p ? 1 : 0; ${flags('p', null, 'of')} R[${reg * 2}] = p; R[${reg * 2 + 1}] = 0; }`
          // 64-bit: factors that fit in 32 signed bits whose double product is exact (below
          // 2^53 in magnitude, so no overflow) inline; the rest through the processor.
          : `{ ${a} ${b} let lo = 0, hi = 0; const p = a * b;
            if (ah === (a >> 31) && bh === (b >> 31) && p <= 9007199254740991 && p >= -9007199254740991) {
              lo = p | 0; hi = Math.floor(p / 4294967296) | 0; ${flags('lo', 'hi', '0')}
            } else if (ah === 0 && bh === 0) {
              // Factors below 2^32 (multi-precision code: the kernel's RSA checks of module
              // signatures): the exact product from two partial products below 2^48; it
              // overflows a signed 64-bit result exactly when bit 63 is set.
              const A = a >>> 0; ${mulU32('A', 'b', 'pl', 'ph')}
              lo = pl | 0; hi = ph | 0;
              const of = hi >>> 31; ${flags('lo', 'hi', 'of')}
            } else { c.imulTrunc(3, a, ah, b, bh); lo = c.t0; hi = c.t1; }
            R[${reg * 2}] = lo; R[${reg * 2 + 1}] = hi; }`;
        break;
      }
      case OP_MUL_RM: {
        // MUL r/m64: RDX:RAX = RAX * src, unsigned (lib/mpi's umul_ppmm). Four 32 x 32-bit
        // partial products, each from two 32 x 16-bit ones below 2^48 (exact), summed in
        // 32-bit digits with carries. Flags as cpu.ts #mul1: CF = OF = (RDX != 0), SF/ZF/PF
        // from RAX.
        if (sz !== 3) break;
        const b = mem ? `${eaCode(D, i, mode, exc)} ${load(3, 'b', 'bh', exc)}` : rdReg(rm, 3, 'b', 'bh');
        f.forget();
        code = `{ ${b} const al = R[0] >>> 0, ah = R[1] >>> 0, bl = b >>> 0, bhu = bh >>> 0;
          ${mulU32('al', 'bl', 'p0', 'q0')} ${mulU32('al', 'bhu', 'p1', 'q1')} ${mulU32('ah', 'bl', 'p2', 'q2')} ${mulU32('ah', 'bhu', 'p3', 'q3')}
          let s = q0 + p1 + p2; const r1 = s | 0; s = Math.floor(s / 4294967296) + q1 + q2 + p3; const r2 = s | 0; const r3 = (Math.floor(s / 4294967296) + q3) | 0;
          const r0 = p0 | 0, of = (r2 | r3) !== 0 ? 1 : 0; R[0] = r0; R[1] = r1; R[4] = r2; R[5] = r3; ${resultFlags('r0', 'r1', 'of', 'of')} }`;
        break;
      }
      case OP_CBW:
        code = sz === 2 ? 'R[0] = (R[0] << 16) >> 16; R[1] = 0;' : sz === 3 ? 'R[1] = R[0] >> 31;' : null;
        break;
      case OP_CWD:
        code = sz === 2 ? 'R[4] = R[0] >> 31; R[5] = 0;' : sz === 3 ? 'R[4] = R[1] >> 31; R[5] = R[1] >> 31;' : null;
        break;
      case OP_XCHG_RM_R: case OP_XCHG_AX: {
        if (mem || sz < 2) break;
        const o = op === OP_XCHG_AX ? 0 : rm;
        code = `{ ${rdReg(o, sz, 'a', 'ah')} ${rdReg(reg, sz, 'b', 'bh')} ${wrReg(o, sz, 'b', 'bh')} ${wrReg(reg, sz, 'a', 'ah')} }`;
        break;
      }
      case OP_BSWAP: {
        if (sz < 2) break;
        const bs = (x: string): string => `(((${x}) >>> 24) | (((${x}) >> 8) & 0xff00) | (((${x}) << 8) & 0xff0000) | ((${x}) << 24))`;
        code = sz === 3 ? `{ const l = R[${reg * 2}], h = R[${reg * 2 + 1}]; R[${reg * 2}] = ${bs('h')}; R[${reg * 2 + 1}] = ${bs('l')}; }`
          : `R[${reg * 2}] = ${bs(`R[${reg * 2}]`)}; R[${reg * 2 + 1}] = 0;`;
        break;
      }
      case OP_JCC: case OP_JMP_REL: {
        if (mode !== 2) break;
        if (followed(k)) { code = ''; break; }
        const target = next + D[i + F_IMM]!;
        const j = internal(k);
        // An internal jump from k to j: the caller counts instructions by position (r + 1 at
        // the final return), so the jump adds what position counting misses (k + 1 - j,
        // negative for a forward skip). Backward jumps are bounded by LOOP_ITERATIONS.
        const jump = j < 0
          ? directExit(rg, target, k, exc)
          : j > k ? `{ c.instret += ${k + 1 - j}; pc = ${j}; continue; }`
          : `{ if (++it < ${LOOP_ITERATIONS}) { c.instret += ${k + 1 - j}; pc = ${j}; continue; } c.rip = c.ripBase + ${target}; return ${k}; }`;
        // Not taken: on with the next instruction (a conditional branch does not end a block).
        code = op === OP_JMP_REL ? jump : `if (${f.cond(D[i + F_SUB]!)}) ${jump}`;
        break;
      }
      case OP_PUSH_R:
        if (sz !== 3) break;
        code = mode === 2 ? `{ const v = R[${reg * 2}], vh = R[${reg * 2 + 1}]; ${push64('v', 'vh', exc)} ${brkCheck} }`
          : `if (!c.push(3, R[${reg * 2}], R[${reg * 2 + 1}])) ${exc} ${brkCheck}`;
        break;
      case OP_PUSH_I:
        if (sz !== 3 || mode !== 2) break;
        code = `{ ${push64(String(D[i + F_IMM]!), String(D[i + F_IMMHI]!), exc)} ${brkCheck} }`;
        break;
      case OP_POP_R:
        if (sz !== 3) break;
        code = mode === 2 ? `{ ${pop64(exc)} R[${reg * 2}] = v; R[${reg * 2 + 1}] = vh; }`
          : `{ const v = c.pop(3); ${memCheck} R[${reg * 2}] = v; R[${reg * 2 + 1}] = c.vhi; }`;
        break;
      case OP_RET:
        if (mode !== 2 || sz !== 3 || D[i + F_IMM]! !== 0) break;
        // The target is checked before RSP moves, so a #GP leaves the stack as it was.
        code = `{ ${pop64(exc, `if (((vh << 16) >> 16) !== vh) { c.excVec = 13; c.excCode = 0; ${exc} }`)}
          c.rip = vh * 4294967296 + (v >>> 0); ${indirectExit(rg, k)} }`;
        break;
      case OP_SSE: {
        f.forget();   // COMISS/UCOMISD set the flags
        const slow = `{ const st = c.sse(${recRef(i)}); if (st !== 0) return st === 2 ? ${-(k + 1)} : ${k}; ${brkCheck} }`;
        code = sseCode(D, i, mode, exc, brkCheck, slow) ?? slow;
        break;
      }
      default: break;
    }
    if (code === null) {
      f.forget();
      code = `{ const st = c.step(${recRef(i)}); if (st !== 0) return st === 2 ? ${-(k + 1)} : ${k}; ${brkCheck} }`;
    } else inline++;
    out.push(`{ ${code} }`);
  }
  out.push(`return ${DONE};`);
  return { code: out.join('\n'), inline, dispatch };
}
