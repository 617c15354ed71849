/**
 * SSE/SSE2 for the emulated processor: the XMM register file, MXCSR, the 0F-map SSE/SSE2
 * instructions (integer, moves, shuffles, packed and scalar float), LDMXCSR/STMXCSR,
 * FXSAVE/FXRSTOR (64-bit layout, SDM vol. 1 table 10-2) and EMMS. Decoded as OP_SSE with
 * F_SUB = opcode byte | mandatory prefix << 8 (0 none, 1 66, 2 F3, 3 F2), F_REG = xmm (or GPR)
 * from ModRM.reg, F_RM = ModRM.rm register, F_IMM = imm8 where the opcode has one.
 *
 * Register file: `XmmFile.x` is one Int32Array of 18 x 4 lanes (XMM0-15, then slot 16 holding
 * a loaded memory operand and slot 17 scratch); byte/word/float views share its buffer, so the
 * host must be little-endian (x86-64 and arm64 hosts are).
 *
 * Faults (SDM vol. 3A 2.5 and 13.1, and each instruction's exception table in vol. 2): CR0.EM or
 * CR4.OSFXSR clear -> #UD (FXSAVE/FXRSTOR: EM only), CR0.TS -> #NM;
 * misaligned 128-bit memory operands of the aligned forms (everything but MOVUPS/MOVUPD/
 * MOVDQU and scalar/64-bit accesses) and of FXSAVE/FXRSTOR -> #GP(0); MXCSR bits outside
 * MXCSR_MASK -> #GP(0).
 *
 * Known deviations (docs/adr/0007-emu-design.md):
 * - Floating-point exception flags in MXCSR are never set and unmasked exceptions (#XM) are
 *   never raised; DAZ is not supported (MXCSR_MASK 0xFFBF), FTZ is ignored.
 * - Arithmetic always rounds to nearest even (JavaScript doubles); MXCSR.RC is honoured only by
 *   float->integer conversions (CVTSD2SI, CVTPS2DQ, ...). CVTSI2SS from a 64-bit integer wider
 *   than 53 bits may round twice.
 * - NaN results follow the SDM rule for SSE (first source NaN, quieted; else the second; else
 *   the default QNaN 0xFFF8...). MMX forms (no prefix on 0F 6x/Dx-Fx) are #UD: MMX is not
 *   advertised.
 *
 * DEVNOTE: no allocation on these paths; memory operands go through the processor's TLB
 * helpers; every handler checks `excVec` before committing architectural state.
 */
import { type FpCpu, roundRc } from './fpregs.js';
import { F_FL, F_IMM, F_REG, F_RM, F_SUB, FL_MEM } from './ops.js';

const ST_NEXT = 0, ST_EXC = 2;
const UD = 6, NM = 7, GP = 13;
const CR0_EM = 4, CR0_TS = 8, CR4_OSFXSR = 0x200;
const CF = 1, PF = 4, ZF = 0x40;
/** Bits of MXCSR that may be set (no DAZ). */
export const MXCSR_MASK = 0xffbf;
const TWO32 = 4294967296;
const MEM = 16;   // register slot used for a loaded memory operand
const TMP = 17;

// Scratch for float bit manipulation.
const SCR = new Float64Array(1);
const SCR_I = new Int32Array(SCR.buffer);
const SCR_F = new Float32Array(SCR.buffer);

/** Check the SSE enable bits; false with the fault set. */
function enabled(c: FpCpu): boolean {
  if ((c.cr0 & CR0_EM) !== 0 || (c.cr4 & CR4_OSFXSR) === 0) { c.excVec = UD; c.excCode = -1; return false; }
  if ((c.cr0 & CR0_TS) !== 0) { c.excVec = NM; c.excCode = -1; return false; }
  return true;
}

function gp(c: FpCpu): number { c.excVec = GP; c.excCode = 0; return ST_EXC; }
function ud(c: FpCpu): number { c.excVec = UD; c.excCode = -1; return ST_EXC; }

/** Load `n` (4, 8, 16) bytes of the memory operand of record i into slot MEM; returns false on a fault. */
function loadMem(c: FpCpu, i: number, n: number, aligned: boolean): boolean {
  const lin = c.ea(i);
  if (c.excVec !== -1) return false;
  if (aligned && n === 16 && (lin % 16) !== 0) { c.excVec = GP; c.excCode = 0; return false; }
  const X = c.xmm.x;
  if (n === 4) { X[64] = c.rd32(lin); X[65] = 0; X[66] = 0; X[67] = 0; return c.excVec === -1; }
  const lo = c.rd64(lin), hi = c.vhi;
  if (c.excVec !== -1) return false;
  X[64] = lo; X[65] = hi;
  if (n === 16) {
    const lo2 = c.rd64(lin + 8), hi2 = c.vhi;
    if (c.excVec !== -1) return false;
    X[66] = lo2; X[67] = hi2;
  } else { X[66] = 0; X[67] = 0; }
  return true;
}

/** Store n bytes of register slot r to the memory operand of record i. */
function storeMem(c: FpCpu, i: number, r: number, n: number, aligned: boolean): number {
  const lin = c.ea(i);
  if (c.excVec !== -1) return ST_EXC;
  if (aligned && n === 16 && (lin % 16) !== 0) return gp(c);
  const X = c.xmm.x, k = r * 4;
  if (n === 4) { c.wr32(lin, X[k]!); return c.excVec !== -1 ? ST_EXC : ST_NEXT; }
  if (n === 16 && !c.probeW(lin, 4)) return ST_EXC;
  c.wr64(lin, X[k]!, X[k + 1]!);
  if (n === 16 && c.excVec === -1) c.wr64(lin + 8, X[k + 2]!, X[k + 3]!);
  return c.excVec !== -1 ? ST_EXC : ST_NEXT;
}

/** Source operand slot for record i: a register, or MEM after loading n bytes. -1 on a fault. */
function src(c: FpCpu, i: number, n: number, aligned = true): number {
  if ((c.D[i + F_FL]! & FL_MEM) === 0) return c.D[i + F_RM]!;
  return loadMem(c, i, n, aligned) ? MEM : -1;
}

/** The same for single precision, on bit patterns (Float32Array would not keep payloads through a number). */
function nan32Bits(a: number, b: number, rBits: number): number {
  if ((a & 0x7f800000) === 0x7f800000 && (a & 0x7fffff) !== 0) return a | 0x400000;
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return b | 0x400000;
  if ((rBits & 0x7f800000) === 0x7f800000 && (rBits & 0x7fffff) !== 0) return 0xffc00000 | 0;
  return rBits;
}

