/**
 * The emulated x86-64 processor: architectural state, software TLB and page walker, exception
 * and interrupt delivery, and the interpreter over decoded blocks (docs/adr/0007-emu-design.md).
 *
 * Spec: Intel SDM vols. 2 and 3 (AMD APM vol. 2/3 where Linux relies on AMD behaviour, e.g.
 * SYSCALL/SYSRET). Implemented: real mode, 32-bit protected mode, long mode with 4-level paging
 * (also legacy 2-level paging with PSE), descriptor loads, IVT/IDT delivery with IST, privilege
 * change, #DF and triple fault, the integer ISA listed in the issue, port I/O, MSRs, CPUID,
 * VMCALL/VMMCALL, SYSCALL/SYSRET, SWAPGS, VERR/VERW (Linux MDS buffer clears), LAR/LSL.
 * x87 (fpu.ts), SSE/SSE2 and FXSAVE/FXRSTOR (sse.ts).
 * Not yet: MMX, SSE3 and later, XSAVE, segment limit checks outside
 * real mode, legacy-PAE paging, TSS I/O bitmap, debug registers' breakpoints, TF single-step,
 * task switches, SYSENTER, PUSHA/POPA, BCD adjust instructions, the accessed bit of segment
 * descriptors. The exception table for #DF treats every first fault other than #PF/contributory
 * as benign (SDM table 6-5).
 *
 * DEVNOTE: nothing on the execution path throws or allocates. Memory helpers report a fault by
 * setting `excVec` (and `excCode`, `cr2`) and returning 0; each instruction checks it before
 * committing state and returns ST_EXC. Values are Int32 halves: `lo` returned, `hi` in `vhi`.
 */
import {
  ENDS_BLOCK, F_BASE, F_DISP, F_FL, F_IMM, F_IMM2, F_IMMHI, F_INDEX, F_IOFF, F_LEN, F_OP, F_REG, F_RM, F_SCALE,
  F_SUB, FL_ASZ_MASK, FL_ASZ_SHIFT, FL_MEM, FL_REP, FL_REPNE, FL_RIPREL, FL_SEG_MASK, FL_SEG_SHIFT, LOG_STRIDE, SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_LDTR, SEG_NONE,
  SEG_SS, SEG_TR, OP_ALU_RM_I, OP_BSF, OP_BT_RM_I, OP_BT_RM_R, OP_CALL_RM, OP_CALLF, OP_CALLF_RM, OP_DEC_RM,
  OP_IDIV_RM, OP_IMUL1_RM, OP_IMUL_R_RM_I, OP_IN, OP_JMP_REL, OP_MOV_R_CR, OP_MOV_R_DR, OP_MOV_R_I, OP_MOVSX, OP_NEG_RM,
  OP_POPCNT, OP_RDMSR, OP_RDTSCP, OP_SHRD, OP_TEST_RM_I, STR_CMPS, STR_INS, STR_LODS, STR_MOVS, STR_OUTS, STR_SCAS,
  STR_STOS,
} from './ops.js';
import { decode, UD_TOO_LONG, type CodeMode } from './decoder.js';
import { divu128 } from './arith.js';
import { CodeCache, MAX_BLOCK_INSNS, type PhysMem } from './memory.js';
import type { Lapic } from './lapic.js';
import { compileBlock, compileRegion, DONE, JIT_THRESHOLD, REGION_THRESHOLD } from './jit.js';
import { FOP_ADC, FOP_ADD, FOP_DEC, FOP_INC, FOP_LOGIC, FOP_NONE, FOP_SBB, FOP_SUB, TAG_NONE, TLB_BITS, TLB_MASK, TLBI_OFF, TLBI_REG, TLBI_TAG_HI, TLBI_TAG_LO } from './ops.js';
import type { ExitHandler } from '../backend.js';
import { sseStep } from './sse.js';
import { x87Step } from './fpu.js';
import { Fpu, XmmFile } from './fpregs.js';

// Instruction status codes.
export const ST_NEXT = 0, ST_JUMP = 1, ST_EXC = 2, ST_EXIT = 3;
// runSlice results.
export const RUN_SLICE = 0, RUN_STOPPED = 1, RUN_SHUTDOWN = 2, RUN_HALT_WAIT = 3, RUN_HALTED = 4, RUN_ERROR = 5, RUN_YIELD = 6;

// Exception vectors.
export const DE = 0, DB = 1, NMI = 2, BP = 3, OF_ = 4, BR = 5, UD = 6, NM = 7, DF = 8, TS = 10, NP = 11, SS = 12,
  GP = 13, PF = 14, MF = 16, AC = 17;

// EFLAGS bits.
export const CF = 1, PF_ = 4, AF = 0x10, ZF = 0x40, SF = 0x80, TF = 0x100, IF = 0x200, DF_ = 0x400, OF = 0x800,
  IOPL = 0x3000, NT = 0x4000, RF = 0x10000, VM = 0x20000, ACF = 0x40000, ID = 0x200000;
const ARITH = CF | PF_ | AF | ZF | SF | OF;

// CR0/CR4/EFER bits.
export const CR0_PE = 1, CR0_MP = 2, CR0_EM = 4, CR0_TS = 8, CR0_ET = 0x10, CR0_NE = 0x20, CR0_WP = 0x10000,
  CR0_AM = 0x40000, CR0_NW = 0x20000000, CR0_CD = 0x40000000, CR0_PG = 0x80000000 | 0;
export const CR4_TSD = 4, CR4_DE = 8, CR4_PSE = 0x10, CR4_PAE = 0x20, CR4_MCE = 0x40, CR4_PGE = 0x80, CR4_PCE = 0x100,
  CR4_OSFXSR = 0x200, CR4_OSXMMEXCPT = 0x400;
const CR4_SUPPORTED = CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_MCE | CR4_PGE | CR4_PCE | CR4_OSFXSR | CR4_OSXMMEXCPT;
export const EFER_SCE = 1, EFER_LME = 0x100, EFER_LMA = 0x400, EFER_NXE = 0x800;

// MSRs handled inside the processor.
export const MSR_TSC = 0x10, MSR_APIC_BASE = 0x1b, MSR_SYSENTER_CS = 0x174, MSR_SYSENTER_ESP = 0x175,
  MSR_SYSENTER_EIP = 0x176, MSR_PAT = 0x277, MSR_EFER = 0xc0000080, MSR_STAR = 0xc0000081, MSR_LSTAR = 0xc0000082,
  MSR_CSTAR = 0xc0000083, MSR_SFMASK = 0xc0000084, MSR_FS_BASE = 0xc0000100, MSR_GS_BASE = 0xc0000101,
  MSR_KERNEL_GS_BASE = 0xc0000102, MSR_TSC_AUX = 0xc0000103, MSR_TSC_DEADLINE = 0x6e0, MSR_ARCH_CAPABILITIES = 0x10a;

/**
 * IA32_ARCH_CAPABILITIES (read-only; enumerated by CPUID.7.0:EDX[29], index.ts): this processor
 * executes nothing speculatively, so it states that it is not affected by the transient-execution
 * flaws the MSR has "_NO" bits for (SDM vol. 4, table 2-2; Linux arch/x86/kernel/cpu/common.c
 * cpu_set_bug_bits). Without it a guest assumes an unknown vendor's processor has them all and
 * pays for mitigations that protect nothing here: page-table isolation (two CR3 writes and TLB
 * flushes per kernel entry from user mode), VERW buffer clearing on every return to user mode.
 * Low word: RDCL_NO (0, Meltdown), SSB_NO (4), MDS_NO (5), PSCHANGE_MC_NO (6), TAA_NO (8),
 * SBDR_SSDP_NO (13), FBSDP_NO (14), PSDP_NO (15), BHI_NO (20), PBRSB_NO (24), GDS_NO (26),
 * RFDS_NO (27); high word: ITS_NO (62).
 */
export const ARCH_CAPABILITIES_LO = (1 << 0) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 8) | (1 << 13) | (1 << 14) | (1 << 15) |
  (1 << 20) | (1 << 24) | (1 << 26) | (1 << 27);
export const ARCH_CAPABILITIES_HI = 1 << 30;


const JC_BITS = 12, JC_SIZE = 1 << JC_BITS, JC_MASK = JC_SIZE - 1;
const TLB_SIZE = 1 << TLB_BITS;
const ACC_R = 0, ACC_W = 1, ACC_X = 2;
const TWO32 = 4294967296;
/** MAXPHYADDR advertised in CPUID 0x80000008. */
export const PHYS_BITS = 40;
/** FL_* address bits of a memory operand the interpreter sums itself (fastMem): 64-bit addressing, no segment base, not RIP-relative. */
const FAST_EA = (3 << FL_ASZ_SHIFT) | (SEG_NONE << FL_SEG_SHIFT);
/** 2^PHYS_BITS, computed once (V8 left `2 ** PHYS_BITS` in the page walk as a call to pow). */
const PHYS_LIMIT = 2 ** PHYS_BITS;
const REP_CHUNK = 4096;
/** Bytes one REP STOS/MOVS bulk pass (#repBulk) moves before the instruction is resumed. */
const REP_BULK_BYTES = 65536;

const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) { let p = 1; for (let b = i; b !== 0; b >>= 1) p ^= b & 1; PARITY[i] = p ? PF_ : 0; }
const MASK = [0xff, 0xffff, -1, -1];

function sx(v: number, sz: number): number {
  return sz === 0 ? (v << 24) >> 24 : sz === 1 ? (v << 16) >> 16 : v | 0;
}
/** A 64-bit value from halves as a number when canonical (signed), else NaN. */
function canon(lo: number, hi: number): number {
  return ((hi << 16) >> 16) === hi ? hi * TWO32 + (lo >>> 0) : NaN;
}

/** What the processor asks of its VP / partition. */
export interface CpuEnv {
  readonly vpIndex: number;
  exits(): ExitHandler;
  cpuid(fn: number, index: number, out: Int32Array): void;
  interceptMsr(msr: number): boolean;
  /**
   * Whether another processor of the partition can run now (not halted, not waiting for
   * STARTUP): a PAUSE then ends the slice (pause-loop exiting), so that a processor spinning on
   * a lock or on another processor's answer (Linux csd_lock_wait, queued spinlocks) lets that
   * one run instead of spinning out its slice on the shared thread.
   */
  othersRunnable(): boolean;
}

/**
 * The TLB loop of Cpu.flushNonGlobal (every CR3 write) over the slots filled with non-global
 * translations since the last one (`list`, n entries; `listed` marks them), apart from the
 * class: as a method, V8 replaced its on-stack (OSR) code in a loop of "wrong map"
 * deoptimizations (about 2,000 per boot); over typed arrays alone there is no map to check.
 */
function dropNonGlobal(list: Int32Array, n: number, listed: Uint8Array, g: Uint8Array, tag: Float64Array, ti: Int32Array): void {
  for (let k = 0; k < n; k++) {
    const s = list[k]!;
    listed[s] = 0;
    if (g[s] === 0) { tag[s] = NaN; ti[s * 4 + TLBI_TAG_HI] = TAG_NONE; }
  }
}

export class Cpu {
  // Registers: GPR n at [2n] (low) and [2n+1] (high).
  readonly R = new Int32Array(32);
  /** XMM0-15 and MXCSR (sse.ts). */
  readonly xmm = new XmmFile();
  /** x87 stack and control/status/tag words (fpu.ts). */
  readonly fpu = new Fpu();
  /** Scratch for FXSAVE/FXRSTOR and 80-bit loads/stores. */
  readonly fxImage = new DataView(new ArrayBuffer(512));
  rip = 0;
  eflags = 2;
  // Lazy flags.
  fOp = FOP_NONE; fSz = 0; fDst = 0; fDstHi = 0; fSrc = 0; fSrcHi = 0; fRes = 0; fResHi = 0; fCin = 0;
  // Segments (ES CS SS DS FS GS LDTR TR).
  readonly sSel = new Int32Array(8);
  readonly sBase = new Float64Array(8);
  readonly sLimit = new Float64Array(8);
  readonly sAttr = new Int32Array(8);
  gdtBase = 0; gdtLimit = 0xffff; idtBase = 0; idtLimit = 0xffff;
  cr0 = CR0_ET | CR0_CD | CR0_NW; cr2 = 0; cr3 = 0; cr4 = 0; efer = 0; xcr0 = 1;
  readonly dr = new Float64Array(8);
  cpl = 0;
  mode: CodeMode = 0;
  // MSRs.
  apicBase = 0xfee00000 + 0x900; // enabled, BSP (set per VP)
  starLo = 0; starHi = 0; lstar = 0; cstar = 0; sfmask = 0; kernelGsBase = 0;
  patLo = 0x00070406; patHi = 0x00070406; tscOffset = 0; tscAux = 0;
  sysenterCs = 0; sysenterEsp = 0; sysenterEip = 0;
  // Events.
  excVec = -1; excCode = -1;
  halted = false;
  shadow = 0;
  nmiPending = false;
  nmiMasked = false;
  stopReq = false;
  brk = 0;
  exitReason = 0;
  errorMessage = '';
  instret = 0;
  // Scratch results.
  vhi = 0; rhi = 0; t0 = 0; t1 = 0;
  readonly #cpuidOut = new Int32Array(4);
  readonly #mmio = [new Uint8Array(1), new Uint8Array(2), new Uint8Array(4), new Uint8Array(8)];
  readonly #mmioDv = this.#mmio.map((a) => new DataView(a.buffer));
  // TLB: 6 arrays (R, W, X) x (supervisor, user).
  readonly tlbTag = new Float64Array(6 * TLB_SIZE).fill(NaN);
  readonly tlbReg = new Int32Array(6 * TLB_SIZE);
  readonly tlbOff = new Float64Array(6 * TLB_SIZE);
  readonly tlbPhys = new Float64Array(6 * TLB_SIZE);
  /**
   * The same slots keyed by 32-bit halves, for compiled code (jit.ts) and the interpreter's
   * fastMem, which form addresses as int32 lo/hi pairs. Four adjacent ints per slot (TLBI_*,
   * one cache line per probe): tag lo = bits 12..43 of the address, tag hi = the address >> 44
   * (arithmetic), RAM region, offset of the page in it. A slot matches here only when it maps
   * plain RAM the access may use directly with an offset below 2^31; everything else keeps
   * tag hi TAG_NONE and goes through the rd/wr methods (MMIO, ROM writes, code pages, faults).
   */
  readonly tlbI = new Int32Array(6 * TLB_SIZE * 4).fill(TAG_NONE);
  /** 1 for a global translation (see xlate): a CR3 write keeps it (flushNonGlobal). */
  readonly tlbGlobal = new Uint8Array(6 * TLB_SIZE);
  /** Slots filled with non-global translations since the last flush (each once: #tlbListed), for flushNonGlobal. */
  readonly #tlbFilled = new Int32Array(6 * TLB_SIZE);
  #tlbFilledN = 0;
  readonly #tlbListed = new Uint8Array(6 * TLB_SIZE);
  tlbR = 0; tlbW = TLB_SIZE; tlbX = 2 * TLB_SIZE;
  #sys = false;
  ripBase = 0;
  // Jump cache (runSlice): linear RIP, translation generation and block per slot.
  readonly jcLin = new Float64Array(JC_SIZE).fill(NaN);
  readonly jcGen = new Float64Array(JC_SIZE);
  /**
   * Per bucket of linear code pages (page number mod JC_SIZE): the generation in which a block
   * starting on (or crossing into) a page of the bucket entered the jump cache; flushPage
   * starts a new generation only for such pages.
   */
  readonly jcPage = new Float64Array(JC_SIZE).fill(-1);
  /** The same for blocks on global pages, with gGen. */
  readonly jcPageG = new Float64Array(JC_SIZE).fill(-1);
  readonly jcBlk = new Int32Array(JC_SIZE);
  /** Translation generation (partition-unique): bumped by TLB flushes, mode and CPL changes. */
  gen = 0;
  /** Translation generation of global pages (see newGen). */
  gGen = 0;
  /** Moves on whenever decoded blocks are dropped (CodeCache.onInvalidate): compiled regions check it. */
  codeGen = 0;
  /** Whether the block #findBlock returned lies on a global page (see xlate). */
  #fetchGlobal = false;
  /** The block the running compiled function is in (jit.ts regions move it). */
  rgnBlk = 0;
  /** Compile hot blocks to JavaScript (jit.ts); off only to test the interpreter alone. */
  jit = true;
  /** Interpreted runs of a block before it is compiled (tests lower it to keep programs short). */
  jitThreshold = JIT_THRESHOLD;
  /**
   * Compile the very hot blocks of a page together (jit.ts compileRegion). Off by default:
   * bench:cpu is ~15% faster in most runs and ~30% slower in some, when V8, after
   * deoptimizing the region function, keeps entering its on-stack-replaced code (ADR 0007).
   */
  regions = false;
  /** Dispatcher runs of a compiled block that make its page a region (tests lower it). */
  regionThreshold = REGION_THRESHOLD;
  readonly D: Int32Array;

  constructor(readonly phys: PhysMem, readonly cache: CodeCache, readonly lapic: Lapic, readonly env: CpuEnv) {
    this.D = cache.pool;
    this.reset();
  }

  /** Architectural reset state (SDM 9.1.1), then the caller sets its own entry state. */
  reset(): void {
    this.R.fill(0);
    this.xmm.reset();
    this.fpu.reset();
    this.rip = 0xfff0;
    this.eflags = 2;
    this.fOp = FOP_NONE;
    for (let s = 0; s < 8; s++) { this.sSel[s] = 0; this.sBase[s] = 0; this.sLimit[s] = 0xffff; this.sAttr[s] = 0x93; }
    this.sSel[SEG_CS] = 0xf000; this.sBase[SEG_CS] = 0xffff0000; this.sAttr[SEG_CS] = 0x9b;
    this.sAttr[SEG_LDTR] = 0x82; this.sAttr[SEG_TR] = 0x8b;
    this.gdtBase = 0; this.gdtLimit = 0xffff; this.idtBase = 0; this.idtLimit = 0xffff;
    this.cr0 = CR0_ET | CR0_CD | CR0_NW; this.cr2 = 0; this.cr3 = 0; this.cr4 = 0; this.efer = 0;
    this.cpl = 0; this.halted = false; this.shadow = 0; this.excVec = -1;
    this.updateMode();
    this.flushTlb();
  }

  // ---------------------------------------------------------------- registers

  getR(r: number, sz: number): number {
    const R = this.R;
    if (sz === 0) return r < 16 ? R[r << 1]! & 0xff : (R[(r - 16) << 1]! >> 8) & 0xff;
    if (sz === 1) return R[r << 1]! & 0xffff;
    this.vhi = R[(r << 1) + 1]!;
    return R[r << 1]!;
  }

  setR(r: number, sz: number, lo: number, hi: number): void {
    const R = this.R;
    if (sz === 0) {
      if (r < 16) R[r << 1] = (R[r << 1]! & ~0xff) | (lo & 0xff);
      else { const k = (r - 16) << 1; R[k] = (R[k]! & ~0xff00) | ((lo & 0xff) << 8); }
    } else if (sz === 1) R[r << 1] = (R[r << 1]! & ~0xffff) | (lo & 0xffff);
    else { R[r << 1] = lo; R[(r << 1) + 1] = sz === 3 ? hi : 0; }
  }

  /** Add a small signed delta to a 64-bit register. */
  addR64(r: number, delta: number): void {
    const R = this.R, k = r << 1;
    const s = (R[k]! >>> 0) + delta;
    R[k] = s | 0;
    R[k + 1] = (R[k + 1]! + Math.floor(s / TWO32)) | 0;
  }

  // ---------------------------------------------------------------- flags

