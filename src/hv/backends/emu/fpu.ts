/**
 * x87 FPU for the emulated processor (SDM vol. 1 ch. 8, vol. 2 D8-DF opcode maps): the
 * register stack, FCW/FSW/FTW, loads/stores of m16/m32/m64 integers and m32/m64/m80 reals,
 * arithmetic, compares (FCOM/FUCOM/FCOMI/FUCOMI and popping forms), FXCH, constants,
 * FCHS/FABS/FSQRT/FRNDINT/FSCALE/FPREM/FXAM/FTST, FINIT/FCLEX/FSTSW/FSTCW/FLDCW,
 * FSTENV/FLDENV/FSAVE/FRSTOR (32-bit protected-mode layout), FCMOVcc, FFREE, FINC/FDECSTP,
 * transcendental forms. Decoded as OP_X87 with F_SUB = (opcode - D8) << 8 | ModRM; FWAIT is
 * F_SUB = 0x800.
 *
 * Known deviations (docs/adr/0007-emu-design.md):
 * - The stack holds float64, not 80-bit extended: results are rounded to 53 bits whatever
 *   FCW.PC says; FLD/FSTP m80 convert (exact for values that fit a double, rounded otherwise;
 *   exponents beyond the double range become 0 or infinity). FXSAVE images carry these values
 *   as 80-bit numbers, so integer mantissa bits below the 53rd are zero.
 * - Exception flags: IE (invalid, incl. stack fault with SF/C1) and ZE are set; DE/OE/UE/PE
 *   are not. Unmasked exceptions never raise #MF (ES/B are set in FSW only). Rounding control
 *   is honoured by FIST/FISTP/FRNDINT; arithmetic rounds to nearest.
 * - FIP/FDP/FOP (last instruction/data pointers) are kept at 0. Transcendental forms (FSIN,
 *   FPTAN, FYL2X, F2XM1, ...) use Math and its accuracy. FBLD/FBSTP and FISTTP (SSE3) are #UD.
 * - NaN results of arithmetic and FSQRT follow the x87 rules (SDM vol. 1 table 4-7); those of
 *   the transcendental forms are whatever Math gives. SNaN loads from m32/m64/m80 are quieted.
 *
 * DEVNOTE: CR0.EM or CR0.TS -> #NM for every x87 instruction; FWAIT only with TS and MP.
 */
import { type Fpu, type FpCpu, roundRc } from './fpregs.js';
import { F_FL, F_SUB, FL_MEM } from './ops.js';

const ST_NEXT = 0, ST_EXC = 2;
const UD = 6, NM = 7;
const CR0_MP = 2, CR0_EM = 4, CR0_TS = 8;
const CF = 1, PF = 4, ZF = 0x40;
const TWO32 = 4294967296;
// FSW bits.
const IE = 1, ZE = 4, SF_ = 0x40, ES = 0x80, C0 = 0x100, C1 = 0x200, C2 = 0x400, C3 = 0x4000, BUSY = 0x8000;

const SCR = new Float64Array(1);
const SCR_I = new Int32Array(SCR.buffer);
const SCR_F = new Float32Array(SCR.buffer);

function nm(c: FpCpu): number { c.excVec = NM; c.excCode = -1; return 2; }
function ud(c: FpCpu): number { c.excVec = UD; c.excCode = -1; return ST_EXC; }

/** C3/C2/C0 of a comparison. */
function cmpCodes(a: number, b: number): number {
  if (a !== a || b !== b) return C3 | C2 | C0;
  return a > b ? 0 : a < b ? C0 : C3;
}

