/**
 * Vm: the composition root of one virtual machine (the heart of the VM worker process, VMWP).
 *
 * It creates the child partition through winhv, allocates guest RAM and ROM through the VID's
 * memory-block registry, builds the devices and registers them with the VID dispatcher, routes
 * the partition's port/MMIO intercepts to that dispatcher, wires device interrupt lines and
 * power actions to the partition, and runs the virtual processors until something ends the run
 * (power-off, reset, a test exit, a triple fault, a backend error, a stop request, a timeout).
 *
 * Guest physical memory map (PC-compatible):
 *   0 .. min(RAM, 3 GiB)          RAM
 *   0xFEB00000 (4 KiB)            test device MMIO window (only with `testDevice`)
 *   0xFEC00000                    IOAPIC (backend's interrupt controller)
 *   0xFEE00000                    local APIC (backend's interrupt controller)
 *   4 GiB .. 4 GiB + (RAM - 3 GiB) the rest of RAM, for guests larger than 3 GiB
 * Ports: COM1 0x3F8-0x3FF (IRQ 4), i8042 0x60/0x64, port 0x92, test device 0xF0-0xF7, the ACPI
 * sleep control / sleep status / reset registers 0x600-0x602 (the FADT's, ADR 0012).
 *
 * Pause, save and restore: `pause()` stops every VP through the partition's stop request (an
 * exit in flight completes first) and resolves once all have stopped; `run()` resumes.
 * `stateUnits()` names every device with volatile state, under the names the save file uses
 * (savestate.ts); `captureDeviceState()` / `restoreDeviceState()` move them all at once.
 */
import type { IDisposable } from '../base/disposable.js';
import { TshvError } from '../base/errors.js';
import { gpa, PAGE_SIZE, type GuestMemory } from '../guestmem/guestmem.js';
import { IoDispatcher, type DispatcherStats } from '../vid/dispatch.js';
import { MemoryBlocks } from '../vid/memory.js';
import type { RomRegion } from '../vid/rom.js';
import { Serial16550 } from '../devices/uart16550/uart16550.js';
import { I8042 } from '../devices/i8042/i8042.js';
import { SystemControlPortA } from '../devices/i8042/port92.js';
import { CmosRtc } from '../devices/cmos/cmos.js';
import { PortSink } from '../devices/sink/sink.js';
import { TestDevice } from '../devices/testdev/testdev.js';
import { SleepControl } from '../devices/sleepctl/sleepctl.js';
import { PLATFORM_RESET_VALUE, PLATFORM_SLEEP_PORTS, PLATFORM_SLP_TYP_S5 } from '../loader/acpi/tables.js';
import type { SavedState, StateUnit } from '../vid/device.js';
import {
  createBackend, hvCreatePartition,
  type Backend, type BackendKind, type MsrInterceptHandler, type VpState, type VpStopReason, type WinHvPartition,
} from '../winhv/winhv.js';

export type ResetAction = 'reset' | 'poweroff';

export interface VmOptions {
  /** A backend object, a backend kind, or undefined to probe the host. */
  backend?: Backend | BackendKind | undefined;
  memoryBytes: number;
  vpCount: number;
  /** Bytes the guest writes to COM1. */
  serialOut?: (bytes: Uint8Array) => void;
  /** What the i8042 / port 0x92 reset does: reset the VM (default) or power it off. */
  resetAction?: ResetAction;
  /** Read-only regions to map (firmware, test ROMs). */
  roms?: readonly { name: string; gpa: number; bytes: Uint8Array }[];
  /** Add the test device (ports 0xF0-0xF7, MMIO 0xFEB00000) for freestanding test guests. */
  testDevice?: boolean;
}

export type VmExit =
  | { kind: 'poweroff' }
  | { kind: 'reset' }
  | { kind: 'testExit'; code: number }
  | { kind: 'shutdown'; vp: number }
  | { kind: 'halted'; vp: number }
  | { kind: 'error'; vp: number; message: string }
  | { kind: 'timeout' }
  | { kind: 'stopped' };

