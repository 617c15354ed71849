/**
 * The hypervisor's view of one child partition.
 *
 * HvPartition sits on a backend Partition and is the ExitHandler for it: every intercept comes
 * here first. The hypervisor keeps for itself what Hyper-V's hypervisor owns (the synthetic MSR
 * range, the hypercall interface) and routes the rest to the parent's intercept handlers
 * (installed through winhv): port I/O and MMIO to the VID, MSR ranges the parent asked for.
 * Child partitions cannot reach the parent or other partitions: their only ways out are these
 * intercepts, and hypercalls are checked against the partition's privileges.
 */
import type { IDisposable } from '../base/disposable.js';
import { TshvError } from '../base/errors.js';
import type { Gpa, GuestMemory, MemoryBlock } from '../guestmem/guestmem.js';
import type { Backend, BackendKind, ExitHandler, HypercallRegs, Partition, VpStopReason } from './backends/backend.js';
import type { VpState } from './backends/state.js';
import { buildCpuidTable } from './cpuid.js';
import { HV_MSR_FIRST, HV_MSR_LAST, HvStatus, hypercallResult, parseHypercallInput, type HypercallInput } from './hvdef.js';

/** Port and MMIO intercepts, handed to the parent (the VID). */
export interface IoInterceptHandler {
  pioRead(vp: number, port: number, size: 1 | 2 | 4): number;
  pioWrite(vp: number, port: number, size: 1 | 2 | 4, value: number): void;
  mmioRead(vp: number, gpa: number, data: Uint8Array): void;
  mmioWrite(vp: number, gpa: number, data: Uint8Array): void;
}

export interface MsrInterceptHandler {
  read(vp: number, msr: number): bigint | null;
  write(vp: number, msr: number, value: bigint): boolean;
}

/** A hypercall implementation: gets the parsed input, returns the status (and reps done). */
export type HypercallHandler = (vp: number, input: HypercallInput, regs: HypercallRegs) => { status: number; reps?: number };

/** The 8-bit port the kvm backend's hypercall code writes to (docs/adr/0006). */
export const HYPERCALL_PORT = 0x9e;

export interface HvPartitionConfig {
  vpCount: number;
}

const noIo: IoInterceptHandler = {
  pioRead: (_vp, _port, size) => (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff),
  pioWrite: () => undefined,
  mmioRead: (_vp, _gpa, data) => { data.fill(0xff); },
  mmioWrite: () => undefined,
};

export class HvPartition implements IDisposable {
  // Fixed configuration
  readonly #inner: Partition;
  // Runtime glue
  #io: IoInterceptHandler = noIo;
  readonly #msrIntercepts: { first: number; last: number; handler: MsrInterceptHandler }[] = [];
  readonly #hypercalls = new Map<number, HypercallHandler>();
  // Counters (statistics)
  readonly stats = { hypercalls: 0, badHypercalls: 0, msrIntercepts: 0, msrGp: 0 };

  private constructor(inner: Partition) {
    this.#inner = inner;
    const handler: ExitHandler = {
      pioRead: (vp, port, size) => this.#io.pioRead(vp, port, size),
      pioWrite: (vp, port, size, value) => this.#io.pioWrite(vp, port, size, value),
      mmioRead: (vp, gpa, data) => this.#io.mmioRead(vp, gpa, data),
      mmioWrite: (vp, gpa, data) => this.#io.mmioWrite(vp, gpa, data),
      msrRead: (vp, msr) => this.#msrRead(vp, msr),
      msrWrite: (vp, msr, value) => this.#msrWrite(vp, msr, value),
      hypercall: (vp, regs) => this.#hypercall(vp, regs),
    };
    inner.setExitHandler(handler);
  }

