/**
 * The `emu` backend: x86-64 processors written in TypeScript (docs/adr/0007-emu-design.md).
 *
 * createEmuBackend() -> EmuPartition -> EmuVp, implementing src/hv/backends/backend.ts. All VPs
 * run on the calling (device) thread: `run()` executes slices of about SLICE_MS and yields to
 * the event loop with setImmediate between them, so timers, input and requestStop() are
 * served and several VPs interleave round-robin. A VP halted with interrupts enabled waits on
 * a promise that signalMsi()/requestStop() resolve.
 *
 * The local APIC (lapic.ts, with its timer) lives here, so signalMsi() works as with KVM's
 * in-kernel irqchip; MSIs with delivery mode NMI raise an NMI (blocked until IRET).
 * setIrqLine() drives a pin of the partition's I/O APIC (ioapic.ts, MMIO at 0xFEC00000), whose
 * redirection entries deliver through the same path as MSIs; a level-triggered vector's EOI at
 * a local APIC is broadcast back to the I/O APIC.
 * Application processors start waiting for INIT/STARTUP IPIs, as on hardware; setState()
 * makes a processor runnable at the state given.
 * Hypercalls: the guest executes VMCALL (or VMMCALL); `hypercallCode` is VMCALL.
 */
import type { IDisposable } from '../../../base/disposable.js';
import { TshvError } from '../../../base/errors.js';
import { GuestMemory, type Gpa, type MemoryBlock } from '../../../guestmem/guestmem.js';
import type { Backend, CpuidEntry, ExitHandler, Partition, PartitionConfig, VirtualProcessor, VpStopReason } from '../backend.js';
import { IOAPIC_BASE, IOAPIC_SIZE, Ioapic } from './ioapic.js';
import { LAPIC_STATE_SIZE, XSAVE_AREA_SIZE, type SegmentRegister, type VpState } from '../state.js';
import {
  Cpu, CR0_PE, EFER_LMA, MSR_CSTAR, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_PAT, MSR_SFMASK, MSR_STAR, MSR_SYSENTER_CS, MSR_TSC_DEADLINE,
  MSR_SYSENTER_EIP, MSR_SYSENTER_ESP, MSR_TSC, MSR_TSC_AUX, PHYS_BITS, RUN_ERROR, RUN_HALT_WAIT, RUN_HALTED,
  RUN_SHUTDOWN, RUN_SLICE, RUN_STOPPED, type CpuEnv,
} from './cpu.js';
import { Lapic } from './lapic.js';
import { fxrstorImage, fxsaveImage } from './sse.js';
import { CodeCache, PhysMem } from './memory.js';
import { SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_LDTR, SEG_SS, SEG_TR } from './ops.js';

export { Cpu } from './cpu.js';
export { LAPIC_TIMER_HZ } from './lapic.js';
/** The emulated TSC counts nanoseconds of host time (plus the guest's offset). */
export const EMU_TSC_HZ = 1_000_000_000;

/** Instructions per runSlice call; slices repeat until SLICE_MS has passed. */
const SLICE_INSNS = 200_000;
const SLICE_MS = 4;
/** The longest delay setTimeout takes (2^31 - 1 ms). */
const MAX_TIMEOUT_MS = 0x7fffffff;

/** The vendor string the emulated processor reports (CPUID leaf 0). */
export const EMU_VENDOR = 'TshvEmulated';

function regs3(s: string): [number, number, number] {
  const b = new TextEncoder().encode(s.padEnd(12, ' ').slice(0, 12));
  const dv = new DataView(b.buffer);
  return [dv.getUint32(0, true), dv.getUint32(4, true), dv.getUint32(8, true)];
}

/**
 * Exactly what the processor implements (ADR 0007): x87 (FPU), FXSR, SSE, SSE2, ERMS; not MMX,
 * SSE3 or later, nor XSAVE.
 */
