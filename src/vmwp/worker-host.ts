/**
 * The VM worker's core (VMWP): holds one VM's partition through `Vm`, runs its virtual
 * processors, and carries out what the management service asks: start, pause, resume, save,
 * restore, turn off, console input. It reports serial output, save/restore progress, resource
 * statistics and the end of a run as events.
 *
 * Phases (the worker's view; the service maps them onto the VM states of src/defs/states.ts):
 *   empty -> starting -> running <-> paused -> saving -> saved -> restoring -> running
 *   running|paused --turnOff--> empty (the worker then exits); a guest power-off or a fatal
 *   error ends the run -> ended (the worker reports `exit` and exits).
 * After a save the partition is dropped (its memory freed) but the worker stays, as Hyper-V's
 * worker stays for a saved VM; a restore builds a fresh `Vm` with the same configuration.
 *
 * DEVNOTE: serial bytes arrive one at a time from the UART's transmit callback on the VP exit
 * path; they go into the scrollback ring (allocation-free) and one flush per macrotask turns
 * them into a `serial` event, so a chatty guest costs one message per batch, not per byte.
 */
import { readFileSync, statSync } from 'node:fs';
import { TshvError, errorMessage, type ErrorCode } from '../base/errors.js';
import type { LinuxBoot, VmConfig } from '../defs/api.js';
import type { FromWorker, WorkerPhase, WorkerStatus } from '../defs/ipc.js';
import { SCROLLBACK_BYTES } from '../defs/ipc.js';
import { Scrollback } from '../defs/scrollback.js';
import { resolveKernelAndInitrd } from '../image/build.js';
import { loadFlatImage } from '../loader/flat.js';
import { TESTDEV_PIO_BASE, TESTDEV_PIO_SCRATCH } from '../devices/testdev/testdev.js';
import { Vm, type VmExit } from './vm.js';
import { restoreVm, saveVm } from './savestate.js';
import { assembleCmdline, bootLinux } from './linux.js';

export type Emit = (m: FromWorker) => void;

const STATS_INTERVAL_MS = 1000;

export class WorkerHost {
  // Fixed configuration
  readonly vmId: string;
  readonly #emit: Emit;
  readonly #onEnded: () => void;
  // Volatile state
  #phase: WorkerPhase = 'empty';
  #vm: Vm | undefined;
  #config: VmConfig | undefined;
  #run: Promise<void> | undefined;
  #pausing = false;
  #startedAt = 0;
  readonly #serial = new Scrollback(SCROLLBACK_BYTES);
  #flushedTo = 0;
  #flushTimer: NodeJS.Immediate | undefined;
  #statsTimer: NodeJS.Timeout | undefined;
  #lastCpu = process.cpuUsage();
  #lastCpuAt = performance.now();

  constructor(vmId: string, emit: Emit, onEnded: () => void) {
    this.vmId = vmId;
    this.#emit = emit;
    this.#onEnded = onEnded;
    this.#statsTimer = setInterval(() => this.#sendStats(), STATS_INTERVAL_MS);
    this.#statsTimer.unref();
  }

  get phase(): WorkerPhase { return this.#phase; }

  status(): WorkerStatus {
    const sb = this.#serial.read(0);
    return {
      vmId: this.vmId,
      pid: process.pid,
      phase: this.#phase,
      serialEnd: this.#serial.end,
      scrollbackStart: sb.start,
      scrollback: Buffer.from(sb.data).toString('base64'),
      uptimeMs: this.#uptimeMs(),
    };
  }

  #uptimeMs(): number {
    return this.#phase === 'running' || this.#phase === 'paused' ? Math.round(performance.now() - this.#startedAt) : 0;
  }

  #expect(...phases: WorkerPhase[]): void {
    if (!phases.includes(this.#phase)) {
      throw new TshvError('ESTATE', `the worker is ${this.#phase}; this needs ${phases.join(' or ')}`);
    }
  }