function fop(k: number, a: number, b: number): number {
  switch (k) {
    case 0x58: return a + b;
    case 0x59: return a * b;
    case 0x5c: return a - b;
    case 0x5d: return a < b ? a : b;   // MIN: the second operand when unordered or both zero
    case 0x5e: return a / b;
    default: return a > b ? a : b;     // 0x5f MAX
  }
}

/** Compare predicate of CMPPS/CMPSD (imm8 0-7). */
function cmpPred(p: number, a: number, b: number): boolean {
  const un = a !== a || b !== b;
  switch (p & 7) {
    case 0: return a === b;
    case 1: return a < b;
    case 2: return a <= b;
    case 3: return un;
    case 4: return !(a === b);
    case 5: return !(a < b);
    case 6: return !(a <= b);
    default: return !un;
  }
}

/** Double -> int32 per rounding control; out of range or NaN -> 0x80000000. */
function cvtI32(v: number, rc: number): number {
  if (v !== v) return 0x80000000 | 0;
  const r = roundRc(v, rc);
  return r >= -2147483648 && r <= 2147483647 ? r | 0 : 0x80000000 | 0;
}

/** Double -> int64 per rounding control: low half returned, high half in c.t1; indefinite on overflow. */
function cvtI64(c: FpCpu, v: number, rc: number): number {
  if (v !== v) { c.t1 = 0x80000000 | 0; return 0; }
  const r = roundRc(v, rc);
  if (!(r >= -9223372036854775808 && r < 9223372036854775808)) { c.t1 = 0x80000000 | 0; return 0; }
  const hi = Math.floor(r / TWO32);
  c.t1 = hi | 0;
  return (r - hi * TWO32) | 0;
}

function satS8(v: number): number { return v > 127 ? 127 : v < -128 ? -128 : v; }
function satU8(v: number): number { return v > 255 ? 255 : v < 0 ? 0 : v; }
function satS16(v: number): number { return v > 32767 ? 32767 : v < -32768 ? -32768 : v; }
function satU16(v: number): number { return v > 65535 ? 65535 : v < 0 ? 0 : v; }

