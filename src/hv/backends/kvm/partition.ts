/**
 * KvmPartition and KvmVp: the device-thread side of the KVM backend.
 *
 * A partition is a KVM VM (KVM_CREATE_VM) with the in-kernel irqchip (PIC, IOAPIC, LAPICs),
 * user-space MSR exits for the intercepted ranges (KVM_X86_SET_MSR_FILTER), and guest RAM that
 * is the MemoryBlocks' SharedArrayBuffers mapped zero-copy (KVM_SET_USER_MEMORY_REGION), so the
 * vCPU threads, KVM and the device thread all see the same bytes.
 *
 * Each VP runs on its own worker thread (./vcpu-thread.ts). Its exits arrive through a
 * SharedArrayBuffer mailbox (./mailbox.ts); KvmVp waits for them with Atomics.waitAsync, calls
 * the ExitHandler synchronously, writes the reply and notifies. The handler therefore always
 * runs on the device thread, one exit at a time per VP, as ../backend.ts requires.
 *
 * Trust: kvm_run is written by the kernel, not the guest, but every length and offset taken
 * from it is still bounds checked in the vCPU thread before bytes are copied.
 */
import { Worker } from 'node:worker_threads';
import type { IDisposable } from '../../../base/disposable.js';
import { TshvError, errorMessage } from '../../../base/errors.js';
import { hex } from '../../../base/hex.js';
import { Logger } from '../../../base/log.js';
import { GuestMemory, PAGE_SIZE } from '../../../guestmem/guestmem.js';
import type { Gpa, MemoryBlock, Region } from '../../../guestmem/guestmem.js';
import type { BackendKind, ExitHandler, Partition, PartitionConfig, VirtualProcessor, VpStopReason } from '../backend.js';
import type { VpState } from '../state.js';
import * as abi from './abi.js';
import * as mb from './mailbox.js';
import * as native from './native.js';

const log = new Logger('kvm');

/** How long dispose() waits for a kicked vCPU thread to leave KVM_RUN. */
const DISPOSE_STOP_TIMEOUT_MS = 2000;

/** Where KVM on VMX keeps its real-mode TSS (3 pages) and identity page table: QEMU's choice. */
export const KVM_TSS_ADDR = 0xfeffd000;
export const KVM_IDENTITY_MAP_ADDR = 0xfeffc000;

/** What the backend learned about /dev/kvm once, shared by its partitions. */
export interface KvmHost {
  readonly kvmFd: number;
  readonly mmapSize: number;
  readonly stateMsrs: number[];
  readonly hasXsave: boolean;
  readonly hasXcrs: boolean;
  readonly maxSlots: number;
}

function checkExtension(fd: number, cap: number): number {
  return native.ioctlValueRaw(fd, abi.KVM_CHECK_EXTENSION, cap);
}

let signalInstalled = false;
/**
 * DEVNOTE: requestStop() kicks a vCPU thread out of KVM_RUN with SIGUSR2. A JS listener makes
 * libuv install a real handler, so the signal interrupts the ioctl instead of killing the
 * process. The listener does nothing; it is installed once, process-wide.
 */
function installKickHandler(): void {
  if (signalInstalled) return;
  process.on('SIGUSR2', () => { /* vCPU kick */ });
  signalInstalled = true;
}

export class KvmPartition implements Partition {
  readonly backend: BackendKind = 'kvm';
  readonly memory = new GuestMemory();
  readonly hypercallCode: Uint8Array;
  vps: readonly KvmVp[] = [];

  // Runtime glue
  handler: ExitHandler | null = null;
  #vmFd: number;
  readonly #host: KvmHost;
  readonly #slots = new Map<number, Region>();
  readonly #irqBuf = new Uint8Array(abi.KVM_IRQ_LEVEL_SIZE);
  readonly #irqView = new DataView(this.#irqBuf.buffer);
  readonly #msiBuf = new Uint8Array(abi.KVM_MSI_SIZE);
  #disposed = false;

  private constructor(host: KvmHost, vmFd: number, config: PartitionConfig) {
    this.#host = host;
    this.#vmFd = vmFd;
    this.hypercallCode = Uint8Array.of(0xe6, config.hypercallPort);
  }

