/**
 * Floating-point and SIMD register state of the emulated processor, shared by the x87
 * (fpu.ts) and SSE (sse.ts) instruction modules and by cpu.ts: the XMM file with MXCSR, the
 * x87 stack with FCW/FSW/FTW and its 80-bit conversions, rounding by control bits, and the
 * `FpCpu` view of the processor those modules use.
 *
 * DEVNOTE: `FpCpu` is an interface (as jit.ts's `JitCpu`) so that sse.ts and fpu.ts do not
 * import cpu.ts, which imports them (no module cycle).
 */

const TWO32 = 4294967296;
// FSW bits used here.
const IE = 1, SF_ = 0x40, ES = 0x80, C1 = 0x200, BUSY = 0x8000;
const INDEF = NaN;

const SCR = new Float64Array(1);
const SCR_I = new Int32Array(SCR.buffer);

/** What the x87 and SSE modules use of the processor (cpu.ts implements it). */
export interface FpCpu {
  readonly D: Int32Array;
  readonly R: Int32Array;
  readonly sBase: Float64Array;
  readonly xmm: XmmFile;
  readonly fpu: Fpu;
  readonly fxImage: DataView;
  readonly mode: number;
  cr0: number; cr4: number;
  excVec: number; excCode: number; vhi: number; t1: number;
  ea(i: number): number;
  rdRM(i: number, sz: number): number;
  rd16(lin: number): number; rd32(lin: number): number; rd64(lin: number): number;
  wr8(lin: number, v: number): void; wr16(lin: number, v: number): void; wr32(lin: number, v: number): void;
  wr64(lin: number, lo: number, hi: number): void;
  probeW(lin: number, sz: number): boolean;
  getR(r: number, sz: number): number;
  setR(r: number, sz: number, lo: number, hi: number): void;
  setFlagsArith(f: number): void;
  getFlags(): number;
}

/** XMM registers and their views (one buffer). */
export class XmmFile {
  readonly x = new Int32Array(18 * 4);
  readonly u8 = new Uint8Array(this.x.buffer);
  readonly i8 = new Int8Array(this.x.buffer);
  readonly u16 = new Uint16Array(this.x.buffer);
  readonly i16 = new Int16Array(this.x.buffer);
  readonly f32 = new Float32Array(this.x.buffer);
  readonly f64 = new Float64Array(this.x.buffer);
  mxcsr = 0x1f80;
  reset(): void { this.x.fill(0); this.mxcsr = 0x1f80; }
}

/** Round to integer per MXCSR/FCW rounding control (0 nearest-even, 1 down, 2 up, 3 truncate). */
export function roundRc(v: number, rc: number): number {
  switch (rc) {
    case 0: { const r = Math.round(v); return (r - v === 0.5 && (r % 2) !== 0) ? r - 1 : r; }
    case 1: return Math.floor(v);
    case 2: return Math.ceil(v);
    default: return Math.trunc(v);
  }
}

/** x87 state. Physical register k holds `regs[k]`; ST(i) is regs[(top + i) & 7]. */
export class Fpu {
  readonly regs = new Float64Array(8);
  fcw = 0x37f;
  /** FSW without the TOP field. */
  fsw = 0;
  top = 0;
  /** Abridged tag word (FXSAVE form): bit k set = physical register k is valid. */
  tags = 0;
  fop = 0; fip = 0; fdp = 0;

  /** FNINIT: control, status and tags to their initial values; register contents are kept. */
  init(): void { this.fcw = 0x37f; this.fsw = 0; this.top = 0; this.tags = 0; this.fop = 0; this.fip = 0; this.fdp = 0; }
  /** Processor reset: FNINIT state and zeroed registers. */
  reset(): void { this.init(); this.regs.fill(0); }
  /** FSW with TOP. */
  status(): number { return (this.fsw & ~0x3800) | (this.top << 11); }
  st(i: number): number { return this.regs[(this.top + i) & 7]!; }
  setSt(i: number, v: number): void { this.regs[(this.top + i) & 7] = v; }
  valid(i: number): boolean { return (this.tags & (1 << ((this.top + i) & 7))) !== 0; }

  /** Raise exception flags; ES/B follow unmasked ones. */
  raise(f: number): void {
    this.fsw |= f;
    if ((this.fsw & ~this.fcw & 0x3f) !== 0) this.fsw |= ES | BUSY;
  }
  push(v: number): void {
    const t = (this.top - 1) & 7;
    if ((this.tags & (1 << t)) !== 0) { this.raise(IE | SF_ | C1); v = INDEF; }
    else this.fsw &= ~C1;
    this.top = t;
    this.tags |= 1 << t;
    this.regs[t] = v;
  }
  pop(): void { this.tags &= ~(1 << this.top); this.top = (this.top + 1) & 7; }
  /** ST(i) for reading; an empty register is a stack underflow (IE, SF; value = indefinite). */
  get(i: number): number {
    if (!this.valid(i)) { this.raise(IE | SF_); this.fsw &= ~C1; return INDEF; }
    return this.st(i);
  }

  /** A double as an 80-bit extended value at dv[off..off+10). */
  store80(v: number, dv: DataView, off: number): void {
    SCR[0] = v;
    const hi = SCR_I[1]!, lo = SCR_I[0]!;
    const sign = (hi >>> 31) << 15;
    const e = (hi >>> 20) & 0x7ff;
    let mHi = ((hi & 0xfffff) << 11) | (lo >>> 21), mLo = lo << 11;
    let e80: number;
    if (e === 0x7ff) { e80 = 0x7fff; mHi |= 0x80000000; }
    else if (e === 0) {
      if (mHi === 0 && mLo === 0) e80 = 0;
      else {
        // Double denormal: normal in extended precision.
        e80 = 16383 - 1022;
        while ((mHi & 0x80000000) === 0) { mHi = (mHi << 1) | (mLo >>> 31); mLo <<= 1; e80--; }
      }
    } else { e80 = e - 1023 + 16383; mHi |= 0x80000000; }
    dv.setInt32(off, mLo, true);
    dv.setInt32(off + 4, mHi, true);
    dv.setUint16(off + 8, sign | e80, true);
  }
  /** An 80-bit extended value as the nearest double. */
  load80(dv: DataView, off: number): number {
    const mLo = dv.getUint32(off, true), mHi = dv.getUint32(off + 4, true), se = dv.getUint16(off + 8, true);
    const neg = (se & 0x8000) !== 0, e = se & 0x7fff;
    let v: number;
    if (e === 0x7fff) {
      if ((mHi & 0x7fffffff) === 0 && mLo === 0) v = Infinity;
      else {
        // NaN: keep the top fraction bits (quiet bit included) as the double's payload.
        SCR_I[1] = (neg ? 0x80000000 : 0) | 0x7ff00000 | ((mHi >>> 11) & 0xfffff);
        SCR_I[0] = (mHi << 21) | (mLo >>> 11);
        SCR_I[1] |= 0x80000;   // loading quiets a signalling NaN
        return SCR[0]!;
      }
    } else {
      const m = mHi * TWO32 + mLo;   // one rounding to 53 bits
      // Scale in two steps so that results in the double's denormal range do not flush to 0
      // (a denormal result can round twice: after the 53-bit rounding of m, and here).
      const sc = e - 16383 - 63;
      v = m === 0 ? 0 : sc < -1000 ? m * Math.pow(2, sc + 1000) * Math.pow(2, -1000) : m * Math.pow(2, sc);
    }
    return neg ? -v : v;
  }
}

