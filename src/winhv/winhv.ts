/**
 * Winhv: the hypercall library through which the parent-side stack talks to the hypervisor.
 *
 * In Hyper-V, Winhv.sys wraps the hypercalls the root partition makes (HvCreatePartition,
 * HvMapGpaPages, HvInstallIntercept, HvGetVpRegisters, HvAssertVirtualInterrupt...). Here it is
 * the one typed API the VID and the worker use; nothing in the parent reaches into `src/hv`
 * internals or a backend. Names follow the TLFS calls they stand for.
 */
import type { IDisposable } from '../base/disposable.js';
import type { Gpa, GuestMemory, MemoryBlock } from '../guestmem/guestmem.js';
import type { Backend, BackendKind, VpStopReason } from '../hv/backends/backend.js';
import type { VpState } from '../hv/backends/state.js';
import { HvPartition, type HypercallHandler, type IoInterceptHandler, type MsrInterceptHandler } from '../hv/partition.js';

export type { Backend, BackendKind, VpStopReason, VpState, IoInterceptHandler, MsrInterceptHandler, HypercallHandler };
export { createBackend, probeHost, isBackendKind, type ProbeResult } from '../hv/boot.js';
export { HvStatus } from '../hv/hvdef.js';

export interface CreatePartitionOptions {
  vpCount: number;
}

/** HvCreatePartition + HvInitializePartition + HvCreateVp for each VP. */
export async function hvCreatePartition(backend: Backend, opts: CreatePartitionOptions): Promise<WinHvPartition> {
  return new WinHvPartition(await HvPartition.create(backend, { vpCount: opts.vpCount }));
}

export class WinHvPartition implements IDisposable {
  readonly #p: HvPartition;
  constructor(p: HvPartition) { this.#p = p; }

  get backend(): BackendKind { return this.#p.backend; }
  get vpCount(): number { return this.#p.vpCount; }
  /** The partition's guest physical address space (bounds-checked access for the parent). */
  get memory(): GuestMemory { return this.#p.memory; }
  get hypervisorStats(): Readonly<HvPartition['stats']> { return this.#p.stats; }

  /** HvMapGpaPages: back [at, at+block.size) with the block; read-only for ROM. */
  mapGpaPages(at: Gpa, block: MemoryBlock, writable: boolean): IDisposable { return this.#p.mapGpaPages(at, block, writable); }
  /** HvInstallIntercept for port I/O and memory access: the VID's handler. */
  installIoIntercept(handler: IoInterceptHandler): void { this.#p.setIoInterceptHandler(handler); }
  /** HvInstallIntercept for an MSR range inside the hypervisor range. */
  installMsrIntercept(first: number, last: number, handler: MsrInterceptHandler): void { this.#p.installMsrIntercept(first, last, handler); }
  /** Register a hypercall implementation (used by VMBus for post-message / signal-event). */
  registerHypercall(code: number, handler: HypercallHandler): void { this.#p.registerHypercall(code, handler); }
  /** HvGetVpRegisters (the whole architectural state). VP must not be running. */
  getVpState(vp: number): Promise<VpState> { return this.#p.getVpState(vp); }
  /** HvSetVpRegisters. VP must not be running. */
  setVpState(vp: number, state: VpState): Promise<void> { return this.#p.setVpState(vp, state); }
  /** Dispatch a VP until it stops (the VID's "run VP" loop). */
  runVp(vp: number): Promise<VpStopReason> { return this.#p.runVp(vp); }
  /** Stop a running VP promptly; an in-flight intercept completes first. */
  stopVp(vp: number): void { this.#p.stopVp(vp); }
  /** HvAssertVirtualInterrupt through the platform interrupt controller (a GSI line). */
  setIrqLine(gsi: number, level: boolean): void { this.#p.setIrqLine(gsi, level); }
  /** A message-signalled interrupt to a local APIC. */
  signalMsi(address: bigint, data: number): void { this.#p.signalMsi(address, data); }
  /** The code the hypercall page holds on this backend. */
  get hypercallCode(): Uint8Array { return this.#p.hypercallCode; }

  /** HvDeletePartition. */
  dispose(): void { this.#p.dispose(); }
}