  async #createVm(config: VmConfig): Promise<Vm> {
    return Vm.create({
      ...(config.backend !== 'auto' ? { backend: config.backend } : {}),
      memoryBytes: config.memoryBytes,
      vpCount: config.cpus,
      serialOut: (bytes) => this.#onSerial(bytes),
      resetAction: 'poweroff',
      testDevice: config.boot.kind === 'flat',
    });
  }

  async start(config: VmConfig): Promise<void> {
    this.#expect('empty');
    this.#phase = 'starting';
    try {
      const boot = config.boot;
      if (boot.kind === 'linux') {
        await this.#startLinux(config, boot);
        return;
      }
      let image: Uint8Array;
      try {
        const st = statSync(boot.file);
        if (!st.isFile()) throw new TshvError('EIMAGE', `${boot.file} is not a regular file`);
        if (st.size > config.memoryBytes) throw new TshvError('EIMAGE', `${boot.file} (${st.size} bytes) is larger than guest memory`);
        image = new Uint8Array(readFileSync(boot.file));
      } catch (e) {
        if (e instanceof TshvError) throw e;
        throw new TshvError('EIMAGE', `cannot read the guest image: ${errorMessage(e)}`);
      }
      await this.#startWith(config, async (vm) => {
        const base = await vm.getVpState(0);
        const state = loadFlatImage(vm.memory, image, { mode: boot.mode, loadGpa: boot.loadGpa, entryGpa: boot.entryGpa ?? boot.loadGpa, base });
        await vm.setVpState(0, state);
        if (boot.scratch !== undefined) vm.testDevice?.ioWrite(TESTDEV_PIO_BASE + TESTDEV_PIO_SCRATCH, 4, boot.scratch);
      });
    } catch (e) {
      this.#phase = 'empty';
      throw e;
    }
  }

  /**
   * A Linux guest: the same boot as `tshv run` (linux.ts), the default image's files unless the
   * configuration names its own. A guest reset ends the run (resetAction 'poweroff').
   */
  async #startLinux(config: VmConfig, boot: LinuxBoot): Promise<void> {
    const files = await resolveKernelAndInitrd({
      ...(boot.kernel !== undefined ? { kernel: boot.kernel } : {}),
      ...(boot.initrd !== undefined ? { initrd: boot.initrd } : {}),
      ...(boot.append !== undefined ? { cmdline: boot.append } : {}),
    });
    await this.#startWith(config, (vm) =>
      bootLinux(vm, { kernel: files.kernel, initrd: files.initrd, cmdline: assembleCmdline({ base: files.cmdline, backend: vm.backend }) }).then(() => undefined));
  }

  /** Create the VM, let `load` put the guest in it (the VM is disposed if that fails), run it. */
  async #startWith(config: VmConfig, load: (vm: Vm) => Promise<void>): Promise<void> {
    const vm = await this.#createVm(config);
    try {
      await load(vm);
    } catch (e) {
      vm.dispose();
      throw e;
    }
    this.#vm = vm;
    this.#config = config;
    this.#startedAt = performance.now();
    this.#runVps();
  }

  #runVps(): void {
    const vm = this.#vm;
    if (vm === undefined) return;
    this.#phase = 'running';
    this.#pausing = false;
    this.#run = vm.run().then((exit) => this.#onRunEnd(exit), (e: unknown) => this.#onRunEnd({ kind: 'error', vp: 0, message: errorMessage(e) }));
  }

  #onRunEnd(exit: VmExit): void {
    if (exit.kind === 'stopped' && this.#pausing) return;   // pause, save or turn-off asked for it
    this.#flushSerial();
    const report = describeExit(exit);
    this.#phase = 'ended';
    this.#dropVm();
    this.#emit({ type: 'exit', kind: report.kind, reason: report.reason });
    this.#onEnded();
  }

  async #stopVps(): Promise<void> {
    const vm = this.#vm;
    if (vm === undefined || this.#run === undefined) return;
    this.#pausing = true;
    await vm.pause();
    await this.#run;
    this.#run = undefined;
  }

  async pause(): Promise<void> {
    this.#expect('running');
    await this.#stopVps();
    // The run may have ended on its own while the pause was on its way.
    if (this.#phase === 'running') this.#phase = 'paused';
    else throw new TshvError('ESTATE', 'the guest ended its run before it could be paused');
  }

  resume(): void {
    this.#expect('paused');
    this.#runVps();
  }

  async save(path: string, onProgress: (done: number, total: number) => void): Promise<void> {
    this.#expect('running', 'paused');
    if (this.#phase === 'running') await this.pause();
    const vm = this.#vm;
    const config = this.#config;
    if (vm === undefined || config === undefined) throw new TshvError('ESTATE', 'no partition to save');
    this.#phase = 'saving';
    try {
      await saveVm(vm, path, { config, onProgress });
    } catch (e) {
      this.#phase = 'paused';
      throw e;
    }
    this.#dropVm();
    this.#phase = 'saved';
  }

  async restore(config: VmConfig, path: string, onProgress: (done: number, total: number) => void): Promise<void> {
    this.#expect('saved', 'empty');
    const before = this.#phase;
    this.#phase = 'restoring';
    let vm: Vm | undefined;
    try {
      vm = await this.#createVm(config);
      await restoreVm(vm, path, { config, onProgress });
    } catch (e) {
      vm?.dispose();
      this.#phase = before;
      throw e;
    }
    this.#vm = vm;
    this.#config = config;
    this.#startedAt = performance.now();
    this.#runVps();
  }

  /** Cut power: stop the processors, drop the partition. The caller then ends the process. */
  async turnOff(): Promise<void> {
    if (this.#phase === 'running' || this.#phase === 'paused') await this.#stopVps();
    this.#dropVm();
    this.#phase = 'empty';
  }

  serialInput(bytes: Uint8Array): void {
    this.#expect('running', 'paused');
    this.#vm?.serialInput(bytes);
  }

  #dropVm(): void {
    const vm = this.#vm;
    this.#vm = undefined;
    this.#run = undefined;
    if (vm !== undefined) {
      try { vm.dispose(); } catch { /* the partition is gone either way */ }
    }
  }

  #onSerial(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) this.#serial.writeByte(bytes[i] ?? 0);
    if (this.#flushTimer === undefined) this.#flushTimer = setImmediate(() => this.#flushSerial());
  }

  #flushSerial(): void {
    if (this.#flushTimer !== undefined) { clearImmediate(this.#flushTimer); this.#flushTimer = undefined; }
    if (this.#flushedTo === this.#serial.end) return;
    const r = this.#serial.read(this.#flushedTo, 64 * 1024);
    this.#flushedTo = r.end;
    this.#emit({ type: 'serial', offset: r.start, data: Buffer.from(r.data).toString('base64') });
    if (this.#flushedTo !== this.#serial.end) this.#flushTimer = setImmediate(() => this.#flushSerial());
  }

  #sendStats(): void {
    const now = performance.now();
    const cpu = process.cpuUsage();
    const usedUs = cpu.user - this.#lastCpu.user + cpu.system - this.#lastCpu.system;
    const wallUs = (now - this.#lastCpuAt) * 1000;
    this.#lastCpu = cpu;
    this.#lastCpuAt = now;
    const cpuPercent = wallUs > 0 ? Math.max(0, Math.round((usedUs / wallUs) * 1000) / 10) : 0;
    this.#emit({ type: 'stats', cpuPercent, rssBytes: process.memoryUsage.rss(), uptimeMs: this.#uptimeMs() });
  }

  dispose(): void {
    if (this.#statsTimer !== undefined) clearInterval(this.#statsTimer);
    this.#statsTimer = undefined;
    this.#dropVm();
  }
}

/** How a run that nobody asked to stop ended, in the terms of the VM states. */
export function describeExit(exit: VmExit): { kind: 'guestOff' | 'crashed'; reason: string } {
  switch (exit.kind) {
    case 'poweroff': return { kind: 'guestOff', reason: 'the guest powered off' };
    case 'testExit': return { kind: 'guestOff', reason: `the test guest exited with code 0x${exit.code.toString(16)}` };
    case 'reset': return { kind: 'guestOff', reason: 'the guest reset the machine (reset is power-off for this VM)' };
    case 'shutdown': return { kind: 'crashed', reason: `triple fault on virtual processor ${exit.vp}` };
    case 'halted': return { kind: 'crashed', reason: `virtual processor ${exit.vp} halted with interrupts disabled` };
    case 'error': return { kind: 'crashed', reason: `virtual processor ${exit.vp}: ${exit.message}` };
    case 'timeout': return { kind: 'crashed', reason: 'the run timed out' };
    case 'stopped': return { kind: 'guestOff', reason: 'the processors stopped' };
  }
}

export function errorCodeOf(e: unknown): ErrorCode | 'EINTERNAL' {
  return e instanceof TshvError ? e.code : 'EINTERNAL';
}