/** Execute OP_SSE record i. */
export function sseStep(c: FpCpu, i: number): number {
  const D = c.D;
  const sub = D[i + F_SUB]!;
  const op = sub & 0xff, pfx = sub >> 8;
  const fl = D[i + F_FL]!;
  const mem = (fl & FL_MEM) !== 0;
  const w = (fl & 3) === 3;
  const d = D[i + F_REG]!;
  const xf = c.xmm;
  const X = xf.x;
  if (op === 0xae) return grp15(c, i);
  if (op === 0x77) {
    // EMMS: x87 tag word all empty.
    if ((c.cr0 & CR0_EM) !== 0) return ud(c);
    if ((c.cr0 & CR0_TS) !== 0) { c.excVec = NM; c.excCode = -1; return ST_EXC; }
    if (pfx !== 0) return ud(c);
    c.fpu.tags = 0;
    return ST_NEXT;
  }
  if (op === 0xc3) {
    // MOVNTI m32/64, r32/64
    if (pfx !== 0 || !mem) return ud(c);
    const v = c.getR(d, w ? 3 : 2), hi = c.vhi;
    const lin = c.ea(i);
    if (c.excVec !== -1) return ST_EXC;
    if (w) c.wr64(lin, v, hi); else c.wr32(lin, v);
    return c.excVec !== -1 ? ST_EXC : ST_NEXT;
  }
  if (!enabled(c)) return ST_EXC;
  const dk = d * 4;
  // Packed-integer SSE2 ops need the 66 prefix (no prefix = MMX, not implemented).
  if (op >= 0x60 && op !== 0x6e && op !== 0x6f && op !== 0x70 && op !== 0x7e && op !== 0x7f && op < 0x80 && op !== 0x77) {
    if (pfx !== 1) return ud(c);
    if (op >= 0x71 && op <= 0x73) return shiftImm(c, i);
    const s = src(c, i, 16);
    if (s < 0) return ST_EXC;
    return intOp(c, op, d, s);
  }
  if (op >= 0xd0) {
    if (op === 0xd6) {
      // MOVQ xmm/m64, xmm (66)
      if (pfx !== 1) return ud(c);
      if (mem) return storeMem(c, i, d, 8, false);
      const r = D[i + F_RM]! * 4;
      X[r] = X[dk]!; X[r + 1] = X[dk + 1]!; X[r + 2] = 0; X[r + 3] = 0;
      return ST_NEXT;
    }
    if (op === 0xd7) {
      // PMOVMSKB r32, xmm
      if (pfx !== 1 || mem) return ud(c);
      const s = D[i + F_RM]! * 16, B = xf.u8;
      let m = 0;
      for (let k = 15; k >= 0; k--) m = (m << 1) | (B[s + k]! >> 7);
      c.setR(d, 2, m, 0);
      return ST_NEXT;
    }
    if (op === 0xe6) {
      if (pfx === 0) return ud(c);
      const s = src(c, i, pfx === 2 ? 8 : 16);
      if (s < 0) return ST_EXC;
      const F = xf.f64, sk = s * 4;
      if (pfx === 2) {
        // CVTDQ2PD
        const a = X[sk]!, b = X[sk + 1]!;
        F[d * 2] = a; F[d * 2 + 1] = b;
      } else {
        // CVTTPD2DQ (66) / CVTPD2DQ (F2)
        const rc = pfx === 1 ? 3 : (xf.mxcsr >> 13) & 3;
        const a = cvtI32(F[s * 2]!, rc), b = cvtI32(F[s * 2 + 1]!, rc);
        X[dk] = a; X[dk + 1] = b; X[dk + 2] = 0; X[dk + 3] = 0;
      }
      return ST_NEXT;
    }
    if (op === 0xe7) {
      // MOVNTDQ m128, xmm
      if (pfx !== 1 || !mem) return ud(c);
      return storeMem(c, i, d, 16, true);
    }
    if (op === 0xf7) {
      // MASKMOVDQU xmm, xmm: byte stores to [rDI] where the mask byte's top bit is set.
      if (pfx !== 1 || mem) return ud(c);
      return maskmov(c, i, d, D[i + F_RM]!);
    }
    if (pfx !== 1 || op === 0xd0 || op === 0xf0 || op === 0xff) return ud(c);
    const s = src(c, i, 16);
    if (s < 0) return ST_EXC;
    return intOp(c, op, d, s);
  }
  switch (op) {
    case 0x10: case 0x11: {
      // MOVUPS/MOVUPD/MOVSS/MOVSD
      const n = pfx === 2 ? 4 : pfx === 3 ? 8 : 16;
      if (op === 0x11) {
        if (mem) return storeMem(c, i, d, n, false);
        const r = D[i + F_RM]! * 4;
        for (let k = 0; k < n / 4; k++) X[r + k] = X[dk + k]!;
        return ST_NEXT;
      }
      if (mem) {
        if (!loadMem(c, i, n, false)) return ST_EXC;
        for (let k = 0; k < 4; k++) X[dk + k] = X[64 + k]!;  // scalar loads zero the rest (loadMem did)
        return ST_NEXT;
      }
      const r = D[i + F_RM]! * 4;
      for (let k = 0; k < n / 4; k++) X[dk + k] = X[r + k]!;
      return ST_NEXT;
    }
    case 0x12: case 0x16: {
      // MOVLPS/MOVLPD m64 (low), MOVHLPS; MOVHPS/MOVHPD m64 (high), MOVLHPS
      if (pfx >= 2) return ud(c);
      const hiDst = op === 0x16 ? 2 : 0;
      if (mem) {
        if (!loadMem(c, i, 8, false)) return ST_EXC;
        X[dk + hiDst] = X[64]!; X[dk + hiDst + 1] = X[65]!;
        return ST_NEXT;
      }
      if (pfx !== 0) return ud(c);
      const r = D[i + F_RM]! * 4 + (op === 0x12 ? 2 : 0);   // MOVHLPS takes the source's high half
      const a = X[r]!, b = X[r + 1]!;
      X[dk + hiDst] = a; X[dk + hiDst + 1] = b;
      return ST_NEXT;
    }
    case 0x13: case 0x17: {
      if (pfx >= 2 || !mem) return ud(c);
      X[TMP * 4] = X[dk + (op === 0x17 ? 2 : 0)]!; X[TMP * 4 + 1] = X[dk + (op === 0x17 ? 3 : 1)]!;
      return storeMem(c, i, TMP, 8, false);
    }
    case 0x14: case 0x15: {
      // UNPCKLPS/UNPCKHPS, UNPCKLPD/UNPCKHPD
      if (pfx >= 2) return ud(c);
      const s = src(c, i, 16);
      if (s < 0) return ST_EXC;
      const sk = s * 4, h = op === 0x15 ? 2 : 0;
      if (pfx === 0) {
        const a0 = X[dk + h]!, a1 = X[dk + h + 1]!, b0 = X[sk + h]!, b1 = X[sk + h + 1]!;
        X[dk] = a0; X[dk + 1] = b0; X[dk + 2] = a1; X[dk + 3] = b1;
      } else {
        const a0 = X[dk + h]!, a1 = X[dk + h + 1]!, b0 = X[sk + h]!, b1 = X[sk + h + 1]!;
        X[dk] = a0; X[dk + 1] = a1; X[dk + 2] = b0; X[dk + 3] = b1;
      }
      return ST_NEXT;
    }
    case 0x28: case 0x29: case 0x2b: {
      // MOVAPS/MOVAPD, MOVNTPS/MOVNTPD
      if (pfx >= 2) return ud(c);
      if (op !== 0x28) {
        if (mem) return storeMem(c, i, d, 16, true);
        if (op === 0x2b) return ud(c);
        const r = D[i + F_RM]! * 4;
        X[r] = X[dk]!; X[r + 1] = X[dk + 1]!; X[r + 2] = X[dk + 2]!; X[r + 3] = X[dk + 3]!;
        return ST_NEXT;
      }
      const s = src(c, i, 16);
      if (s < 0) return ST_EXC;
      copy(X, dk, s * 4);
      return ST_NEXT;
    }
    case 0x2a: {
      // CVTSI2SS / CVTSI2SD xmm, r/m32/64
      if (pfx < 2) return ud(c);
      const lo = c.rdRM(i, w ? 3 : 2);
      if (c.excVec !== -1) return ST_EXC;
      const v = w ? c.vhi * TWO32 + (lo >>> 0) : lo;
      if (pfx === 2) xf.f32[d * 4] = v; else xf.f64[d * 2] = v;
      return ST_NEXT;
    }
    case 0x2c: case 0x2d: {
      // CVT(T)SS2SI / CVT(T)SD2SI r32/64, xmm/m32/64
      if (pfx < 2) return ud(c);
      const s = src(c, i, pfx === 2 ? 4 : 8);
      if (s < 0) return ST_EXC;
      const v = pfx === 2 ? xf.f32[s * 4]! : xf.f64[s * 2]!;
      const rc = op === 0x2c ? 3 : (xf.mxcsr >> 13) & 3;
      if (w) { const lo = cvtI64(c, v, rc); c.setR(d, 3, lo, c.t1); } else c.setR(d, 2, cvtI32(v, rc), 0);
      return ST_NEXT;
    }
    case 0x2e: case 0x2f: {
      // UCOMISS/COMISS, UCOMISD/COMISD: ZF PF CF, others cleared
      if (pfx >= 2) return ud(c);
      const s = src(c, i, pfx === 0 ? 4 : 8);
      if (s < 0) return ST_EXC;
      const a = pfx === 0 ? xf.f32[d * 4]! : xf.f64[d * 2]!;
      const b = pfx === 0 ? xf.f32[s * 4]! : xf.f64[s * 2]!;
      const f = a !== a || b !== b ? ZF | PF | CF : a > b ? 0 : a < b ? CF : ZF;
      c.setFlagsArith(f);
      return ST_NEXT;
    }
    case 0x50: {
      // MOVMSKPS / MOVMSKPD r32, xmm
      if (pfx >= 2 || mem) return ud(c);
      const r = D[i + F_RM]! * 4;
      const m = pfx === 0 ? ((X[r]! >>> 31) | ((X[r + 1]! >>> 31) << 1) | ((X[r + 2]! >>> 31) << 2) | ((X[r + 3]! >>> 31) << 3))
        : ((X[r + 1]! >>> 31) | ((X[r + 3]! >>> 31) << 1));
      c.setR(d, 2, m, 0);
      return ST_NEXT;
    }
    case 0x51: case 0x52: case 0x53: case 0x58: case 0x59: case 0x5c: case 0x5d: case 0x5e: case 0x5f:
      return floatArith(c, i, op, pfx, d);
    case 0x54: case 0x55: case 0x56: case 0x57: {
      // ANDPS/ANDNPS/ORPS/XORPS (and PD)
      if (pfx >= 2) return ud(c);
      const s = src(c, i, 16);
      if (s < 0) return ST_EXC;
      const sk = s * 4;
      for (let k = 0; k < 4; k++) {
        const a = X[dk + k]!, b = X[sk + k]!;
        X[dk + k] = op === 0x54 ? a & b : op === 0x55 ? ~a & b : op === 0x56 ? a | b : a ^ b;
      }
      return ST_NEXT;
    }
    case 0x5a: {
      // CVTPS2PD / CVTPD2PS / CVTSS2SD / CVTSD2SS
      const s = src(c, i, pfx === 0 || pfx === 3 ? 8 : pfx === 2 ? 4 : 16);
      if (s < 0) return ST_EXC;
      const sk = s * 4;
      if (pfx === 0) { const a = X[sk]!, b = X[sk + 1]!; X[dk] = f32to64lo(c, a); X[dk + 1] = c.t1; X[dk + 2] = f32to64lo(c, b); X[dk + 3] = c.t1; }
      else if (pfx === 2) { X[dk] = f32to64lo(c, X[sk]!); X[dk + 1] = c.t1; }
      else if (pfx === 3) X[dk] = f64to32(X[sk]!, X[sk + 1]!);
      else { const a = f64to32(X[sk]!, X[sk + 1]!), b = f64to32(X[sk + 2]!, X[sk + 3]!); X[dk] = a; X[dk + 1] = b; X[dk + 2] = 0; X[dk + 3] = 0; }
      return ST_NEXT;
    }
    case 0x5b: {
      // CVTDQ2PS / CVTPS2DQ (66) / CVTTPS2DQ (F3)
      if (pfx === 3) return ud(c);
      const s = src(c, i, 16);
      if (s < 0) return ST_EXC;
      const F = xf.f32, sk = s * 4;
      if (pfx === 0) for (let k = 0; k < 4; k++) F[dk + k] = X[sk + k]!;
      else {
        const rc = pfx === 2 ? 3 : (xf.mxcsr >> 13) & 3;
        for (let k = 0; k < 4; k++) X[dk + k] = cvtI32(F[sk + k]!, rc);
      }
      return ST_NEXT;
    }
    case 0x6e: {
      // MOVD/MOVQ xmm, r/m32/64 (66)
      if (pfx !== 1) return ud(c);
      const lo = c.rdRM(i, w ? 3 : 2);
      if (c.excVec !== -1) return ST_EXC;
      X[dk] = lo; X[dk + 1] = w ? c.vhi : 0; X[dk + 2] = 0; X[dk + 3] = 0;
      return ST_NEXT;
    }
    case 0x6f: case 0x7f: {
      // MOVDQA (66) / MOVDQU (F3)
      if (pfx !== 1 && pfx !== 2) return ud(c);
      if (op === 0x7f) {
        if (mem) return storeMem(c, i, d, 16, pfx === 1);
        copy(X, D[i + F_RM]! * 4, dk);
        return ST_NEXT;
      }
      const s = src(c, i, 16, pfx === 1);
      if (s < 0) return ST_EXC;
      copy(X, dk, s * 4);
      return ST_NEXT;
    }
    case 0x70: {
      // PSHUFD (66) / PSHUFHW (F3) / PSHUFLW (F2)
      if (pfx === 0) return ud(c);
      const s = src(c, i, 16);
      if (s < 0) return ST_EXC;
      const imm = D[i + F_IMM]!, sk = s * 4;
      if (pfx === 1) {
        const a = X[sk + (imm & 3)]!, b = X[sk + ((imm >> 2) & 3)]!, e = X[sk + ((imm >> 4) & 3)]!, f = X[sk + ((imm >> 6) & 3)]!;
        X[dk] = a; X[dk + 1] = b; X[dk + 2] = e; X[dk + 3] = f;
      } else {
        const W = xf.u16, base = s * 8 + (pfx === 2 ? 4 : 0), db = d * 8 + (pfx === 2 ? 4 : 0);
        const a = W[base + (imm & 3)]!, b = W[base + ((imm >> 2) & 3)]!, e = W[base + ((imm >> 4) & 3)]!, f = W[base + ((imm >> 6) & 3)]!;
        const o = pfx === 2 ? 0 : 4, sb = s * 8 + o, dd = d * 8 + o;
        for (let k = 0; k < 4; k++) W[dd + k] = W[sb + k]!;
        W[db] = a; W[db + 1] = b; W[db + 2] = e; W[db + 3] = f;
      }
      return ST_NEXT;
    }
    case 0x7e: {
      if (pfx === 1) {
        // MOVD/MOVQ r/m32/64, xmm
        if (mem) {
          const lin = c.ea(i);
          if (c.excVec !== -1) return ST_EXC;
          if (w) c.wr64(lin, X[dk]!, X[dk + 1]!); else c.wr32(lin, X[dk]!);
          return c.excVec !== -1 ? ST_EXC : ST_NEXT;
        }
        c.setR(D[i + F_RM]!, w ? 3 : 2, X[dk]!, X[dk + 1]!);
        return ST_NEXT;
      }
      if (pfx !== 2) return ud(c);
      // MOVQ xmm, xmm/m64 (F3)
      const s = src(c, i, 8);
      if (s < 0) return ST_EXC;
      const a = X[s * 4]!, b = X[s * 4 + 1]!;
      X[dk] = a; X[dk + 1] = b; X[dk + 2] = 0; X[dk + 3] = 0;
      return ST_NEXT;
    }
    case 0xc2: {
      // CMPPS/CMPPD/CMPSS/CMPSD xmm, xmm/m, imm8
      const s = src(c, i, pfx === 2 ? 4 : pfx === 3 ? 8 : 16);
      if (s < 0) return ST_EXC;
      const p = D[i + F_IMM]!;
      if (pfx === 0 || pfx === 2) {
        const F = xf.f32;
        for (let k = 0; k < (pfx === 0 ? 4 : 1); k++) X[dk + k] = cmpPred(p, F[dk + k]!, F[s * 4 + k]!) ? -1 : 0;
      } else {
        const F = xf.f64;
        for (let k = 0; k < (pfx === 1 ? 2 : 1); k++) {
          const r = cmpPred(p, F[d * 2 + k]!, F[s * 2 + k]!) ? -1 : 0;
          X[dk + 2 * k] = r; X[dk + 2 * k + 1] = r;
        }
      }
      return ST_NEXT;
    }
    case 0xc4: {
      // PINSRW xmm, r32/m16, imm8
      if (pfx !== 1) return ud(c);
      const v = c.rdRM(i, 1);
      if (c.excVec !== -1) return ST_EXC;
      xf.u16[d * 8 + (D[i + F_IMM]! & 7)] = v;
      return ST_NEXT;
    }
    case 0xc5: {
      // PEXTRW r32, xmm, imm8
      if (pfx !== 1 || mem) return ud(c);
      c.setR(d, 2, xf.u16[D[i + F_RM]! * 8 + (D[i + F_IMM]! & 7)]!, 0);
      return ST_NEXT;
    }
    case 0xc6: {
      // SHUFPS / SHUFPD
      if (pfx >= 2) return ud(c);
      const s = src(c, i, 16);
      if (s < 0) return ST_EXC;
      const imm = D[i + F_IMM]!, sk = s * 4;
      if (pfx === 0) {
        const a = X[dk + (imm & 3)]!, b = X[dk + ((imm >> 2) & 3)]!, e = X[sk + ((imm >> 4) & 3)]!, f = X[sk + ((imm >> 6) & 3)]!;
        X[dk] = a; X[dk + 1] = b; X[dk + 2] = e; X[dk + 3] = f;
      } else {
        const l = (imm & 1) * 2, h = ((imm >> 1) & 1) * 2;
        const a = X[dk + l]!, b = X[dk + l + 1]!, e = X[sk + h]!, f = X[sk + h + 1]!;
        X[dk] = a; X[dk + 1] = b; X[dk + 2] = e; X[dk + 3] = f;
      }
      return ST_NEXT;
    }
    default:
      return ud(c);
  }
}