export const MIB = 1024 * 1024;
const LOW_RAM_LIMIT = 0xc0000000;      // 3 GiB: above it the PCI/APIC hole
const HIGH_RAM_BASE = 0x100000000;     // 4 GiB
export const MAX_MEMORY_BYTES = 64 * 1024 * MIB;
export const MAX_VPS = 64;

export class Vm implements IDisposable {
  // Fixed configuration
  readonly partition: WinHvPartition;
  readonly blocks = new MemoryBlocks();
  readonly dispatcher: IoDispatcher;
  readonly serial: Serial16550;
  readonly i8042: I8042;
  /** CMOS RTC at ports 0x70/0x71: the guest's wall clock at boot, following host time. */
  readonly cmos: CmosRtc;
  readonly testDevice: TestDevice | undefined;
  readonly port92: SystemControlPortA;
  /** ACPI S5 power-off and RESET_REG: the registers the FADT names (loader/acpi/tables.ts). */
  readonly sleepControl: SleepControl;
  readonly memoryBytes: number;
  /** `optional`: added after saves already existed; a save without it restores the device reset. */
  readonly #units: { name: string; unit: StateUnit; optional?: boolean }[];
  readonly #mappings: IDisposable[] = [];
  // Volatile state
  #exit: VmExit | undefined;
  #running = false;
  /** VPs that stopped with 'halted' in the current run. */
  #haltedVps = 0;
  /** Settles when the current run() has returned (every VP stopped). */
  #runDone: Promise<unknown> | undefined;

  private constructor(partition: WinHvPartition, opts: VmOptions) {
    this.partition = partition;
    this.memoryBytes = opts.memoryBytes;
    this.dispatcher = new IoDispatcher();
    const resetAction = opts.resetAction ?? 'reset';
    const power = {
      reset: () => this.#end({ kind: 'reset' }),
      powerOff: () => this.#end({ kind: 'poweroff' }),
    };
    const serialOut = opts.serialOut ?? (() => undefined);
    this.serial = new Serial16550({
      base: 0x3f8,
      irq: { set: (level: boolean) => partition.setIrqLine(4, level) },
      onTransmit: (byte: number) => serialOut(Uint8Array.of(byte)),
    });
    this.i8042 = new I8042({ power, resetAction, irq: { set: (l: boolean) => partition.setIrqLine(1, l) } });
    this.dispatcher.register(this.serial);
    this.dispatcher.register(this.i8042);
    this.port92 = new SystemControlPortA({ power, resetAction });
    this.dispatcher.register(this.port92);
    this.cmos = new CmosRtc();
    this.dispatcher.register(this.cmos);
    this.sleepControl = new SleepControl({
      power, resetAction, ports: PLATFORM_SLEEP_PORTS, s5SleepType: PLATFORM_SLP_TYP_S5, resetValue: PLATFORM_RESET_VALUE,
    });
    this.dispatcher.register(this.sleepControl);
    // Port 0x80 is the POST / I/O-delay port Linux writes constantly: decoded, ignored, not warned about.
    this.dispatcher.register(new PortSink('post-delay', [{ name: 'port80', first: 0x80, last: 0x80 }]));
    if (opts.testDevice === true) {
      this.testDevice = new TestDevice({
        exit: (code: number) => this.#end({ kind: 'testExit', code }),
        msi: (address: bigint, data: number) => partition.signalMsi(address, data),
      });
      this.dispatcher.register(this.testDevice);
    } else {
      this.testDevice = undefined;
    }
    // PortSink and SleepControl have no volatile state. Names: save file section names (device/<name>).
    this.#units = [{ name: 'com1', unit: this.serial }, { name: 'i8042', unit: this.i8042 }, { name: 'port92', unit: this.port92 }, { name: 'cmos', unit: this.cmos, optional: true }];
    if (this.testDevice !== undefined) this.#units.push({ name: 'testdev', unit: this.testDevice });
    partition.installIoIntercept(this.dispatcher);
  }