/** Execute OP_X87 record i. */
export function x87Step(c: FpCpu, i: number): number {
  const D = c.D;
  const sub = D[i + F_SUB]!;
  const f = c.fpu;
  if (sub === 0x800) {
    // FWAIT
    if ((c.cr0 & (CR0_TS | CR0_MP)) === (CR0_TS | CR0_MP)) return nm(c);
    return ST_NEXT;
  }
  if ((c.cr0 & (CR0_EM | CR0_TS)) !== 0) return nm(c);
  const grp = sub >> 8, m = sub & 0xff, reg = (m >> 3) & 7, rm = m & 7;
  if ((D[i + F_FL]! & FL_MEM) !== 0) return x87Mem(c, i, grp, reg);
  switch (grp) {
    case 0: case 4: case 6: {
      // D8: ST(0) op ST(i); DC: ST(i) op= ST(0); DE: same and pop.
      if (grp === 6 && reg === 3 && rm !== 1) return ud(c);
      if (grp === 6 && reg === 2) return ud(c);
      if (grp !== 0 && (reg === 2 || reg === 3)) {
        if (grp === 4) return compare(c, f.get(0), f.get(rm), false, reg === 3 ? 1 : 0); // DC D0/D8 aliases
        // DE D9: FCOMPP
        return compare(c, f.get(0), f.get(1), false, 2);
      }
      if (grp === 0) {
        if (reg === 2 || reg === 3) return compare(c, f.get(0), f.get(rm), false, reg === 3 ? 1 : 0);
        f.setSt(0, arith(f, reg, f.get(0), f.get(rm)));
        return ST_NEXT;
      }
      const k = reg >= 4 ? reg ^ 1 : reg;
      f.setSt(rm, arith(f, k, f.get(rm), f.get(0)));
      if (grp === 6) f.pop();
      return ST_NEXT;
    }
    case 1: return grpD9(c, reg, rm, m);
    case 2: {
      if (reg < 4) {
        // FCMOVB/E/BE/U
        const fl = c.getFlags();
        const cond = reg === 0 ? (fl & CF) !== 0 : reg === 1 ? (fl & ZF) !== 0 : reg === 2 ? (fl & (CF | ZF)) !== 0 : (fl & PF) !== 0;
        const v = f.get(rm);
        if (cond) f.setSt(0, v);
        return ST_NEXT;
      }
      if (m === 0xe9) return compare(c, f.get(0), f.get(1), true, 2);  // FUCOMPP
      return ud(c);
    }
    case 3: {
      if (reg < 4) {
        // FCMOVNB/NE/NBE/NU
        const fl = c.getFlags();
        const cond = reg === 0 ? (fl & CF) === 0 : reg === 1 ? (fl & ZF) === 0 : reg === 2 ? (fl & (CF | ZF)) === 0 : (fl & PF) === 0;
        const v = f.get(rm);
        if (cond) f.setSt(0, v);
        return ST_NEXT;
      }
      if (m === 0xe2) { f.fsw &= ~(0x3f | SF_ | ES | BUSY); return ST_NEXT; }  // FNCLEX
      if (m === 0xe3) { f.init(); return ST_NEXT; }                            // FNINIT
      if (m === 0xe0 || m === 0xe1 || m === 0xe4) return ST_NEXT;             // FENI/FDISI/FSETPM: no-ops
      if (reg === 5 || reg === 6) return comi(c, f.get(0), f.get(rm), reg === 5, false);  // FUCOMI/FCOMI
      return ud(c);
    }
    case 5: {
      switch (reg) {
        case 0: f.tags &= ~(1 << ((f.top + rm) & 7)); return ST_NEXT;   // FFREE
        case 2: case 3: {                                                  // FST/FSTP ST(i)
          const v = f.get(0);
          f.setSt(rm, v); f.tags |= 1 << ((f.top + rm) & 7);
          if (reg === 3) f.pop();
          return ST_NEXT;
        }
        case 4: case 5: return compare(c, f.get(0), f.get(rm), true, reg === 5 ? 1 : 0);  // FUCOM/FUCOMP
        case 1: { const a = f.get(0), b = f.get(rm); f.setSt(0, b); f.setSt(rm, a); return ST_NEXT; } // FXCH alias
        default: return ud(c);
      }
    }
    default: { // DF
      if (m === 0xe0) { c.setR(0, 1, f.status(), 0); return ST_NEXT; }   // FNSTSW AX
      if (reg === 5 || reg === 6) return comi(c, f.get(0), f.get(rm), reg === 5, true);  // FUCOMIP/FCOMIP
      if (reg === 0) { f.tags &= ~(1 << ((f.top + rm) & 7)); f.pop(); return ST_NEXT; } // FFREEP
      if (reg === 1) { const a = f.get(0), b = f.get(rm); f.setSt(0, b); f.setSt(rm, a); return ST_NEXT; }
      if (reg === 2 || reg === 3) { const v = f.get(0); f.setSt(rm, v); f.pop(); return ST_NEXT; }
      return ud(c);
    }
  }
}