function copy(X: Int32Array, dk: number, sk: number): void {
  X[dk] = X[sk]!; X[dk + 1] = X[sk + 1]!; X[dk + 2] = X[sk + 2]!; X[dk + 3] = X[sk + 3]!;
}

/** float32 bits -> float64 bits (NaN payload kept, quieted): low half returned, high in c.t1. */
function f32to64lo(c: FpCpu, bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
    const fr = bits & 0x7fffff;
    c.t1 = (bits & 0x80000000) | 0x7ff80000 | (fr >>> 3);
    return (fr << 29) | 0;
  }
  SCR_I[0] = bits;
  SCR[0] = SCR_F[0]!;
  c.t1 = SCR_I[1]!;
  return SCR_I[0];
}

/** float64 bits -> float32 bits, rounding to nearest even (NaN payload kept, quieted). */
function f64to32(lo: number, hi: number): number {
  if ((hi & 0x7ff00000) === 0x7ff00000 && ((hi & 0xfffff) !== 0 || lo !== 0)) {
    return (hi & 0x80000000) | 0x7fc00000 | ((hi & 0xfffff) << 3) | (lo >>> 29);
  }
  SCR_I[0] = lo; SCR_I[1] = hi;
  SCR_F[0] = SCR[0]!;
  return SCR_I[0];
}