  static async create(opts: VmOptions): Promise<Vm> {
    const { memoryBytes, vpCount } = opts;
    if (!Number.isSafeInteger(memoryBytes) || memoryBytes < 2 * MIB || memoryBytes > MAX_MEMORY_BYTES || memoryBytes % PAGE_SIZE !== 0) {
      throw new TshvError('EINVAL', `memory must be a multiple of 4 KiB between 2 MiB and ${MAX_MEMORY_BYTES / MIB} MiB, got ${memoryBytes}`);
    }
    if (!Number.isInteger(vpCount) || vpCount < 1 || vpCount > MAX_VPS) {
      throw new TshvError('EINVAL', `processor count must be between 1 and ${MAX_VPS}, got ${vpCount}`);
    }
    const backend = typeof opts.backend === 'object' ? opts.backend : createBackend(opts.backend);
    const partition = await hvCreatePartition(backend, { vpCount });
    let vm: Vm | undefined;
    try {
      vm = new Vm(partition, opts);
      vm.#mapRam(memoryBytes);
      for (const r of opts.roms ?? []) vm.#mapRom(vm.blocks.allocateRom(r.name, r.gpa, r.bytes));
      return vm;
    } catch (e) {
      if (vm) vm.dispose(); else partition.dispose();
      throw e;
    }
  }