function arith(f: Fpu, k: number, a: number, b: number): number {
  let r: number;
  switch (k) {
    case 0: r = a + b; break;
    case 1: r = a * b; break;
    case 4: r = a - b; break;
    case 5: r = b - a; break;
    case 6: if (b === 0 && a === a && a !== 0 && Number.isFinite(a)) f.raise(ZE); r = a / b; break;
    default: if (a === 0 && b === b && b !== 0 && Number.isFinite(b)) f.raise(ZE); r = b / a; break;
  }
  if (r !== r) return nanResult(f, a, b);
  return r;
}

/**
 * x87 NaN result of a binary operation (SDM vol. 1 table 4-7): the NaN operand, or of two the
 * one with the larger significand, quieted; else (an invalid operation) the real indefinite.
 */
function nanResult(f: Fpu, a: number, b: number): number {
  SCR[0] = a;
  const aHi = SCR_I[1]!, aLo = SCR_I[0]!;
  SCR[0] = b;
  const bHi = SCR_I[1]!, bLo = SCR_I[0]!;
  const aNan = a !== a, bNan = b !== b;
  if (!aNan && !bNan) { f.raise(IE); SCR_I[1] = 0xfff80000 | 0; SCR_I[0] = 0; return SCR[0]; }
  if (((aNan && (aHi & 0x80000) === 0) || (bNan && (bHi & 0x80000) === 0))) f.raise(IE);   // an SNaN operand
  let hi = bHi, lo = bLo;
  const qa = (aHi & 0x80000) !== 0, qb = (bHi & 0x80000) !== 0;
  const pickA = !bNan || (aNan && (qa !== qb ? qa :
    (aHi & 0x7ffff) > (bHi & 0x7ffff) || ((aHi & 0x7ffff) === (bHi & 0x7ffff) && (aLo >>> 0) > (bLo >>> 0))));
  if (pickA) { hi = aHi; lo = aLo; }
  SCR_I[1] = hi | 0x80000; SCR_I[0] = lo;
  return SCR[0];
}

/** FCOM/FUCOM family: C3 C2 C0; pops = number of pops. */
function compare(c: FpCpu, a: number, b: number, unordered: boolean, pops: number): number {
  const f = c.fpu;
  if (!unordered && (a !== a || b !== b)) f.raise(IE);
  f.fsw = (f.fsw & ~(C0 | C1 | C2 | C3)) | cmpCodes(a, b);
  for (let k = 0; k < pops; k++) f.pop();
  return ST_NEXT;
}

/** FCOMI/FUCOMI (and popping forms): ZF PF CF. */
function comi(c: FpCpu, a: number, b: number, unordered: boolean, pop: boolean): number {
  const f = c.fpu;
  if (!unordered && (a !== a || b !== b)) f.raise(IE);
  c.setFlagsArith(a !== a || b !== b ? ZF | PF | CF : a > b ? 0 : a < b ? CF : ZF);
  f.fsw &= ~C1;
  if (pop) f.pop();
  return ST_NEXT;
}

const CONSTS = [1, Math.log2(10), Math.LOG2E, Math.PI, Math.log10(2), Math.LN2, 0];