function floatArith(c: FpCpu, i: number, op: number, pfx: number, d: number): number {
  const xf = c.xmm, X = xf.x;
  const single = pfx === 0 || pfx === 2;
  const lanes = pfx === 0 ? 4 : pfx === 1 ? 2 : 1;
  if ((op === 0x52 || op === 0x53) && !single) return ud(c);
  const s = src(c, i, pfx === 2 ? 4 : pfx === 3 ? 8 : 16);
  if (s < 0) return ST_EXC;
  if (single) {
    const F = xf.f32;
    for (let k = 0; k < lanes; k++) {
      const a = F[d * 4 + k]!, b = F[s * 4 + k]!;
      const ab = X[d * 4 + k]!, bb = X[s * 4 + k]!;
      let r: number;
      if (op === 0x51) r = Math.sqrt(b);
      else if (op === 0x52) r = 1 / Math.sqrt(b);
      else if (op === 0x53) r = 1 / b;
      else r = fop(op, a, b);
      if ((op === 0x5d || op === 0x5f) && (a !== a || b !== b || (a === 0 && b === 0))) { X[d * 4 + k] = bb; continue; }
      F[d * 4 + k] = r;
      if (r !== r) X[d * 4 + k] = op >= 0x51 && op <= 0x53 ? nan32Bits(bb, bb, X[d * 4 + k]!) : nan32Bits(ab, bb, X[d * 4 + k]!);
    }
    return ST_NEXT;
  }
  const F = xf.f64;
  for (let k = 0; k < lanes; k++) {
    const a = F[d * 2 + k]!, b = F[s * 2 + k]!;
    if ((op === 0x5d || op === 0x5f) && (a !== a || b !== b || (a === 0 && b === 0))) {
      X[d * 4 + 2 * k] = X[s * 4 + 2 * k]!; X[d * 4 + 2 * k + 1] = X[s * 4 + 2 * k + 1]!;
      continue;
    }
    if (op === 0x51) {
      const r = Math.sqrt(b);
      if (r !== r) { nanBits64(X, s * 4 + 2 * k, s * 4 + 2 * k); X[d * 4 + 2 * k] = SCR_I[0]!; X[d * 4 + 2 * k + 1] = SCR_I[1]!; }
      else F[d * 2 + k] = r;
      continue;
    }
    const r = fop(op, a, b);
    if (r !== r) { nanBits64(X, d * 4 + 2 * k, s * 4 + 2 * k); X[d * 4 + 2 * k] = SCR_I[0]!; X[d * 4 + 2 * k + 1] = SCR_I[1]!; }
    else F[d * 2 + k] = r;
  }
  return ST_NEXT;
}

/** The SSE NaN result of two doubles given by their lane offsets, into SCR_I. */
function nanBits64(X: Int32Array, a: number, b: number): void {
  const isNan = (k: number): boolean => (X[k + 1]! & 0x7ff00000) === 0x7ff00000 && ((X[k + 1]! & 0xfffff) !== 0 || X[k]! !== 0);
  if (isNan(a)) { SCR_I[0] = X[a]!; SCR_I[1] = X[a + 1]! | 0x80000; return; }
  if (isNan(b)) { SCR_I[0] = X[b]!; SCR_I[1] = X[b + 1]! | 0x80000; return; }
  SCR_I[0] = 0; SCR_I[1] = 0xfff80000 | 0;
}