  #mapRam(memoryBytes: number): void {
    const low = Math.min(memoryBytes, LOW_RAM_LIMIT);
    this.#mappings.push(this.partition.mapGpaPages(gpa(0), this.blocks.allocateRam('ram-low', low), true));
    if (memoryBytes > low) {
      this.#mappings.push(this.partition.mapGpaPages(gpa(HIGH_RAM_BASE), this.blocks.allocateRam('ram-high', memoryBytes - low), true));
    }
  }

  #mapRom(rom: RomRegion): void {
    this.#mappings.push(this.partition.mapGpaPages(gpa(rom.gpa), rom.block, false));
    rom.load();
    this.dispatcher.registerRom(rom);
  }

  get backend(): BackendKind { return this.partition.backend; }
  get memory(): GuestMemory { return this.partition.memory; }
  get vpCount(): number { return this.partition.vpCount; }

  setVpState(vp: number, state: VpState): Promise<void> { return this.partition.setVpState(vp, state); }
  getVpState(vp: number): Promise<VpState> { return this.partition.getVpState(vp); }

  /** Route an MSR range of the hypervisor range to the parent (tests, later VSPs). */
  installMsrIntercept(first: number, last: number, handler: MsrInterceptHandler): void {
    this.partition.installMsrIntercept(first, last, handler);
  }

  /** Host input for COM1 (the console). */
  serialInput(bytes: Uint8Array): void { this.serial.receive(bytes); }

  stats(): { bus: DispatcherStats; hypervisor: Readonly<WinHvPartition['hypervisorStats']> } {
    return { bus: this.dispatcher.stats(), hypervisor: this.partition.hypervisorStats };
  }

  /**
   * Run every VP until the run ends; resolves with why. `timeoutMs` ends it with 'timeout'.
   * Calling run() again after 'stopped' or 'timeout' continues where the VPs were.
   */
  run(opts: { timeoutMs?: number } = {}): Promise<VmExit> {
    if (this.#running) return Promise.reject(new TshvError('ESTATE', 'the VM is already running'));
    const p = this.#run(opts);
    this.#runDone = p.then(() => undefined, () => undefined);
    return p;
  }

  async #run(opts: { timeoutMs?: number }): Promise<VmExit> {
    this.#running = true;
    this.#exit = undefined;
    this.#haltedVps = 0;
    const timer = opts.timeoutMs !== undefined ? setTimeout(() => this.#end({ kind: 'timeout' }), opts.timeoutMs) : undefined;
    try {
      const runs: Promise<void>[] = [];
      for (let i = 0; i < this.vpCount; i++) {
        runs.push(this.partition.runVp(i).then((r) => this.#onVpStop(i, r), (e: unknown) => {
          this.#end({ kind: 'error', vp: i, message: e instanceof Error ? e.message : String(e) });
        }));
      }
      await Promise.all(runs);
      return this.#exit ?? { kind: 'stopped' };
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      this.#running = false;
    }
  }

  /** Stop all VPs promptly (pause); run() resolves with 'stopped'. */
  stop(): void { this.#end({ kind: 'stopped' }); }

  /** True while run() has not returned. */
  get running(): boolean { return this.#running; }

  /**
   * Stop every VP promptly and resolve once all have stopped (the pending run() resolves with
   * 'stopped', unless another reason ended the run first). An exit in flight completes first,
   * so no port write or MMIO access is lost or repeated. Resolves at once if the VM is not
   * running. run() again resumes where the VPs were.
   */
  async pause(): Promise<void> {
    if (!this.#running) return;
    this.#end({ kind: 'stopped' });
    await this.#runDone;
  }

  /** The devices with volatile state, by save-file name, in a fixed order. */
  stateUnits(): readonly { name: string; unit: StateUnit }[] { return this.#units; }

  /** Every device's saved state, by name. The VM must not be running. */
  captureDeviceState(): Map<string, SavedState> {
    if (this.#running) throw new TshvError('ESTATE', 'device state can only be captured while the VM is paused');
    const out = new Map<string, SavedState>();
    for (const { name, unit } of this.#units) out.set(name, unit.save());
    return out;
  }

  /**
   * Restore every device from `states` (exactly one entry per device of stateUnits()). The
   * states are untrusted: each device validates its own. All or nothing: if any device refuses
   * its state, the devices already restored are put back as they were and the error is thrown.
   */
  restoreDeviceState(states: ReadonlyMap<string, unknown>): void {
    if (this.#running) throw new TshvError('ESTATE', 'device state can only be restored while the VM is paused');
    for (const name of states.keys()) {
      if (!this.#units.some((u) => u.name === name)) throw new TshvError('ESTATE', `saved state for device ${name}, which this VM does not have`);
    }
    for (const { name, optional } of this.#units) {
      if (!states.has(name) && optional !== true) throw new TshvError('ESTATE', `no saved state for device ${name}`);
    }
    const before = this.captureDeviceState();
    const done: { name: string; unit: StateUnit }[] = [];
    try {
      for (const u of this.#units) {
        if (states.has(u.name)) u.unit.restore(states.get(u.name));
        else u.unit.reset();
        done.push(u);
      }
    } catch (e) {
      for (const u of done) u.unit.restore(before.get(u.name));
      throw e;
    }
  }

  #onVpStop(vp: number, r: VpStopReason): void {
    switch (r.kind) {
      case 'stopped': return;
      case 'shutdown': this.#end({ kind: 'shutdown', vp }); return;
      case 'halted':
        // DEVNOTE: one processor halting with interrupts off does not end a multiprocessor
        // VM: Linux's power-off and reboot first park every other CPU that way
        // (stop_other_cpus), then CPU 0 writes the ACPI sleep control or reset register. The
        // VM halts when VP 0 (the boot processor, where Linux's machine_halt ends) or every VP
        // has halted.
        this.#haltedVps++;
        if (vp === 0 || this.#haltedVps === this.vpCount) this.#end({ kind: 'halted', vp });
        return;
      case 'error': this.#end({ kind: 'error', vp, message: r.message }); return;
    }
  }

  /** The first reason wins; every VP is asked to stop. */
  #end(exit: VmExit): void {
    if (this.#exit === undefined) this.#exit = exit;
    for (let i = 0; i < this.vpCount; i++) this.partition.stopVp(i);
  }

  dispose(): void {
    for (const m of this.#mappings.splice(0)) m.dispose();
    this.partition.dispose();
  }
}