  #ult(a: number, aHi: number, b: number, bHi: number, sz: number): boolean {
    if (sz === 3) return (aHi >>> 0) < (bHi >>> 0) || (aHi === bHi && (a >>> 0) < (b >>> 0));
    const m = MASK[sz]!;
    return ((a & m) >>> 0) < ((b & m) >>> 0);
  }

  getCF(): number {
    switch (this.fOp) {
      case FOP_NONE: return this.eflags & CF;
      case FOP_ADD: return this.#ult(this.fRes, this.fResHi, this.fDst, this.fDstHi, this.fSz) ? 1 : 0;
      case FOP_ADC: return this.#ult(this.fRes, this.fResHi, this.fDst, this.fDstHi, this.fSz) ||
        (this.fCin !== 0 && this.fRes === this.fDst && this.fResHi === this.fDstHi) ? 1 : 0;
      case FOP_SUB: return this.#ult(this.fDst, this.fDstHi, this.fSrc, this.fSrcHi, this.fSz) ? 1 : 0;
      case FOP_SBB: return this.#ult(this.fDst, this.fDstHi, this.fSrc, this.fSrcHi, this.fSz) ||
        (this.fCin !== 0 && this.fSrc === this.fDst && this.fSrcHi === this.fDstHi) ? 1 : 0;
      case FOP_LOGIC: return 0;
      default: return this.fCin;
    }
  }
  getOF(): boolean {
    switch (this.fOp) {
      case FOP_NONE: return (this.eflags & OF) !== 0;
      case FOP_ADD: case FOP_ADC: case FOP_INC: return ((this.fDstHi ^ this.fResHi) & (this.fSrcHi ^ this.fResHi)) < 0;
      case FOP_SUB: case FOP_SBB: case FOP_DEC: return ((this.fDstHi ^ this.fSrcHi) & (this.fDstHi ^ this.fResHi)) < 0;
      default: return false;
    }
  }
  getZF(): boolean { return this.fOp === FOP_NONE ? (this.eflags & ZF) !== 0 : (this.fRes | this.fResHi) === 0; }
  getSF(): boolean { return this.fOp === FOP_NONE ? (this.eflags & SF) !== 0 : this.fResHi < 0; }
  getPF(): boolean { return this.fOp === FOP_NONE ? (this.eflags & PF_) !== 0 : PARITY[this.fRes & 0xff] !== 0; }
  getAF(): boolean {
    if (this.fOp === FOP_NONE) return (this.eflags & AF) !== 0;
    if (this.fOp === FOP_LOGIC) return false;
    return ((this.fDst ^ this.fSrc ^ this.fRes) & 0x10) !== 0;
  }

  /** Fold the lazy flags into `eflags`. */
  materialize(): void {
    if (this.fOp === FOP_NONE) return;
    const f = this.getCF() | (this.getPF() ? PF_ : 0) | (this.getAF() ? AF : 0) | (this.getZF() ? ZF : 0) |
      (this.getSF() ? SF : 0) | (this.getOF() ? OF : 0);
    this.eflags = (this.eflags & ~ARITH) | f;
    this.fOp = FOP_NONE;
  }
  getFlags(): number { this.materialize(); return (this.eflags | 2) >>> 0; }
  setFlagsArith(f: number): void { this.fOp = FOP_NONE; this.eflags = (this.eflags & ~ARITH) | (f & ARITH) | 2; }

  /** Flags of a result (SF ZF PF from it, AF 0) with explicit CF/OF. */
  #resultFlags(lo: number, hi: number, sz: number, cf: number, of: number): void {
    const r = sz === 3 ? lo : sx(lo, sz);
    const h = sz === 3 ? hi : r >> 31;
    this.eflags = (this.eflags & ~ARITH) | (cf & 1) | PARITY[r & 0xff]! | ((r | h) === 0 ? ZF : 0) | (h < 0 ? SF : 0) | (of ? OF : 0);
    this.fOp = FOP_NONE;
  }

  cond(cc: number): boolean {
    let r: boolean;
    const op = this.fOp;
    switch (cc >> 1) {
      case 0: r = this.getOF(); break;
      case 1: r = this.getCF() !== 0; break;
      case 2: r = this.getZF(); break;
      case 3: r = this.getCF() !== 0 || this.getZF(); break;
      case 4: r = this.getSF(); break;
      case 5: r = this.getPF(); break;
      case 6:
        if (op === FOP_SUB) r = this.#slt(); else r = this.getSF() !== this.getOF();
        break;
      default:
        if (op === FOP_SUB) r = this.#slt() || (this.fRes | this.fResHi) === 0;
        else r = this.getZF() || this.getSF() !== this.getOF();
        break;
    }
    return (cc & 1) !== 0 ? !r : r;
  }
  #slt(): boolean {
    if (this.fSz !== 3) return this.fDst < this.fSrc;
    return this.fDstHi < this.fSrcHi || (this.fDstHi === this.fSrcHi && (this.fDst >>> 0) < (this.fSrc >>> 0));
  }

  #setLazy(op: number, sz: number, d: number, dHi: number, s: number, sHi: number, r: number, rHi: number, cin: number): void {
    this.fOp = op; this.fSz = sz; this.fDst = d; this.fDstHi = dHi; this.fSrc = s; this.fSrcHi = sHi;
    this.fRes = r; this.fResHi = rHi; this.fCin = cin;
  }

  /** ALU kinds 0-7 (ADD OR ADC SBB AND SUB XOR CMP). Returns low result, high in rhi. */
  alu(k: number, sz: number, a: number, aHi: number, b: number, bHi: number): number {
    switch (k) {
      case 0: return this.add(sz, a, aHi, b, bHi, 0, FOP_ADD);
      case 2: return this.add(sz, a, aHi, b, bHi, this.getCF(), FOP_ADC);
      case 3: return this.sub(sz, a, aHi, b, bHi, this.getCF(), FOP_SBB);
      case 5: case 7: return this.sub(sz, a, aHi, b, bHi, 0, FOP_SUB);
      case 1: return this.logic(sz, a | b, aHi | bHi);
      case 4: return this.logic(sz, a & b, aHi & bHi);
      default: return this.logic(sz, a ^ b, aHi ^ bHi);
    }
  }
  add(sz: number, a: number, aHi: number, b: number, bHi: number, cin: number, op: number): number {
    if (sz !== 3) {
      const r = sx(a + b + cin, sz), da = sx(a, sz), db = sx(b, sz);
      this.#setLazy(op, sz, da, da >> 31, db, db >> 31, r, r >> 31, cin);
      this.rhi = 0;
      return r;
    }
    const s = (a >>> 0) + (b >>> 0) + cin;
    const lo = s | 0, hi = (aHi + bHi + (s > 0xffffffff ? 1 : 0)) | 0;
    this.#setLazy(op, 3, a, aHi, b, bHi, lo, hi, cin);
    this.rhi = hi;
    return lo;
  }
  sub(sz: number, a: number, aHi: number, b: number, bHi: number, cin: number, op: number): number {
    if (sz !== 3) {
      const r = sx(a - b - cin, sz), da = sx(a, sz), db = sx(b, sz);
      this.#setLazy(op, sz, da, da >> 31, db, db >> 31, r, r >> 31, cin);
      this.rhi = 0;
      return r;
    }
    const s = (a >>> 0) - (b >>> 0) - cin;
    const lo = s | 0, hi = (aHi - bHi - (s < 0 ? 1 : 0)) | 0;
    this.#setLazy(op, 3, a, aHi, b, bHi, lo, hi, cin);
    this.rhi = hi;
    return lo;
  }
  logic(sz: number, r: number, rHi: number): number {
    if (sz !== 3) { r = sx(r, sz); rHi = r >> 31; }
    this.#setLazy(FOP_LOGIC, sz, 0, 0, 0, 0, r, rHi, 0);
    this.rhi = rHi;
    return r;
  }
  incdec(sz: number, a: number, aHi: number, dec: boolean): number {
    const cf = this.getCF();
    const r = dec ? this.sub(sz, a, aHi, 1, 0, 0, FOP_DEC) : this.add(sz, a, aHi, 1, 0, 0, FOP_INC);
    this.fCin = cf;
    return r;
  }

  // ---------------------------------------------------------------- modes and segments

  updateMode(): void {
    const lma = (this.efer & EFER_LMA) !== 0;
    const a = this.sAttr[SEG_CS]!;
    const old = this.mode;
    if ((this.cr0 & CR0_PE) === 0) this.mode = 0;
    else if (lma && (a & 0x2000) !== 0) this.mode = 2;
    else this.mode = (a & 0x4000) !== 0 ? 1 : 0;
    // Blocks are decoded per code size, so the jump cache holds only for the same one (every
    // interrupt and IRET comes here; the kernel's 128,000 per boot emptied it each time).
    if (this.mode !== old) this.newGen();
    this.setCpl(this.cpl);
  }
  setCpl(cpl: number): void {
    if (cpl !== this.cpl) this.newGen();
    this.cpl = cpl;
    const u = cpl === 3 && !this.#sys ? 3 * TLB_SIZE : 0;
    this.tlbR = u; this.tlbW = u + TLB_SIZE; this.tlbX = u + 2 * TLB_SIZE;
  }
  #supervisor(on: boolean): void { this.#sys = on; this.setCpl(this.cpl); }

  /** Wrap an instruction pointer to the current code size. */
  wrapIp(v: number): number { return this.mode === 2 ? v : this.mode === 1 ? v >>> 0 : v & 0xffff; }

  // ---------------------------------------------------------------- TLB and page walk

  flushTlb(): void { this.tlbTag.fill(NaN); this.tlbI.fill(TAG_NONE); this.#tlbListed.fill(0); this.#tlbFilledN = 0; this.newGen(); }
  /**
   * A CR3 write with CR4.PGE set: global translations stay (the kernel's, identical in every
   * address space, so a context switch no longer costs the kernel its TLB and jump cache).
   */
  flushNonGlobal(): void {
    dropNonGlobal(this.#tlbFilled, this.#tlbFilledN, this.#tlbListed, this.tlbGlobal, this.tlbTag, this.tlbI);
    this.#tlbFilledN = 0;
    this.gen = ++this.cache.genCounter;
  }
  /**
   * A new translation generation: jump-cache entries recorded under the old one are not
   * followed. `gen` covers every translation; `gGen`, which entries of blocks on global pages
   * record, changes with everything but CR3 writes.
   */
  newGen(): void { this.gen = ++this.cache.genCounter; this.gGen = ++this.cache.genCounter; }
  flushPage(lin: number): void {
    const vpn = Math.floor(lin / 4096), s = vpn & TLB_MASK;
    // The jump cache only if it may hold a block on this page in this generation (INVLPG of
    // data pages is far more common: kmap, vmalloc).
    if (this.jcPage[vpn & JC_MASK] === this.gen || this.jcPageG[vpn & JC_MASK] === this.gGen) this.newGen();
    for (let k = 0; k < 6; k++) if (this.tlbTag[k * TLB_SIZE + s] === vpn) { this.tlbTag[k * TLB_SIZE + s] = NaN; this.tlbI[(k * TLB_SIZE + s) * 4 + TLBI_TAG_HI] = TAG_NONE; }
  }
  /** A physical page became code: drop fast write mappings of it. */
  dropWriteMappings(pa: number): void {
    for (const base of [TLB_SIZE, 4 * TLB_SIZE]) {
      for (let s = base; s < base + TLB_SIZE; s++) if (this.tlbPhys[s] === pa && this.tlbReg[s]! >= 0) { this.tlbReg[s] = -1; this.tlbI[s * 4 + TLBI_TAG_HI] = TAG_NONE; }
    }
  }

  #pageFault(lin: number, code: number): number {
    this.cr2 = lin;
    this.excVec = PF; this.excCode = code;
    return -1;
  }
  #physRd32(pa: number): number {
    const r = this.phys.find(pa);
    if (r < 0 || pa + 4 > this.phys.end[r]!) return 0;
    return this.phys.dv[r]!.getInt32(pa - this.phys.start[r]!, true);
  }
  #physWr32(pa: number, v: number): void {
    const r = this.phys.find(pa);
    if (r < 0 || !this.phys.writable[r]! || pa + 4 > this.phys.end[r]!) return;
    this.phys.dv[r]!.setInt32(pa - this.phys.start[r]!, v, true);
  }

  /**
   * Translate `lin` for an access, fill the TLB slot, and return its index, or -1 with the
   * fault (#PF or #GP) set.
   */
  xlate(lin: number, acc: number): number {
    const user = this.cpl === 3 && !this.#sys;
    const write = acc === ACC_W;
    let pa: number;
    let writable = true;
    // A global translation (G in the leaf entry, CR4.PGE): kept across CR3 writes.
    let global = 0;
    if ((this.cr0 & CR0_PG) === 0) {
      pa = Math.floor(lin / 4096) * 4096;
      if (pa < 0) pa += TWO32;
    } else if ((this.efer & EFER_LMA) !== 0) {
      if (lin < -140737488355328 || lin >= 140737488355328) { this.excVec = GP; this.excCode = 0; return -1; }
      const hi = Math.floor(lin / TWO32), lo = lin >>> 0;
      const nxe = (this.efer & EFER_NXE) !== 0;
      const ec = (write ? 2 : 0) | (user ? 4 : 0) | (acc === ACC_X && nxe ? 16 : 0);
      let table = Math.floor(this.cr3 / 4096) * 4096 % PHYS_LIMIT;
      let rw = 2, us = 4, nx = 0;
      let level = 4;
      let pageSize = 4096;
      let eLo = 0, eHi = 0, eAddr = 0;
      for (; level >= 1; level--) {
        const idx = level === 4 ? (hi >>> 7) & 0x1ff : level === 3 ? (((hi & 0x7f) << 2) | (lo >>> 30)) : level === 2 ? (lo >>> 21) & 0x1ff : (lo >>> 12) & 0x1ff;
        eAddr = table + idx * 8;
        eLo = this.#physRd32(eAddr);
        eHi = this.#physRd32(eAddr + 4);
        if ((eLo & 1) === 0) return this.#pageFault(lin, ec);
        if ((eHi & 0x000fff00) !== 0 || (!nxe && eHi < 0)) return this.#pageFault(lin, ec | 1 | 8);
        rw &= eLo; us &= eLo; nx |= eHi;
        if ((eLo & 0x20) === 0) this.#physWr32(eAddr, eLo | 0x20);
        const ps = (eLo & 0x80) !== 0;
        if (ps && level === 4) return this.#pageFault(lin, ec | 1 | 8);
        const base = (eHi & 0xfffff) * TWO32 + ((eLo & 0xfffff000) >>> 0);
        if (ps && level > 1) {
          pageSize = level === 3 ? 1 << 30 : 1 << 21;
          if (((eLo >>> 13) & ((pageSize >>> 13) - 1)) !== 0) return this.#pageFault(lin, ec | 1 | 8);
          table = base - (base % pageSize);
          break;
        }
        table = base;
      }
      if (level === 0) level = 1;
      // Permissions, accumulated over the walk.
      if (user && us === 0) return this.#pageFault(lin, ec | 1);
      if (write && (rw & 2) === 0 && (user || (this.cr0 & CR0_WP) !== 0)) return this.#pageFault(lin, ec | 1);
      if (acc === ACC_X && nxe && nx < 0) return this.#pageFault(lin, ec | 1);
      writable = (rw & 2) !== 0 || (!user && (this.cr0 & CR0_WP) === 0);
      if (write && (eLo & 0x40) === 0) this.#physWr32(eAddr, eLo | 0x60);
      else if (!write) writable = writable && (eLo & 0x40) !== 0; // write access must set D first
      pa = table + (pageSize === 4096 ? 0 : (lo & (pageSize - 1) & ~0xfff) >>> 0);
      if ((eLo & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0) global = 1;
    } else if ((this.cr4 & CR4_PAE) !== 0) {
      this.errorMessage = 'legacy PAE paging is not implemented';
      this.excVec = -2;
      return -1;
    } else {
      // 32-bit paging (SDM 4.3).
      const l = lin >>> 0;
      const ec = (write ? 2 : 0) | (user ? 4 : 0);
      const pdeAddr = (Math.floor(this.cr3 / 4096) * 4096 % TWO32) + (l >>> 22) * 4;
      const pde = this.#physRd32(pdeAddr);
      if ((pde & 1) === 0) return this.#pageFault(lin, ec);
      let rw = pde & 2, us = pde & 4;
      if ((pde & 0x20) === 0) this.#physWr32(pdeAddr, pde | 0x20);
      if ((pde & 0x80) !== 0 && (this.cr4 & CR4_PSE) !== 0) {
        if (write && (pde & 0x40) === 0) this.#physWr32(pdeAddr, pde | 0x60);
        pa = ((pde & 0xffc00000) >>> 0) + (l & 0x3ff000);
        writable = (pde & 0x40) !== 0;
      } else {
        const pteAddr = ((pde & 0xfffff000) >>> 0) + ((l >>> 12) & 0x3ff) * 4;
        const pte = this.#physRd32(pteAddr);
        if ((pte & 1) === 0) return this.#pageFault(lin, ec);
        rw &= pte; us &= pte;
        if (write) { if ((pte & 0x60) !== 0x60) this.#physWr32(pteAddr, pte | 0x60); }
        else if ((pte & 0x20) === 0) this.#physWr32(pteAddr, pte | 0x20);
        pa = (pte & 0xfffff000) >>> 0;
        writable = (pte & 0x40) !== 0 || write;
      }
      if (user && us === 0) return this.#pageFault(lin, ec | 1);
      if (write && rw === 0 && (user || (this.cr0 & CR0_WP) !== 0)) return this.#pageFault(lin, ec | 1);
      writable = writable && (rw !== 0 || (!user && (this.cr0 & CR0_WP) === 0));
    }
    void writable;
    // Fill the slot for this access kind.
    const vpn = Math.floor(lin / 4096);
    const s = (acc === ACC_R ? this.tlbR : acc === ACC_W ? this.tlbW : this.tlbX) + (vpn & TLB_MASK);
    const r = this.phys.find(pa);
    let reg = -1;
    if (r >= 0 && pa + 4096 <= this.phys.end[r]! && !this.#isApic(pa)) {
      reg = r;
      if (acc === ACC_W) {
        const pg = Math.floor((pa - this.phys.start[r]!) / 4096);
        if (!this.phys.writable[r]! || this.phys.code[r]![pg] !== 0) reg = -1;
      }
    }
    const off = r >= 0 ? pa - this.phys.start[r]! : 0;
    this.tlbTag[s] = vpn;
    this.tlbReg[s] = reg;
    this.tlbOff[s] = off;
    const ti = this.tlbI, s4 = s * 4;
    ti[s4 + TLBI_TAG_LO] = vpn | 0;
    ti[s4 + TLBI_TAG_HI] = reg >= 0 && off < 0x7fff0000 ? Math.floor(vpn / TWO32) : TAG_NONE;
    ti[s4 + TLBI_REG] = reg;
    ti[s4 + TLBI_OFF] = off | 0;
    this.tlbGlobal[s] = global;
    if (global === 0 && this.#tlbListed[s] === 0) { this.#tlbListed[s] = 1; this.#tlbFilled[this.#tlbFilledN++] = s; }
    this.tlbPhys[s] = pa;
    return s;
  }

  #isApic(pa: number): boolean {
    return (this.apicBase & 0x800) !== 0 && pa === Math.floor(this.apicBase / 4096) * 4096 % PHYS_LIMIT;
  }

  // ---------------------------------------------------------------- memory access

  rd8(lin: number): number {
    const vpn = Math.floor(lin / 4096), s = this.tlbR + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn) { const r = this.tlbReg[s]!; if (r >= 0) return this.phys.u8[r]![this.tlbOff[s]! + (lin & 0xfff)]!; }
    return this.#rdSlow(lin, 0);
  }
  rd16(lin: number): number {
    const vpn = Math.floor(lin / 4096), s = this.tlbR + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn && (lin & 0xfff) <= 0xffe) { const r = this.tlbReg[s]!; if (r >= 0) return this.phys.dv[r]!.getUint16(this.tlbOff[s]! + (lin & 0xfff), true); }
    return this.#rdSlow(lin, 1);
  }
  rd32(lin: number): number {
    const vpn = Math.floor(lin / 4096), s = this.tlbR + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn && (lin & 0xfff) <= 0xffc) { const r = this.tlbReg[s]!; if (r >= 0) return this.phys.dv[r]!.getInt32(this.tlbOff[s]! + (lin & 0xfff), true); }
    return this.#rdSlow(lin, 2);
  }
  /** 64-bit read: low half returned, high half in vhi. */
  rd64(lin: number): number {
    const vpn = Math.floor(lin / 4096), s = this.tlbR + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn && (lin & 0xfff) <= 0xff8) {
      const r = this.tlbReg[s]!;
      if (r >= 0) { const dv = this.phys.dv[r]!, o = this.tlbOff[s]! + (lin & 0xfff); this.vhi = dv.getInt32(o + 4, true); return dv.getInt32(o, true); }
    }
    return this.#rdSlow(lin, 3);
  }
  rdN(lin: number, sz: number): number {
    switch (sz) { case 0: return this.rd8(lin); case 1: return this.rd16(lin); case 2: this.vhi = 0; return this.rd32(lin); default: return this.rd64(lin); }
  }

  #rdSlow(lin: number, sz: number): number {
    const n = 1 << sz;
    if ((lin & 0xfff) + n > 4096) {
      // Page-crossing: byte by byte (each byte translates itself).
      let lo = 0, hi = 0;
      for (let k = 0; k < n; k++) {
        const b = this.rd8(lin + k);
        if (this.excVec !== -1) return 0;
        if (k < 4) lo |= b << (8 * k); else hi |= b << (8 * (k - 4));
      }
      this.vhi = hi;
      return lo;
    }
    const vpn = Math.floor(lin / 4096);
    let s = this.tlbR + (vpn & TLB_MASK);
    if (this.tlbTag[s] !== vpn) { s = this.xlate(lin, ACC_R); if (s < 0) return 0; }
    const r = this.tlbReg[s]!;
    if (r >= 0) {
      const dv = this.phys.dv[r]!, o = this.tlbOff[s]! + (lin & 0xfff);
      switch (sz) {
        case 0: return dv.getUint8(o);
        case 1: return dv.getUint16(o, true);
        case 2: return dv.getInt32(o, true);
        default: this.vhi = dv.getInt32(o + 4, true); return dv.getInt32(o, true);
      }
    }
    return this.#physRead(this.tlbPhys[s]! + (lin & 0xfff), sz);
  }

  /** A read of physical memory that is not plain RAM through the TLB: LAPIC, ROM-straddle, MMIO. */
  #physRead(pa: number, sz: number): number {
    const n = 1 << sz;
    if (this.#isApic(pa - (pa % 4096))) {
      const v = this.lapic.read(pa & 0xfff);
      this.vhi = 0;
      return sz === 0 ? (v >>> ((pa & 3) * 8)) & 0xff : sz === 1 ? (v >>> ((pa & 2) * 8)) & 0xffff : v | 0;
    }
    const r = this.phys.find(pa);
    if (r >= 0 && pa + n <= this.phys.end[r]!) {
      const dv = this.phys.dv[r]!, o = pa - this.phys.start[r]!;
      this.vhi = sz === 3 ? dv.getInt32(o + 4, true) : 0;
      return sz === 0 ? dv.getUint8(o) : sz === 1 ? dv.getUint16(o, true) : dv.getInt32(o, true);
    }
    const buf = this.#mmio[sz]!, dv = this.#mmioDv[sz]!;
    buf.fill(0);
    this.env.exits().mmioRead(this.env.vpIndex, pa, buf);
    this.vhi = sz === 3 ? dv.getInt32(4, true) : 0;
    return sz === 0 ? buf[0]! : sz === 1 ? dv.getUint16(0, true) : dv.getInt32(0, true);
  }

  wr8(lin: number, v: number): void {
    const vpn = Math.floor(lin / 4096), s = this.tlbW + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn) { const r = this.tlbReg[s]!; if (r >= 0) { this.phys.u8[r]![this.tlbOff[s]! + (lin & 0xfff)] = v; return; } }
    this.#wrSlow(lin, 0, v, 0);
  }
  wr16(lin: number, v: number): void {
    const vpn = Math.floor(lin / 4096), s = this.tlbW + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn && (lin & 0xfff) <= 0xffe) { const r = this.tlbReg[s]!; if (r >= 0) { this.phys.dv[r]!.setUint16(this.tlbOff[s]! + (lin & 0xfff), v, true); return; } }
    this.#wrSlow(lin, 1, v, 0);
  }
  wr32(lin: number, v: number): void {
    const vpn = Math.floor(lin / 4096), s = this.tlbW + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn && (lin & 0xfff) <= 0xffc) { const r = this.tlbReg[s]!; if (r >= 0) { this.phys.dv[r]!.setInt32(this.tlbOff[s]! + (lin & 0xfff), v, true); return; } }
    this.#wrSlow(lin, 2, v, 0);
  }
  wr64(lin: number, lo: number, hi: number): void {
    const vpn = Math.floor(lin / 4096), s = this.tlbW + (vpn & TLB_MASK);
    if (this.tlbTag[s] === vpn && (lin & 0xfff) <= 0xff8) {
      const r = this.tlbReg[s]!;
      if (r >= 0) { const dv = this.phys.dv[r]!, o = this.tlbOff[s]! + (lin & 0xfff); dv.setInt32(o, lo, true); dv.setInt32(o + 4, hi, true); return; }
    }
    this.#wrSlow(lin, 3, lo, hi);
  }
  wrN(lin: number, sz: number, lo: number, hi: number): void {
    switch (sz) { case 0: this.wr8(lin, lo); break; case 1: this.wr16(lin, lo); break; case 2: this.wr32(lin, lo); break; default: this.wr64(lin, lo, hi); }
  }

  /** Make sure [lin, lin+2^sz) is writable (translating both ends); false with the fault set. */
  probeW(lin: number, sz: number): boolean {
    const vpn = Math.floor(lin / 4096), s = this.tlbW + (vpn & TLB_MASK);
    if (this.tlbTag[s] !== vpn && this.xlate(lin, ACC_W) < 0) return false;
    const end = lin + (1 << sz) - 1;
    const vpn2 = Math.floor(end / 4096);
    if (vpn2 !== vpn && this.tlbTag[this.tlbW + (vpn2 & TLB_MASK)] !== vpn2 && this.xlate(end, ACC_W) < 0) return false;
    return true;
  }

  #wrSlow(lin: number, sz: number, lo: number, hi: number): void {
    const n = 1 << sz;
    if ((lin & 0xfff) + n > 4096) {
      if (!this.probeW(lin, sz)) return;
      for (let k = 0; k < n; k++) {
        const b = k < 4 ? (lo >>> (8 * k)) & 0xff : (hi >>> (8 * (k - 4))) & 0xff;
        const vpn = Math.floor((lin + k) / 4096);
        const s = this.tlbW + (vpn & TLB_MASK);
        if (this.tlbTag[s] !== vpn && this.xlate(lin + k, ACC_W) < 0) return;
        this.#physWrite(this.tlbPhys[this.tlbW + (vpn & TLB_MASK)]! + ((lin + k) & 0xfff), 0, b, 0, -1);
      }
      return;
    }
    const vpn = Math.floor(lin / 4096);
    let s = this.tlbW + (vpn & TLB_MASK);
    if (this.tlbTag[s] !== vpn) { s = this.xlate(lin, ACC_W); if (s < 0) return; }
    const r = this.tlbReg[s]!;
    if (r >= 0) {
      const dv = this.phys.dv[r]!, o = this.tlbOff[s]! + (lin & 0xfff);
      switch (sz) {
        case 0: dv.setUint8(o, lo); break;
        case 1: dv.setUint16(o, lo, true); break;
        case 2: dv.setInt32(o, lo, true); break;
        default: dv.setInt32(o, lo, true); dv.setInt32(o + 4, hi, true); break;
      }
      return;
    }
    this.#physWrite(this.tlbPhys[s]! + (lin & 0xfff), sz, lo, hi, s);
  }

  /** A write that is not a plain RAM store: code page (invalidate), ROM, LAPIC, MMIO. */
  #physWrite(pa: number, sz: number, lo: number, hi: number, slot: number): void {
    const n = 1 << sz;
    if (this.#isApic(pa - (pa % 4096))) {
      if (sz >= 2 && (pa & 3) === 0) this.lapic.write(pa & 0xfff, lo);
      return;
    }
    const r = this.phys.find(pa);
    if (r >= 0 && pa + n <= this.phys.end[r]! && this.phys.writable[r]!) {
      const o = pa - this.phys.start[r]!;
      const pg = Math.floor(o / 4096);
      const code = this.phys.code[r]!;
      if (code[pg] !== 0 && this.cache.invalidateBytes(pa, n)) this.brk = 1;
      // Fast stores again once the page holds no code.
      if (slot >= 0 && code[pg] === 0) this.tlbReg[slot] = r;
      const dv = this.phys.dv[r]!;
      switch (sz) {
        case 0: dv.setUint8(o, lo); break;
        case 1: dv.setUint16(o, lo, true); break;
        case 2: dv.setInt32(o, lo, true); break;
        default: dv.setInt32(o, lo, true); dv.setInt32(o + 4, hi, true); break;
      }
      return;
    }
    const buf = this.#mmio[sz]!, dv = this.#mmioDv[sz]!;
    if (sz === 0) buf[0] = lo; else if (sz === 1) dv.setUint16(0, lo, true); else { dv.setInt32(0, lo, true); if (sz === 3) dv.setInt32(4, hi, true); }
    this.env.exits().mmioWrite(this.env.vpIndex, pa, buf);
  }

  // System (supervisor) accesses: descriptor tables, IDT, TSS, interrupt stacks.
  sysRd32(lin: number): number { this.#supervisor(true); const v = this.rd32(lin); this.#supervisor(false); return v; }
  sysRd64(lin: number): number { this.#supervisor(true); const v = this.rd64(lin); this.#supervisor(false); return v; }
  sysWr32(lin: number, v: number): void { this.#supervisor(true); this.wr32(lin, v); this.#supervisor(false); }

  // ---------------------------------------------------------------- effective addresses

  /** Linear address of the memory operand of record `i`; NaN-free: on #GP sets excVec. */
  ea(i: number): number {
    const D = this.D, R = this.R;
    const fl = D[i + F_FL]!;
    const asz = (fl >> 2) & 3;
    const b = D[i + F_BASE]!, x = D[i + F_INDEX]!;
    const seg = (fl >> 8) & 7;
    if (asz === 3) {
      let sLo: number, sHi: number;
      if ((fl & FL_RIPREL) !== 0) {
        const t = this.ripBase + D[i + F_IOFF]! + D[i + F_LEN]! + D[i + F_DISP]!;
        sLo = t >>> 0; sHi = Math.floor(t / TWO32);
      } else {
        sLo = D[i + F_DISP]!; sHi = 0;
        if (b >= 0) { sLo += R[b << 1]! >>> 0; sHi += R[(b << 1) + 1]!; }
        if (x >= 0) { const sc = 1 << D[i + F_SCALE]!; sLo += (R[x << 1]! >>> 0) * sc; sHi += R[(x << 1) + 1]! * sc; }
      }
      if (seg !== SEG_NONE) { const base = this.sBase[seg]!; sLo += base >>> 0; sHi += Math.floor(base / TWO32); }
      const hi = (sHi + Math.floor(sLo / TWO32)) | 0;
      if (((hi << 16) >> 16) !== hi) { this.excVec = seg === SEG_SS ? SS : GP; this.excCode = 0; return 0; }
      return hi * TWO32 + (sLo >>> 0);
    }
    const e = this.#eaOffset(i, asz);
    if (seg === SEG_NONE) return e;
    const l = this.sBase[seg]! + e;
    return this.mode === 2 ? l : l >>> 0;
  }

  /** 32- or 16-bit effective address (offset within the segment). */
  #eaOffset(i: number, asz: number): number {
    const D = this.D, R = this.R;
    const b = D[i + F_BASE]!, x = D[i + F_INDEX]!;
    let e = D[i + F_DISP]!;
    if (asz === 2) {
      if (b >= 0) e += R[b << 1]!;
      if (x >= 0) e += R[x << 1]! << D[i + F_SCALE]!;
      return e >>> 0;
    }
    if (b >= 0) e += R[b << 1]!;
    if (x >= 0) e += R[x << 1]!;
    return e & 0xffff;
  }

  /** Linear address of the memory operand read by #rdRmw, for the matching #wrRmw (-1: register). */
  #rmwLin = -1;

  /**
   * Read the r/m operand of a read-modify-write instruction: a memory operand is checked for
   * writing first (so a fault comes before any state changes) and its address kept for
   * #wrRmw. High half in vhi for 64-bit. On a fault returns 0 with excVec set.
   */
  #rdRmw(i: number, sz: number): number {
    const D = this.D;
    if ((D[i + F_FL]! & FL_MEM) === 0) { this.#rmwLin = -1; return this.getR(D[i + F_RM]!, sz); }
    const lin = this.ea(i);
    if (this.excVec !== -1 || !this.probeW(lin, sz)) return 0;
    this.#rmwLin = lin;
    return this.rdN(lin, sz);
  }
  /** Write the result of a read-modify-write back to the operand #rdRmw read. */
  #wrRmw(i: number, sz: number, lo: number, hi: number): void {
    if ((this.D[i + F_FL]! & FL_MEM) !== 0) this.wrN(this.#rmwLin, sz, lo, hi);
    else this.setR(this.D[i + F_RM]!, sz, lo, hi);
  }

  /**
   * The interpreter's memory fast path, without calls: for an operand with 64-bit addressing,
   * no FS/GS base and not RIP-relative, the address summed in int32 halves (as jit.ts does)
   * and a hit in the int-keyed TLB part `part` (tlbR or tlbW) on RAM within one page: the
   * offset in `fastDv`. Otherwise -1, and the caller takes the general path (ea, rd/wr), which
   * also raises any fault.
   */
  fastMem(i: number, sz: number, part: number): number {
    const D = this.D;
    if ((D[i + F_FL]! & (FL_ASZ_MASK | FL_SEG_MASK | FL_RIPREL)) !== FAST_EA) return -1;
    const R = this.R, b = D[i + F_BASE]!, x = D[i + F_INDEX]!;
    let lo = D[i + F_DISP]!, hi = lo >> 31;
    if (b >= 0) { const v = R[b << 1]!, n = (lo + v) | 0; hi = (hi + R[(b << 1) + 1]! + ((n >>> 0) < (v >>> 0) ? 1 : 0)) | 0; lo = n; }
    if (x >= 0) {
      const sc = D[i + F_SCALE]!, xl = R[x << 1]!, xh = R[(x << 1) + 1]!;
      const v = xl << sc, vh = sc === 0 ? xh : (xh << sc) | (xl >>> (32 - sc));
      const n = (lo + v) | 0; hi = (hi + vh + ((n >>> 0) < (v >>> 0) ? 1 : 0)) | 0; lo = n;
    }
    return this.#probeI(lo, hi, part, sz);
  }
  /**
   * The int-keyed TLB part `part` (tlbR or tlbW) for 2^sz bytes at the address in int32 halves
   * lo/hi: on a hit on RAM within one page, the offset in `fastDv` (set to the page's region);
   * else -1. A hit is a canonical address (only those are filled) and, in the write part, a
   * writable page without decoded code.
   */
  #probeI(lo: number, hi: number, part: number, sz: number): number {
    const T = this.tlbI, tg = (lo >>> 12) | (hi << 20), ts = (part + (tg & TLB_MASK)) << 2, po = lo & 4095;
    if (T[ts] !== tg || T[ts + 1] !== (hi >> 12) || po > 4096 - (1 << sz)) return -1;
    this.fastDv = this.phys.dv[T[ts + 2]!]!;
    return T[ts + 3]! + po;
  }
  /** The region of the last fastMem hit. */
  fastDv: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(8));
  /** Read 2^sz bytes at offset `o` of fastDv (high half in vhi for 64 bits, else 0). */
  #fastLd(o: number, sz: number): number {
    const dv = this.fastDv;
    switch (sz) {
      case 0: this.vhi = 0; return dv.getUint8(o);
      case 1: this.vhi = 0; return dv.getUint16(o, true);
      case 2: this.vhi = 0; return dv.getInt32(o, true);
      default: this.vhi = dv.getInt32(o + 4, true); return dv.getInt32(o, true);
    }
  }
  /** Write 2^sz bytes of v/hi at offset `o` of fastDv. */
  #fastSt(o: number, sz: number, v: number, hi: number): void {
    const dv = this.fastDv;
    switch (sz) {
      case 0: dv.setUint8(o, v); break;
      case 1: dv.setUint16(o, v, true); break;
      case 2: dv.setInt32(o, v, true); break;
      default: dv.setInt32(o, v, true); dv.setInt32(o + 4, hi, true);
    }
  }

  /** Read the r/m operand (register or memory). High half in vhi for 64-bit. */
  rdRM(i: number, sz: number): number {
    const D = this.D;
    if ((D[i + F_FL]! & FL_MEM) !== 0) {
      const o = this.fastMem(i, sz, this.tlbR);
      if (o >= 0) return this.#fastLd(o, sz);
      const lin = this.ea(i);
      if (this.excVec !== -1) return 0;
      return this.rdN(lin, sz);
    }
    return this.getR(D[i + F_RM]!, sz);
  }

  // ---------------------------------------------------------------- stack

  /** Linear address of SS:(rSP + delta) for the current stack size; sets #SS on a bad address. */
  #stackLin(delta: number): number {
    const R = this.R;
    if (this.mode === 2) {
      const s = (R[8]! >>> 0) + delta;
      const hi = (R[9]! + Math.floor(s / TWO32)) | 0;
      if (((hi << 16) >> 16) !== hi) { this.excVec = SS; this.excCode = 0; return 0; }
      return hi * TWO32 + (s >>> 0);
    }
    const sp = (this.sAttr[SEG_SS]! & 0x4000) !== 0 ? (R[8]! + delta) >>> 0 : (R[8]! + delta) & 0xffff;
    return (this.sBase[SEG_SS]! + sp) >>> 0;
  }
  #setSp(delta: number): void {
    if (this.mode === 2) this.addR64(4, delta);
    else if ((this.sAttr[SEG_SS]! & 0x4000) !== 0) { this.R[8] = (this.R[8]! + delta) | 0; this.R[9] = 0; }
    else this.R[8] = (this.R[8]! & ~0xffff) | ((this.R[8]! + delta) & 0xffff);
  }
  /** Push a value of size sz (1 = 16, 2 = 32, 3 = 64 bits). */
  push(sz: number, lo: number, hi: number): boolean {
    if (this.mode === 2 && sz === 3) {
      // 64-bit: RSP - 8 in int32 halves, probed in the int-keyed TLB.
      const R = this.R, sl = R[8]!, sh = R[9]!;
      const nl = (sl - 8) | 0, nh = (sh - ((sl >>> 0) < 8 ? 1 : 0)) | 0;
      const o = this.#probeI(nl, nh, this.tlbW, 3);
      if (o >= 0) { this.#fastSt(o, 3, lo, hi); R[8] = nl; R[9] = nh; return true; }
    }
    const n = 1 << sz;
    const lin = this.#stackLin(-n);
    if (this.excVec !== -1) return false;
    this.wrN(lin, sz, lo, hi);
    if (this.excVec !== -1) { if ((this.excVec as number) === GP) this.excVec = SS; return false; }
    this.#setSp(-n);
    return true;
  }
  /** Pop: value returned (high half in vhi); rSP updated only on success. */
  pop(sz: number): number {
    if (this.mode === 2 && sz === 3) {
      const R = this.R, sl = R[8]!, sh = R[9]!;
      const o = this.#probeI(sl, sh, this.tlbR, 3);
      if (o >= 0) {
        const v = this.#fastLd(o, 3);
        const nl = (sl + 8) | 0;
        R[9] = (sh + ((nl >>> 0) < (sl >>> 0) ? 1 : 0)) | 0; R[8] = nl;
        return v;
      }
    }
    const lin = this.#stackLin(0);
    if (this.excVec !== -1) return 0;
    const v = this.rdN(lin, sz);
    if (this.excVec !== -1) return 0;
    this.#setSp(1 << sz);
    return v;
  }
  /** Read a stack slot without popping (offset in bytes). */
  #peek(sz: number, off: number): number {
    const lin = this.#stackLin(off);
    if (this.excVec !== -1) return 0;
    return this.rdN(lin, sz);
  }

  // ---------------------------------------------------------------- control transfer

  /** Set RIP from halves (near branch targets), checking canonical form in 64-bit mode. */
  #jumpTo(lo: number, hi: number, sz: number): number {
    if (this.mode === 2 && sz === 3) {
      const t = canon(lo, hi);
      if (t !== t) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
      this.rip = t;
    } else this.rip = sz === 1 ? lo & 0xffff : lo >>> 0;
    return ST_JUMP;
  }
  #jumpRel(i: number): number {
    const D = this.D;
    let t = this.ripBase + D[i + F_IOFF]! + D[i + F_LEN]! + D[i + F_IMM]!;
    const sz = D[i + F_FL]! & 3;
    if (this.mode === 2) {
      if (t < -140737488355328 || t >= 140737488355328) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
    } else t = sz === 1 ? t & 0xffff : t >>> 0;
    this.rip = t;
    return ST_JUMP;
  }
  #nextRip(i: number): number { return this.wrapIp(this.ripBase + this.D[i + F_IOFF]! + this.D[i + F_LEN]!); }

  // ---------------------------------------------------------------- descriptors

  /** Read the 8-byte descriptor for `sel` into t0 (low) / t1 (high); false with #GP(sel) set. */
  #readDesc(sel: number, errVec = GP): boolean {
    const ldt = (sel & 4) !== 0;
    const base = ldt ? this.sBase[SEG_LDTR]! : this.gdtBase;
    const limit = ldt ? this.sLimit[SEG_LDTR]! : this.gdtLimit;
    if ((sel | 7) > limit || (ldt && (this.sAttr[SEG_LDTR]! & 0x10000) !== 0)) { this.excVec = errVec; this.excCode = sel & 0xfffc; return false; }
    const lin = this.mode === 2 || (this.efer & EFER_LMA) !== 0 ? base + (sel & ~7) : (base + (sel & ~7)) >>> 0;
    this.t0 = this.sysRd32(lin);
    if (this.excVec !== -1) return false;
    this.t1 = this.sysRd32(lin + 4);
    return this.excVec === -1;
  }
  #loadCache(seg: number, sel: number, lo: number, hi: number): void {
    this.sSel[seg] = sel;
    this.sBase[seg] = ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) >>> 0;
    let limit = (lo & 0xffff) | (hi & 0xf0000);
    if ((hi & 0x800000) !== 0) limit = ((limit << 12) | 0xfff) >>> 0;
    this.sLimit[seg] = limit;
    this.sAttr[seg] = (hi >> 8) & 0xf0ff;
  }

  /** MOV/POP to a data segment register or SS (SDM MOV, "operation"). */
  loadSeg(seg: number, sel: number): boolean {
    sel &= 0xffff;
    if ((this.cr0 & CR0_PE) === 0) {
      this.sSel[seg] = sel; this.sBase[seg] = sel << 4;
      if (seg === SEG_CS) this.updateMode();
      return true;
    }
    if ((sel & 0xfffc) === 0) {
      if (seg === SEG_SS && !(this.mode === 2 && this.cpl < 3)) { this.excVec = GP; this.excCode = 0; return false; }
      this.sSel[seg] = sel;
      if (seg !== SEG_SS) this.sBase[seg] = 0;
      this.sAttr[seg] = seg === SEG_SS ? (this.cpl << 5) | 0x10000 | 0x93 : 0x10000;
      return true;
    }
    if (!this.#readDesc(sel)) return false;
    const hi = this.t1, lo = this.t0;
    const type = (hi >> 8) & 0x1f, dpl = (hi >> 13) & 3, rpl = sel & 3;
    if (seg === SEG_SS) {
      if ((type & 0x1a) !== 0x12 || dpl !== this.cpl || rpl !== this.cpl) { this.excVec = GP; this.excCode = sel & 0xfffc; return false; }
      if ((hi & 0x8000) === 0) { this.excVec = SS; this.excCode = sel & 0xfffc; return false; }
    } else {
      const isData = (type & 0x18) === 0x10, readableCode = (type & 0x1a) === 0x1a, conforming = (type & 0x1c) === 0x1c;
      if (!isData && !readableCode) { this.excVec = GP; this.excCode = sel & 0xfffc; return false; }
      if (!conforming && (dpl < this.cpl || dpl < rpl)) { this.excVec = GP; this.excCode = sel & 0xfffc; return false; }
      if ((hi & 0x8000) === 0) { this.excVec = NP; this.excCode = sel & 0xfffc; return false; }
    }
    this.#loadCache(seg, sel, lo, hi);
    return true;
  }

  /** Load CS for a far transfer to `sel` (same or inner privilege per `newCpl`). */
  #loadCs(sel: number, newCpl: number): boolean {
    if ((this.cr0 & CR0_PE) === 0) {
      this.sSel[SEG_CS] = sel & 0xffff; this.sBase[SEG_CS] = (sel & 0xffff) << 4;
      this.updateMode();
      return true;
    }
    if ((sel & 0xfffc) === 0) { this.excVec = GP; this.excCode = 0; return false; }
    if (!this.#readDesc(sel)) return false;
    const hi = this.t1;
    if ((hi & 0x1800) !== 0x1800) { this.excVec = GP; this.excCode = sel & 0xfffc; return false; }
    if ((hi & 0x8000) === 0) { this.excVec = NP; this.excCode = sel & 0xfffc; return false; }
    this.#loadCache(SEG_CS, (sel & 0xfffc) | newCpl, this.t0, hi);
    this.cpl = newCpl;
    this.updateMode();
    if (this.mode === 2) { this.sBase[SEG_CS] = 0; this.sLimit[SEG_CS] = 0xffffffff; }
    return true;
  }

  // ---------------------------------------------------------------- exceptions and interrupts

  /**
   * Deliver vector `vec` with error code `code` (-1: none). `kind`: 0 exception, 1 software
   * INT n (gate DPL checked), 2 external interrupt. RIP is the return address. A fault during
   * delivery becomes #DF, a fault delivering #DF a triple fault (exitReason = RUN_SHUTDOWN).
   */
  deliver(vec: number, code: number, kind: number): void {
    let first = -1;
    for (let depth = 0; depth < 3; depth++) {
      this.excVec = -1;
      if (this.#deliverOnce(vec, code, kind)) return;
      if (this.excVec === -2) { this.exitReason = RUN_ERROR; return; }
      const second = this.excVec;
      const contributory = (v: number): boolean => v === 0 || (v >= 10 && v <= 13);
      if (vec === DF || first === DF) { this.exitReason = RUN_SHUTDOWN; this.excVec = -1; return; }
      if ((contributory(vec) && contributory(second)) || (vec === PF && (second === PF || contributory(second)))) {
        first = vec; vec = DF; code = 0; kind = 0;
      } else {
        first = vec; vec = second; code = this.excCode; kind = 0;
      }
    }
    this.exitReason = RUN_SHUTDOWN;
    this.excVec = -1;
  }

  #hasErrorCode(vec: number): boolean { return vec === DF || (vec >= 10 && vec <= 14) || vec === AC; }

  #deliverOnce(vec: number, code: number, kind: number): boolean {
    const ext = kind === 1 ? 0 : 1;
    if ((this.cr0 & CR0_PE) === 0) {
      // Real mode: IVT.
      if (vec * 4 + 3 > this.idtLimit) { this.excVec = GP; this.excCode = 0; return false; }
      const ent = this.rd32(this.idtBase + vec * 4);
      if (this.excVec !== -1) return false;
      const fl = this.getFlags();
      if (!this.push(1, fl, 0) || !this.push(1, this.sSel[SEG_CS]!, 0) || !this.push(1, this.rip, 0)) return false;
      this.eflags &= ~(IF | TF | ACF | RF);
      this.sSel[SEG_CS] = ent >>> 16; this.sBase[SEG_CS] = (ent >>> 16) << 4;
      this.rip = ent & 0xffff;
      return true;
    }
    const long = (this.efer & EFER_LMA) !== 0;
    const gsz = long ? 16 : 8;
    if (vec * gsz + gsz - 1 > this.idtLimit) { this.excVec = GP; this.excCode = vec * 8 + 2 + ext; return false; }
    const g = this.idtBase + vec * gsz;
    const w0 = this.sysRd32(g);
    if (this.excVec !== -1) return false;
    const w1 = this.sysRd32(g + 4);
    if (this.excVec !== -1) return false;
    const w2 = long ? this.sysRd32(g + 8) : 0;
    if (this.excVec !== -1) return false;
    const type = (w1 >> 8) & 0x1f, dpl = (w1 >> 13) & 3;
    const is32 = (type & 8) !== 0;
    const okType = long ? type === 0xe || type === 0xf : (type & 0x17) === 0x6 || (type & 0x17) === 0x7;
    if (!okType) { this.excVec = GP; this.excCode = vec * 8 + 2 + ext; return false; }
    if (kind === 1 && dpl < this.cpl) { this.excVec = GP; this.excCode = vec * 8 + 2; return false; }
    if ((w1 & 0x8000) === 0) { this.excVec = NP; this.excCode = vec * 8 + 2 + ext; return false; }
    const sel = w0 >>> 16;
    const offLo = (w0 & 0xffff) | (w1 & 0xffff0000);
    if ((sel & 0xfffc) === 0) { this.excVec = GP; this.excCode = ext; return false; }
    if (!this.#readDesc(sel)) { this.excCode |= ext; return false; }
    const chi = this.t1, clo = this.t0;
    if ((chi & 0x1800) !== 0x1800 || ((chi >> 13) & 3) > this.cpl) { this.excVec = GP; this.excCode = (sel & 0xfffc) + ext; return false; }
    if ((chi & 0x8000) === 0) { this.excVec = NP; this.excCode = (sel & 0xfffc) + ext; return false; }
    const newCpl = (chi & 0x400) !== 0 ? this.cpl : (chi >> 13) & 3;
    const flags = this.getFlags();
    const oldSs = this.sSel[SEG_SS]!, oldCs = this.sSel[SEG_CS]!;
    const oldSpLo = this.R[8]!, oldSpHi = this.R[9]!;
    const oldRip = this.rip;
    const hasCode = code >= 0 && kind !== 1 && this.#hasErrorCode(vec);
    if (long) {
      const target = canon(offLo, w2);
      if (target !== target) { this.excVec = GP; this.excCode = ext; return false; }
      const ist = w1 & 7;
      let sp: number;
      const tss = this.sBase[SEG_TR]!;
      if (ist !== 0 || newCpl < this.cpl) {
        const off = ist !== 0 ? 0x24 + (ist - 1) * 8 : 4 + newCpl * 8;
        if (off + 7 > this.sLimit[SEG_TR]!) { this.excVec = TS; this.excCode = (this.sSel[SEG_TR]! & 0xfffc) + ext; return false; }
        const lo = this.sysRd64(tss + off);
        if (this.excVec !== -1) return false;
        sp = canon(lo, this.vhi);
        if (sp !== sp) { this.excVec = SS; this.excCode = ext; return false; }
      } else sp = canon(oldSpLo, oldSpHi);
      sp -= sp - Math.floor(sp / 16) * 16;   // align down to 16
      // Pushes go through supervisor accesses at the new privilege.
      const n = hasCode ? 6 : 5;
      const top = sp - n * 8;
      this.#supervisor(true);
      const okw = this.probeW(top, 3) && this.probeW(sp - 8, 3);
      if (!okw) { this.#supervisor(false); if ((this.excVec as number) === GP) this.excVec = SS; return false; }
      let p = sp;
      const put = (lo: number, hi: number): void => { p -= 8; this.wr64(p, lo, hi); };
      put(oldSs, 0);
      put(oldSpLo, oldSpHi);
      put(flags, 0);
      put(oldCs, 0);
      put(oldRip >>> 0, Math.floor(oldRip / TWO32));
      if (hasCode) put(code, 0);
      this.#supervisor(false);
      if (this.excVec !== -1) return false;
      if (newCpl < this.cpl) { this.sSel[SEG_SS] = newCpl; this.sBase[SEG_SS] = 0; this.sAttr[SEG_SS] = 0x10000 | (newCpl << 5) | 0x93; }
      this.#loadCache(SEG_CS, (sel & 0xfffc) | newCpl, clo, chi);
      this.sBase[SEG_CS] = 0;
      this.cpl = newCpl;
      this.updateMode();
      this.R[8] = p >>> 0 | 0; this.R[9] = Math.floor(p / TWO32);
      this.rip = target;
    } else {
      // 32-bit (or 16-bit) protected-mode gate.
      let spBase = this.sBase[SEG_SS]!, sp = this.R[8]! >>> 0;
      let newSs = oldSs;
      let ssLo = 0, ssHi = 0;
      const change = newCpl < this.cpl;
      if (change) {
        const tss = this.sBase[SEG_TR]!;
        sp = this.sysRd32(tss + 4 + newCpl * 8) >>> 0;
        newSs = this.sysRd32(tss + 8 + newCpl * 8) & 0xffff;
        if (this.excVec !== -1) return false;
        if (!this.#readDesc(newSs, TS)) return false;
        ssLo = this.t0; ssHi = this.t1;
        spBase = ((ssLo >>> 16) | ((ssHi & 0xff) << 16) | (ssHi & 0xff000000)) >>> 0;
      }
      const w = is32 ? 2 : 1, n = 1 << w;
      const vals = change ? [oldSs, oldSpLo, flags, oldCs, oldRip] : [flags, oldCs, oldRip];
      if (hasCode) vals.push(code);
      this.#supervisor(true);
      for (const v of vals) {
        sp = (sp - n) >>> 0;
        this.wrN((spBase + sp) >>> 0, w, v, 0);
        if (this.excVec !== -1) { this.#supervisor(false); return false; }
      }
      this.#supervisor(false);
      if (change) this.#loadCache(SEG_SS, (newSs & 0xfffc) | newCpl, ssLo, ssHi);
      this.#loadCache(SEG_CS, (sel & 0xfffc) | newCpl, clo, chi);
      this.cpl = newCpl;
      this.updateMode();
      this.R[8] = sp | 0; this.R[9] = 0;
      this.rip = is32 ? offLo >>> 0 : offLo & 0xffff;
    }
    this.eflags &= ~(TF | NT | RF | VM);
    if ((type & 1) === 0) this.eflags &= ~IF;
    return true;
  }

  // ---------------------------------------------------------------- run loop

  /** Execute up to ~budget instructions. Returns RUN_*. */
  runSlice(budget: number): number {
    const start = this.instret;
    const cache = this.cache;
    this.exitReason = 0;
    let pollIn = 0;
    // Bounded by iterations too: a guest whose exception handler faults again at once makes
    // progress without retiring instructions, and must still give the thread back.
    let iterations = 0;
    while (this.instret - start < budget && ++iterations <= budget) {
      if (this.stopReq) return RUN_STOPPED;
      if (--pollIn <= 0) { pollIn = 256; if (this.lapic.deadline !== Infinity) this.lapic.poll(); }
      if (this.shadow !== 0) this.shadow = 0;
      else if (this.nmiPending && !this.nmiMasked) {
        // NMI: not maskable by IF; blocked from delivery until the next IRET.
        this.nmiPending = false;
        this.nmiMasked = true;
        this.halted = false;
        this.deliver(NMI, -1, 2);
        if (this.exitReason !== 0) return this.exitReason;
      } else if (this.lapic.ready >= 0 && (this.eflags & IF) !== 0) {
        const v = this.lapic.acknowledge();
        if (v >= 0) {
          this.halted = false;
          this.deliver(v, -1, 2);
          if (this.exitReason !== 0) return this.exitReason;
        }
      }
      if (this.halted) return (this.eflags & IF) !== 0 || this.nmiPending ? RUN_HALT_WAIT : RUN_HALTED;
      // The jump cache (QEMU's tb_jmp_cache): linear RIP -> block, valid while the translation
      // generation (see `gen`) is the one that found it and the block is valid (writes to code
      // drop blocks without touching the jump cache: a kernel patching its text at boot drops
      // one page at a time, ~1,000 times). Flushing the cache gives every VP a new generation
      // (CodeCache.onFlush), since block ids start again.
      const lin = this.mode === 2 ? this.rip : (this.sBase[SEG_CS]! + this.rip) >>> 0;
      const h = (lin ^ (lin >>> JC_BITS)) & JC_MASK;
      let b = this.jcBlk[h]!;
      const g = this.jcGen[h]!;
      if (this.jcLin[h] !== lin || (g !== this.gen && g !== this.gGen) || cache.blkValid[b] !== 1) {
        b = this.#findBlock();
        if (b < 0) {
          if (this.excVec >= 0) { const v = this.excVec; this.excVec = -1; this.deliver(v, this.excCode, 0); }
          if (this.exitReason !== 0) return this.exitReason;
          if (b === -2) return RUN_ERROR;
          continue;
        }
        this.jcLin[h] = lin; this.jcBlk[h] = b;
        const vpn = Math.floor(lin / 4096);
        if (this.#fetchGlobal && cache.blkPage2[b]! < 0) { this.jcGen[h] = this.gGen; this.jcPageG[vpn & JC_MASK] = this.gGen; }
        else {
          this.jcGen[h] = this.gen;
          this.jcPage[vpn & JC_MASK] = this.gen;
          if (cache.blkPage2[b]! >= 0) this.jcPage[(vpn + 1) & JC_MASK] = this.gen;
        }
      }
      // Compiled blocks are run here rather than through #execBlock: one call less per dispatch.
      const fn = cache.blkFn[b];
      if (fn !== undefined) {
        if (this.regions) {
          const runs = cache.blkExec[b]! + 1;
          cache.blkExec[b] = runs;
          if (runs === this.regionThreshold) this.#compileRegion(b);
        }
        this.ripBase = this.rip;
        this.rgnBlk = b;
        const r = fn(this, this.R, cache.blkFirst[b]! << LOG_STRIDE);
        // A region may have moved on to another of its blocks: results are relative to that one.
        const e = this.rgnBlk;
        if (r === DONE) { this.instret += cache.blkCount[e]!; this.rip = this.wrapIp(this.ripBase + cache.blkBytes[e]!); }
        else if (r >= 0) this.instret += r + 1;
        else this.#compiledFault(e, r);
      } else this.#execBlock(b);
      if (this.exitReason !== 0) return this.exitReason;
    }
    return RUN_SLICE;
  }

  #findBlock(): number {
    const lin = this.mode === 2 ? this.rip : (this.sBase[SEG_CS]! + this.rip) >>> 0;
    const s = this.#tlbSlot(lin, this.tlbX, ACC_X);
    if (s < 0) { if (this.excVec === -2) { this.excVec = -1; return -2; } return -1; }
    const reg = this.tlbReg[s]!;
    this.#fetchGlobal = this.tlbGlobal[s] === 1;
    if (reg < 0) { this.errorMessage = `instruction fetch from non-RAM physical address 0x${(this.tlbPhys[s]! + (lin & 0xfff)).toString(16)}`; return -2; }
    const pa = this.tlbPhys[s]! + (lin & 0xfff);
    const cached = this.cache.lookup(pa, this.mode);
    if (cached >= 0) {
      const p2 = this.cache.blkPage2[cached]!;
      if (p2 < 0 || this.#fetchPage(lin - (lin % 4096) + 4096) === p2) return cached;
      // The second page moved or faults: decode afresh (the new block ends before the
      // crossing instruction if its fetch faults, so the fault is raised at the right RIP).
      this.excVec = -1;
    }
    return this.#decodeBlock(lin, pa, reg, this.tlbOff[s]!);
  }

  /** Physical page of the code page at linear `lin` (instruction-fetch translation), or -1 with the fault set. */
  #fetchPage(lin: number): number {
    const s = this.#tlbSlot(lin, this.tlbX, ACC_X);
    return s < 0 ? -1 : this.tlbPhys[s]!;
  }

  /** The TLB slot of `lin` in part `part` (tlbR/tlbW/tlbX) for access `acc`, filled by a page walk on a miss; -1 with the fault set. */
  #tlbSlot(lin: number, part: number, acc: number): number {
    const vpn = Math.floor(lin / 4096), s = part + (vpn & TLB_MASK);
    return this.tlbTag[s] === vpn ? s : this.xlate(lin, acc);
  }

  #decodeBlock(lin: number, pa: number, reg: number, pageOff: number): number {
    const cache = this.cache;
    const first = cache.reserve();
    const u8 = this.phys.u8[reg]!;
    const pageStart = lin & 0xfff;
    let off = 0;
    let n = 0;
    let page2 = -1;
    const fetch = (k: number): number => {
      const o = pageStart + off + k;
      if (o < 4096) return u8[pageOff + o]!;
      // Crossing into the next page: instruction-fetch translation (may fault), then the byte.
      const l = lin + off + k;
      const p = this.#fetchPage(l);
      if (p < 0) return -1;
      const r = this.phys.find(p);
      if (r < 0) { this.excVec = -2; this.errorMessage = 'instruction fetch from non-RAM memory'; return -1; }
      page2 = p;
      return this.phys.u8[r]![p - this.phys.start[r]! + (l & 0xfff)]!;
    };
    const D = cache.pool;
    while (n < MAX_BLOCK_INSNS) {
      const at = (first + n) << LOG_STRIDE;
      const len = decode(D, at, fetch, this.mode);
      if (len < 0) {
        if (n === 0) { if (this.excVec !== -2) return -1; this.excVec = -1; return -2; }  // fetch fault on the first instruction: deliver it
        this.excVec = -1;           // a later instruction: end the block before it
        page2 = -1;
        break;
      }
      D[at + F_IOFF] = off;
      off += len;
      n++;
      if (pageStart + off > 4096) break;   // the last instruction crosses into page2
      const op = D[at + F_OP]!;
      if (op === OP_JMP_REL && this.mode === 2) {
        // Follow a direct jump forward within the page: the block goes on at the target, so
        // the jump costs no dispatch. (The interpreter still leaves the block at the JMP; a
        // compiled block falls through to the target.) The block's end (`off`, RIP after its
        // last instruction) is then the end of the last instruction decoded.
        const t = off + D[at + F_IMM]!;
        if (t > off && pageStart + t < 4096 && n < MAX_BLOCK_INSNS) { off = t; continue; }
      }
      if (ENDS_BLOCK[op] !== 0 || pageStart + off >= 4096) break;
    }
    if (pageStart + off <= 4096) page2 = -1;
    return cache.commit(pa, this.mode, n, off, page2);
  }

  /**
   * Block b, compiled, was entered from the dispatcher REGION_THRESHOLD times: compile it with
   * the other hot compiled blocks of its page as one region (jit.ts compileRegion), which every
   * member then enters, so branches between them no longer come back here.
   */
  #compileRegion(b: number): void {
    const cache = this.cache;
    // Members: blocks of the page run at least 1/25 as often as b from the dispatcher.
    const candidates = cache.regionMembers(b, Math.ceil(this.regionThreshold / 25));
    if (candidates.length < 2) return;
    const t0 = performance.now();
    const { fn: f, members } = compileRegion(this.D, candidates);
    // Members entered from outside the region go on counting, but past the threshold: only a
    // block that is not yet a member makes the page's region again.
    for (const m of members) { cache.blkFn[m.blk] = f; cache.blkExec[m.blk] = Math.max(cache.blkExec[m.blk]!, this.regionThreshold + 1); }
    cache.stats.regions++;
    cache.stats.compileMs += performance.now() - t0;
  }

  /** A compiled block ended with an exception at instruction -(r+1): retire what ran, deliver it. */
  #compiledFault(b: number, r: number): void {
    const k = -(r + 1);
    this.instret += k;
    this.rip = this.wrapIp(this.ripBase + this.D[((this.cache.blkFirst[b]! + k) << LOG_STRIDE) + F_IOFF]!);
    const v = this.excVec, c = this.excCode;
    this.excVec = -1;
    if (v === -2) { this.exitReason = RUN_ERROR; return; }
    this.deliver(v, this.#hasErrorCode(v) ? c : -1, 0);
  }

  /** Run block b in the interpreter (compiling it once it is hot). */
  #execBlock(b: number): void {
    const cache = this.cache;
    const first = cache.blkFirst[b]!, n = cache.blkCount[b]!;
    this.ripBase = this.rip;
    const execs = cache.blkExec[b]! + 1;
    cache.blkExec[b] = execs;
    if (execs === this.jitThreshold && this.jit && cache.blkValid[b] === 1) {
      const t0 = performance.now();
      const f = compileBlock(this.D, first, n, this.mode);
      if (f !== null) cache.blkFn[b] = f;
      cache.stats.compiled++;
      cache.stats.compileMs += performance.now() - t0;
    }
    let k = 0;
    for (; k < n; k++) {
      const i = (first + k) << LOG_STRIDE;
      const st = this.step(i);
      if (st !== ST_NEXT) {
        this.instret += st === ST_EXC ? k : k + 1;
        if (st === ST_EXC) {
          this.rip = this.wrapIp(this.ripBase + this.D[i + F_IOFF]!);
          const v = this.excVec, c = this.excCode;
          if (v === -2) { this.excVec = -1; this.exitReason = RUN_ERROR; return; }
          this.excVec = -1;
          this.deliver(v, this.#hasErrorCode(v) ? c : -1, 0);
        }
        return;
      }
      if (this.brk !== 0) {
        this.brk = 0;
        this.instret += k + 1;
        this.rip = this.#nextRip(i);
        return;
      }
    }
    this.instret += n;
    this.rip = this.wrapIp(this.ripBase + cache.blkBytes[b]!);
  }

  // ---------------------------------------------------------------- the interpreter

  /** One SSE instruction (sse.ts): what compiled blocks call for the forms they do not inline. */
  sse(i: number): number { return sseStep(this, i); }

  /** Execute decoded record `i`. Returns ST_*. */
  step(i: number): number {
    const D = this.D, R = this.R;
    const fl = D[i + F_FL]!;
    const sz = fl & 3;
    switch (D[i + F_OP]!) {
      case 8 /* OP_MOV_R_RM */: {
        const v = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        this.setR(D[i + F_REG]!, sz, v, this.vhi);
        return ST_NEXT;
      }
      case 7 /* OP_MOV_RM_R */: {
        if ((fl & FL_MEM) === 0 && sz >= 2) {
          // Register to register, 32/64-bit: registers 0-15 are pairs in R (no AH..BH forms).
          const src = D[i + F_REG]! << 1, dst = D[i + F_RM]! << 1;
          R[dst] = R[src]!; R[dst + 1] = sz === 3 ? R[src + 1]! : 0;
          return ST_NEXT;
        }
        const v = this.getR(D[i + F_REG]!, sz), hi = this.vhi;
        if ((fl & FL_MEM) !== 0) {
          const o = this.fastMem(i, sz, this.tlbW);
          if (o >= 0) { this.#fastSt(o, sz, v, hi); return ST_NEXT; }
          const lin = this.ea(i);
          if (this.excVec !== -1) return ST_EXC;
          this.wrN(lin, sz, v, hi);
          return this.excVec !== -1 ? ST_EXC : ST_NEXT;
        }
        this.setR(D[i + F_RM]!, sz, v, hi);
        return ST_NEXT;
      }
      case 9 /* OP_MOV_RM_I */: case 10 /* OP_MOV_R_I */: {
        const v = D[i + F_IMM]!, hi = D[i + F_IMMHI]!;
        if ((fl & FL_MEM) !== 0) {
          const o = this.fastMem(i, sz, this.tlbW);
          if (o >= 0) { this.#fastSt(o, sz, v, hi); return ST_NEXT; }
          const lin = this.ea(i);
          if (this.excVec !== -1) return ST_EXC;
          this.wrN(lin, sz, v, hi);
          return this.excVec !== -1 ? ST_EXC : ST_NEXT;
        }
        this.setR(D[i + (D[i + F_OP] === OP_MOV_R_I ? F_REG : F_RM)]!, sz, v, hi);
        return ST_NEXT;
      }
      case 2 /* OP_ALU_RM_R */: case 4 /* OP_ALU_RM_I */: {
        const k = D[i + F_SUB]!;
        let b: number, bHi: number;
        if (D[i + F_OP] === OP_ALU_RM_I) { b = D[i + F_IMM]!; bHi = D[i + F_IMMHI]!; }
        else if (sz >= 2) { const g = D[i + F_REG]! << 1; b = R[g]!; bHi = sz === 3 ? R[g + 1]! : 0; }
        else { b = this.getR(D[i + F_REG]!, sz); bHi = 0; }
        if ((fl & FL_MEM) !== 0) {
          const o = this.fastMem(i, sz, k === 7 ? this.tlbR : this.tlbW);
          if (o >= 0) {
            const a = this.#fastLd(o, sz);
            const r = this.alu(k, sz, a, this.vhi, b, bHi);
            if (k !== 7) this.#fastSt(o, sz, r, this.rhi);
            return ST_NEXT;
          }
          const lin = this.ea(i);
          if (this.excVec !== -1) return ST_EXC;
          if (k !== 7 && !this.probeW(lin, sz)) return ST_EXC;
          const a = this.rdN(lin, sz);
          if (this.excVec !== -1) return ST_EXC;
          const r = this.alu(k, sz, a, this.vhi, b, bHi);
          if (k !== 7) this.wrN(lin, sz, r, this.rhi);
          return ST_NEXT;
        }
        const rm = D[i + F_RM]!;
        if (sz >= 2) {
          const d = rm << 1;
          const r = this.alu(k, sz, R[d]!, sz === 3 ? R[d + 1]! : 0, b, bHi);
          if (k !== 7) { R[d] = r; R[d + 1] = sz === 3 ? this.rhi : 0; }
          return ST_NEXT;
        }
        const a = this.getR(rm, sz);
        const r = this.alu(k, sz, a, sz === 3 ? this.vhi : 0, b, bHi);
        if (k !== 7) this.setR(rm, sz, r, this.rhi);
        return ST_NEXT;
      }
      case 3 /* OP_ALU_R_RM */: {
        const b = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const bHi = this.vhi;
        const reg = D[i + F_REG]!;
        const a = this.getR(reg, sz);
        const k = D[i + F_SUB]!;
        const r = this.alu(k, sz, a, sz === 3 ? this.vhi : 0, b, bHi);
        if (k !== 7) this.setR(reg, sz, r, this.rhi);
        return ST_NEXT;
      }
      case 5 /* OP_TEST_RM_R */: case 6 /* OP_TEST_RM_I */: {
        const a = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const aHi = this.vhi;
        let b: number, bHi: number;
        if (D[i + F_OP] === OP_TEST_RM_I) { b = D[i + F_IMM]!; bHi = D[i + F_IMMHI]!; }
        else { b = this.getR(D[i + F_REG]!, sz); bHi = this.vhi; }
        this.logic(sz, a & b, aHi & bHi);
        return ST_NEXT;
      }
      case 40 /* OP_JCC */:
        // Not taken: the block goes on (a conditional branch does not end a block, ops.ts ENDS_BLOCK).
        return this.cond(D[i + F_SUB]!) ? this.#jumpRel(i) : ST_NEXT;
      case 41 /* OP_JMP_REL */: return this.#jumpRel(i);
      case 42 /* OP_CALL_REL */: {
        const ret = this.#nextRip(i);
        if (!this.push(sz, ret >>> 0, Math.floor(ret / TWO32))) return ST_EXC;
        return this.#jumpRel(i);
      }
      case 45 /* OP_RET */: {
        const lo = this.pop(sz);
        if (this.excVec !== -1) return ST_EXC;
        const hi = this.vhi;
        const st = this.#jumpTo(lo, hi, sz);
        if (st === ST_EXC) { this.#setSp(-(1 << sz)); return st; }
        if (D[i + F_IMM]! !== 0) this.#setSp(D[i + F_IMM]!);
        return st;
      }
      case 15 /* OP_PUSH_R */: {
        const v = this.getR(D[i + F_REG]!, sz);
        return this.push(sz, v, this.vhi) ? ST_NEXT : ST_EXC;
      }
      case 16 /* OP_POP_R */: {
        const v = this.pop(sz);
        if (this.excVec !== -1) return ST_EXC;
        this.setR(D[i + F_REG]!, sz, v, this.vhi);
        return ST_NEXT;
      }
      case 13 /* OP_LEA */: {
        // LEA computes the offset only: no segment base, no canonical check.
        const asz = (fl >> 2) & 3;
        if (asz === 3) { const lo = this.#eaRaw(i); this.setR(D[i + F_REG]!, sz, lo, this.t1); }
        else this.setR(D[i + F_REG]!, sz, this.#eaOffset(i, asz), 0);
        return ST_NEXT;
      }
      case 20 /* OP_INC_RM */: case 21 /* OP_DEC_RM */: {
        const a = this.#rdRmw(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const r = this.incdec(sz, a, sz === 3 ? this.vhi : 0, D[i + F_OP] === OP_DEC_RM);
        this.#wrRmw(i, sz, r, this.rhi);
        return ST_NEXT;
      }
      case 11 /* OP_MOVZX */: case 12 /* OP_MOVSX */: {
        const ssz = D[i + F_SUB]!;
        let v = this.rdRM(i, ssz);
        if (this.excVec !== -1) return ST_EXC;
        let hi = 0;
        if (D[i + F_OP] === OP_MOVSX) { v = sx(v, ssz); hi = v >> 31; }
        this.setR(D[i + F_REG]!, sz, v, hi);
        return ST_NEXT;
      }
      case 38 /* OP_SETCC */: {
        const v = this.cond(D[i + F_SUB]!) ? 1 : 0;
        if ((fl & FL_MEM) !== 0) {
          const lin = this.ea(i);
          if (this.excVec !== -1) return ST_EXC;
          this.wr8(lin, v);
          return this.excVec !== -1 ? ST_EXC : ST_NEXT;
        }
        this.setR(D[i + F_RM]!, 0, v, 0);
        return ST_NEXT;
      }
      case 39 /* OP_CMOVCC */: {
        const v = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const reg = D[i + F_REG]!;
        if (this.cond(D[i + F_SUB]!)) this.setR(reg, sz, v, this.vhi);
        else if (sz === 2) R[(reg << 1) + 1] = 0;
        return ST_NEXT;
      }
      case 1 /* OP_NOP */: return ST_NEXT;
      default: return this.#step2(i);
    }
  }

  /** 64-bit effective address without canonical check (LEA): low returned, high in t1. */
  #eaRaw(i: number): number {
    const D = this.D, R = this.R;
    const b = D[i + F_BASE]!, x = D[i + F_INDEX]!;
    let sLo: number, sHi: number;
    if ((D[i + F_FL]! & FL_RIPREL) !== 0) {
      const t = this.ripBase + D[i + F_IOFF]! + D[i + F_LEN]! + D[i + F_DISP]!;
      sLo = t >>> 0; sHi = Math.floor(t / TWO32);
    } else {
      sLo = D[i + F_DISP]!; sHi = 0;
      if (b >= 0) { sLo += R[b << 1]! >>> 0; sHi += R[(b << 1) + 1]!; }
      if (x >= 0) { const sc = 1 << D[i + F_SCALE]!; sLo += (R[x << 1]! >>> 0) * sc; sHi += R[(x << 1) + 1]! * sc; }
    }
    this.t1 = (sHi + Math.floor(sLo / TWO32)) | 0;
    return sLo | 0;
  }

  #step2(i: number): number {
    const D = this.D, R = this.R;
    const fl = D[i + F_FL]!;
    const sz = fl & 3;
    switch (D[i + F_OP]!) {
      case 14 /* OP_XCHG_RM_R */: {
        const reg = D[i + F_REG]!;
        const b = this.getR(reg, sz), bHi = this.vhi;
        const a = this.#rdRmw(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const aHi = this.vhi;
        this.#wrRmw(i, sz, b, bHi);
        this.setR(reg, sz, a, aHi);
        return ST_NEXT;
      }
      case 94 /* OP_XCHG_AX */: {
        const reg = D[i + F_REG]!;
        const a = this.getR(0, sz), aHi = this.vhi;
        const b = this.getR(reg, sz), bHi = this.vhi;
        this.setR(0, sz, b, bHi);
        this.setR(reg, sz, a, aHi);
        return ST_NEXT;
      }
      case 17 /* OP_PUSH_I */: return this.push(sz, D[i + F_IMM]!, D[i + F_IMMHI]!) ? ST_NEXT : ST_EXC;
      case 18 /* OP_PUSH_RM */: {
        const v = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        return this.push(sz, v, this.vhi) ? ST_NEXT : ST_EXC;
      }
      case 19 /* OP_POP_RM */: {
        const v = this.pop(sz);
        if (this.excVec !== -1) return ST_EXC;
        const hi = this.vhi;
        if ((fl & FL_MEM) !== 0) {
          const lin = this.ea(i);
          if (this.excVec === -1) this.wrN(lin, sz, v, hi);
          if (this.excVec !== -1) { this.#setSp(-(1 << sz)); return ST_EXC; }
          return ST_NEXT;
        }
        this.setR(D[i + F_RM]!, sz, v, hi);
        return ST_NEXT;
      }
      case 22 /* OP_NOT_RM */: case 23 /* OP_NEG_RM */: {
        const a = this.#rdRmw(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const aHi = sz === 3 ? this.vhi : 0;
        let r: number, rHi: number;
        if (D[i + F_OP] === OP_NEG_RM) { r = this.sub(sz, 0, 0, a, aHi, 0, FOP_SUB); rHi = this.rhi; }
        else { r = ~a; rHi = ~aHi; }
        this.#wrRmw(i, sz, r, rHi);
        return ST_NEXT;
      }
      case 24 /* OP_MUL_RM */: case 25 /* OP_IMUL1_RM */: return this.#mul1(i, D[i + F_OP] === OP_IMUL1_RM);
      case 26 /* OP_DIV_RM */: case 27 /* OP_IDIV_RM */: return this.#div(i, D[i + F_OP] === OP_IDIV_RM);
      case 28 /* OP_IMUL_R_RM */: case 29 /* OP_IMUL_R_RM_I */: {
        const a = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const aHi = this.vhi;
        let b: number, bHi: number;
        if (D[i + F_OP] === OP_IMUL_R_RM_I) { b = D[i + F_IMM]!; bHi = D[i + F_IMMHI]!; }
        else { b = this.getR(D[i + F_REG]!, sz); bHi = this.vhi; }
        this.imulTrunc(sz, a, aHi, b, bHi);
        this.setR(D[i + F_REG]!, sz, this.t0, this.t1);
        return ST_NEXT;
      }
      case 30 /* OP_SHIFT */: return this.#shift(i);
      case 31 /* OP_SHLD */: case 32 /* OP_SHRD */: return this.#shiftDouble(i, D[i + F_OP] === OP_SHRD);
      case 33 /* OP_BT_RM_R */: case 34 /* OP_BT_RM_I */: return this.#bt(i);
      case 35 /* OP_BSF */: case 36 /* OP_BSR */: case 37 /* OP_POPCNT */: {
        const v = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const lo = sz === 1 ? v & 0xffff : v, hi = sz === 3 ? this.vhi : 0;
        this.materialize();
        const op = D[i + F_OP];
        if (op === OP_POPCNT) {
          const pc = (x: number): number => { x = x - ((x >>> 1) & 0x55555555); x = (x & 0x33333333) + ((x >>> 2) & 0x33333333); return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24; };
          const c = pc(lo) + pc(hi);
          this.eflags = (this.eflags & ~ARITH) | ((lo | hi) === 0 ? ZF : 0);
          this.setR(D[i + F_REG]!, sz, c, 0);
          return ST_NEXT;
        }
        if ((lo | hi) === 0) { this.eflags |= ZF; return ST_NEXT; }
        this.eflags &= ~ZF;
        let idx: number;
        if (op === OP_BSF) idx = lo !== 0 ? 31 - Math.clz32(lo & -lo) : 63 - Math.clz32(hi & -hi);
        else idx = hi !== 0 ? 63 - Math.clz32(hi) : 31 - Math.clz32(lo);
        this.setR(D[i + F_REG]!, sz, idx, 0);
        return ST_NEXT;
      }
      case 46 /* OP_LOOP */: {
        const asz = (fl >> 2) & 3;
        const sub = D[i + F_SUB]!;
        let zero: boolean;
        if (sub === 3) {
          zero = asz === 3 ? (R[2]! | R[3]!) === 0 : asz === 2 ? R[2] === 0 : (R[2]! & 0xffff) === 0;
          if (zero) return this.#jumpRel(i);
          this.rip = this.#nextRip(i);
          return ST_JUMP;
        }
        if (asz === 3) { this.addR64(1, -1); zero = (R[2]! | R[3]!) === 0; }
        else if (asz === 2) { R[2] = (R[2]! - 1) | 0; R[3] = 0; zero = R[2] === 0; }
        else { R[2] = (R[2]! & ~0xffff) | ((R[2]! - 1) & 0xffff); zero = (R[2] & 0xffff) === 0; }
        let take = !zero;
        if (sub === 0) take = take && !this.getZF();
        else if (sub === 1) take = take && this.getZF();
        if (take) return this.#jumpRel(i);
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 43 /* OP_JMP_RM */: case 44 /* OP_CALL_RM */: {
        const lo = this.rdRM(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const hi = this.vhi;
        if (D[i + F_OP] === OP_CALL_RM) {
          if (this.mode === 2 && canon(lo, hi) !== canon(lo, hi)) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
          const ret = this.#nextRip(i);
          if (!this.push(sz, ret >>> 0, Math.floor(ret / TWO32))) return ST_EXC;
        }
        return this.#jumpTo(lo, hi, sz);
      }
      case 47 /* OP_STRING */: return this.#string(i);
      case 48 /* OP_CMPXCHG */: return this.#cmpxchg(i);
      case 50 /* OP_CMPXCHG8B */: return this.#cmpxchg8b(i);
      case 49 /* OP_XADD */: {
        const reg = D[i + F_REG]!;
        const b = this.getR(reg, sz), bHi = this.vhi;
        const a = this.#rdRmw(i, sz);
        if (this.excVec !== -1) return ST_EXC;
        const aHi = this.vhi;
        const r = this.add(sz, a, aHi, b, bHi, 0, FOP_ADD);
        const rHi = this.rhi;
        // The source register first: XADD r, r leaves the sum in the destination.
        this.setR(reg, sz, a, aHi);
        this.#wrRmw(i, sz, r, rHi);
        return ST_NEXT;
      }
      case 51 /* OP_BSWAP */: {
        const r = D[i + F_REG]!;
        const bs = (x: number): number => ((x >>> 24) | ((x >> 8) & 0xff00) | ((x << 8) & 0xff0000) | (x << 24)) | 0;
        if (sz === 3) { const lo = R[r << 1]!, hi = R[(r << 1) + 1]!; R[r << 1] = bs(hi); R[(r << 1) + 1] = bs(lo); }
        else if (sz === 2) { R[r << 1] = bs(R[r << 1]!); R[(r << 1) + 1] = 0; }
        else R[r << 1] = R[r << 1]! & ~0xffff;   // 16-bit BSWAP is undefined; zero like hardware does
        return ST_NEXT;
      }
      case 52 /* OP_CBW */: {
        if (sz === 1) this.setR(0, 1, sx(R[0]!, 0), 0);
        else if (sz === 2) this.setR(0, 2, sx(R[0]!, 1), 0);
        else R[1] = R[0]! >> 31;
        return ST_NEXT;
      }
      case 53 /* OP_CWD */: {
        if (sz === 1) this.setR(2, 1, (R[0]! << 16) >> 31, 0);
        else if (sz === 2) this.setR(2, 2, R[0]! >> 31, 0);
        else { R[4] = R[1]! >> 31; R[5] = R[1]! >> 31; }
        return ST_NEXT;
      }
      case 54 /* OP_LAHF */: this.setR(16, 0, this.getFlags() & 0xd5 | 2, 0); return ST_NEXT;
      case 55 /* OP_SAHF */: {
        this.materialize();
        const ah = (R[0]! >> 8) & 0xd5;
        this.eflags = (this.eflags & ~0xd5) | ah;
        return ST_NEXT;
      }
      case 56 /* OP_PUSHF */: return this.push(sz, this.getFlags() & ~(RF | VM), 0) ? ST_NEXT : ST_EXC;
      case 57 /* OP_POPF */: {
        const v = this.pop(sz);
        if (this.excVec !== -1) return ST_EXC;
        this.#writeFlags(v, sz === 1 ? 0xffff : -1);
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 58 /* OP_FLAGOP */: {
        const s = D[i + F_SUB]!;
        if (s <= 2) { this.materialize(); this.eflags = s === 0 ? this.eflags & ~CF : s === 1 ? this.eflags | CF : this.eflags ^ CF; }
        else if (s === 3) this.eflags &= ~DF_;
        else if (s === 4) this.eflags |= DF_;
        else {
          if ((this.cr0 & CR0_PE) !== 0 && this.cpl > ((this.eflags >> 12) & 3)) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
          if (s === 5) this.eflags &= ~IF;
          else { if ((this.eflags & IF) === 0) this.shadow = 1; this.eflags |= IF; }
        }
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 91 /* OP_MOV_MOFFS */: {
        let lin = D[i + F_IMMHI]! * TWO32 + (D[i + F_DISP]! >>> 0);
        const seg = (fl >> 8) & 7;
        if (seg !== SEG_NONE) lin = this.mode === 2 ? lin + this.sBase[seg]! : (lin + this.sBase[seg]!) >>> 0;
        if (this.mode === 2 && (lin < -140737488355328 || lin >= 140737488355328 || lin !== lin)) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        if (D[i + F_SUB] === 0) {
          const v = this.rdN(lin, sz);
          if (this.excVec !== -1) return ST_EXC;
          this.setR(0, sz, v, this.vhi);
        } else {
          const v = this.getR(0, sz);
          this.wrN(lin, sz, v, this.vhi);
          if (this.excVec !== -1) return ST_EXC;
        }
        return ST_NEXT;
      }
      case 90 /* OP_XLAT */: {
        const asz = (fl >> 2) & 3;
        let off: number;
        if (asz === 3) off = R[7]! * TWO32 + (R[6]! >>> 0) + (R[0]! & 0xff);
        else off = asz === 2 ? (R[6]! + (R[0]! & 0xff)) >>> 0 : (R[6]! + (R[0]! & 0xff)) & 0xffff;
        const seg = (fl >> 8) & 7;
        const lin = seg === SEG_NONE ? off : this.mode === 2 ? off + this.sBase[seg]! : (off + this.sBase[seg]!) >>> 0;
        const v = this.rd8(lin);
        if (this.excVec !== -1) return ST_EXC;
        this.setR(0, 0, v, 0);
        return ST_NEXT;
      }
      case 59 /* OP_ENTER */: return this.#enter(i);
      case 60 /* OP_LEAVE */: {
        // rSP = rBP, then pop rBP.
        const saveLo = R[8]!, saveHi = R[9]!;
        if (this.mode === 2) { R[8] = R[10]!; R[9] = R[11]!; }
        else if ((this.sAttr[SEG_SS]! & 0x4000) !== 0) { R[8] = R[10]!; R[9] = 0; }
        else R[8] = (R[8]! & ~0xffff) | (R[10]! & 0xffff);
        const v = this.pop(sz);
        if (this.excVec !== -1) { R[8] = saveLo; R[9] = saveHi; return ST_EXC; }
        this.setR(5, sz, v, this.vhi);
        return ST_NEXT;
      }
      case 61 /* OP_INT */: {
        const sub = D[i + F_SUB]!;
        if (sub === 2 && !this.getOF()) { this.rip = this.#nextRip(i); return ST_JUMP; }
        this.rip = this.#nextRip(i);
        this.deliver(D[i + F_IMM]! & 0xff, -1, sub === 0 ? 1 : 1);
        return ST_JUMP;
      }
      case 62 /* OP_IRET */: return this.#iret(i);
      case 63 /* OP_HLT */:
        if (this.cpl !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        this.rip = this.#nextRip(i);
        this.halted = true;
        return ST_JUMP;
      case 93 /* OP_PAUSE */:
        this.rip = this.#nextRip(i);
        if (this.env.othersRunnable()) this.exitReason = RUN_YIELD;
        return ST_JUMP;
      case 64 /* OP_IN */: case 65 /* OP_OUT */: return this.#io(i);
      case 66 /* OP_CPUID */: {
        const o = this.#cpuidOut;
        this.env.cpuid(R[0]!, R[2]!, o);
        this.setR(0, 2, o[0]!, 0); this.setR(3, 2, o[1]!, 0); this.setR(1, 2, o[2]!, 0); this.setR(2, 2, o[3]!, 0);
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 69 /* OP_RDTSC */: case 70 /* OP_RDTSCP */: {
        if ((this.cr4 & CR4_TSD) !== 0 && this.cpl !== 0 && (this.cr0 & CR0_PE) !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        const t = this.tsc();
        this.setR(0, 2, t >>> 0, 0);
        this.setR(2, 2, Math.floor(t / TWO32), 0);
        if (D[i + F_OP] === OP_RDTSCP) this.setR(1, 2, this.tscAux, 0);
        return ST_NEXT;
      }
      case 67 /* OP_RDMSR */: case 68 /* OP_WRMSR */: {
        if (this.cpl !== 0 && (this.cr0 & CR0_PE) !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        const ok = D[i + F_OP] === OP_RDMSR ? this.#rdmsr(R[2]! >>> 0) : this.#wrmsr(R[2]! >>> 0, R[0]!, R[4]!);
        if (!ok) { if (this.excVec === -1) { this.excVec = GP; this.excCode = 0; } return ST_EXC; }
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 71 /* OP_MOV_R_CR */: case 72 /* OP_MOV_CR_R */: return this.#movCr(i);
      case 73 /* OP_MOV_R_DR */: case 74 /* OP_MOV_DR_R */: {
        if (this.cpl !== 0 && (this.cr0 & CR0_PE) !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        let n = D[i + F_REG]!;
        if (n === 4 || n === 5) n += 2;
        if (n > 7) { this.excVec = UD; return ST_EXC; }
        const rm = D[i + F_RM]!;
        if (D[i + F_OP] === OP_MOV_R_DR) {
          const v = this.dr[n]!;
          this.setR(rm, sz, v >>> 0, Math.floor(v / TWO32));
          return ST_NEXT;
        }
        const lo = R[rm << 1]!, hi = sz === 3 ? R[(rm << 1) + 1]! : 0;
        this.dr[n] = (hi >>> 0) * TWO32 + (lo >>> 0);
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 75 /* OP_GRP7 */: return this.#grp7(i);
      case 80 /* OP_GRP6 */: return this.#grp6(i);
      case 95 /* OP_LAR_LSL */: return this.#larLsl(i);
      case 76 /* OP_VMCALL */: {
        if (this.cpl !== 0 || (this.cr0 & CR0_PE) === 0) { this.excVec = UD; return ST_EXC; }
        const big = (r: number): bigint => (BigInt(R[(r << 1) + 1]! >>> 0) << 32n) | BigInt(R[r << 1]! >>> 0);
        const v = this.env.exits().hypercall(this.env.vpIndex, { control: big(1), input: big(2), output: big(8) });
        const u = BigInt.asUintN(64, v);
        R[0] = Number(u & 0xffffffffn) | 0; R[1] = Number(u >> 32n) | 0;
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 77 /* OP_SWAPGS */: {
        if (this.cpl !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        const t = this.sBase[SEG_GS]!; this.sBase[SEG_GS] = this.kernelGsBase; this.kernelGsBase = t;
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 78 /* OP_SYSCALL */: return this.#syscall(i);
      case 79 /* OP_SYSRET */: return this.#sysret(i);
      case 81 /* OP_MOV_RM_SREG */: {
        const v = this.sSel[D[i + F_REG]!]!;
        if ((fl & FL_MEM) !== 0) {
          const lin = this.ea(i);
          if (this.excVec !== -1) return ST_EXC;
          this.wr16(lin, v);
          return this.excVec !== -1 ? ST_EXC : ST_NEXT;
        }
        this.setR(D[i + F_RM]!, sz, v, 0);
        return ST_NEXT;
      }
      case 82 /* OP_MOV_SREG_RM */: {
        const v = this.rdRM(i, 1);
        if (this.excVec !== -1) return ST_EXC;
        const seg = D[i + F_REG]!;
        if (!this.loadSeg(seg, v)) return ST_EXC;
        if (seg === SEG_SS) this.shadow = 1;
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 83 /* OP_PUSH_SEG */: return this.push(sz, this.sSel[D[i + F_SUB]!]!, 0) ? ST_NEXT : ST_EXC;
      case 84 /* OP_POP_SEG */: {
        const v = this.#peek(sz, 0);
        if (this.excVec !== -1) return ST_EXC;
        const seg = D[i + F_SUB]!;
        if (!this.loadSeg(seg, v & 0xffff)) return ST_EXC;
        this.#setSp(1 << sz);
        if (seg === SEG_SS) this.shadow = 1;
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      }
      case 85 /* OP_JMPF */: case 88 /* OP_CALLF */: {
        const sel = D[i + F_IMM2]!, off = D[i + F_IMM]! >>> 0;
        if (D[i + F_OP] === OP_CALLF) {
          const w = sz === 1 ? 1 : 2;
          const ret = this.#nextRip(i);
          if (!this.push(w, this.sSel[SEG_CS]!, 0) || !this.push(w, ret, 0)) return ST_EXC;
        }
        if (!this.#loadCs(sel, (this.cr0 & CR0_PE) === 0 ? 0 : this.cpl)) return ST_EXC;
        this.rip = sz === 1 ? off & 0xffff : off;
        return ST_JUMP;
      }
      case 86 /* OP_JMPF_RM */: case 87 /* OP_CALLF_RM */: {
        const lin = this.ea(i);
        if (this.excVec !== -1) return ST_EXC;
        const n = 1 << sz;
        const off = this.rdN(lin, sz);
        const offHi = this.vhi;
        if (this.excVec !== -1) return ST_EXC;
        const sel = this.rd16(lin + n);
        if (this.excVec !== -1) return ST_EXC;
        if (D[i + F_OP] === OP_CALLF_RM) {
          const ret = this.#nextRip(i);
          if (!this.push(sz, this.sSel[SEG_CS]!, 0) || !this.push(sz, ret >>> 0, Math.floor(ret / TWO32))) return ST_EXC;
        }
        if (!this.#loadCs(sel, (this.cr0 & CR0_PE) === 0 ? 0 : this.cpl)) return ST_EXC;
        return this.#jumpTo(off, offHi, sz);
      }
      case 89 /* OP_RETF */: {
        const w = sz;
        const off = this.#peek(w, 0);
        if (this.excVec !== -1) return ST_EXC;
        const offHi = this.vhi;
        const sel = this.#peek(w, 1 << w) & 0xffff;
        if (this.excVec !== -1) return ST_EXC;
        const rpl = sel & 3;
        const pe = (this.cr0 & CR0_PE) !== 0;
        if (pe && rpl < this.cpl) { this.excVec = GP; this.excCode = sel & 0xfffc; return ST_EXC; }
        if (pe && rpl > this.cpl) {
          // Return to an outer privilege level: also pop SS:rSP.
          const sp = this.#peek(w, (2 << w) + D[i + F_IMM]!);
          const spHi = this.vhi;
          const ss = this.#peek(w, (3 << w) + D[i + F_IMM]!) & 0xffff;
          if (this.excVec !== -1) return ST_EXC;
          if (!this.#loadCs(sel, rpl)) return ST_EXC;
          if (!this.loadSeg(SEG_SS, ss)) return ST_EXC;
          this.setR(4, w === 1 ? 1 : w, sp, spHi);
          return this.#jumpTo(off, offHi, w);
        }
        if (!this.#loadCs(sel, pe ? this.cpl : 0)) return ST_EXC;
        this.#setSp((2 << w) + D[i + F_IMM]!);
        return this.#jumpTo(off, offHi, w);
      }
      case 97 /* OP_SSE */: return sseStep(this, i);
      case 98 /* OP_X87 */: return x87Step(this, i);
      case 92 /* OP_CLTS */:
        if (this.cpl !== 0 && (this.cr0 & CR0_PE) !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        this.cr0 &= ~CR0_TS;
        this.rip = this.#nextRip(i);
        return ST_JUMP;
      default:
        if (D[i + F_SUB] === UD_TOO_LONG && D[i + F_OP] === 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
        this.excVec = UD; this.excCode = -1;
        return ST_EXC;
    }
  }

  #writeFlags(v: number, mask: number): void {
    let m = CF | PF_ | AF | ZF | SF | TF | DF_ | OF | NT | ACF | ID;
    const pe = (this.cr0 & CR0_PE) !== 0;
    if (!pe || this.cpl === 0) m |= IOPL | IF;
    else if (this.cpl <= ((this.eflags >> 12) & 3)) m |= IF;
    m &= mask;
    this.fOp = FOP_NONE;
    const old = this.getFlags();
    if ((old & IF) === 0 && (v & m & IF) !== 0) this.shadow = 1;
    this.eflags = ((old & ~m) | (v & m) | 2) & ~(RF | VM);
  }

  tsc(): number { return Math.floor(performance.now() * 1e6) + this.tscOffset; }

  // ---------------------------------------------------------------- multiply / divide

  /**
   * Unsigned 32x32 -> 64: low in t0, high in t1. Two exact double products of 48 bits (a by
   * each 16-bit half of b): p = x + y * 2^16 = t + floor(y / 2^16) * 2^32 with
   * t = x + (y mod 2^16) * 2^16 < 2^49. (ToInt32 of an integral double below 2^53 is exact mod 2^32.)
   */
  #mulu32(a: number, b: number): void {
    a >>>= 0; b >>>= 0;
    const y = a * (b >>> 16);
    const t = a * (b & 0xffff) + (y & 0xffff) * 65536;
    this.t0 = t | 0;
    this.t1 = (Math.floor(y / 65536) + Math.floor(t / TWO32)) | 0;
  }
  /** Unsigned 64x64 -> 128 into limbs q[0..3] (little-endian). */
  readonly #q = new Int32Array(4);
  #mulu64(aLo: number, aHi: number, bLo: number, bHi: number): void {
    const q = this.#q;
    this.#mulu32(aLo, bLo); const p0l = this.t0, p0h = this.t1;
    if (aHi === 0 && bHi === 0) { q[0] = p0l; q[1] = p0h; q[2] = 0; q[3] = 0; return; }
    this.#mulu32(aLo, bHi); const p1l = this.t0, p1h = this.t1;
    this.#mulu32(aHi, bLo); const p2l = this.t0, p2h = this.t1;
    this.#mulu32(aHi, bHi); const p3l = this.t0, p3h = this.t1;
    q[0] = p0l;
    let s = (p0h >>> 0) + (p1l >>> 0) + (p2l >>> 0);
    q[1] = s | 0;
    s = Math.floor(s / TWO32) + (p1h >>> 0) + (p2h >>> 0) + (p3l >>> 0);
    q[2] = s | 0;
    q[3] = (Math.floor(s / TWO32) + (p3h >>> 0)) | 0;
  }
  /** Signed 64x64 -> 128 (limbs in #q). */
  #muls64(aLo: number, aHi: number, bLo: number, bHi: number): void {
    const q = this.#q;
    if (aHi === aLo >> 31 && bHi === bLo >> 31) {
      // Both fit in 32 signed bits (small values, immediates): the double product is exact
      // below 2^53 in magnitude.
      const p = aLo * bLo;
      if (p <= 9007199254740991 && p >= -9007199254740991) {
        const hi = Math.floor(p / TWO32);
        q[0] = (p - hi * TWO32) | 0; q[1] = hi | 0; q[2] = q[3] = p < 0 ? -1 : 0;
        return;
      }
    }
    this.#mulu64(aLo, aHi, bLo, bHi);
    // high -= (a < 0 ? b : 0) + (b < 0 ? a : 0)
    if (aHi < 0) {
      const s = (q[2]! >>> 0) - (bLo >>> 0);
      q[2] = s | 0;
      q[3] = (q[3]! - bHi - (s < 0 ? 1 : 0)) | 0;
    }
    if (bHi < 0) {
      const s = (q[2]! >>> 0) - (aLo >>> 0);
      q[2] = s | 0;
      q[3] = (q[3]! - aHi - (s < 0 ? 1 : 0)) | 0;
    }
  }

  /** Truncating signed multiply (IMUL r, r/m[, imm]): result in t0/t1, CF=OF on overflow. */
  imulTrunc(sz: number, a: number, aHi: number, b: number, bHi: number): void {
    let of: boolean;
    if (sz === 3) {
      // The low 64 bits are the same for signed and unsigned factors: aLo*bLo plus the cross
      // products shifted by 32 (mod 2^64). Overflow from the double product P (relative error
      // under 2^-51): |P| < 2^62 cannot overflow, |P| >= 2^64 must; only between does it take
      // the exact 128-bit product.
      const p = (aHi * TWO32 + (a >>> 0)) * (bHi * TWO32 + (b >>> 0));
      if (p > -4611686018427387904 && p < 4611686018427387904) of = false;
      else if (p >= 18446744073709551616 || p <= -18446744073709551616) of = true;
      else {
        this.#muls64(a, aHi, b, bHi);
        const q = this.#q, sign = q[1]! >> 31;
        of = q[2] !== sign || q[3] !== sign;
      }
      this.#mulu32(a, b);
      this.t1 = (this.t1 + Math.imul(a, bHi) + Math.imul(aHi, b)) | 0;
    } else if (sz === 2) {
      this.#mulu32(a, b);
      let hi = this.t1;
      if (a < 0) hi = (hi - b) | 0;
      if (b < 0) hi = (hi - a) | 0;
      of = hi !== (this.t0 >> 31);
      this.t1 = 0;
    } else {
      const p = sx(a, 1) * sx(b, 1);
      this.t0 = p & 0xffff; this.t1 = 0;
      of = p !== sx(p, 1);
    }
    this.#resultFlags(this.t0, this.t1, sz, of ? 1 : 0, of ? 1 : 0);
  }

  #mul1(i: number, signed: boolean): number {
    const D = this.D, R = this.R;
    const sz = D[i + F_FL]! & 3;
    const v = this.rdRM(i, sz);
    if (this.excVec !== -1) return ST_EXC;
    const vHi = this.vhi;
    let of: boolean;
    if (sz === 0) {
      const p = signed ? sx(R[0]!, 0) * sx(v, 0) : (R[0]! & 0xff) * (v & 0xff);
      R[0] = (R[0]! & ~0xffff) | (p & 0xffff);
      of = signed ? p !== sx(p, 0) : (p & 0xff00) !== 0;
      this.#resultFlags(p, 0, 0, of ? 1 : 0, of ? 1 : 0);
    } else if (sz === 1) {
      const p = signed ? sx(R[0]!, 1) * sx(v, 1) : (R[0]! & 0xffff) * (v & 0xffff);
      this.setR(0, 1, p, 0); this.setR(2, 1, p >> 16, 0);
      of = signed ? p !== sx(p, 1) : (p >>> 16) !== 0;
      this.#resultFlags(p, 0, 1, of ? 1 : 0, of ? 1 : 0);
    } else if (sz === 2) {
      const a = R[0]!;
      this.#mulu32(a, v);
      let hi = this.t1;
      if (signed) { if (a < 0) hi = (hi - v) | 0; if (v < 0) hi = (hi - a) | 0; of = hi !== (this.t0 >> 31); }
      else of = hi !== 0;
      this.setR(0, 2, this.t0, 0); this.setR(2, 2, hi, 0);
      this.#resultFlags(this.t0, 0, 2, of ? 1 : 0, of ? 1 : 0);
    } else {
      if (signed) this.#muls64(R[0]!, R[1]!, v, vHi); else this.#mulu64(R[0]!, R[1]!, v, vHi);
      const q = this.#q;
      R[0] = q[0]!; R[1] = q[1]!; R[4] = q[2]!; R[5] = q[3]!;
      of = signed ? (q[2] !== (q[1]! >> 31) || q[3] !== (q[1]! >> 31)) : (q[2]! | q[3]!) !== 0;
      this.#resultFlags(q[0]!, q[1]!, 3, of ? 1 : 0, of ? 1 : 0);
    }
    return ST_NEXT;
  }

  #div(i: number, signed: boolean): number {
    const D = this.D, R = this.R;
    const sz = D[i + F_FL]! & 3;
    const v = this.rdRM(i, sz);
    if (this.excVec !== -1) return ST_EXC;
    const vHi = this.vhi;
    const de = (): number => { this.excVec = DE; this.excCode = -1; return ST_EXC; };
    if (sz === 0 || sz === 1) {
      const bits = sz === 0 ? 8 : 16;
      const dividend = sz === 0 ? (signed ? sx(R[0]!, 1) : R[0]! & 0xffff)
        : (signed ? (sx(R[4]!, 1) * 65536 + (R[0]! & 0xffff)) : (R[4]! & 0xffff) * 65536 + (R[0]! & 0xffff));
      const d = signed ? sx(v, sz) : v & MASK[sz]!;
      if (d === 0) return de();
      const q = Math.trunc(dividend / d), r = dividend - q * d;
      if (signed ? (q > (2 ** (bits - 1)) - 1 || q < -(2 ** (bits - 1))) : q >= 2 ** bits) return de();
      if (sz === 0) R[0] = (R[0]! & ~0xffff) | (q & 0xff) | ((r & 0xff) << 8);
      else { this.setR(0, 1, q, 0); this.setR(2, 1, r, 0); }
      return ST_NEXT;
    }
    if (sz === 2) {
      let hi = R[4]!, lo = R[0]!, d = v;
      let neg = false, rneg = false;
      if (signed) {
        if (hi < 0) { neg = true; rneg = true; lo = -lo | 0; hi = (~hi + (lo === 0 ? 1 : 0)) | 0; }
        if (d < 0) { neg = !neg; d = -d; }
      }
      const du = d >>> 0;
      if (du === 0) return de();
      if ((hi >>> 0) >= du) return de();
      // Two 16-bit steps keep every intermediate below 2^48 (exact).
      let r = hi >>> 0;
      let t = r * 65536 + (lo >>> 16);
      const q1 = Math.floor(t / du); r = t - q1 * du;
      t = r * 65536 + (lo & 0xffff);
      const q2 = Math.floor(t / du); r = t - q2 * du;
      const q = q1 * 65536 + q2;
      if (signed) {
        if (neg ? q > 0x80000000 : q > 0x7fffffff) return de();
        this.setR(0, 2, neg ? -q | 0 : q | 0, 0);
        this.setR(2, 2, rneg ? -r | 0 : r | 0, 0);
      } else {
        if (q > 0xffffffff) return de();
        this.setR(0, 2, q | 0, 0); this.setR(2, 2, r | 0, 0);
      }
      return ST_NEXT;
    }
    // 128/64 with both operands below 2^52 in magnitude (the dividend in RAX, RDX its zero or
    // sign extension): exact in doubles. Nearly every division a kernel does (time and size
    // arithmetic) is of this kind. Math.floor of the rounded quotient is the exact one: when
    // a/d = n - e below an integer n, e >= 1/d, while the rounding error of a/d is at most
    // ulp(n)/2 < (2^52 / d) * 2^-53 = 1/(2d).
    const aHi = R[1]!;
    if (signed ? R[4] === aHi >> 31 && R[5] === aHi >> 31 && aHi >= -0x100000 && aHi < 0x100000 && vHi >= -0x100000 && vHi < 0x100000
      : R[4] === 0 && R[5] === 0 && (aHi >>> 0) < 0x100000 && (vHi >>> 0) < 0x100000) {
      const a = (signed ? aHi : aHi >>> 0) * TWO32 + (R[0]! >>> 0), d = (signed ? vHi : vHi >>> 0) * TWO32 + (v >>> 0);
      if (d !== 0) {
        const ua = Math.abs(a), ud = Math.abs(d);
        const uq = Math.floor(ua / ud), ur = ua - uq * ud;
        const q = (a < 0) !== (d < 0) ? -uq : uq, r = a < 0 ? -ur : ur;
        R[0] = q | 0; R[1] = Math.floor(q / TWO32) | 0;
        R[4] = r | 0; R[5] = Math.floor(r / TWO32) | 0;
        return ST_NEXT;
      }
    }
    // Unsigned 128/64 with RDX below the divisor (multi-precision code: lib/mpi's udiv_qrnnd in
    // the kernel's RSA signature checks): two 96/64-bit steps of schoolbook division.
    if (!signed && (v | vHi) !== 0 && divu128(R[5]!, R[4]!, R[1]!, R[0]!, vHi, v, this.#q)) {
      const q = this.#q;
      R[0] = q[0]!; R[1] = q[1]!; R[4] = q[2]!; R[5] = q[3]!;
      return ST_NEXT;
    }
    // Other 128/64 divisions: BigInt (docs/reference speed notes).
    const u64 = (lo: number, hi: number): bigint => (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    let dividend = (u64(R[4]!, R[5]!) << 64n) | u64(R[0]!, R[1]!);
    let divisor = u64(v, vHi);
    if (signed) { dividend = BigInt.asIntN(128, dividend); divisor = BigInt.asIntN(64, divisor); }
    if (divisor === 0n) return de();
    const q = dividend / divisor, r = dividend % divisor;
    if (signed ? (q > 0x7fffffffffffffffn || q < -0x8000000000000000n) : q > 0xffffffffffffffffn) return de();
    const qu = BigInt.asUintN(64, q), ru = BigInt.asUintN(64, r);
    R[0] = Number(qu & 0xffffffffn) | 0; R[1] = Number(qu >> 32n) | 0;
    R[4] = Number(ru & 0xffffffffn) | 0; R[5] = Number(ru >> 32n) | 0;
    return ST_NEXT;
  }

  // ---------------------------------------------------------------- shifts and rotates

  #shiftCount(i: number): number {
    const D = this.D;
    const src = D[i + F_IMM2]!;
    const c = src === 0 ? 1 : src === 1 ? this.R[2]! & 0xff : D[i + F_IMM]! & 0xff;
    return c & ((D[i + F_FL]! & 3) === 3 ? 0x3f : 0x1f);
  }

  #shift(i: number): number {
    const D = this.D;
    const sz = D[i + F_FL]! & 3;
    let a = this.#rdRmw(i, sz);
    if (this.excVec !== -1) return ST_EXC;
    let aHi = sz === 3 ? this.vhi : 0;
    const c = this.#shiftCount(i);
    const op = D[i + F_SUB]!;
    const bits = 8 << sz;
    if (c !== 0) {
      if (sz === 3) {
        this.#shift64(op, a, aHi, c);
        a = this.t0; aHi = this.t1;
      } else {
        a = this.#shift32(op, a & MASK[sz]!, c, bits, sz);
      }
    }
    this.#wrRmw(i, sz, a, aHi);
    return ST_NEXT;
  }

  /** Shift/rotate of an 8/16/32-bit value (unsigned v, 1 <= c <= 31). Sets flags; returns result. */
  #shift32(op: number, v: number, c: number, bits: number, sz: number): number {
    const mask = MASK[sz]!;
    const msb = (x: number): number => (x >>> (bits - 1)) & 1;
    v >>>= 0;
    switch (op) {
      case 0: case 1: { // ROL, ROR
        const n = c % bits;
        let r = v;
        if (n !== 0) r = op === 0 ? ((v << n) | (v >>> (bits - n))) & mask : ((v >>> n) | (v << (bits - n))) & mask;
        r >>>= 0;
        this.materialize();
        let cf: number, of: number;
        if (op === 0) { cf = r & 1; of = msb(r) ^ cf; } else { cf = msb(r); of = cf ^ ((r >>> (bits - 2)) & 1); }
        this.eflags = (this.eflags & ~(CF | OF)) | cf | (of ? OF : 0);
        return r;
      }
      case 2: case 3: { // RCL, RCR
        const n = sz < 2 ? c % (bits + 1) : c;
        this.materialize();
        let cf = this.eflags & CF;
        let r = v;
        for (let k = 0; k < n; k++) {
          if (op === 2) { const out = msb(r); r = ((r << 1) | cf) & mask; cf = out; }
          else { const out = r & 1; r = (r >>> 1) | (cf << (bits - 1)); cf = out; }
          r >>>= 0;
        }
        const of = op === 2 ? msb(r) ^ cf : msb(r) ^ ((r >>> (bits - 2)) & 1);
        if (n !== 0) this.eflags = (this.eflags & ~(CF | OF)) | cf | (of ? OF : 0);
        return r;
      }
      case 4: case 6: { // SHL/SAL
        const r = (c < 32 ? v << c : 0) & mask;
        const cf = c <= bits ? (v >>> (bits - c)) & 1 : 0;
        this.#resultFlags(r, 0, sz, cf, msb(r) ^ cf);
        return r;
      }
      case 5: { // SHR
        const r = v >>> c;
        const cf = (v >>> (c - 1)) & 1;
        this.#resultFlags(r, 0, sz, cf, msb(v));
        return r;
      }
      default: { // SAR
        const s = sx(v, sz);
        const r = (s >> Math.min(c, 31)) & mask;
        const cf = (s >> Math.min(c - 1, 31)) & 1;
        this.#resultFlags(r, 0, sz, cf, 0);
        return r;
      }
    }
  }

  #shl64(lo: number, hi: number, c: number): void {
    if (c === 0) { this.t0 = lo; this.t1 = hi; }
    else if (c < 32) { this.t1 = (hi << c) | (lo >>> (32 - c)); this.t0 = lo << c; }
    else { this.t1 = lo << (c - 32); this.t0 = 0; }
  }
  #shr64(lo: number, hi: number, c: number, arith: boolean): void {
    if (c === 0) { this.t0 = lo; this.t1 = hi; }
    else if (c < 32) { this.t0 = (lo >>> c) | (hi << (32 - c)); this.t1 = arith ? hi >> c : hi >>> c; }
    else { this.t0 = arith ? hi >> (c - 32) : hi >>> (c - 32); this.t1 = arith ? hi >> 31 : 0; }
    this.t0 |= 0; this.t1 |= 0;
  }
  #bit64(lo: number, hi: number, n: number): number { return n < 32 ? (lo >>> n) & 1 : (hi >>> (n - 32)) & 1; }

  /** 64-bit shift/rotate, 1 <= c <= 63: result in t0/t1. */
  #shift64(op: number, lo: number, hi: number, c: number): void {
    switch (op) {
      case 0: case 1: {
        const n = op === 0 ? c : 64 - c;
        this.#shl64(lo, hi, n); const al = this.t0, ah = this.t1;
        this.#shr64(lo, hi, 64 - n, false);
        this.t0 = al | this.t0; this.t1 = ah | this.t1;
        this.materialize();
        const rh = this.t1;
        let cf: number, of: number;
        if (op === 0) { cf = this.t0 & 1; of = (rh >>> 31) ^ cf; } else { cf = rh >>> 31; of = cf ^ ((rh >>> 30) & 1); }
        this.eflags = (this.eflags & ~(CF | OF)) | cf | (of ? OF : 0);
        return;
      }
      case 2: case 3: {
        this.materialize();
        let cf = this.eflags & CF;
        let l = lo, h = hi;
        for (let k = 0; k < c; k++) {
          if (op === 2) { const out = h >>> 31; h = (h << 1) | (l >>> 31); l = (l << 1) | cf; cf = out; }
          else { const out = l & 1; l = (l >>> 1) | (h << 31); h = (h >>> 1) | (cf << 31); cf = out; }
        }
        const of = op === 2 ? (h >>> 31) ^ cf : (h >>> 31) ^ ((h >>> 30) & 1);
        this.eflags = (this.eflags & ~(CF | OF)) | cf | (of ? OF : 0);
        this.t0 = l | 0; this.t1 = h | 0;
        return;
      }
      case 4: case 6: {
        const cf = this.#bit64(lo, hi, 64 - c);
        this.#shl64(lo, hi, c);
        this.#resultFlags(this.t0, this.t1, 3, cf, (this.t1 >>> 31) ^ cf);
        return;
      }
      case 5: {
        const cf = this.#bit64(lo, hi, c - 1);
        this.#shr64(lo, hi, c, false);
        this.#resultFlags(this.t0, this.t1, 3, cf, hi >>> 31);
        return;
      }
      default: {
        const cf = this.#bit64(lo, hi, c - 1);
        this.#shr64(lo, hi, c, true);
        this.#resultFlags(this.t0, this.t1, 3, cf, 0);
        return;
      }
    }
  }

  #shiftDouble(i: number, right: boolean): number {
    const D = this.D;
    const sz = D[i + F_FL]! & 3;
    let a = this.#rdRmw(i, sz);
    if (this.excVec !== -1) return ST_EXC;
    let aHi = sz === 3 ? this.vhi : 0;
    const origHi = aHi;
    const b = this.getR(D[i + F_REG]!, sz), bHi = sz === 3 ? this.vhi : 0;
    const c = this.#shiftCount(i);
    if (c !== 0) {
      if (sz === 3) {
        let cf: number;
        if (!right) {
          cf = this.#bit64(a, aHi, 64 - c);
          this.#shl64(a, aHi, c); const l = this.t0, h = this.t1;
          this.#shr64(b, bHi, 64 - c, false);
          a = l | this.t0; aHi = h | this.t1;
        } else {
          cf = this.#bit64(a, aHi, c - 1);
          this.#shr64(a, aHi, c, false); const l = this.t0, h = this.t1;
          this.#shl64(b, bHi, 64 - c);
          a = l | this.t0; aHi = h | this.t1;
        }
        this.#resultFlags(a, aHi, 3, cf, ((aHi ^ origHi) >>> 31) & 1);
      } else {
        const bits = 8 << sz;
        const av = a & MASK[sz]!, bv = b & MASK[sz]!;
        const cc = sz === 1 ? c & 31 : c;
        let r: number, cf: number;
        if (sz === 1) {
          // 16-bit: operate on the 32-bit concatenation.
          const cat = right ? ((bv << 16) | av) >>> 0 : ((av << 16) | bv) >>> 0;
          if (!right) { const x = cc < 32 ? (cat << cc) >>> 0 : 0; r = (x >>> 16) & 0xffff; cf = cc <= 32 ? (cat >>> (32 - cc)) & 1 : 0; }
          else { r = (cat >>> cc) & 0xffff; cf = (cat >>> (cc - 1)) & 1; }
        } else if (!right) { r = ((av << cc) | (bv >>> (32 - cc))) >>> 0; cf = (av >>> (32 - cc)) & 1; }
        else { r = ((av >>> cc) | (bv << (32 - cc))) >>> 0; cf = (av >>> (cc - 1)) & 1; }
        const of = ((r ^ av) >>> (bits - 1)) & 1;
        this.#resultFlags(r, 0, sz, cf, of);
        a = r;
      }
    }
    this.#wrRmw(i, sz, a, aHi);
    return ST_NEXT;
  }

  #bt(i: number): number {
    const D = this.D;
    const fl = D[i + F_FL]!;
    const sz = fl & 3;
    const bits = 8 << sz;
    const k = D[i + F_SUB]!;
    let off: number;
    if (D[i + F_OP] === OP_BT_RM_I) off = D[i + F_IMM]! & (bits - 1);
    else {
      const v = this.getR(D[i + F_REG]!, sz);
      // Register operand: the offset is taken modulo the size. Memory operand: signed
      // displacement (|offset| >= 2^53 lands on a non-canonical address anyway).
      if ((fl & FL_MEM) === 0) off = v & (bits - 1);
      else off = sz === 3 ? this.vhi * TWO32 + (v >>> 0) : sz === 2 ? v : sx(v, 1);
    }
    this.materialize();
    if ((fl & FL_MEM) !== 0) {
      let lin = this.ea(i);
      if (this.excVec !== -1) return ST_EXC;
      if (D[i + F_OP] === OP_BT_RM_R) {
        const words = Math.floor(off / bits);
        lin += words * (bits >> 3);
        off -= words * bits;
      }
      // Byte granular access of the byte holding the bit (same architectural effect).
      lin += off >> 3;
      const bit = off & 7;
      if (k !== 0 && !this.probeW(lin, 0)) return ST_EXC;
      const byte = this.rd8(lin);
      if (this.excVec !== -1) return ST_EXC;
      this.eflags = (this.eflags & ~CF) | ((byte >> bit) & 1);
      if (k !== 0) this.wr8(lin, k === 1 ? byte | (1 << bit) : k === 2 ? byte & ~(1 << bit) : byte ^ (1 << bit));
      return ST_NEXT;
    }
    off &= bits - 1;
    const rm = D[i + F_RM]!;
    let lo = this.getR(rm, sz), hi = sz === 3 ? this.vhi : 0;
    const cf = this.#bit64(lo, hi, off);
    this.eflags = (this.eflags & ~CF) | cf;
    if (k !== 0) {
      const m = 1 << (off & 31);
      if (off < 32) lo = k === 1 ? lo | m : k === 2 ? lo & ~m : lo ^ m;
      else hi = k === 1 ? hi | m : k === 2 ? hi & ~m : hi ^ m;
      this.setR(rm, sz, lo, hi);
    }
    return ST_NEXT;
  }

  // ---------------------------------------------------------------- compare-exchange

  #cmpxchg(i: number): number {
    const D = this.D, R = this.R;
    const fl = D[i + F_FL]!;
    const sz = fl & 3;
    const d = this.#rdRmw(i, sz);
    if (this.excVec !== -1) return ST_EXC;
    const dHi = sz === 3 ? this.vhi : 0;
    const acc = this.getR(0, sz), accHi = sz === 3 ? this.vhi : 0;
    this.sub(sz, acc, accHi, d, dHi, 0, FOP_SUB);
    const equal = this.getZF();
    if (equal) {
      const s = this.getR(D[i + F_REG]!, sz), sHi = this.vhi;
      this.#wrRmw(i, sz, s, sHi);
    } else {
      if ((fl & FL_MEM) !== 0) this.#wrRmw(i, sz, d, dHi);
      this.setR(0, sz, d, dHi);
    }
    void R;
    return ST_NEXT;
  }

  #cmpxchg8b(i: number): number {
    const R = this.R;
    const sz = this.D[i + F_FL]! & 3;
    const lin = this.ea(i);
    if (this.excVec !== -1) return ST_EXC;
    this.materialize();
    if (sz === 3) {
      if ((lin & 15) !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
      if (!this.probeW(lin, 3) || !this.probeW(lin + 8, 3)) return ST_EXC;
      const l0 = this.rd64(lin), h0 = this.vhi, l1 = this.rd64(lin + 8), h1 = this.vhi;
      if (this.excVec !== -1) return ST_EXC;
      if (l0 === R[0] && h0 === R[1] && l1 === R[4] && h1 === R[5]) {
        this.wr64(lin, R[6]!, R[7]!); this.wr64(lin + 8, R[2]!, R[3]!);
        this.eflags |= ZF;
      } else {
        this.wr64(lin, l0, h0); this.wr64(lin + 8, l1, h1);
        R[0] = l0; R[1] = h0; R[4] = l1; R[5] = h1;
        this.eflags &= ~ZF;
      }
      return ST_NEXT;
    }
    if (!this.probeW(lin, 3)) return ST_EXC;
    const lo = this.rd32(lin), hi = this.rd32(lin + 4);
    if (this.excVec !== -1) return ST_EXC;
    if (lo === R[0] && hi === R[4]) {
      this.wr32(lin, R[6]!); this.wr32(lin + 4, R[2]!);
      this.eflags |= ZF;
    } else {
      this.wr32(lin, lo); this.wr32(lin + 4, hi);
      this.setR(0, 2, lo, 0); this.setR(2, 2, hi, 0);
      this.eflags &= ~ZF;
    }
    return ST_NEXT;
  }

  // ---------------------------------------------------------------- string instructions

  #string(i: number): number {
    const D = this.D, R = this.R;
    const fl = D[i + F_FL]!;
    const sz = fl & 3;
    const asz = (fl >> 2) & 3;
    const op = D[i + F_SUB]!;
    const rep = (fl & (FL_REP | FL_REPNE)) !== 0;
    const n = 1 << sz;
    const step = (this.eflags & DF_) !== 0 ? -n : n;
    const seg = (fl >> 8) & 7;
    const srcBase = seg === SEG_NONE ? 0 : this.sBase[seg]!;
    const dstBase = this.mode === 2 ? 0 : this.sBase[SEG_ES]!;
    const regVal = (r: number): number => asz === 3 ? R[(r << 1) + 1]! * TWO32 + (R[r << 1]! >>> 0) : asz === 2 ? R[r << 1]! >>> 0 : R[r << 1]! & 0xffff;
    const adv = (r: number, d: number): void => {
      if (asz === 3) this.addR64(r, d);
      else if (asz === 2) { R[r << 1] = (R[r << 1]! + d) | 0; R[(r << 1) + 1] = 0; }
      else R[r << 1] = (R[r << 1]! & ~0xffff) | ((R[r << 1]! + d) & 0xffff);
    };
    const lin = (base: number, off: number): number => {
      const l = base + off;
      return this.mode === 2 ? l : l >>> 0;
    };
    const bad = (l: number): boolean => {
      if (this.mode === 2 && (l < -140737488355328 || l >= 140737488355328)) { this.excVec = GP; this.excCode = 0; return true; }
      return false;
    };
    if ((op === STR_INS || op === STR_OUTS) && (this.cr0 & CR0_PE) !== 0 && this.cpl > ((this.eflags >> 12) & 3)) {
      this.excVec = GP; this.excCode = 0; return ST_EXC;
    }
    let count = rep ? regVal(1) : 1;
    let iters = 0;
    if (rep && asz === 3 && step > 0 && this.mode === 2 && (op === STR_STOS || op === STR_MOVS) && count !== 0) {
      const done = this.#repBulk(op === STR_MOVS, sz, srcBase);
      if (done < 0) return ST_EXC;
      iters = done;
      count = regVal(1);
      if (count !== 0 && iters >= REP_CHUNK) {
        this.rip = this.wrapIp(this.ripBase + D[i + F_IOFF]!);
        this.instret += iters;
        return ST_JUMP;
      }
    }
    const cmp = op === STR_CMPS || op === STR_SCAS;
    while (count !== 0 && iters < REP_CHUNK) {
      switch (op) {
        case STR_MOVS: {
          const s = lin(srcBase, regVal(6)), d = lin(dstBase, regVal(7));
          if (bad(s) || bad(d)) return ST_EXC;
          const v = this.rdN(s, sz), vh = this.vhi;
          if (this.excVec !== -1) return ST_EXC;
          this.wrN(d, sz, v, vh);
          if (this.excVec !== -1) return ST_EXC;
          adv(6, step); adv(7, step);
          break;
        }
        case STR_STOS: {
          const d = lin(dstBase, regVal(7));
          if (bad(d)) return ST_EXC;
          this.wrN(d, sz, R[0]!, R[1]!);
          if (this.excVec !== -1) return ST_EXC;
          adv(7, step);
          break;
        }
        case STR_LODS: {
          const s = lin(srcBase, regVal(6));
          if (bad(s)) return ST_EXC;
          const v = this.rdN(s, sz);
          if (this.excVec !== -1) return ST_EXC;
          this.setR(0, sz, v, this.vhi);
          adv(6, step);
          break;
        }
        case STR_CMPS: {
          const s = lin(srcBase, regVal(6)), d = lin(dstBase, regVal(7));
          if (bad(s) || bad(d)) return ST_EXC;
          const a = this.rdN(s, sz), ah = this.vhi;
          if (this.excVec !== -1) return ST_EXC;
          const b = this.rdN(d, sz), bh = this.vhi;
          if (this.excVec !== -1) return ST_EXC;
          this.sub(sz, a, ah, b, bh, 0, FOP_SUB);
          adv(6, step); adv(7, step);
          break;
        }
        case STR_SCAS: {
          const d = lin(dstBase, regVal(7));
          if (bad(d)) return ST_EXC;
          const b = this.rdN(d, sz), bh = this.vhi;
          if (this.excVec !== -1) return ST_EXC;
          const a = this.getR(0, sz);
          this.sub(sz, a, sz === 3 ? this.vhi : 0, b, bh, 0, FOP_SUB);
          adv(7, step);
          break;
        }
        case STR_INS: {
          const d = lin(dstBase, regVal(7));
          if (bad(d)) return ST_EXC;
          if (!this.probeW(d, sz)) return ST_EXC;
          const v = this.env.exits().pioRead(this.env.vpIndex, R[4]! & 0xffff, n as 1 | 2 | 4);
          this.wrN(d, sz, v, 0);
          adv(7, step);
          break;
        }
        default: { // OUTS
          const s = lin(srcBase, regVal(6));
          if (bad(s)) return ST_EXC;
          const v = this.rdN(s, sz);
          if (this.excVec !== -1) return ST_EXC;
          this.env.exits().pioWrite(this.env.vpIndex, R[4]! & 0xffff, n as 1 | 2 | 4, sz === 0 ? v & 0xff : sz === 1 ? v & 0xffff : v >>> 0);
          adv(6, step);
          break;
        }
      }
      iters++;
      if (!rep) break;
      adv(1, -1);
      count = regVal(1);
      if (cmp) {
        const z = this.getZF();
        if ((fl & FL_REP) !== 0 ? !z : z) break;
      }
    }
    if (rep && count !== 0 && iters >= REP_CHUNK && !(cmp && ((fl & FL_REP) !== 0 ? !this.getZF() : this.getZF()))) {
      // Not finished: come back to this instruction (interrupts get a chance in between).
      this.rip = this.wrapIp(this.ripBase + D[i + F_IOFF]!);
      this.instret += iters;
      return ST_JUMP;
    }
    this.rip = this.#nextRip(i);
    return ST_JUMP;
  }

  /**
   * REP STOS / REP MOVS, 64-bit addressing, forward (DF = 0): whole runs of elements inside one
   * destination page (and one source page) at a time, as one fill or copy of guest RAM. An
   * element that crosses a page, or a page that is not plain writable RAM without decoded code
   * (MMIO, LAPIC, ROM, code pages, whose stores go through the slow path that invalidates),
   * moves one element through rdN/wrN. Stops, leaving the rest to the element loop, at a
   * non-canonical address (#GP is raised there), at a source and destination that overlap in
   * RAM (element order is visible then), after REP_BULK_BYTES and after 64 single elements (each
   * may be an MMIO exit). A fault is raised at the
   * element the element loop would raise it at: RCX, RSI and RDI count the elements done.
   * Returns the elements done, or -1 with the fault set.
   */
  #repBulk(movs: boolean, sz: number, srcBase: number): number {
    const R = this.R, n = 1 << sz;
    let done = 0, single = 0;
    while (done * n < REP_BULK_BYTES && single < 64) {
      const count = R[3] !== 0 ? REP_BULK_BYTES : R[2]! >>> 0;
      if (count === 0) break;
      const d = R[15]! * TWO32 + (R[14]! >>> 0);
      if (d < -140737488355328 || d >= 140737488355328) break;
      let elems = Math.min(count, Math.floor((4096 - (d & 0xfff)) / n));
      let s = 0;
      if (movs) {
        s = srcBase + R[13]! * TWO32 + (R[12]! >>> 0);
        if (s < -140737488355328 || s >= 140737488355328) break;
        elems = Math.min(elems, Math.floor((4096 - (s & 0xfff)) / n));
      }
      // Source first: the element loop reads before it writes.
      let sReg = -1, sOff = 0, dReg = -1, dOff = 0;
      if (elems !== 0 && movs) {
        const t = this.#tlbSlot(s, this.tlbR, ACC_R);
        if (t < 0) return -1;
        sReg = this.tlbReg[t]!;
        sOff = this.tlbOff[t]! + (s & 0xfff);
      }
      if (elems !== 0 && (!movs || sReg >= 0)) {
        const t = this.#tlbSlot(d, this.tlbW, ACC_W);
        if (t < 0) return -1;
        dReg = this.tlbReg[t]!;
        dOff = this.tlbOff[t]! + (d & 0xfff);
      }
      if (dReg < 0) {
        // One element the general way: it crosses a page, or a page is not plain RAM.
        if (movs) {
          const v = this.rdN(s, sz), vh = this.vhi;
          if (this.excVec !== -1) return -1;
          this.wrN(d, sz, v, vh);
        } else this.wrN(d, sz, R[0]!, R[1]!);
        if (this.excVec !== -1) return -1;
        elems = 1;
        single++;
      } else {
        const bytes = elems * n;
        const u8 = this.phys.u8[dReg]!;
        if (movs) {
          if (sReg === dReg && dOff > sOff && dOff < sOff + bytes) break;
          if (sReg === dReg) u8.copyWithin(dOff, sOff, sOff + bytes);
          else u8.set(this.phys.u8[sReg]!.subarray(sOff, sOff + bytes), dOff);
        } else {
          const lo = R[0]!, hi = R[1]!, b = lo & 0xff;
          const same = sz === 0 || (sz === 1 ? (lo & 0xffff) === b * 0x101 : (lo >>> 0) === b * 0x1010101 && (sz === 2 || hi === lo));
          if (same) u8.fill(b, dOff, dOff + bytes);
          else {
            const dv = this.phys.dv[dReg]!;
            for (let o = dOff, e = dOff + bytes; o < e; o += n) {
              if (sz === 1) dv.setUint16(o, lo, true);
              else { dv.setInt32(o, lo, true); if (sz === 3) dv.setInt32(o + 4, hi, true); }
            }
          }
        }
      }
      this.addR64(7, elems * n);
      if (movs) this.addR64(6, elems * n);
      this.addR64(1, -elems);
      done += elems;
    }
    return done;
  }

  // ---------------------------------------------------------------- misc system instructions

  #io(i: number): number {
    const D = this.D, R = this.R;
    const sz = D[i + F_FL]! & 3;
    if ((this.cr0 & CR0_PE) !== 0 && this.cpl > ((this.eflags >> 12) & 3)) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
    const port = D[i + F_SUB] === 0 ? D[i + F_IMM]! & 0xff : R[4]! & 0xffff;
    const n = (1 << sz) as 1 | 2 | 4;
    const ex = this.env.exits();
    if (D[i + F_OP] === OP_IN) this.setR(0, sz, ex.pioRead(this.env.vpIndex, port, n), 0);
    else ex.pioWrite(this.env.vpIndex, port, n, sz === 0 ? R[0]! & 0xff : sz === 1 ? R[0]! & 0xffff : R[0]! >>> 0);
    this.rip = this.#nextRip(i);
    return ST_JUMP;
  }

  #enter(i: number): number {
    const D = this.D, R = this.R;
    const sz = D[i + F_FL]! & 3;
    const size = D[i + F_IMM]!, level = D[i + F_IMM2]! & 31;
    const bpLo = R[10]!, bpHi = R[11]!;
    if (!this.push(sz, bpLo, bpHi)) return ST_EXC;
    const frameLo = R[8]!, frameHi = R[9]!;
    for (let l = 1; l < level; l++) {
      // Copy the enclosing frame pointers (read at rBP - l*size).
      const n = 1 << sz;
      const save8 = R[8]!, save9 = R[9]!;
      R[8] = bpLo; R[9] = bpHi;
      const v = this.#peek(sz, -l * n);
      const vh = this.vhi;
      R[8] = save8; R[9] = save9;
      if (this.excVec !== -1 || !this.push(sz, v, vh)) return ST_EXC;
    }
    if (level > 0 && !this.push(sz, frameLo, frameHi)) return ST_EXC;
    this.setR(5, sz === 1 ? 1 : sz, frameLo, frameHi);
    this.#setSp(-size);
    return ST_NEXT;
  }

  #iret(i: number): number {
    const D = this.D;
    this.nmiMasked = false;
    const sz = D[i + F_FL]! & 3;
    const pe = (this.cr0 & CR0_PE) !== 0;
    const w = sz;
    const n = 1 << w;
    const ip = this.#peek(w, 0), ipHi = this.vhi;
    if (this.excVec !== -1) return ST_EXC;
    const cs = this.#peek(w, n) & 0xffff;
    if (this.excVec !== -1) return ST_EXC;
    const fl = this.#peek(w, 2 * n);
    if (this.excVec !== -1) return ST_EXC;
    if (!pe) {
      this.#setSp(3 * n);
      this.sSel[SEG_CS] = cs; this.sBase[SEG_CS] = cs << 4;
      this.#writeFlags(fl, w === 1 ? 0xffff : -1);
      this.rip = w === 1 ? ip & 0xffff : ip >>> 0;
      return ST_JUMP;
    }
    const long = this.mode === 2;
    const rpl = cs & 3;
    if (rpl < this.cpl) { this.excVec = GP; this.excCode = cs & 0xfffc; return ST_EXC; }
    if (long || rpl > this.cpl) {
      const sp = this.#peek(w, 3 * n), spHi = this.vhi;
      const ss = this.#peek(w, 4 * n) & 0xffff;
      if (this.excVec !== -1) return ST_EXC;
      const oldCpl = this.cpl;
      if (!this.#loadCs(cs, rpl)) return ST_EXC;
      this.cpl = oldCpl;   // flags are written with the old CPL's privileges
      this.#writeFlags(fl, w === 1 ? 0xffff : -1);
      this.setCpl(rpl);
      if (!this.loadSeg(SEG_SS, ss)) return ST_EXC;
      if (w === 3) { this.R[8] = sp; this.R[9] = spHi; }
      else this.setR(4, w === 1 ? 1 : 2, sp, 0);
      if (rpl > oldCpl) {
        for (const s of [SEG_ES, SEG_DS, SEG_FS, SEG_GS]) {
          const a = this.sAttr[s]!;
          const dpl = (a >> 5) & 3, conformingCode = (a & 0x1c) === 0x1c;
          if ((a & 0x10000) === 0 && dpl < rpl && !conformingCode && (this.sSel[s]! & 0xfffc) !== 0) { this.sSel[s] = 0; this.sAttr[s] = 0x10000; }
        }
      }
      return this.#jumpTo(ip, ipHi, this.mode === 2 ? w : 2);
    }
    if (!this.#loadCs(cs, this.cpl)) return ST_EXC;
    this.#setSp(3 * n);
    this.#writeFlags(fl, w === 1 ? 0xffff : -1);
    return this.#jumpTo(ip, ipHi, w);
  }

  #movCr(i: number): number {
    const D = this.D, R = this.R;
    if (this.cpl !== 0 && (this.cr0 & CR0_PE) !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
    const n = D[i + F_REG]!, rm = D[i + F_RM]!;
    const sz = D[i + F_FL]! & 3;
    if (D[i + F_OP] === OP_MOV_R_CR) {
      let v: number;
      switch (n) {
        case 0: v = this.cr0 >>> 0; break;
        case 2: v = this.cr2; break;
        case 3: v = this.cr3; break;
        case 4: v = this.cr4; break;
        case 8: v = this.lapic.tpr >> 4; break;
        default: this.excVec = UD; return ST_EXC;
      }
      this.setR(rm, sz, v >>> 0, Math.floor(v / TWO32));
      return ST_NEXT;
    }
    const lo = R[rm << 1]!, hi = sz === 3 ? R[(rm << 1) + 1]! : 0;
    const gp = (): number => { this.excVec = GP; this.excCode = 0; return ST_EXC; };
    switch (n) {
      case 0: {
        if (hi !== 0) return gp();
        let v = lo | CR0_ET;
        if ((v & CR0_PG) !== 0 && (v & CR0_PE) === 0) return gp();
        if ((v & CR0_NW) !== 0 && (v & CR0_CD) === 0) return gp();
        if ((v & CR0_PG) !== 0 && (this.cr0 & CR0_PG) === 0 && (this.efer & EFER_LME) !== 0) {
          if ((this.cr4 & CR4_PAE) === 0) return gp();
          this.efer |= EFER_LMA;
        }
        if ((v & CR0_PG) === 0 && (this.efer & EFER_LMA) !== 0) {
          if (this.mode === 2) return gp();
          this.efer &= ~EFER_LMA;
        }
        v &= CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD | CR0_PG;
        this.cr0 = v;
        this.updateMode();
        this.flushTlb();
        break;
      }
      case 2: this.cr2 = canon(lo, hi) === canon(lo, hi) ? canon(lo, hi) : (hi >>> 0) * TWO32 + (lo >>> 0); break;
      case 3: {
        if ((hi & 0xfff00000) !== 0 && (this.efer & EFER_LMA) !== 0) return gp();
        this.cr3 = (hi >>> 0) * TWO32 + (lo >>> 0);
        if ((this.cr4 & CR4_PGE) !== 0) this.flushNonGlobal(); else this.flushTlb();
        break;
      }
      case 4: {
        if (hi !== 0 || (lo & ~CR4_SUPPORTED) !== 0) return gp();
        if ((this.efer & EFER_LMA) !== 0 && (lo & CR4_PAE) === 0) return gp();
        this.cr4 = lo;
        this.flushTlb();
        break;
      }
      case 8: if ((lo & ~0xf) !== 0 || hi !== 0) return gp(); this.lapic.tpr = lo << 4; break;
      default: this.excVec = UD; return ST_EXC;
    }
    this.rip = this.#nextRip(i);
    return ST_JUMP;
  }

  #grp7(i: number): number {
    const D = this.D;
    const fl = D[i + F_FL]!;
    const sub = D[i + F_SUB]!;
    const gp = (): number => { this.excVec = GP; this.excCode = 0; return ST_EXC; };
    if (sub === 4) { // SMSW
      if ((fl & FL_MEM) !== 0) {
        const lin = this.ea(i);
        if (this.excVec !== -1) return ST_EXC;
        this.wr16(lin, this.cr0 & 0xffff);
        return this.excVec !== -1 ? ST_EXC : ST_NEXT;
      }
      this.setR(D[i + F_RM]!, fl & 3, this.cr0 & 0xffff, 0);
      return ST_NEXT;
    }
    if (sub !== 0 && sub !== 1 && this.cpl !== 0 && (this.cr0 & CR0_PE) !== 0) return gp();
    if (sub === 6) { // LMSW
      const v = this.rdRM(i, 1);
      if (this.excVec !== -1) return ST_EXC;
      this.cr0 = (this.cr0 & ~0xe) | (v & 0xf) | (this.cr0 & CR0_PE);
      this.updateMode();
      this.rip = this.#nextRip(i);
      return ST_JUMP;
    }
    const lin = this.ea(i);
    if (this.excVec !== -1) return ST_EXC;
    if (sub === 7) { this.flushPage(lin); this.rip = this.#nextRip(i); return ST_JUMP; }
    const long = this.mode === 2;
    if (sub === 0 || sub === 1) {
      const base = sub === 0 ? this.gdtBase : this.idtBase, limit = sub === 0 ? this.gdtLimit : this.idtLimit;
      if (!this.probeW(lin, 1) || !this.probeW(lin + 2, long ? 3 : 2)) return ST_EXC;
      this.wr16(lin, limit);
      if (long) this.wr64(lin + 2, base >>> 0, Math.floor(base / TWO32)); else this.wr32(lin + 2, base >>> 0);
      if (this.excVec !== -1) return ST_EXC;
      this.rip = this.#nextRip(i);
      return ST_JUMP;
    }
    const limit = this.rd16(lin);
    if (this.excVec !== -1) return ST_EXC;
    let base: number;
    if (long) {
      const lo = this.rd64(lin + 2);
      if (this.excVec !== -1) return ST_EXC;
      base = canon(lo, this.vhi);
      if (base !== base) return gp();
    } else {
      base = this.rd32(lin + 2) >>> 0;
      if (this.excVec !== -1) return ST_EXC;
      if ((fl & 3) === 1) base &= 0xffffff;
    }
    if (sub === 2) { this.gdtBase = base; this.gdtLimit = limit; } else { this.idtBase = base; this.idtLimit = limit; }
    this.rip = this.#nextRip(i);
    return ST_JUMP;
  }

  #grp6(i: number): number {
    const D = this.D;
    const fl = D[i + F_FL]!;
    const sub = D[i + F_SUB]!;
    if ((this.cr0 & CR0_PE) === 0) { this.excVec = UD; return ST_EXC; }
    if (sub === 0 || sub === 1) { // SLDT / STR
      const v = this.sSel[sub === 0 ? SEG_LDTR : SEG_TR]!;
      if ((fl & FL_MEM) !== 0) {
        const lin = this.ea(i);
        if (this.excVec !== -1) return ST_EXC;
        this.wr16(lin, v);
        if (this.excVec !== -1) return ST_EXC;
      } else this.setR(D[i + F_RM]!, 2, v, 0);
      this.rip = this.#nextRip(i);
      return ST_JUMP;
    }
    if (sub === 4 || sub === 5) { // VERR / VERW: any CPL; only ZF changes
      const sel = this.rdRM(i, 1) & 0xffff;
      if (this.excVec !== -1) return ST_EXC;
      const ok = this.#verifySeg(sel, sub === 5);
      if (this.excVec !== -1) return ST_EXC;
      this.materialize();
      this.eflags = ok ? this.eflags | ZF : this.eflags & ~ZF;
      this.rip = this.#nextRip(i);
      return ST_JUMP;
    }
    if (this.cpl !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
    const sel = this.rdRM(i, 1) & 0xffff;
    if (this.excVec !== -1) return ST_EXC;
    const seg = sub === 2 ? SEG_LDTR : SEG_TR;
    if ((sel & 0xfffc) === 0) {
      if (seg === SEG_TR) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
      this.sSel[seg] = sel; this.sAttr[seg] = 0x10000;
      this.rip = this.#nextRip(i);
      return ST_JUMP;
    }
    if ((sel & 4) !== 0) { this.excVec = GP; this.excCode = sel & 0xfffc; return ST_EXC; }
    if (!this.#readDesc(sel)) return ST_EXC;
    const lo = this.t0, hi = this.t1;
    const type = (hi >> 8) & 0x1f;
    const okType = seg === SEG_LDTR ? type === 0x02 : type === 0x09 || (type === 0x01 && (this.efer & EFER_LMA) === 0);
    if (!okType) { this.excVec = GP; this.excCode = sel & 0xfffc; return ST_EXC; }
    if ((hi & 0x8000) === 0) { this.excVec = NP; this.excCode = sel & 0xfffc; return ST_EXC; }
    let baseHi = 0;
    if ((this.efer & EFER_LMA) !== 0) {
      baseHi = this.sysRd32(this.gdtBase + (sel & ~7) + 8);
      if (this.excVec !== -1) return ST_EXC;
    }
    this.#loadCache(seg, sel, lo, hi);
    this.sBase[seg] = baseHi * TWO32 + this.sBase[seg]!;
    if (baseHi !== 0) this.sBase[seg] = canon(this.sBase[seg] >>> 0, baseHi);
    if (seg === SEG_TR) {
      // Mark the TSS busy in the GDT.
      this.sysWr32(this.gdtBase + (sel & ~7) + 4, hi | 0x200);
      if (this.excVec !== -1) return ST_EXC;
      this.sAttr[SEG_TR] = this.sAttr[SEG_TR]! | 0x2;
    }
    this.rip = this.#nextRip(i);
    return ST_JUMP;
  }

  /**
   * Whether `sel` names a descriptor inside its table (VERR/VERW, LAR/LSL): not null, not in an
   * unusable LDT, within the GDT or LDT limit. These instructions report "no" for the rest
   * instead of faulting.
   */
  #selInTable(sel: number): boolean {
    if ((sel & 0xfffc) === 0) return false;
    const ldt = (sel & 4) !== 0;
    if (ldt && (this.sAttr[SEG_LDTR]! & 0x10000) !== 0) return false;
    return (sel | 7) <= (ldt ? this.sLimit[SEG_LDTR]! : this.gdtLimit);
  }

  /**
   * VERR/VERW (SDM "VERR, VERW"): is `sel` a code/data segment readable (writable) at the
   * current CPL and the selector's RPL? A null selector or one beyond the GDT/LDT limit is
   * simply not accessible (no fault); a fault reading the descriptor is left in excVec.
   * DEVNOTE: Linux's MDS mitigation (CLEAR_CPU_BUFFERS) executes `verw` on every return to
   * user mode, so a #UD here kills the first transition to /init.
   */
  #verifySeg(sel: number, write: boolean): boolean {
    if (!this.#selInTable(sel) || !this.#readDesc(sel)) return false;
    const hi = this.t1;
    if ((hi & 0x1000) === 0) return false;          // system segment or gate
    const type = (hi >> 8) & 0xf, dpl = (hi >> 13) & 3;
    const code = (type & 8) !== 0;
    if (!(code && (type & 4) !== 0) && (dpl < this.cpl || dpl < (sel & 3))) return false;
    return write ? !code && (type & 2) !== 0 : !code || (type & 2) !== 0;
  }

  /**
   * LAR/LSL (SDM "LAR", "LSL"): ZF=1 and the access rights (limit) of `sel` in the destination
   * when its descriptor is visible at the current CPL and the selector's RPL; else ZF=0 and the
   * destination is unchanged. No fault for null or out-of-limit selectors.
   */
  #larLsl(i: number): number {
    const D = this.D;
    if ((this.cr0 & CR0_PE) === 0) { this.excVec = UD; return ST_EXC; }
    const lsl = D[i + F_SUB] === 1, sz = D[i + F_FL]! & 3;
    const sel = this.rdRM(i, 1) & 0xffff;
    if (this.excVec !== -1) return ST_EXC;
    let ok = false;
    if (this.#selInTable(sel)) {
      if (!this.#readDesc(sel)) return ST_EXC;
      const hi = this.t1, type = (hi >> 8) & 0xf, dpl = (hi >> 13) & 3;
      const long = (this.efer & EFER_LMA) !== 0;
      if ((hi & 0x1000) !== 0) ok = (type & 0xc) === 0xc || (dpl >= this.cpl && dpl >= (sel & 3));
      else {
        // System descriptors: LDT and TSS (both); call gates for LAR only; 16-bit forms outside long mode.
        const okType = type === 2 || type === 9 || type === 0xb || (!lsl && type === 0xc) ||
          (!long && (type === 1 || type === 3 || (!lsl && (type === 4 || type === 5))));
        ok = okType && dpl >= this.cpl && dpl >= (sel & 3);
      }
      if (ok) {
        let v: number;
        if (lsl) {
          v = (this.t0 & 0xffff) | (hi & 0xf0000);
          if ((hi & 0x800000) !== 0) v = ((v << 12) | 0xfff) >>> 0;
        } else v = (hi & (sz === 1 ? 0xff00 : 0xf0ff00)) >>> 0;
        this.setR(D[i + F_REG]!, sz, v | 0, 0);
      }
    }
    this.materialize();
    this.eflags = ok ? this.eflags | ZF : this.eflags & ~ZF;
    this.rip = this.#nextRip(i);
    return ST_JUMP;
  }

  #syscall(i: number): number {
    const R = this.R;
    if ((this.efer & EFER_SCE) === 0 || (this.efer & EFER_LMA) === 0) { this.excVec = UD; return ST_EXC; }
    const next = this.#nextRip(i);
    R[2] = next >>> 0 | 0; R[3] = Math.floor(next / TWO32);
    const fl = this.getFlags();
    R[22] = fl & ~RF; R[23] = 0;
    const sel = this.starHi & 0xffff;
    this.sSel[SEG_CS] = sel & 0xfffc; this.sBase[SEG_CS] = 0; this.sLimit[SEG_CS] = 0xffffffff; this.sAttr[SEG_CS] = 0xa09b;
    this.sSel[SEG_SS] = (sel + 8) & 0xfffc; this.sBase[SEG_SS] = 0; this.sLimit[SEG_SS] = 0xffffffff; this.sAttr[SEG_SS] = 0xc093;
    this.eflags = (fl & ~this.sfmask & ~RF) | 2;
    this.cpl = 0;
    this.updateMode();
    this.rip = this.lstar;
    return ST_JUMP;
  }

  #sysret(i: number): number {
    const R = this.R;
    const D = this.D;
    if ((this.efer & EFER_SCE) === 0 || (this.efer & EFER_LMA) === 0) { this.excVec = UD; return ST_EXC; }
    if (this.cpl !== 0) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
    const w64 = (D[i + F_FL]! & 3) === 3;
    const base = (this.starHi >>> 16) & 0xffff;
    let target: number;
    if (w64) {
      target = canon(R[2]!, R[3]!);
      if (target !== target) { this.excVec = GP; this.excCode = 0; return ST_EXC; }
      this.sSel[SEG_CS] = ((base + 16) & 0xfffc) | 3; this.sAttr[SEG_CS] = 0xa0fb;
    } else {
      target = R[2]! >>> 0;
      this.sSel[SEG_CS] = (base & 0xfffc) | 3; this.sAttr[SEG_CS] = 0xc0fb;
    }
    this.sBase[SEG_CS] = 0; this.sLimit[SEG_CS] = 0xffffffff;
    this.sSel[SEG_SS] = ((base + 8) & 0xfffc) | 3; this.sAttr[SEG_SS] = 0xc0f3; this.sBase[SEG_SS] = 0; this.sLimit[SEG_SS] = 0xffffffff;
    this.fOp = FOP_NONE;
    this.eflags = ((R[22]! & 0x3c7fd7) | 2) & ~RF;
    this.cpl = 3;
    this.updateMode();
    this.rip = target;
    return ST_JUMP;
  }

  // ---------------------------------------------------------------- MSRs

  /** RDMSR into EDX:EAX. False: #GP (excVec set or left for the caller). */
  #rdmsr(msr: number): boolean {
    const R = this.R;
    let lo = 0, hi = 0;
    const fromNum = (v: number): void => { lo = v >>> 0 | 0; hi = Math.floor(v / TWO32) | 0; };
    if (this.env.interceptMsr(msr)) return this.#rdmsrExit(msr);
    switch (msr) {
      case MSR_TSC: fromNum(this.tsc()); break;
      case MSR_APIC_BASE: lo = this.apicBase | 0; break;
      case MSR_PAT: lo = this.patLo; hi = this.patHi; break;
      case MSR_SYSENTER_CS: lo = this.sysenterCs; break;
      case MSR_SYSENTER_ESP: fromNum(this.sysenterEsp); break;
      case MSR_SYSENTER_EIP: fromNum(this.sysenterEip); break;
      case MSR_EFER: lo = this.efer; break;
      case MSR_STAR: lo = this.starLo; hi = this.starHi; break;
      case MSR_LSTAR: fromNum(this.lstar); break;
      case MSR_CSTAR: fromNum(this.cstar); break;
      case MSR_SFMASK: lo = this.sfmask; break;
      case MSR_FS_BASE: fromNum(this.sBase[SEG_FS]!); break;
      case MSR_GS_BASE: fromNum(this.sBase[SEG_GS]!); break;
      case MSR_KERNEL_GS_BASE: fromNum(this.kernelGsBase); break;
      case MSR_TSC_AUX: lo = this.tscAux; break;
      case MSR_TSC_DEADLINE: fromNum(this.lapic.readTscDeadline()); break;
      case MSR_ARCH_CAPABILITIES: lo = ARCH_CAPABILITIES_LO; hi = ARCH_CAPABILITIES_HI; break;
      default: return this.#rdmsrExit(msr);
    }
    this.setR(0, 2, lo, 0); this.setR(2, 2, hi, 0);
    void R;
    return true;
  }
  #rdmsrExit(msr: number): boolean {
    const v = this.env.exits().msrRead(this.env.vpIndex, msr);
    if (v === null) return false;
    const u = BigInt.asUintN(64, v);
    this.setR(0, 2, Number(u & 0xffffffffn) | 0, 0);
    this.setR(2, 2, Number(u >> 32n) | 0, 0);
    return true;
  }

  #wrmsr(msr: number, lo: number, hi: number): boolean {
    if (this.env.interceptMsr(msr)) return this.env.exits().msrWrite(this.env.vpIndex, msr, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));
    const c = canon(lo, hi);
    const canonical = c === c;
    switch (msr) {
      case MSR_TSC: this.tscOffset = (hi >>> 0) * TWO32 + (lo >>> 0) - Math.floor(performance.now() * 1e6); return true;
      case MSR_APIC_BASE: {
        if (hi !== 0 || (lo & 0x6ff) !== 0) return false;
        this.apicBase = (lo >>> 0) | (this.apicBase & 0x100);
        this.flushTlb();
        return true;
      }
      case MSR_PAT: this.patLo = lo; this.patHi = hi; return true;
      case MSR_ARCH_CAPABILITIES: return false;   // read-only
      case MSR_SYSENTER_CS: this.sysenterCs = lo & 0xffff; return true;
      case MSR_SYSENTER_ESP: if (!canonical) return false; this.sysenterEsp = c; return true;
      case MSR_SYSENTER_EIP: if (!canonical) return false; this.sysenterEip = c; return true;
      case MSR_EFER: {
        const allowed = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
        if (hi !== 0 || (lo & ~allowed) !== 0) return false;
        if ((this.cr0 & CR0_PG) !== 0 && ((lo ^ this.efer) & EFER_LME) !== 0) return false;
        this.efer = (lo & ~EFER_LMA) | (this.efer & EFER_LMA);
        this.flushTlb();
        return true;
      }
      case MSR_STAR: this.starLo = lo; this.starHi = hi; return true;
      case MSR_LSTAR: if (!canonical) return false; this.lstar = c; return true;
      case MSR_CSTAR: if (!canonical) return false; this.cstar = c; return true;
      case MSR_SFMASK: this.sfmask = lo; return true;
      case MSR_FS_BASE: if (!canonical) return false; this.sBase[SEG_FS] = c; return true;
      case MSR_GS_BASE: if (!canonical) return false; this.sBase[SEG_GS] = c; return true;
      case MSR_KERNEL_GS_BASE: if (!canonical) return false; this.kernelGsBase = c; return true;
      case MSR_TSC_AUX: this.tscAux = lo; return true;
      case MSR_TSC_DEADLINE: {
        // The TSC counts nanoseconds plus tscOffset; the APIC's clock is the same nanoseconds.
        const tsc = (hi >>> 0) * TWO32 + (lo >>> 0);
        this.lapic.setTscDeadline(tsc, tsc - this.tscOffset);
        return true;
      }
      default: return this.env.exits().msrWrite(this.env.vpIndex, msr, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));
    }
  }
}

export { SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_SS, SEG_TR, SEG_LDTR, CodeCache };