  static async create(host: KvmHost, config: PartitionConfig): Promise<KvmPartition> {
    validateConfig(config);
    installKickHandler();
    for (const [cap, name] of [
      [abi.KVM_CAP_IRQCHIP, 'KVM_CAP_IRQCHIP'], [abi.KVM_CAP_READONLY_MEM, 'KVM_CAP_READONLY_MEM'],
      [abi.KVM_CAP_IMMEDIATE_EXIT, 'KVM_CAP_IMMEDIATE_EXIT'], [abi.KVM_CAP_X86_USER_SPACE_MSR, 'KVM_CAP_X86_USER_SPACE_MSR'],
      [abi.KVM_CAP_X86_MSR_FILTER, 'KVM_CAP_X86_MSR_FILTER'], [abi.KVM_CAP_SIGNAL_MSI, 'KVM_CAP_SIGNAL_MSI'],
    ] as const) {
      if (checkExtension(host.kvmFd, cap) <= 0) throw new TshvError('ENOTSUP', `KVM lacks ${name}`);
    }
    const vmFd = native.ioctlValue(host.kvmFd, abi.KVM_CREATE_VM, 0);
    const p = new KvmPartition(host, vmFd, config);
    try {
      native.ioctlValue(vmFd, abi.KVM_SET_TSS_ADDR, KVM_TSS_ADDR);
      const idMap = new Uint8Array(8);
      new DataView(idMap.buffer).setBigUint64(0, BigInt(KVM_IDENTITY_MAP_ADDR), true);
      native.ioctl(vmFd, abi.KVM_SET_IDENTITY_MAP_ADDR, idMap);
      native.ioctlValue(vmFd, abi.KVM_CREATE_IRQCHIP, 0);
      native.ioctl(vmFd, abi.KVM_ENABLE_CAP, abi.encodeEnableCap(abi.KVM_CAP_X86_USER_SPACE_MSR,
        abi.KVM_MSR_EXIT_REASON_FILTER | abi.KVM_MSR_EXIT_REASON_UNKNOWN | abi.KVM_MSR_EXIT_REASON_INVAL));
      if (config.interceptMsrs.length > 0) {
        const chunks = abi.msrFilterChunks(config.interceptMsrs);
        // A zeroed bitmap denies every MSR of a range: each access exits to user space. KVM
        // copies the bitmap during the ioctl; a SharedArrayBuffer never moves under us.
        const bitmap = new Uint8Array(new SharedArrayBuffer(abi.KVM_MSR_FILTER_MAX_BITMAP_SIZE));
        native.ioctl(vmFd, abi.KVM_X86_SET_MSR_FILTER, abi.encodeMsrFilter(chunks, native.addressOf(bitmap)));
      }
      const vps: KvmVp[] = [];
      p.vps = vps;
      for (let i = 0; i < config.vpCount; i++) vps.push(new KvmVp(p, i));
      // The VP threads start side by side: each costs a worker-thread start-up (~40 ms here).
      const started = await Promise.allSettled(vps.map((vp, i) =>
        vp.start(vmFd, config.hypercallPort, abi.encodeCpuid2(abi.cpuidForVp(config.cpuid, i), abi.cpuidFlagsFor), host)));
      const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    } catch (e) {
      p.dispose();
      throw e;
    }
    return p;
  }

  setExitHandler(handler: ExitHandler): void { this.handler = handler; }