/** Packed-integer SSE2 op (66 prefix) with destination slot d and source slot s. */
function intOp(c: FpCpu, op: number, d: number, s: number): number {
  const xf = c.xmm, X = xf.x, B = xf.u8, SB = xf.i8, W = xf.u16, SW = xf.i16;
  const dk = d * 4, sk = s * 4, db = d * 16, sb = s * 16, dw = d * 8, sw = s * 8;
  switch (op) {
    case 0x60: case 0x68: { // PUNPCKLBW / PUNPCKHBW
      const h = op === 0x68 ? 8 : 0;
      const T = TMP * 16;
      for (let k = 0; k < 8; k++) { B[T + 2 * k] = B[db + h + k]!; B[T + 2 * k + 1] = B[sb + h + k]!; }
      copy(X, dk, TMP * 4);
      return ST_NEXT;
    }
    case 0x61: case 0x69: { // PUNPCKLWD / PUNPCKHWD
      const h = op === 0x69 ? 4 : 0;
      const T = TMP * 8;
      for (let k = 0; k < 4; k++) { W[T + 2 * k] = W[dw + h + k]!; W[T + 2 * k + 1] = W[sw + h + k]!; }
      copy(X, dk, TMP * 4);
      return ST_NEXT;
    }
    case 0x62: case 0x6a: { // PUNPCKLDQ / PUNPCKHDQ
      const h = op === 0x6a ? 2 : 0;
      const a0 = X[dk + h]!, a1 = X[dk + h + 1]!, b0 = X[sk + h]!, b1 = X[sk + h + 1]!;
      X[dk] = a0; X[dk + 1] = b0; X[dk + 2] = a1; X[dk + 3] = b1;
      return ST_NEXT;
    }
    case 0x6c: case 0x6d: { // PUNPCKLQDQ / PUNPCKHQDQ
      const h = op === 0x6d ? 2 : 0;
      const a0 = X[dk + h]!, a1 = X[dk + h + 1]!, b0 = X[sk + h]!, b1 = X[sk + h + 1]!;
      X[dk] = a0; X[dk + 1] = a1; X[dk + 2] = b0; X[dk + 3] = b1;
      return ST_NEXT;
    }
    case 0x63: case 0x67: { // PACKSSWB / PACKUSWB
      const T = TMP * 16;
      for (let k = 0; k < 8; k++) {
        B[T + k] = op === 0x63 ? satS8(SW[dw + k]!) : satU8(SW[dw + k]!);
        B[T + 8 + k] = op === 0x63 ? satS8(SW[sw + k]!) : satU8(SW[sw + k]!);
      }
      copy(X, dk, TMP * 4);
      return ST_NEXT;
    }
    case 0x6b: { // PACKSSDW
      const T = TMP * 8;
      for (let k = 0; k < 4; k++) { W[T + k] = satS16(X[dk + k]!); W[T + 4 + k] = satS16(X[sk + k]!); }
      copy(X, dk, TMP * 4);
      return ST_NEXT;
    }
    case 0x64: for (let k = 0; k < 16; k++) B[db + k] = SB[db + k]! > SB[sb + k]! ? 0xff : 0; return ST_NEXT;
    case 0x65: for (let k = 0; k < 8; k++) W[dw + k] = SW[dw + k]! > SW[sw + k]! ? 0xffff : 0; return ST_NEXT;
    case 0x66: for (let k = 0; k < 4; k++) X[dk + k] = X[dk + k]! > X[sk + k]! ? -1 : 0; return ST_NEXT;
    case 0x74: for (let k = 0; k < 16; k++) B[db + k] = B[db + k] === B[sb + k] ? 0xff : 0; return ST_NEXT;
    case 0x75: for (let k = 0; k < 8; k++) W[dw + k] = W[dw + k] === W[sw + k] ? 0xffff : 0; return ST_NEXT;
    case 0x76: for (let k = 0; k < 4; k++) X[dk + k] = X[dk + k] === X[sk + k] ? -1 : 0; return ST_NEXT;
    case 0xd1: case 0xd2: case 0xd3: case 0xe1: case 0xe2: case 0xf1: case 0xf2: case 0xf3: {
      // Shifts by the low 64 bits of the source.
      const cnt = X[sk + 1] !== 0 || (X[sk]! >>> 0) > 255 ? 255 : X[sk]!;
      const kind = op >> 4 === 0xd ? 2 : op >> 4 === 0xe ? 4 : 6;  // 2 SRL 4 SRA 6 SLL
      shiftLanes(c, d, kind, op & 3, cnt);
      return ST_NEXT;
    }
    case 0xd4: add64(X, dk, sk); add64(X, dk + 2, sk + 2); return ST_NEXT;   // PADDQ
    case 0xfb: sub64(X, dk, sk); sub64(X, dk + 2, sk + 2); return ST_NEXT;   // PSUBQ
    case 0xd5: for (let k = 0; k < 8; k++) W[dw + k] = Math.imul(SW[dw + k]!, SW[sw + k]!); return ST_NEXT;  // PMULLW
    case 0xe5: for (let k = 0; k < 8; k++) W[dw + k] = (SW[dw + k]! * SW[sw + k]!) >> 16; return ST_NEXT;     // PMULHW
    case 0xe4: for (let k = 0; k < 8; k++) W[dw + k] = (W[dw + k]! * W[sw + k]!) / 65536; return ST_NEXT;     // PMULHUW
    case 0xf4: { // PMULUDQ
      for (let k = 0; k < 4; k += 2) {
        const a = X[dk + k]! >>> 0, b = X[sk + k]! >>> 0;
        const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
        const ll = al * bl, mid = ah * bl + al * bh, hh = ah * bh;
        const lo = ll + (mid % 65536) * 65536;
        const hi = hh + Math.floor(mid / 65536) + Math.floor(lo / TWO32);
        X[dk + k] = lo | 0; X[dk + k + 1] = hi | 0;
      }
      return ST_NEXT;
    }
    case 0xf5: { // PMADDWD
      for (let k = 0; k < 4; k++) {
        X[dk + k] = (SW[dw + 2 * k]! * SW[sw + 2 * k]! + SW[dw + 2 * k + 1]! * SW[sw + 2 * k + 1]!) | 0;
      }
      return ST_NEXT;
    }
    case 0xf6: { // PSADBW
      let s0 = 0, s1 = 0;
      for (let k = 0; k < 8; k++) { s0 += Math.abs(B[db + k]! - B[sb + k]!); s1 += Math.abs(B[db + 8 + k]! - B[sb + 8 + k]!); }
      X[dk] = s0; X[dk + 1] = 0; X[dk + 2] = s1; X[dk + 3] = 0;
      return ST_NEXT;
    }
    case 0xd8: for (let k = 0; k < 16; k++) B[db + k] = satU8(B[db + k]! - B[sb + k]!); return ST_NEXT;     // PSUBUSB
    case 0xd9: for (let k = 0; k < 8; k++) W[dw + k] = satU16(W[dw + k]! - W[sw + k]!); return ST_NEXT;      // PSUBUSW
    case 0xdc: for (let k = 0; k < 16; k++) B[db + k] = satU8(B[db + k]! + B[sb + k]!); return ST_NEXT;     // PADDUSB
    case 0xdd: for (let k = 0; k < 8; k++) W[dw + k] = satU16(W[dw + k]! + W[sw + k]!); return ST_NEXT;      // PADDUSW
    case 0xe8: for (let k = 0; k < 16; k++) SB[db + k] = satS8(SB[db + k]! - SB[sb + k]!); return ST_NEXT;  // PSUBSB
    case 0xe9: for (let k = 0; k < 8; k++) SW[dw + k] = satS16(SW[dw + k]! - SW[sw + k]!); return ST_NEXT;   // PSUBSW
    case 0xec: for (let k = 0; k < 16; k++) SB[db + k] = satS8(SB[db + k]! + SB[sb + k]!); return ST_NEXT;  // PADDSB
    case 0xed: for (let k = 0; k < 8; k++) SW[dw + k] = satS16(SW[dw + k]! + SW[sw + k]!); return ST_NEXT;   // PADDSW
    case 0xda: for (let k = 0; k < 16; k++) { const a = B[db + k]!, b = B[sb + k]!; B[db + k] = a < b ? a : b; } return ST_NEXT; // PMINUB
    case 0xde: for (let k = 0; k < 16; k++) { const a = B[db + k]!, b = B[sb + k]!; B[db + k] = a > b ? a : b; } return ST_NEXT; // PMAXUB
    case 0xea: for (let k = 0; k < 8; k++) { const a = SW[dw + k]!, b = SW[sw + k]!; SW[dw + k] = a < b ? a : b; } return ST_NEXT; // PMINSW
    case 0xee: for (let k = 0; k < 8; k++) { const a = SW[dw + k]!, b = SW[sw + k]!; SW[dw + k] = a > b ? a : b; } return ST_NEXT; // PMAXSW
    case 0xdb: for (let k = 0; k < 4; k++) X[dk + k] = X[dk + k]! & X[sk + k]!; return ST_NEXT;   // PAND
    case 0xdf: for (let k = 0; k < 4; k++) X[dk + k] = ~X[dk + k]! & X[sk + k]!; return ST_NEXT;  // PANDN
    case 0xeb: for (let k = 0; k < 4; k++) X[dk + k] = X[dk + k]! | X[sk + k]!; return ST_NEXT;   // POR
    case 0xef: for (let k = 0; k < 4; k++) X[dk + k] = X[dk + k]! ^ X[sk + k]!; return ST_NEXT;   // PXOR
    case 0xe0: for (let k = 0; k < 16; k++) B[db + k] = (B[db + k]! + B[sb + k]! + 1) >> 1; return ST_NEXT;  // PAVGB
    case 0xe3: for (let k = 0; k < 8; k++) W[dw + k] = (W[dw + k]! + W[sw + k]! + 1) >> 1; return ST_NEXT;   // PAVGW
    case 0xf8: for (let k = 0; k < 16; k++) B[db + k] = B[db + k]! - B[sb + k]!; return ST_NEXT;  // PSUBB
    case 0xf9: for (let k = 0; k < 8; k++) W[dw + k] = W[dw + k]! - W[sw + k]!; return ST_NEXT;   // PSUBW
    case 0xfa: for (let k = 0; k < 4; k++) X[dk + k] = (X[dk + k]! - X[sk + k]!) | 0; return ST_NEXT;  // PSUBD
    case 0xfc: for (let k = 0; k < 16; k++) B[db + k] = B[db + k]! + B[sb + k]!; return ST_NEXT;  // PADDB
    case 0xfd: for (let k = 0; k < 8; k++) W[dw + k] = W[dw + k]! + W[sw + k]!; return ST_NEXT;   // PADDW
    case 0xfe: for (let k = 0; k < 4; k++) X[dk + k] = (X[dk + k]! + X[sk + k]!) | 0; return ST_NEXT;  // PADDD
    default: return ud(c);
  }
}