function grpD9(c: FpCpu, reg: number, rm: number, m: number): number {
  const f = c.fpu;
  if (reg === 0) { const v = f.get(rm); f.push(v); return ST_NEXT; }              // FLD ST(i)
  if (reg === 1) { const a = f.get(0), b = f.get(rm); f.setSt(0, b); f.setSt(rm, a); f.tags |= (1 << f.top) | (1 << ((f.top + rm) & 7)); return ST_NEXT; } // FXCH
  if (m === 0xd0) return ST_NEXT;                                                   // FNOP
  if (reg === 5 && rm !== 7) { f.push(CONSTS[rm]!); return ST_NEXT; }              // FLD1..FLDZ
  switch (m) {
    case 0xe0: f.setSt(0, -f.get(0)); return ST_NEXT;                               // FCHS
    case 0xe1: f.setSt(0, Math.abs(f.get(0))); return ST_NEXT;                      // FABS
    case 0xe4: return compare(c, f.get(0), 0, false, 0);                            // FTST
    case 0xe5: {                                                                    // FXAM
      const v = f.st(0);
      SCR[0] = v;
      let codes: number;
      if (!f.valid(0)) codes = C3 | C0;
      else if (v !== v) codes = C0;
      else if (!Number.isFinite(v)) codes = C2 | C0;
      else if (v === 0) codes = C3;
      else codes = C2;
      f.fsw = (f.fsw & ~(C0 | C1 | C2 | C3)) | codes | (SCR_I[1]! < 0 ? C1 : 0);
      return ST_NEXT;
    }
    case 0xf0: { const v = f.get(0); f.setSt(0, Math.pow(2, v) - 1); return ST_NEXT; }          // F2XM1
    case 0xf1: { const x = f.get(0), y = f.get(1); f.pop(); f.setSt(0, y * Math.log2(x)); return ST_NEXT; } // FYL2X
    case 0xf2: { const v = f.get(0); f.setSt(0, Math.tan(v)); f.push(1); f.fsw &= ~C2; return ST_NEXT; }  // FPTAN
    case 0xf3: { const x = f.get(0), y = f.get(1); f.pop(); f.setSt(0, Math.atan2(y, x)); return ST_NEXT; } // FPATAN
    case 0xf4: {                                                                    // FXTRACT
      const v = f.get(0);
      if (v === 0 || !Number.isFinite(v)) { f.setSt(0, v === 0 ? -Infinity : v); f.push(v); if (v === 0) f.raise(ZE); return ST_NEXT; }
      const e = Math.floor(Math.log2(Math.abs(v)));
      let sig = v / Math.pow(2, e);
      let ee = e;
      if (Math.abs(sig) >= 2) { sig /= 2; ee++; } else if (Math.abs(sig) < 1) { sig *= 2; ee--; }
      f.setSt(0, ee); f.push(sig);
      return ST_NEXT;
    }
    case 0xf5: case 0xf8: {                                                         // FPREM1 / FPREM
      const a = f.get(0), b = f.get(1);
      let q = a / b;
      q = m === 0xf8 ? Math.trunc(q) : roundRc(q, 0);
      const r = a - q * b;
      f.setSt(0, r === 0 ? (a < 0 || Object.is(a, -0) ? -0 : 0) : r);
      const qi = Math.abs(q) % 8;
      f.fsw = (f.fsw & ~(C0 | C1 | C2 | C3)) | ((qi & 4) !== 0 ? C0 : 0) | ((qi & 2) !== 0 ? C3 : 0) | ((qi & 1) !== 0 ? C1 : 0);
      return ST_NEXT;
    }
    case 0xf6: f.top = (f.top - 1) & 7; return ST_NEXT;                             // FDECSTP
    case 0xf7: f.top = (f.top + 1) & 7; return ST_NEXT;                             // FINCSTP
    case 0xf9: { const x = f.get(0), y = f.get(1); f.pop(); f.setSt(0, y * Math.log2(1 + x)); return ST_NEXT; } // FYL2XP1
    case 0xfa: { const v = f.get(0); const r = Math.sqrt(v); f.setSt(0, r === r ? r : nanResult(f, v, v)); return ST_NEXT; } // FSQRT
    case 0xfb: { const v = f.get(0); f.setSt(0, Math.sin(v)); f.push(Math.cos(v)); f.fsw &= ~C2; return ST_NEXT; } // FSINCOS
    case 0xfc: { const v = f.get(0); f.setSt(0, roundRc(v, (f.fcw >> 10) & 3)); return ST_NEXT; }               // FRNDINT
    case 0xfd: { const a = f.get(0), b = f.get(1); f.setSt(0, a * Math.pow(2, Math.trunc(b))); return ST_NEXT; } // FSCALE
    case 0xfe: { const v = f.get(0); f.setSt(0, Math.sin(v)); f.fsw &= ~C2; return ST_NEXT; }                   // FSIN
    case 0xff: { const v = f.get(0); f.setSt(0, Math.cos(v)); f.fsw &= ~C2; return ST_NEXT; }                   // FCOS
    default: return ud(c);
  }
}

/** Integer conversion for FIST: rounding per FCW, indefinite (most negative) when out of range. */
function fistValue(f: Fpu, v: number, bits: number): number {
  const r = v === v ? roundRc(v, (f.fcw >> 10) & 3) : NaN;
  const lim = Math.pow(2, bits - 1);
  if (!(r >= -lim && r < lim)) { f.raise(IE); return -lim; }
  return r;
}