  get disposed(): boolean { return this.#disposed; }

  mapMemory(at: Gpa, block: MemoryBlock, writable: boolean): IDisposable {
    if (this.#disposed) throw new TshvError('ESTATE', 'partition is disposed');
    if (at % PAGE_SIZE !== 0) throw new TshvError('EINVAL', `mapping ${block.name} at ${hex(at)}: not page aligned`);
    const base = native.addressOf(new Uint8Array(block.buffer));
    const off = (PAGE_SIZE - (base % PAGE_SIZE)) % PAGE_SIZE;
    block.alignTo(off);   // moves contents only if the block was already written through

    const slot = this.#freeSlot();
    const region = this.memory.map(at, block, writable);
    try {
      native.ioctl(this.#vmFd, abi.KVM_SET_USER_MEMORY_REGION,
        abi.encodeMemoryRegion(slot, writable ? 0 : abi.KVM_MEM_READONLY, at, block.size, base + off));
    } catch (e) {
      this.memory.unmap(region);
      throw e;
    }
    this.#slots.set(slot, region);
    let done = false;
    return {
      dispose: () => {
        if (done) return;
        done = true;
        if (!this.#disposed) this.#removeSlot(slot);
        this.memory.unmap(region);
      },
    };
  }

  #freeSlot(): number {
    for (let s = 0; s < this.#host.maxSlots; s++) if (!this.#slots.has(s)) return s;
    throw new TshvError('EBACKEND', `out of KVM memory slots (${this.#host.maxSlots})`);
  }

  #removeSlot(slot: number): void {
    const region = this.#slots.get(slot);
    if (region === undefined) return;
    native.ioctl(this.#vmFd, abi.KVM_SET_USER_MEMORY_REGION, abi.encodeMemoryRegion(slot, 0, region.start, 0, 0));
    this.#slots.delete(slot);
  }

  setIrqLine(gsi: number, level: boolean): void {
    if (this.#disposed) return;
    this.#irqView.setUint32(0, gsi >>> 0, true);
    this.#irqView.setUint32(4, level ? 1 : 0, true);
    native.ioctl(this.#vmFd, abi.KVM_IRQ_LINE, this.#irqBuf);
  }

  signalMsi(address: bigint, data: number): void {
    if (this.#disposed) return;
    abi.encodeMsi(address, data, this.#msiBuf);
    native.ioctl(this.#vmFd, abi.KVM_SIGNAL_MSI, this.#msiBuf);
  }

  /**
   * Stop every VP (synchronously, bounded: a guest must not run on without its memory), drop
   * every memory slot (after that KVM no longer touches the blocks' memory),
   * close the VM and let the vCPU threads close their fds and exit. Pending run() promises
   * resolve with {kind:'stopped'}.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const vp of this.vps) vp.requestStop();
    for (const vp of this.vps) vp.stopNow(DISPOSE_STOP_TIMEOUT_MS);
    for (const slot of [...this.#slots.keys()]) {
      try { this.#removeSlot(slot); } catch (e) { log.error(`removing memory slot ${slot}: ${errorMessage(e)}`); }
    }
    native.close(this.#vmFd);
    this.#vmFd = -1;
    for (const vp of this.vps) vp.shutdown();
  }
}

function validateConfig(c: PartitionConfig): void {
  if (!Number.isInteger(c.vpCount) || c.vpCount < 1 || c.vpCount > 255) throw new TshvError('EINVAL', `bad vpCount ${c.vpCount}`);
  if (!Number.isInteger(c.hypercallPort) || c.hypercallPort < 0 || c.hypercallPort > 0xff) {
    throw new TshvError('EINVAL', `hypercallPort ${c.hypercallPort} is not an 8-bit port`);
  }
  try { abi.msrFilterChunks(c.interceptMsrs); } catch (e) { throw new TshvError('EINVAL', errorMessage(e)); }
}

/**
 * Atomics.waitAsync (ES2024; in Node since 16) is not in this project's ES2023 lib typings.
 * DEVNOTE: the one Promise per exit it returns is the price of not blocking the device thread.
 */
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const atomics = Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): WaitAsyncResult };
function waitAsync(a: Int32Array, i: number, v: number): WaitAsyncResult { return atomics.waitAsync(a, i, v); }

interface Pending<T> { resolve(v: T): void; reject(e: unknown): void }

export class KvmVp implements VirtualProcessor {
  // Fixed configuration
  readonly index: number;
  readonly #partition: KvmPartition;

  // Runtime glue
  #worker: Worker | null = null;
  #tid = 0;
  readonly #pid = native.getpid();
  #runPage: native.Mapping | null = null;
  #runView: DataView | null = null;
  readonly #mailbox = new SharedArrayBuffer(mb.MB_BYTES);
  readonly #box = new Int32Array(this.#mailbox, 0, mb.MB_SLOTS);
  readonly #data = new DataView(this.#mailbox, mb.MB_DATA_OFFSET, mb.MB_DATA_SIZE);
  /** The 1..8-byte views handed to mmioRead / mmioWrite (index = length - 1). */
  readonly #mmioViews: Uint8Array[] = [];
  readonly #requests = new Map<number, Pending<VpState | undefined>>();
  #nextRequest = 1;

  // Volatile state
  #running: Pending<VpStopReason> | null = null;
  #stopRequested = false;
  #handlerError: string | null = null;
  #exits = 0;
  /** The pump waits on waitAsync or setImmediate: it will run again by itself. */
  #parked = false;
  /** Consecutive device-side spins that ended without an exit (adaptive spinning). */
  #spinMisses = 0;

  constructor(partition: KvmPartition, index: number) {
    this.#partition = partition;
    this.index = index;
    for (let n = 1; n <= 8; n++) this.#mmioViews.push(new Uint8Array(this.#mailbox, mb.MB_DATA_OFFSET, n));
  }

  /** Exits handled since creation (for tests and statistics). */
  get exitCount(): number { return this.#exits; }

  async start(vmFd: number, hypercallPort: number, cpuid: Uint8Array, host: KvmHost): Promise<void> {
    const init: mb.VcpuInit = {
      vmFd, index: this.index, mailbox: this.#mailbox, hypercallPort, mmapSize: host.mmapSize, cpuid,
      stateMsrs: host.stateMsrs, hasXsave: host.hasXsave, hasXcrs: host.hasXcrs,
    };
    const worker = new Worker(new URL('./vcpu-thread.js', import.meta.url), { workerData: init });
    this.#worker = worker;
    const ready = await new Promise<{ tid: number; vcpuFd: number }>((resolve, reject) => {
      const onMsg = (m: mb.FromVcpu): void => {
        worker.off('error', onErr);
        worker.off('message', onMsg);
        if (m.op === 'ready') resolve(m);
        else reject(new TshvError('EBACKEND', `vCPU ${this.index}: ${m.op === 'initError' ? m.message : m.op}`));
      };
      const onErr = (e: Error): void => { worker.off('message', onMsg); reject(new TshvError('EBACKEND', `vCPU ${this.index} thread: ${e.message}`)); };
      worker.on('message', onMsg);
      worker.once('error', onErr);
    });
    this.#tid = ready.tid;
    this.#runPage = native.mmapShared(ready.vcpuFd, host.mmapSize, 'kvm_run (device thread)');
    this.#runView = new DataView(this.#runPage.buffer);
    worker.on('message', (m: mb.FromVcpu) => { this.#onMessage(m); });
    worker.on('error', (e: Error) => { this.#onWorkerGone(`vCPU ${this.index} thread failed: ${e.message}`); });
    worker.on('exit', () => { this.#onWorkerGone(`vCPU ${this.index} thread exited`); });
    worker.unref();
  }

  run(): Promise<VpStopReason> {
    if (this.#partition.disposed || this.#worker === null) return Promise.resolve({ kind: 'stopped' });
    if (this.#running !== null) return Promise.reject(new TshvError('ESTATE', `VP ${this.index} is already running`));
    if (this.#partition.handler === null) return Promise.reject(new TshvError('ESTATE', 'no exit handler set'));
    return new Promise<VpStopReason>((resolve, reject) => {
      this.#running = { resolve, reject };
      this.#stopRequested = false;
      this.#handlerError = null;
      this.#worker!.ref();
      this.#worker!.postMessage({ op: 'run' } satisfies mb.ToVcpu);
      // A pump still parked from an earlier run (stopNow consumed its stop) takes over.
      if (!this.#parked) this.#pump();
    });
  }

  requestStop(): void {
    if (this.#running === null || this.#stopRequested || this.#runView === null) return;
    this.#stopRequested = true;
    Atomics.store(this.#box, mb.MB_STOP_REQ, 1);
    this.#runView.setUint8(abi.RUN_IMMEDIATE_EXIT, 1);
    native.tgkill(this.#pid, this.#tid, native.SIGUSR2);
  }

  getState(): Promise<VpState> {
    return this.#request((id) => ({ op: 'getState', id })) as Promise<VpState>;
  }

  async setState(state: VpState): Promise<void> {
    await this.#request((id) => ({ op: 'setState', id, state }));
  }

  #request(make: (id: number) => mb.ToVcpu): Promise<VpState | undefined> {
    if (this.#partition.disposed || this.#worker === null) return Promise.reject(new TshvError('ESTATE', 'partition is disposed'));
    if (this.#running !== null) return Promise.reject(new TshvError('ESTATE', `VP ${this.index} is running`));
    const id = this.#nextRequest++;
    return new Promise((resolve, reject) => {
      this.#requests.set(id, { resolve, reject });
      this.#worker!.ref();
      this.#worker!.postMessage(make(id));
    });
  }

  #onMessage(m: mb.FromVcpu): void {
    switch (m.op) {
      case 'state':
      case 'stateSet':
      case 'stateError': {
        const p = this.#requests.get(m.id);
        this.#requests.delete(m.id);
        if (this.#requests.size === 0 && this.#running === null) this.#worker?.unref();
        if (p === undefined) return;
        if (m.op === 'state') p.resolve(m.state);
        else if (m.op === 'stateSet') p.resolve(undefined);
        else p.reject(new TshvError('EBACKEND', `VP ${this.index}: ${m.message}`));
        return;
      }
      case 'ready':
      case 'initError':
      case 'disposed':
        return;
    }
  }

  #onWorkerGone(why: string): void {
    const w = this.#worker;
    if (w === null) return;
    this.#worker = null;
    if (!this.#partition.disposed) log.error(why);
    for (const p of this.#requests.values()) p.reject(new TshvError('EBACKEND', why));
    this.#requests.clear();
    const r = this.#running;
    this.#running = null;
    r?.resolve(this.#partition.disposed ? { kind: 'stopped' } : { kind: 'error', message: why });
    if (this.#runPage !== null) { native.munmap(this.#runPage); this.#runPage = null; this.#runView = null; }
  }

  /**
   * Wait (blocking the device thread, at most `timeoutMs`) until a kicked VP has stopped,
   * answering any exit still in flight without the handler. For dispose() only.
   */
  stopNow(timeoutMs: number): void {
    if (this.#running === null) return;
    this.requestStop();
    const box = this.#box;
    const end = performance.now() + timeoutMs;
    for (;;) {
      if (this.#running === null) return;
      const s = Atomics.load(box, mb.MB_STATE);
      if (s === mb.ST_POSTED) {
        if (box[mb.MB_KIND] === mb.EX_STOP) { this.#onStop(); return; }
        this.#handleExit();
        Atomics.store(box, mb.MB_STATE, mb.ST_REPLIED);
        Atomics.notify(box, mb.MB_STATE);
        continue;
      }
      const left = end - performance.now();
      if (left <= 0) { log.error(`VP ${this.index} did not stop within ${timeoutMs} ms`); return; }
      Atomics.wait(box, mb.MB_STATE, s, left);
    }
  }

  /** Called by the partition's dispose(), after stopNow(). */
  shutdown(): void {
    const w = this.#worker;
    if (w === null) return;
    w.postMessage({ op: 'dispose' } satisfies mb.ToVcpu);
    // If the thread does not answer (it should: the VP was kicked), terminate it.
    setTimeout(() => { void w.terminate(); }, 2000).unref();
  }

  /** Drain the mailbox: handle posted exits; park on Atomics.waitAsync when there are none. */
  readonly #pump = (): void => {
    this.#parked = false;
    const box = this.#box;
    let batch = 0;
    for (;;) {
      if (this.#running === null) return;
      let s = Atomics.load(box, mb.MB_STATE);
      if (s !== mb.ST_POSTED && batch > 0) {
        if (this.#spinMisses < mb.DEVICE_SPIN_MAX_MISSES) {
          s = spinFor(box, mb.ST_POSTED);
          this.#spinMisses = s === mb.ST_POSTED ? 0 : this.#spinMisses + 1;
        } else if ((this.#exits & 63) === 0) {
          this.#spinMisses = mb.DEVICE_SPIN_MAX_MISSES - 1;      // probe again now and then
        }
      }
      if (s !== mb.ST_POSTED) {
        const w = waitAsync(box, mb.MB_STATE, s);
        if (w.async) { this.#parked = true; void w.value.then(this.#pump); return; }
        continue;
      }
      if (box[mb.MB_KIND] === mb.EX_STOP) { this.#onStop(); return; }
      this.#handleExit();
      Atomics.store(box, mb.MB_STATE, mb.ST_REPLIED);
      Atomics.notify(box, mb.MB_STATE);
      if (++batch >= mb.DEVICE_BATCH) { this.#parked = true; setImmediate(this.#pump); return; }   // let timers and other VPs run
    }
  };

  #handleExit(): void {
    const box = this.#box;
    const handler = this.#partition.handler;
    const kind = box[mb.MB_KIND]!;
    this.#exits++;
    box[mb.MB_REPLY_ERR] = 0;
    if (handler === null || this.#partition.disposed || this.#handlerError !== null) { this.#defaultReply(kind); return; }
    const vp = this.index;
    try {
      switch (kind) {
        case mb.EX_PIO_IN: {
          const port = box[mb.MB_A]!, size = box[mb.MB_B] as 1 | 2 | 4, count = box[mb.MB_C]!;
          const d = this.#data;
          for (let i = 0, o = 0; i < count; i++, o += size) {
            const v = handler.pioRead(vp, port, size);
            if (size === 1) d.setUint8(o, v & 0xff);
            else if (size === 2) d.setUint16(o, v & 0xffff, true);
            else d.setUint32(o, v >>> 0, true);
          }
          return;
        }
        case mb.EX_PIO_OUT: {
          const port = box[mb.MB_A]!, size = box[mb.MB_B] as 1 | 2 | 4, count = box[mb.MB_C]!;
          const d = this.#data;
          for (let i = 0, o = 0; i < count; i++, o += size) {
            const v = size === 1 ? d.getUint8(o) : size === 2 ? d.getUint16(o, true) : d.getUint32(o, true);
            handler.pioWrite(vp, port, size, v);
          }
          return;
        }
        case mb.EX_MMIO_READ: {
          const view = this.#mmioViews[box[mb.MB_C]! - 1]!;
          view.fill(0);
          handler.mmioRead(vp, (box[mb.MB_A]! >>> 0) + (box[mb.MB_B]! >>> 0) * 0x1_0000_0000, view);
          return;
        }
        case mb.EX_MMIO_WRITE:
          handler.mmioWrite(vp, (box[mb.MB_A]! >>> 0) + (box[mb.MB_B]! >>> 0) * 0x1_0000_0000, this.#mmioViews[box[mb.MB_C]! - 1]!);
          return;
        case mb.EX_MSR_READ: {
          const v = handler.msrRead(vp, box[mb.MB_A]! >>> 0);
          if (v === null) { box[mb.MB_REPLY_ERR] = 1; return; }
          this.#reply64(v);
          return;
        }
        case mb.EX_MSR_WRITE: {
          const ok = handler.msrWrite(vp, box[mb.MB_A]! >>> 0, join64(box[mb.MB_V0]!, box[mb.MB_V0 + 1]!));
          box[mb.MB_REPLY_ERR] = ok ? 0 : 1;
          return;
        }
        case mb.EX_HYPERCALL: {
          const r = handler.hypercall(vp, {
            control: join64(box[mb.MB_RCX]!, box[mb.MB_RCX + 1]!),
            input: join64(box[mb.MB_RDX]!, box[mb.MB_RDX + 1]!),
            output: join64(box[mb.MB_R8]!, box[mb.MB_R8 + 1]!),
          });
          this.#reply64(r);
          return;
        }
        default:
          this.#handlerError = `VP ${vp}: unknown mailbox exit kind ${kind}`;
          this.#defaultReply(kind);
          this.requestStop();
          return;
      }
    } catch (e) {
      // A throwing handler is a host bug: finish the exit harmlessly and stop the VP with it.
      this.#handlerError = `exit handler threw: ${errorMessage(e)}`;
      this.#defaultReply(kind);
      this.requestStop();
    }
  }

  /** Reply with open-bus values (reads all-ones, MSRs #GP, hypercalls fail) without the handler. */
  #defaultReply(kind: number): void {
    const box = this.#box;
    switch (kind) {
      case mb.EX_PIO_IN: for (let i = 0; i < box[mb.MB_B]! * box[mb.MB_C]!; i++) this.#data.setUint8(i, 0xff); return;
      case mb.EX_MMIO_READ: this.#mmioViews[box[mb.MB_C]! - 1]!.fill(0xff); return;
      case mb.EX_MSR_READ: case mb.EX_MSR_WRITE: box[mb.MB_REPLY_ERR] = 1; return;
      case mb.EX_HYPERCALL: box[mb.MB_REPLY] = 2; box[mb.MB_REPLY + 1] = 0; return;   // HV_STATUS_INVALID_HYPERCALL_CODE
      default: return;
    }
  }

  #reply64(v: bigint): void {
    this.#box[mb.MB_REPLY] = Number(BigInt.asUintN(32, v)) | 0;
    this.#box[mb.MB_REPLY + 1] = Number(BigInt.asUintN(32, v >> 32n)) | 0;
  }

  #onStop(): void {
    const box = this.#box;
    const reason = stopReason(box, this.index);
    Atomics.store(box, mb.MB_STOP_REQ, 0);
    this.#runView?.setUint8(abi.RUN_IMMEDIATE_EXIT, 0);
    Atomics.store(box, mb.MB_STATE, mb.ST_IDLE);
    const r = this.#running;
    this.#running = null;
    this.#stopRequested = false;
    if (this.#requests.size === 0) this.#worker?.unref();
    const err = this.#handlerError;
    this.#handlerError = null;
    r?.resolve(err !== null ? { kind: 'error', message: err } : reason);
  }
}

/** Spin up to DEVICE_SPIN_MS for the mailbox to reach `want`; returns the last state seen. */
function spinFor(box: Int32Array, want: number): number {
  const end = performance.now() + mb.DEVICE_SPIN_MS;
  for (;;) {
    for (let i = 0; i < 64; i++) {
      const s = Atomics.load(box, mb.MB_STATE);
      if (s === want) return s;
    }
    if (performance.now() >= end) return Atomics.load(box, mb.MB_STATE);
  }
}

function join64(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Translate an EX_STOP mailbox record into a VpStopReason. */
export function stopReason(box: Int32Array, vp: number): VpStopReason {
  const a = box[mb.MB_A]!, b = box[mb.MB_B]!, c = box[mb.MB_C]!;
  switch (a) {
    case mb.STOP_REQUESTED: return { kind: 'stopped' };
    case mb.STOP_SHUTDOWN: return { kind: 'shutdown' };
    case mb.STOP_HALTED: return { kind: 'halted' };
    case mb.STOP_SYSTEM_EVENT:
      // KVM_SYSTEM_EVENT_SHUTDOWN (1), _RESET (2), _CRASH (3): the partition is over either way.
      return b >= 1 && b <= 3 ? { kind: 'shutdown' } : { kind: 'error', message: `VP ${vp}: KVM system event ${b}` };
    case mb.STOP_INTERNAL_ERROR:
      return {
        kind: 'error',
        message: `VP ${vp}: KVM internal error: suberror ${b} (${abi.internalErrorName(b)})` +
          (c > 0 ? `, data[0]=${hex(join64(box[mb.MB_D0]!, box[mb.MB_D0 + 1]!))}` : ''),
      };
    case mb.STOP_FAIL_ENTRY:
      return { kind: 'error', message: `VP ${vp}: KVM entry failed: hardware reason ${hex(join64(b, c))} on cpu ${box[mb.MB_D0]! >>> 0}` };
    case mb.STOP_RUN_ERRNO:
      return { kind: 'error', message: `VP ${vp}: ${abi.IOCTL_NAMES.get(c >>> 0) ?? 'ioctl'} failed: ${native.errnoName(b)}` };
    case mb.STOP_UNKNOWN_EXIT:
      return { kind: 'error', message: `VP ${vp}: unhandled KVM exit reason ${b}` };
    case mb.STOP_BAD_EXIT:
      return { kind: 'error', message: `VP ${vp}: malformed KVM exit ${b} (${c === 1 ? 'I/O size/count/offset' : 'MMIO length'})` };
    default:
      return { kind: 'error', message: `VP ${vp}: unknown stop reason ${a}` };
  }
}