export function emuSupportedCpuid(): CpuidEntry[] {
  const [vb, vd, vc] = regs3(EMU_VENDOR);
  const out: CpuidEntry[] = [];
  out.push({ function: 0, index: 0, eax: 7, ebx: vb, ecx: vc, edx: vd });
  // Leaf 1: family 6 model 0 stepping 0; EBX: CLFLUSH line 8 (x8 = 64 bytes), 1 logical CPU.
  const edx1 = (1 << 0) /* FPU */ | (1 << 3) /* PSE */ | (1 << 4) /* TSC */ | (1 << 5) /* MSR */ | (1 << 6) /* PAE */ |
    (1 << 8) /* CX8 */ | (1 << 9) /* APIC */ | (1 << 13) /* PGE */ | (1 << 15) /* CMOV */ | (1 << 16) /* PAT */ |
    (1 << 19) /* CLFSH */ | (1 << 24) /* FXSR */ | (1 << 25) /* SSE */ | (1 << 26) /* SSE2 */;
  const ecx1 = (1 << 13) /* CMPXCHG16B */ | (1 << 23) /* POPCNT */ | (1 << 24) /* TSC-deadline timer */;
  out.push({ function: 1, index: 0, eax: 0x600, ebx: (1 << 16) | (8 << 8), ecx: ecx1, edx: edx1 >>> 0 });
  // Leaf 7: ERMS ("enhanced REP MOVSB/STOSB"), true of this processor: REP MOVS/STOS move
  // whole page runs at a time (cpu.ts #repBulk), so Linux's memcpy, memset, clear_page and
  // user copies pick their REP MOVSB/STOSB forms over unrolled loops. EDX[29]: the
  // IA32_ARCH_CAPABILITIES MSR (cpu.ts ARCH_CAPABILITIES_LO: not affected by Meltdown, MDS...).
  out.push({ function: 7, index: 0, eax: 0, ebx: 1 << 9 /* ERMS */, ecx: 0, edx: (1 << 29) >>> 0 /* ARCH_CAPABILITIES */ });
  out.push({ function: 0x80000000, index: 0, eax: 0x80000008, ebx: 0, ecx: 0, edx: 0 });
  const edx81 = (1 << 11) /* SYSCALL */ | (1 << 20) /* NX */ | (1 << 26) /* 1 GiB pages */ | (1 << 27) /* RDTSCP */ | (1 << 29) /* LM */;
  out.push({ function: 0x80000001, index: 0, eax: 0, ebx: 0, ecx: 1 /* LAHF/SAHF in 64-bit mode */, edx: edx81 >>> 0 });
  const brand = new TextEncoder().encode('tshv emulated x86-64 processor'.padEnd(48, '\0'));
  const bdv = new DataView(brand.buffer);
  for (let k = 0; k < 3; k++) {
    out.push({ function: 0x80000002 + k, index: 0, eax: bdv.getUint32(k * 16, true), ebx: bdv.getUint32(k * 16 + 4, true), ecx: bdv.getUint32(k * 16 + 8, true), edx: bdv.getUint32(k * 16 + 12, true) });
  }
  out.push({ function: 0x80000008, index: 0, eax: PHYS_BITS | (48 << 8), ebx: 0, ecx: 0, edx: 0 });
  return out;
}

/** Leaves whose ECX subleaf selects the answer. */
const INDEXED_LEAVES = new Set([4, 7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x1f, 0x20, 0x23, 0x24, 0x8000001d, 0x80000020, 0x80000026]);

/**
 * GuestMemory whose host-side writes (loaders, device DMA) invalidate decoded code, so a page
 * that the guest executes after a device wrote it is decoded afresh.
 */
class EmuGuestMemory extends GuestMemory {
  onWrite: (at: number, len: number) => void = () => undefined;
  override write(at: number, data: Uint8Array, opts?: { host?: boolean }): void { super.write(at, data, opts); this.onWrite(at, data.length); }
  override writeU8(at: number, v: number): void { super.writeU8(at, v); this.onWrite(at, 1); }
  override writeU16(at: number, v: number): void { super.writeU16(at, v); this.onWrite(at, 2); }
  override writeU32(at: number, v: number): void { super.writeU32(at, v); this.onWrite(at, 4); }
  override writeU64(at: number, v: bigint): void { super.writeU64(at, v); this.onWrite(at, 8); }
  override fill(at: number, len: number, value: number, opts?: { host?: boolean }): void { super.fill(at, len, value, opts); this.onWrite(at, len); }
}

const noExits: ExitHandler = {
  pioRead: (_vp, _port, size) => (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff),
  pioWrite: () => undefined,
  mmioRead: (_vp, _gpa, data) => { data.fill(0xff); },
  mmioWrite: () => undefined,
  msrRead: () => null,
  msrWrite: () => false,
  hypercall: () => 2n, // HV_STATUS_INVALID_HYPERCALL_CODE
};