function x87Mem(c: FpCpu, i: number, grp: number, reg: number): number {
  const f = c.fpu;
  const lin = c.ea(i);
  if (c.excVec !== -1) return ST_EXC;
  // Arithmetic with a memory operand: D8 m32real, DC m64real, DA m32int, DE m16int.
  if (grp === 0 || grp === 4 || grp === 2 || grp === 6) {
    let b: number;
    if (grp === 0) { const v = c.rd32(lin); if (c.excVec !== -1) return ST_EXC; SCR_I[0] = v; b = SCR_F[0]!; }
    else if (grp === 4) { const lo = c.rd64(lin), hi = c.vhi; if (c.excVec !== -1) return ST_EXC; SCR_I[0] = lo; SCR_I[1] = hi; b = SCR[0]!; }
    else if (grp === 2) { const v = c.rd32(lin); if (c.excVec !== -1) return ST_EXC; b = v; }
    else { const v = c.rd16(lin); if (c.excVec !== -1) return ST_EXC; b = (v << 16) >> 16; }
    if (reg === 2 || reg === 3) return compare(c, f.get(0), b, false, reg === 3 ? 1 : 0);
    f.setSt(0, arith(f, reg, f.get(0), b));
    return ST_NEXT;
  }
  switch (grp * 8 + reg) {
    case 8: {                                                        // FLD m32
      let v = c.rd32(lin); if (c.excVec !== -1) return ST_EXC;
      if ((v & 0x7fc00000) === 0x7f800000 && (v & 0x3fffff) !== 0) { v |= 0x400000; f.raise(IE); }  // SNaN -> QNaN
      SCR_I[0] = v; f.push(SCR_F[0]!); return ST_NEXT;
    }
    case 10: case 11: {                                              // FST/FSTP m32
      const v = f.get(0);
      SCR_F[0] = v;
      c.wr32(lin, SCR_I[0]!);
      if (c.excVec !== -1) return ST_EXC;
      if (reg === 3) f.pop();
      return ST_NEXT;
    }
    case 12: return fldenv(c, lin);                           // FLDENV
    case 13: { const v = c.rd16(lin); if (c.excVec !== -1) return ST_EXC; f.fcw = v | 0x40; return ST_NEXT; }  // FLDCW
    case 14: return fnstenv(c, lin, false);                          // FNSTENV
    case 15: c.wr16(lin, f.fcw); return c.excVec !== -1 ? ST_EXC : ST_NEXT;  // FNSTCW
    case 24: case 56: {                                              // FILD m32 (DB /0), m16 (DF /0)
      let v: number;
      if (grp === 3) { v = c.rd32(lin); if (c.excVec !== -1) return ST_EXC; }
      else { v = (c.rd16(lin) << 16) >> 16; if (c.excVec !== -1) return ST_EXC; }
      f.push(v);
      return ST_NEXT;
    }
    case 61: {                                                       // FILD m64
      const lo = c.rd64(lin), hi = c.vhi; if (c.excVec !== -1) return ST_EXC;
      f.push(hi * TWO32 + (lo >>> 0));
      return ST_NEXT;
    }
    case 26: case 27: {                                              // FIST/FISTP m32
      const v = f.get(0);
      const r = fistValue(f, v, 32);
      c.wr32(lin, r | 0);
      if (c.excVec !== -1) return ST_EXC;
      if (reg === 3) f.pop();
      return ST_NEXT;
    }
    case 58: case 59: {                                              // FIST/FISTP m16
      const v = f.get(0);
      const r = fistValue(f, v, 16);
      c.wr16(lin, r & 0xffff);
      if (c.excVec !== -1) return ST_EXC;
      if (reg === 3) f.pop();
      return ST_NEXT;
    }
    case 63: {                                                       // FISTP m64
      const v = f.get(0);
      const r = fistValue(f, v, 64);
      const hi = Math.floor(r / TWO32);
      c.wr64(lin, (r - hi * TWO32) | 0, hi | 0);
      if (c.excVec !== -1) return ST_EXC;
      f.pop();
      return ST_NEXT;
    }
    case 29: {                                                       // FLD m80
      const img = c.fxImage;
      for (let k = 0; k < 10; k += 2) { const v = c.rd16(lin + k); if (c.excVec !== -1) return ST_EXC; img.setUint16(k, v, true); }
      f.push(f.load80(img, 0));
      return ST_NEXT;
    }
    case 31: {                                                       // FSTP m80
      if (!c.probeW(lin, 3) || !c.probeW(lin + 8, 1)) return ST_EXC;
      const img = c.fxImage;
      f.store80(f.get(0), img, 0);
      for (let k = 0; k < 10; k += 2) { c.wr16(lin + k, img.getUint16(k, true)); if (c.excVec !== -1) return ST_EXC; }
      f.pop();
      return ST_NEXT;
    }
    case 40: {                                                       // FLD m64 (DD /0)
      const lo = c.rd64(lin);
      let hi = c.vhi;
      if (c.excVec !== -1) return ST_EXC;
      if ((hi & 0x7ff80000) === 0x7ff00000 && ((hi & 0x7ffff) !== 0 || lo !== 0)) { hi |= 0x80000; f.raise(IE); }  // SNaN -> QNaN
      SCR_I[0] = lo; SCR_I[1] = hi; f.push(SCR[0]!);
      return ST_NEXT;
    }
    case 42: case 43: {                                              // FST/FSTP m64
      SCR[0] = f.get(0);
      c.wr64(lin, SCR_I[0]!, SCR_I[1]!);
      if (c.excVec !== -1) return ST_EXC;
      if (reg === 3) f.pop();
      return ST_NEXT;
    }
    case 44: return frstor(c, lin);                                  // FRSTOR
    case 46: return fnsave(c, lin);                                  // FNSAVE
    case 47: c.wr16(lin, f.status()); return c.excVec !== -1 ? ST_EXC : ST_NEXT;  // FNSTSW m16
    default: return ud(c);  // FBLD/FBSTP (packed BCD), FISTTP (SSE3, not advertised), reserved forms
  }
}