function add64(X: Int32Array, a: number, b: number): void {
  const lo = (X[a]! >>> 0) + (X[b]! >>> 0);
  X[a] = lo | 0;
  X[a + 1] = (X[a + 1]! + X[b + 1]! + (lo >= TWO32 ? 1 : 0)) | 0;
}
function sub64(X: Int32Array, a: number, b: number): void {
  const lo = (X[a]! >>> 0) - (X[b]! >>> 0);
  X[a] = lo | 0;
  X[a + 1] = (X[a + 1]! - X[b + 1]! - (lo < 0 ? 1 : 0)) | 0;
}

/** Lane shifts: kind 2 SRL, 4 SRA, 6 SLL; size 1 words, 2 dwords, 3 qwords (SRA has no qword form). */
function shiftLanes(c: FpCpu, d: number, kind: number, size: number, cnt: number): void {
  const xf = c.xmm, X = xf.x, W = xf.u16, SW = xf.i16, dk = d * 4, dw = d * 8;
  if (size === 1) {
    for (let k = 0; k < 8; k++) {
      if (kind === 4) SW[dw + k] = SW[dw + k]! >> (cnt > 15 ? 15 : cnt);
      else W[dw + k] = cnt > 15 ? 0 : kind === 2 ? W[dw + k]! >>> cnt : W[dw + k]! << cnt;
    }
  } else if (size === 2) {
    for (let k = 0; k < 4; k++) {
      if (kind === 4) X[dk + k] = X[dk + k]! >> (cnt > 31 ? 31 : cnt);
      else X[dk + k] = cnt > 31 ? 0 : kind === 2 ? X[dk + k]! >>> cnt : X[dk + k]! << cnt;
    }
  } else {
    for (let k = 0; k < 4; k += 2) {
      const lo = X[dk + k]!, hi = X[dk + k + 1]!;
      if (cnt > 63) { X[dk + k] = 0; X[dk + k + 1] = 0; }
      else if (cnt === 0) { /* unchanged */ }
      else if (kind === 2) {
        if (cnt >= 32) { X[dk + k] = hi >>> (cnt - 32); X[dk + k + 1] = 0; }
        else { X[dk + k] = (lo >>> cnt) | (hi << (32 - cnt)); X[dk + k + 1] = hi >>> cnt; }
      } else if (cnt >= 32) { X[dk + k + 1] = lo << (cnt - 32); X[dk + k] = 0; }
      else { X[dk + k + 1] = (hi << cnt) | (lo >>> (32 - cnt)); X[dk + k] = lo << cnt; }
    }
  }
}