  static async create(backend: Backend, config: HvPartitionConfig): Promise<HvPartition> {
    if (!Number.isInteger(config.vpCount) || config.vpCount < 1 || config.vpCount > 64) {
      throw new TshvError('EINVAL', `virtual processor count must be 1..64, got ${config.vpCount}`);
    }
    const inner = await backend.createPartition({
      vpCount: config.vpCount,
      cpuid: buildCpuidTable(backend.supportedCpuid()),
      interceptMsrs: [{ first: HV_MSR_FIRST, last: HV_MSR_LAST }],
      hypercallPort: HYPERCALL_PORT,
    });
    return new HvPartition(inner);
  }

  get backend(): BackendKind { return this.#inner.backend; }
  get memory(): GuestMemory { return this.#inner.memory; }
  get vpCount(): number { return this.#inner.vps.length; }
  get hypercallCode(): Uint8Array { return this.#inner.hypercallCode; }

  mapGpaPages(at: Gpa, block: MemoryBlock, writable: boolean): IDisposable {
    return this.#inner.mapMemory(at, block, writable);
  }

  setIoInterceptHandler(h: IoInterceptHandler): void { this.#io = h; }

  /** Route an MSR range inside the hypervisor range to the parent. Ranges may not overlap. */
  installMsrIntercept(first: number, last: number, handler: MsrInterceptHandler): void {
    if (!(first >= HV_MSR_FIRST && last <= HV_MSR_LAST && first <= last)) {
      throw new TshvError('EINVAL', `MSR intercept range must lie in ${HV_MSR_FIRST.toString(16)}-${HV_MSR_LAST.toString(16)}`);
    }
    for (const r of this.#msrIntercepts) {
      if (first <= r.last && r.first <= last) throw new TshvError('EINVAL', 'overlapping MSR intercept ranges');
    }
    this.#msrIntercepts.push({ first, last, handler });
  }

  registerHypercall(code: number, handler: HypercallHandler): void {
    this.#hypercalls.set(code, handler);
  }

  #msrHandler(msr: number): MsrInterceptHandler | undefined {
    for (const r of this.#msrIntercepts) if (msr >= r.first && msr <= r.last) return r.handler;
    return undefined;
  }

  #msrRead(vp: number, msr: number): bigint | null {
    const h = this.#msrHandler(msr);
    if (h === undefined) { this.stats.msrGp++; return null; }
    this.stats.msrIntercepts++;
    const v = h.read(vp, msr);
    if (v === null) this.stats.msrGp++;
    return v;
  }

  #msrWrite(vp: number, msr: number, value: bigint): boolean {
    const h = this.#msrHandler(msr);
    if (h === undefined) { this.stats.msrGp++; return false; }
    this.stats.msrIntercepts++;
    const ok = h.write(vp, msr, value);
    if (!ok) this.stats.msrGp++;
    return ok;
  }

  #hypercall(vp: number, regs: HypercallRegs): bigint {
    this.stats.hypercalls++;
    const input = parseHypercallInput(regs.control);
    if (input === null) { this.stats.badHypercalls++; return hypercallResult(HvStatus.INVALID_HYPERCALL_INPUT); }
    const h = this.#hypercalls.get(input.code);
    if (h === undefined) { this.stats.badHypercalls++; return hypercallResult(HvStatus.INVALID_HYPERCALL_CODE); }
    const r = h(vp, input, regs);
    return hypercallResult(r.status, r.reps ?? 0);
  }

  #vp(index: number) {
    const vp = this.#inner.vps[index];
    if (vp === undefined) throw new TshvError('EINVAL', `no virtual processor ${index}`);
    return vp;
  }

  runVp(index: number): Promise<VpStopReason> { return this.#vp(index).run(); }
  stopVp(index: number): void { this.#vp(index).requestStop(); }
  getVpState(index: number): Promise<VpState> { return this.#vp(index).getState(); }
  setVpState(index: number, state: VpState): Promise<void> { return this.#vp(index).setState(state); }
  setIrqLine(gsi: number, level: boolean): void { this.#inner.setIrqLine(gsi, level); }
  signalMsi(address: bigint, data: number): void { this.#inner.signalMsi(address, data); }

  dispose(): void { this.#inner.dispose(); }
}