/** Full 16-bit tag word from the abridged one (00 valid, 01 zero, 10 special, 11 empty). */
function fullTags(f: Fpu): number {
  let t = 0;
  for (let p = 0; p < 8; p++) {
    let tag = 3;
    if ((f.tags & (1 << p)) !== 0) {
      const v = f.regs[p]!;
      tag = v === 0 ? 1 : !Number.isFinite(v) ? 2 : 0;
    }
    t |= tag << (2 * p);
  }
  return t;
}

/** FNSTENV, 28-byte protected-mode layout; masks all exceptions afterwards. */
function fnstenv(c: FpCpu, lin: number, keepMask: boolean): number {
  const f = c.fpu;
  if (!c.probeW(lin, 4) || !c.probeW(lin + 16, 3) || !c.probeW(lin + 24, 2)) return ST_EXC;
  const vals = [f.fcw | 0xffff0000, f.status() | 0xffff0000, fullTags(f) | 0xffff0000, f.fip, f.fop << 16, f.fdp, 0xffff0000];
  for (let k = 0; k < 7; k++) { c.wr32(lin + 4 * k, vals[k]! | 0); if (c.excVec !== -1) return ST_EXC; }
  if (!keepMask) f.fcw |= 0x3f;
  return ST_NEXT;
}
function fldenv(c: FpCpu, lin: number): number {
  const f = c.fpu;
  const fcw = c.rd32(lin), fsw = c.rd32(lin + 4), ftw = c.rd32(lin + 8);
  if (c.excVec !== -1) return ST_EXC;
  f.fcw = (fcw & 0x1f7f) | 0x40;
  f.fsw = fsw & 0xffff & ~0x3800;
  f.top = (fsw >> 11) & 7;
  let t = 0;
  for (let p = 0; p < 8; p++) if (((ftw >> (2 * p)) & 3) !== 3) t |= 1 << p;
  f.tags = t;
  f.raise(0);
  return ST_NEXT;
}
/** FNSAVE: environment, then ST(0)..ST(7) as 80-bit values; then FNINIT. */
function fnsave(c: FpCpu, lin: number): number {
  const f = c.fpu;
  if (!c.probeW(lin, 6) || !c.probeW(lin + 64, 5) || !c.probeW(lin + 100, 3)) return ST_EXC;
  if (fnstenv(c, lin, true) !== ST_NEXT) return ST_EXC;
  const img = c.fxImage;
  for (let k = 0; k < 8; k++) {
    f.store80(f.st(k), img, 0);
    for (let b = 0; b < 10; b += 2) { c.wr16(lin + 28 + 10 * k + b, img.getUint16(b, true)); if (c.excVec !== -1) return ST_EXC; }
  }
  f.init();
  return ST_NEXT;
}
function frstor(c: FpCpu, lin: number): number {
  const f = c.fpu;
  const img = c.fxImage;
  // Read everything first so a fault leaves the state untouched.
  for (let k = 0; k < 80; k += 2) { const v = c.rd16(lin + 28 + k); if (c.excVec !== -1) return ST_EXC; img.setUint16(128 + k, v, true); }
  if (fldenv(c, lin) !== ST_NEXT) return ST_EXC;
  for (let k = 0; k < 8; k++) f.setSt(k, f.load80(img, 128 + 10 * k));
  return ST_NEXT;
}