const u64 = (v: number): bigint => BigInt.asUintN(64, BigInt(v));
const pair = (lo: number, hi: number): bigint => (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
/** A bigint address/base as the processor's signed canonical number (non-canonical: truncated to 48 bits, sign-extended). */
function toCanon(v: bigint): number { return Number(BigInt.asIntN(48, v)); }

export class EmuVp implements VirtualProcessor {
  readonly cpu: Cpu;
  /**
   * Waiting for a STARTUP IPI (application processors from creation, any processor after INIT).
   * DEVNOTE: VpState has no multiprocessor-state field yet; getState reports this as `halted`
   * and setState makes the processor runnable (setting a VP's state means "start here").
   */
  waitSipi: boolean;
  #running = false;
  /** Halted and waiting for an interrupt (or for STARTUP). */
  #waiting = false;
  #wake: (() => void) | null = null;

  constructor(readonly index: number, readonly partition: EmuPartition) {
    const env: CpuEnv = {
      vpIndex: index,
      exits: () => partition.exits,
      cpuid: (fn, idx, out) => partition.cpuid(index, fn >>> 0, idx >>> 0, out),
      interceptMsr: (msr) => partition.intercepts(msr),
      othersRunnable: () => partition.othersRunnable(index),
    };
    const lapic = new Lapic(index, (dest, shorthand, destMode, mode, vector) => partition.ipi(index, dest, shorthand, destMode, mode, vector));
    this.cpu = new Cpu(partition.phys, partition.cache, lapic, env);
    this.cpu.apicBase = 0xfee00000 + 0x800 + (index === 0 ? 0x100 : 0);
    this.waitSipi = index !== 0;
  }

  /**
   * INIT: the processor goes to its reset state (keeping its APIC ID) and waits for a STARTUP
   * IPI. Application processors are created in this state; the BSP is not.
   */
  init(): void {
    const c = this.cpu;
    const base = c.apicBase;
    c.reset();
    c.lapic.reset();
    c.apicBase = base;
    this.waitSipi = this.index !== 0 || this.waitSipi;
  }

  /** STARTUP (SIPI): a processor waiting for one starts in real mode at vector * 4096. */
  startup(vector: number): void {
    if (!this.waitSipi) return;
    const c = this.cpu;
    this.waitSipi = false;
    c.sSel[SEG_CS] = (vector & 0xff) << 8;
    c.sBase[SEG_CS] = (vector & 0xff) << 12;
    c.sLimit[SEG_CS] = 0xffff;
    c.rip = 0;
    c.halted = false;
    c.updateMode();
    c.flushTlb();
  }

  /** Running, and neither halted nor waiting for STARTUP: it would run if given the thread. */
  get runnable(): boolean { return this.#running && !this.#waiting; }

  /** Resolve a halt wait (an interrupt arrived, or a stop was requested). */
  wake(): void { const w = this.#wake; this.#wake = null; if (w) { this.#waiting = false; w(); } }

  async run(): Promise<VpStopReason> {
    if (this.#running) return { kind: 'error', message: `virtual processor ${this.index} is already running` };
    this.#running = true;
    this.cpu.stopReq = false;
    try {
      for (;;) {
        if (this.waitSipi) {
          this.#waiting = true;
          await new Promise<void>((res) => { this.#wake = res; });
          this.#waiting = false;
          if (this.cpu.stopReq) return { kind: 'stopped' };
          continue;
        }
        const t0 = performance.now();
        let r: number;
        try {
          do r = this.cpu.runSlice(SLICE_INSNS); while (r === RUN_SLICE && performance.now() - t0 < SLICE_MS);
        } catch (e) {
          // An exit handler threw (host-side bug); the guest state is left at the faulting instruction.
          return { kind: 'error', message: `exit handler failed: ${e instanceof Error ? e.message : String(e)}` };
        }
        switch (r) {
          case RUN_STOPPED: return { kind: 'stopped' };
          case RUN_SHUTDOWN: return { kind: 'shutdown' };
          case RUN_HALTED: return { kind: 'halted' };
          case RUN_ERROR: return { kind: 'error', message: this.cpu.errorMessage || 'emulation failure' };
          case RUN_HALT_WAIT: {
            // Sleep until an interrupt arrives or the LAPIC timer is due.
            const due = this.cpu.lapic.deadline;
            let timer: NodeJS.Timeout | undefined;
            this.#waiting = true;
            await new Promise<void>((res) => {
              this.#wake = res;
              // Clamped to setTimeout's limit (about 24.8 days; Node fires longer ones after 1 ms
              // with a warning): a guest can arm a TSC deadline centuries away. Waking early
              // only polls the timer and halts again.
              if (due !== Infinity) timer = setTimeout(() => this.wake(), Math.min(MAX_TIMEOUT_MS, Math.max(0, (due - performance.now() * 1e6) / 1e6)));
            });
            this.#waiting = false;
            if (timer !== undefined) clearTimeout(timer);
            this.cpu.lapic.poll();
            break;
          }
          default:
            await new Promise<void>((res) => setImmediate(res));
            break;
        }
        if (this.cpu.stopReq) return { kind: 'stopped' };
      }
    } finally {
      this.#running = false;
      this.cpu.stopReq = false;
    }
  }

  requestStop(): void {
    if (!this.#running) return;
    this.cpu.stopReq = true;
    this.wake();
  }

  getState(): Promise<VpState> {
    if (this.#running) return Promise.reject(new TshvError('ESTATE', 'getState while the VP runs'));
    const c = this.cpu, R = c.R;
    const g = (n: number): bigint => pair(R[2 * n]!, R[2 * n + 1]!);
    const seg = (s: number): SegmentRegister => ({ selector: c.sSel[s]!, base: u64(c.sBase[s]!), limit: c.sLimit[s]! >>> 0, attributes: c.sAttr[s]! });
    const xsave = new Uint8Array(XSAVE_AREA_SIZE);
    const xdv = new DataView(xsave.buffer);
    fxsaveImage(c, xdv, true);          // legacy area: the FXSAVE64 layout
    xdv.setUint32(512, 3, true);        // XSAVE header XSTATE_BV: x87 and SSE state present
    const msrs = new Map<number, bigint>([
      [MSR_STAR, pair(c.starLo, c.starHi)], [MSR_LSTAR, u64(c.lstar)], [MSR_CSTAR, u64(c.cstar)],
      [MSR_SFMASK, BigInt(c.sfmask >>> 0)], [MSR_KERNEL_GS_BASE, u64(c.kernelGsBase)], [MSR_PAT, pair(c.patLo, c.patHi)],
      [MSR_SYSENTER_CS, BigInt(c.sysenterCs)], [MSR_SYSENTER_ESP, u64(c.sysenterEsp)], [MSR_SYSENTER_EIP, u64(c.sysenterEip)],
      [MSR_TSC, u64(c.tsc())], [MSR_TSC_AUX, BigInt(c.tscAux >>> 0)], [MSR_TSC_DEADLINE, u64(c.lapic.readTscDeadline())],
    ]);
    return Promise.resolve({
      regs: {
        rax: g(0), rcx: g(1), rdx: g(2), rbx: g(3), rsp: g(4), rbp: g(5), rsi: g(6), rdi: g(7),
        r8: g(8), r9: g(9), r10: g(10), r11: g(11), r12: g(12), r13: g(13), r14: g(14), r15: g(15),
        rip: u64(c.rip), rflags: BigInt(c.getFlags()),
      },
      sregs: {
        cs: seg(SEG_CS), ds: seg(SEG_DS), es: seg(SEG_ES), fs: seg(SEG_FS), gs: seg(SEG_GS), ss: seg(SEG_SS),
        tr: seg(SEG_TR), ldt: seg(SEG_LDTR),
        gdt: { base: u64(c.gdtBase), limit: c.gdtLimit }, idt: { base: u64(c.idtBase), limit: c.idtLimit },
        cr0: BigInt(c.cr0 >>> 0), cr2: u64(c.cr2), cr3: u64(c.cr3), cr4: BigInt(c.cr4 >>> 0), cr8: BigInt(c.lapic.tpr >> 4),
        efer: BigInt(c.efer >>> 0), apicBase: u64(c.apicBase),
      },
      xsave,
      xcr0: BigInt(c.xcr0),
      msrs,
      lapic: c.lapic.getState().subarray(0, LAPIC_STATE_SIZE),
      events: { exception: null, interrupt: null, nmiPending: c.nmiPending, nmiMasked: c.nmiMasked, interruptShadow: c.shadow !== 0 },
      halted: c.halted || this.waitSipi,
    });
  }

  setState(s: VpState): Promise<void> {
    if (this.#running) return Promise.reject(new TshvError('ESTATE', 'setState while the VP runs'));
    const c = this.cpu, R = c.R;
    const list = [s.regs.rax, s.regs.rcx, s.regs.rdx, s.regs.rbx, s.regs.rsp, s.regs.rbp, s.regs.rsi, s.regs.rdi,
      s.regs.r8, s.regs.r9, s.regs.r10, s.regs.r11, s.regs.r12, s.regs.r13, s.regs.r14, s.regs.r15];
    list.forEach((v, n) => { const u = BigInt.asUintN(64, v); R[2 * n] = Number(u & 0xffffffffn) | 0; R[2 * n + 1] = Number(u >> 32n) | 0; });
    const setSeg = (k: number, r: SegmentRegister): void => {
      c.sSel[k] = r.selector & 0xffff; c.sBase[k] = toCanon(r.base); c.sLimit[k] = r.limit >>> 0; c.sAttr[k] = r.attributes & 0x1f0ff;
    };
    const sr = s.sregs;
    setSeg(SEG_CS, sr.cs); setSeg(SEG_DS, sr.ds); setSeg(SEG_ES, sr.es); setSeg(SEG_FS, sr.fs); setSeg(SEG_GS, sr.gs);
    setSeg(SEG_SS, sr.ss); setSeg(SEG_TR, sr.tr); setSeg(SEG_LDTR, sr.ldt);
    c.gdtBase = toCanon(sr.gdt.base); c.gdtLimit = sr.gdt.limit & 0xffff;
    c.idtBase = toCanon(sr.idt.base); c.idtLimit = sr.idt.limit & 0xffff;
    c.cr0 = Number(BigInt.asUintN(32, sr.cr0)) | 0;
    c.cr2 = toCanon(sr.cr2);
    c.cr3 = Number(BigInt.asUintN(52, sr.cr3));
    c.cr4 = Number(BigInt.asUintN(32, sr.cr4)) | 0;
    c.efer = Number(BigInt.asUintN(32, sr.efer)) | 0;
    c.apicBase = Number(BigInt.asUintN(52, sr.apicBase));
    c.xcr0 = Number(BigInt.asUintN(32, s.xcr0)) || 1;
    const m = (k: number): bigint | undefined => s.msrs.get(k);
    const star = m(MSR_STAR); if (star !== undefined) { c.starLo = Number(star & 0xffffffffn) | 0; c.starHi = Number((star >> 32n) & 0xffffffffn) | 0; }
    const lstar = m(MSR_LSTAR); if (lstar !== undefined) c.lstar = toCanon(lstar);
    const cstar = m(MSR_CSTAR); if (cstar !== undefined) c.cstar = toCanon(cstar);
    const sfmask = m(MSR_SFMASK); if (sfmask !== undefined) c.sfmask = Number(sfmask & 0xffffffffn) | 0;
    const kgs = m(MSR_KERNEL_GS_BASE); if (kgs !== undefined) c.kernelGsBase = toCanon(kgs);
    const pat = m(MSR_PAT); if (pat !== undefined) { c.patLo = Number(pat & 0xffffffffn) | 0; c.patHi = Number((pat >> 32n) & 0xffffffffn) | 0; }
    const tsc = m(MSR_TSC); if (tsc !== undefined) c.tscOffset = Number(BigInt.asUintN(52, tsc)) - Math.floor(performance.now() * 1e6);
    const aux = m(MSR_TSC_AUX); if (aux !== undefined) c.tscAux = Number(aux & 0xffffffffn) | 0;
    const secs = m(MSR_SYSENTER_CS); if (secs !== undefined) c.sysenterCs = Number(secs & 0xffffn);
    const sesp = m(MSR_SYSENTER_ESP); if (sesp !== undefined) c.sysenterEsp = toCanon(sesp);
    const seip = m(MSR_SYSENTER_EIP); if (seip !== undefined) c.sysenterEip = toCanon(seip);
    if (s.lapic.length >= LAPIC_STATE_SIZE) c.lapic.setState(s.lapic);
    // After the LAPIC (its timer mode) and the TSC offset: re-arm a TSC-deadline timer.
    const tscd = m(MSR_TSC_DEADLINE);
    if (tscd !== undefined && tscd !== 0n) { const t = Number(BigInt.asUintN(52, tscd)); c.lapic.setTscDeadline(t, t - c.tscOffset); }
    if (s.xsave.length >= 512) {
      const img = new DataView(s.xsave.buffer, s.xsave.byteOffset, 512);
      fxrstorImage(c, img);  // MXCSR reserved bits are dropped
    }
    c.lapic.tpr = Number(BigInt.asUintN(4, sr.cr8)) << 4 | (c.lapic.tpr & 0xf);
    c.rip = (c.efer & EFER_LMA) !== 0 ? toCanon(s.regs.rip) : Number(BigInt.asUintN(32, s.regs.rip));
    c.fOp = 0;
    c.eflags = (Number(BigInt.asUintN(32, s.regs.rflags)) | 2) & 0x3f7fd7;
    c.halted = s.halted;
    this.waitSipi = false;
    c.shadow = s.events.interruptShadow ? 1 : 0;
    c.nmiPending = s.events.nmiPending;
    c.nmiMasked = s.events.nmiMasked;
    c.excVec = -1;
    c.cpl = (c.cr0 & CR0_PE) === 0 ? 0 : (c.sAttr[SEG_SS]! >> 5) & 3;
    c.updateMode();
    c.flushTlb();
    return Promise.resolve();
  }
}

export class EmuPartition implements Partition {
  readonly backend = 'emu' as const;
  readonly memory: EmuGuestMemory;
  readonly phys: PhysMem;
  readonly cache: CodeCache;
  readonly vps: EmuVp[];
  readonly hypercallCode = new Uint8Array([0x0f, 0x01, 0xc1]);
  exits: ExitHandler = noExits;
  readonly ioapic: Ioapic;
  // Statistics
  readonly stats = { irqLineCalls: 0, msis: 0, droppedMsis: 0 };
  readonly #cpuid = new Map<number, CpuidEntry>();
  readonly #intercepts: readonly { first: number; last: number }[];
  #disposed = false;

  constructor(config: PartitionConfig) {
    if (!Number.isInteger(config.vpCount) || config.vpCount < 1 || config.vpCount > 255) {
      throw new TshvError('EINVAL', `emu: virtual processor count must be 1..255, got ${config.vpCount}`);
    }
    for (const e of config.cpuid) this.#cpuid.set(e.function * 256 + (e.index & 0xff), e);
    this.#intercepts = config.interceptMsrs.map((r) => ({ first: r.first >>> 0, last: r.last >>> 0 }));
    this.memory = new EmuGuestMemory();
    this.phys = new PhysMem(this.memory);
    this.cache = new CodeCache(this.phys);
    this.ioapic = new Ioapic((dest, destMode, mode, vector, _level, trigger) => this.deliverMessage(dest, destMode, mode, vector, trigger));
    this.setExitHandler(noExits);
    this.vps = [];
    for (let i = 0; i < config.vpCount; i++) {
      const vp = new EmuVp(i, this);
      vp.cpu.lapic.onLevelEoi = (v) => this.ioapic.eoi(v);
      this.vps.push(vp);
    }
    this.cache.onNewCodePage = (pa) => { for (const vp of this.vps) vp.cpu.dropWriteMappings(pa); };
    this.cache.onInvalidate = () => { for (const vp of this.vps) vp.cpu.codeGen++; };
    this.cache.onFlush = () => { for (const vp of this.vps) { vp.cpu.newGen(); vp.cpu.codeGen++; } };
    // A host-side write (device DMA during an exit) into decoded code also ends the block
    // that the exiting VP is executing, as a guest store would.
    this.memory.onWrite = (at, len) => { if (this.cache.invalidateRange(at, len)) for (const vp of this.vps) vp.cpu.brk = 1; };
  }

  mapMemory(at: Gpa, block: MemoryBlock, writable: boolean): IDisposable {
    const region = this.memory.map(at, block, writable);
    this.#remapped();
    return { dispose: () => { this.memory.unmap(region); this.#remapped(); } };
  }

  #remapped(): void {
    this.phys.rebuild();
    this.cache.flush();
    for (const vp of this.vps) vp.cpu.flushTlb();
  }

  /**
   * The handler sees every exit except the I/O APIC's MMIO window, which the partition's own
   * interrupt controller answers (as KVM's in-kernel irqchip does).
   */
  setExitHandler(h: ExitHandler): void {
    const ioapic = this.ioapic;
    this.exits = {
      pioRead: (vp, port, size) => h.pioRead(vp, port, size),
      pioWrite: (vp, port, size, value) => h.pioWrite(vp, port, size, value),
      mmioRead: (vp, gpa, data) => {
        if (gpa >= IOAPIC_BASE && gpa < IOAPIC_BASE + IOAPIC_SIZE) ioapic.mmioRead(gpa - IOAPIC_BASE, data);
        else h.mmioRead(vp, gpa, data);
      },
      mmioWrite: (vp, gpa, data) => {
        if (gpa >= IOAPIC_BASE && gpa < IOAPIC_BASE + IOAPIC_SIZE) ioapic.mmioWrite(gpa - IOAPIC_BASE, data);
        else h.mmioWrite(vp, gpa, data);
      },
      msrRead: (vp, msr) => h.msrRead(vp, msr),
      msrWrite: (vp, msr, value) => h.msrWrite(vp, msr, value),
      hypercall: (vp, regs) => h.hypercall(vp, regs),
    };
  }

  setIrqLine(gsi: number, level: boolean): void {
    this.stats.irqLineCalls++;
    this.ioapic.setIrq(gsi, level);
  }

  /** An interrupt message from the I/O APIC: the MSI path without decoding an address. */
  deliverMessage(dest: number, destMode: number, mode: number, vector: number, trigger: number): void {
    this.stats.msis++;
    this.#deliver(dest, destMode, mode, vector, trigger === 1, -1, 0);
  }

  signalMsi(address: bigint, data: number): void {
    const addr = Number(BigInt.asUintN(32, address));
    if ((addr >>> 20) !== 0xfee) { this.stats.droppedMsis++; return; }
    this.stats.msis++;
    const dest = (addr >>> 12) & 0xff, destMode = (addr >>> 2) & 1;
    const vector = data & 0xff, mode = (data >>> 8) & 7, level = ((data >>> 15) & 1) !== 0;
    this.#deliver(dest, destMode, mode, vector, level, -1, 0);
  }

  /** An IPI from `from`'s ICR. */
  ipi(from: number, dest: number, shorthand: number, destMode: number, mode: number, vector: number): void {
    this.#deliver(dest, destMode, mode, vector, false, from, shorthand);
  }

  #deliver(dest: number, destMode: number, mode: number, vector: number, level: boolean, from: number, shorthand: number): void {
    for (const vp of this.vps) {
      const lapic = vp.cpu.lapic;
      const match = shorthand === 1 ? vp.index === from : shorthand === 2 ? true : shorthand === 3 ? vp.index !== from : lapic.matches(dest, destMode);
      if (!match) continue;
      if (mode === 4) vp.cpu.nmiPending = true;
      else if (mode === 5) vp.init();
      else if (mode === 6) vp.startup(vector);
      else if (mode === 0 || mode === 1) lapic.accept(vector, level);
      else { this.stats.droppedMsis++; continue; }
      vp.wake();
      if (mode === 1) break;  // lowest priority: the first matching APIC
    }
  }

  cpuid(vp: number, fn: number, idx: number, out: Int32Array): void {
    let e = this.#cpuid.get(fn * 256 + (idx & 0xff));
    if (e === undefined || (e.index !== idx && INDEXED_LEAVES.has(fn))) {
      e = INDEXED_LEAVES.has(fn) ? undefined : this.#cpuid.get(fn * 256);
    }
    if (e === undefined) { out.fill(0); return; }
    out[0] = e.eax; out[1] = e.ebx; out[2] = e.ecx; out[3] = e.edx;
    if (fn === 1) out[1] = (e.ebx & 0x00ffffff) | ((vp & 0xff) << 24);
    if (fn === 0xb || fn === 0x1f) out[3] = vp;
  }

  othersRunnable(vp: number): boolean {
    for (const v of this.vps) if (v.index !== vp && v.runnable) return true;
    return false;
  }

  intercepts(msr: number): boolean {
    for (const r of this.#intercepts) if (msr >= r.first && msr <= r.last) return true;
    return false;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const vp of this.vps) vp.requestStop();
  }
}

export function createEmuBackend(): Backend {
  return {
    kind: 'emu',
    supportedCpuid: () => emuSupportedCpuid(),
    createPartition: (config) => Promise.resolve(new EmuPartition(config)),
  };
}