/** 66 0F 71/72/73 /r ib: shifts by an immediate, PSRLDQ/PSLLDQ. */
function shiftImm(c: FpCpu, i: number): number {
  const D = c.D;
  if ((D[i + F_FL]! & FL_MEM) !== 0) return ud(c);
  const op = D[i + F_SUB]! & 0xff, r = D[i + F_REG]! & 7, d = D[i + F_RM]!, cnt = D[i + F_IMM]! & 0xff;
  const size = op - 0x70;
  if (size === 3 && (r === 3 || r === 7)) {
    // PSRLDQ / PSLLDQ: whole-register byte shift
    const B = c.xmm.u8, db = d * 16, T = TMP * 16;
    const n = cnt > 16 ? 16 : cnt;
    for (let k = 0; k < 16; k++) {
      const from = r === 3 ? k + n : k - n;
      B[T + k] = from >= 0 && from < 16 ? B[db + from]! : 0;
    }
    copy(c.xmm.x, d * 4, TMP * 4);
    return ST_NEXT;
  }
  if ((r !== 2 && r !== 4 && r !== 6) || (size === 3 && r === 4)) return ud(c);
  shiftLanes(c, d, r, size, cnt);
  return ST_NEXT;
}

function maskmov(c: FpCpu, i: number, d: number, m: number): number {
  const B = c.xmm.u8;
  const asz = (c.D[i + F_FL]! >> 2) & 3;
  const seg = (c.D[i + F_FL]! >> 8) & 7;
  let base = asz === 3 ? c.R[15]! * TWO32 + (c.R[14]! >>> 0) : asz === 2 ? c.R[14]! >>> 0 : c.R[14]! & 0xffff;
  if (seg !== 7) base += c.sBase[seg]!; else if (c.mode !== 2) base += c.sBase[3]!;  // default DS:rDI
  for (let k = 0; k < 16; k++) {
    if ((B[m * 16 + k]! & 0x80) === 0) continue;
    c.wr8(base + k, B[d * 16 + k]!);
    if (c.excVec !== -1) return ST_EXC;
  }
  return ST_NEXT;
}

/** 0F AE /0-/3 with a memory operand: FXSAVE, FXRSTOR, LDMXCSR, STMXCSR. */
function grp15(c: FpCpu, i: number): number {
  const D = c.D;
  const r = D[i + F_REG]! & 7;
  if ((D[i + F_FL]! & FL_MEM) === 0 || r > 3) return ud(c);
  if ((c.cr0 & CR0_EM) !== 0) return ud(c);
  if (r >= 2 && (c.cr4 & CR4_OSFXSR) === 0) return ud(c);
  if ((c.cr0 & CR0_TS) !== 0) { c.excVec = NM; c.excCode = -1; return ST_EXC; }
  const lin = c.ea(i);
  if (c.excVec !== -1) return ST_EXC;
  const xf = c.xmm;
  switch (r) {
    case 2: {
      const v = c.rd32(lin);
      if (c.excVec !== -1) return ST_EXC;
      if ((v & ~MXCSR_MASK) !== 0) return gp(c);
      xf.mxcsr = v;
      return ST_NEXT;
    }
    case 3: c.wr32(lin, xf.mxcsr); return c.excVec !== -1 ? ST_EXC : ST_NEXT;
    case 0: {
      if ((lin % 16) !== 0) return gp(c);
      if (!c.probeW(lin, 9)) return ST_EXC;
      const img = c.fxImage;
      fxsaveImage(c, img, (D[i + F_FL]! & 3) === 3);
      // Bytes 464-511 are left to software: not written. Outside 64-bit mode XMM8-15
      // (bytes 288-415) are neither saved nor restored.
      const end = c.mode === 2 ? 464 : 288;
      for (let k = 0; k < end; k += 8) {
        c.wr64(lin + k, img.getInt32(k, true), img.getInt32(k + 4, true));
        if (c.excVec !== -1) return ST_EXC;
      }
      return ST_NEXT;
    }
    default: {
      if ((lin % 16) !== 0) return gp(c);
      const img = c.fxImage;
      const end = c.mode === 2 ? 416 : 288;
      for (let k = 0; k < end; k += 8) {
        const lo = c.rd64(lin + k), hi = c.vhi;
        if (c.excVec !== -1) return ST_EXC;
        img.setInt32(k, lo, true); img.setInt32(k + 4, hi, true);
      }
      if ((img.getInt32(24, true) & ~MXCSR_MASK) !== 0) return gp(c);
      fxrstorImage(c, img, c.mode === 2 ? 16 : 8);
      return ST_NEXT;
    }
  }
}

/** Write the 512-byte FXSAVE image (64-bit layout, SDM vol. 1 table 10-2) into dv[0..512). */
export function fxsaveImage(c: FpCpu, dv: DataView, rexW: boolean): void {
  const f = c.fpu, xf = c.xmm;
  for (let k = 0; k < 512; k += 4) dv.setInt32(k, 0, true);
  dv.setUint16(0, f.fcw, true);
  dv.setUint16(2, f.status(), true);
  dv.setUint8(4, f.tags);
  dv.setUint16(6, f.fop, true);
  if (rexW) { dv.setFloat64(8, 0, true); dv.setFloat64(16, 0, true); }
  dv.setUint32(8, f.fip >>> 0, true);
  dv.setUint32(16, f.fdp >>> 0, true);
  dv.setUint32(24, xf.mxcsr, true);
  dv.setUint32(28, MXCSR_MASK, true);
  for (let k = 0; k < 8; k++) f.store80(f.st(k), dv, 32 + 16 * k);
  for (let k = 0; k < 64; k++) dv.setInt32(160 + 4 * k, xf.x[k]!, true);
}

/** Load the FXSAVE image (MXCSR bits outside MXCSR_MASK are dropped), XMM0 to XMM(nXmm - 1). */
export function fxrstorImage(c: FpCpu, dv: DataView, nXmm = 16): void {
  const f = c.fpu, xf = c.xmm;
  f.fcw = dv.getUint16(0, true);
  const fsw = dv.getUint16(2, true);
  f.fsw = fsw & ~0x3800;
  f.top = (fsw >> 11) & 7;
  f.tags = dv.getUint8(4);
  f.fop = dv.getUint16(6, true) & 0x7ff;
  f.fip = dv.getUint32(8, true);
  f.fdp = dv.getUint32(16, true);
  xf.mxcsr = dv.getUint32(24, true) & MXCSR_MASK;
  for (let k = 0; k < 8; k++) f.setSt(k, f.load80(dv, 32 + 16 * k));
  for (let k = 0; k < nXmm * 4; k++) xf.x[k] = dv.getInt32(160 + 4 * k, true);
}
