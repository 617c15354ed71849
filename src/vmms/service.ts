/**
 * VMMS: the virtual machine management service's core. It owns the VM registry, one
 * `WorkerHandle` per VM that is not off, and every state change, each of which goes through
 * the transition table of src/defs/states.ts (an invalid one is a 409, and changes nothing).
 *
 * Operations are asynchronous and bounded: each request to a worker has a timeout, and a
 * worker that dies or misbehaves marks only its own VM Crashed (with the reason); nothing
 * else is touched. A restarted service reconnects to live workers through their state files
 * and marks VMs whose worker is gone Crashed (or Off, when the worker recorded a clean end).
 *
 * DEVNOTE: a saved state is durable (it is a file in the VM's data dir): if the worker of a
 * Saved VM is gone, the VM stays Saved and the next start spawns a new worker that restores.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, rmSync, statSync } from 'node:fs';
import { TshvError, errorMessage } from '../base/errors.js';
import type { NewVmRequest, VmConfig, VmInfo, Progress, ConsoleChunk } from '../defs/api.js';
import type { ExitReport, WorkerStatus } from '../defs/ipc.js';
import { SCROLLBACK_BYTES } from '../defs/ipc.js';
import { saveFilePath, vmDir, type TshvPaths } from '../defs/paths.js';
import { Scrollback } from '../defs/scrollback.js';
import { transition, type VmEvent, type VmState } from '../defs/states.js';
import { Registry, type RegistryRecord } from './registry.js';
import { WorkerHandle, WorkerRequestError, processAlive, readWorkerState, type WorkerEvent } from './worker-handle.js';
import { join } from 'node:path';

/** An error with its HTTP status; the API turns it into {error:{code,message}}. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

const STATUS_FOR_CODE: Readonly<Record<string, number>> = {
  EINVAL: 400, EAMBIGUOUS: 400, ENOTFOUND: 404, ESTATE: 409, EIMAGE: 422,
  ENOTSUP: 501, EBACKEND: 500, EWORKER: 500, ETOOL: 500, EGUESTMEM: 500, EINTERNAL: 500,
};

export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof TshvError || e instanceof WorkerRequestError) return new ApiError(STATUS_FOR_CODE[e.code] ?? 500, e.code, e.message);
  return new ApiError(500, 'EINTERNAL', errorMessage(e));
}

const OPERATING = 'Operating normally';
const REQUEST_TIMEOUT_MS = 60000;
const LONG_OP_TIMEOUT_MS = 10 * 60000;

interface VmEntry {
  config: VmConfig;
  state: VmState;
  status: string;
  hasSavedState: boolean;
  worker: WorkerHandle | undefined;
  serial: Scrollback;
  cpuPercent: number;
  rssBytes: number | null;
  uptimeMs: number;
  uptimeAt: number;
  progress: Progress | null;
  spawnMs: number | null;
  /** Wakes console long-polls and streams. */
  listeners: Set<() => void>;
  /** Resolves the graceful-stop wait when the guest ends its run. */
  offWaiters: Set<() => void>;
}

export class Vmms {
  readonly paths: TshvPaths;
  readonly registry: Registry;
  readonly startedAt = performance.now();
  readonly #vms = new Map<string, VmEntry>();
  readonly #log: (msg: string) => void;

  constructor(paths: TshvPaths, log: (msg: string) => void = (m) => process.stderr.write(`vmms: ${m}\n`)) {
    this.paths = paths;
    this.registry = new Registry(paths);
    this.#log = log;
  }

  get vmCount(): number { return this.#vms.size; }

  /** Load the registry and find live workers again. */
  async init(): Promise<void> {
    for (const rec of this.registry.loadAll(this.#log)) {
      const e = this.#entry(rec);
      this.#vms.set(rec.config.id, e);
      await this.#reconcile(e);
    }
  }

  #entry(rec: RegistryRecord): VmEntry {
    return {
      config: rec.config, state: rec.state, status: rec.status, hasSavedState: rec.hasSavedState,
      worker: undefined, serial: new Scrollback(SCROLLBACK_BYTES), cpuPercent: 0, rssBytes: null,
      uptimeMs: 0, uptimeAt: performance.now(), progress: null, spawnMs: null,
      listeners: new Set(), offWaiters: new Set(),
    };
  }

  async #reconcile(e: VmEntry): Promise<void> {
    const id = e.config.id;
    const st = readWorkerState(this.paths, id);
    if (st !== undefined && st.exit === null && processAlive(st.pid)) {
      try {
        const { handle, status } = await WorkerHandle.reconnect(this.paths, id, st.pid);
        this.#mirror(e, status);
        this.#attach(e, handle);
        const state = phaseToState(status.phase);
        if (state === undefined) {
          handle.expectExit();
          handle.kill();
          this.#set(e, e.hasSavedState ? 'Saved' : 'Crashed', `worker ${st.pid} was ${status.phase}; stopped it`);
        } else {
          this.#set(e, state, OPERATING);
        }
        this.#log(`reconnected to worker ${st.pid} of ${e.config.name} (${state ?? status.phase})`);
        return;
      } catch (err) {
        this.#log(`cannot reconnect to worker ${st.pid} of ${e.config.name}: ${errorMessage(err)}`);
        try { process.kill(st.pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    if (e.state === 'Off' || e.state === 'Crashed') return;
    if (st?.exit != null && st.exit.kind === 'guestOff') { this.#set(e, 'Off', st.exit.reason); return; }
    if (e.hasSavedState && existsSync(saveFilePath(this.paths, id)) && (e.state === 'Saved' || e.state === 'Restoring')) {
      this.#set(e, 'Saved', 'saved state on disk (its worker is gone; start restores it in a new worker)');
      return;
    }
    const why = st?.exit != null ? st.exit.reason : st !== undefined ? `worker process ${st.pid} is gone` : 'no worker found';
    this.#set(e, 'Crashed', `found ${e.state} at service start but ${why}`);
  }

  // -------------------------------------------------------------------------------------------
  // Lookup

  /** A VM by name, GUID or unique GUID prefix. */
  resolve(ref: string): VmEntry {
    if (ref.includes('/') || ref.includes('\\') || ref === '.' || ref === '..') throw new ApiError(400, 'EINVAL', `bad VM reference ${JSON.stringify(ref)}`);
    const byId = this.#vms.get(ref.toLowerCase());
    if (byId !== undefined) return byId;
    for (const e of this.#vms.values()) if (e.config.name === ref) return e;
    if (/^[0-9a-fA-F][0-9a-fA-F-]{0,35}$/.test(ref)) {
      const lower = ref.toLowerCase();
      const hits = [...this.#vms.values()].filter((e) => e.config.id.startsWith(lower));
      if (hits.length === 1 && hits[0] !== undefined) return hits[0];
      if (hits.length > 1) {
        throw new ApiError(400, 'EAMBIGUOUS', `GUID prefix ${ref} matches ${hits.length} VMs (${hits.map((h) => `${h.config.name} ${h.config.id}`).join(', ')}); give more digits`);
      }
    }
    throw new ApiError(404, 'ENOTFOUND', `no VM named ${JSON.stringify(ref)} (or with that GUID or GUID prefix)`);
  }

  info(e: VmEntry): VmInfo {
    const live = e.state === 'Running' || e.state === 'Paused';
    return {
      id: e.config.id, name: e.config.name, state: e.state, status: e.status,
      memoryBytes: e.config.memoryBytes, cpus: e.config.cpus, backend: e.config.backend, boot: e.config.boot,
      createdAt: e.config.createdAt,
      uptimeMs: live ? Math.max(0, Math.round(e.uptimeMs + (e.state === 'Running' || e.state === 'Paused' ? performance.now() - e.uptimeAt : 0))) : 0,
      cpuUsagePercent: e.state === 'Running' ? e.cpuPercent : 0,
      workerPid: e.worker !== undefined && !e.worker.gone ? e.worker.pid : null,
      workerRssBytes: e.worker !== undefined && !e.worker.gone ? e.rssBytes : null,
      hasSavedState: e.hasSavedState,
      progress: e.progress,
      workerSpawnMs: e.spawnMs,
    };
  }

  list(): VmInfo[] {
    return [...this.#vms.values()].sort((a, b) => a.config.name.localeCompare(b.config.name)).map((e) => this.info(e));
  }

  // -------------------------------------------------------------------------------------------
  // State changes

  #check(e: VmEntry, ev: VmEvent): VmState | 'Removed' {
    const next = transition(e.state, ev);
    if (next === undefined) throw new ApiError(409, 'ESTATE', `cannot ${ev} VM ${e.config.name}: it is ${e.state}`);
    return next;
  }

  /** Apply `ev`; returns false (and changes nothing) when the table refuses it. */
  #apply(e: VmEntry, ev: VmEvent, status?: string): boolean {
    const next = transition(e.state, ev);
    if (next === undefined || next === 'Removed') return false;
    this.#set(e, next, status ?? e.status);
    return true;
  }

  #set(e: VmEntry, state: VmState, status: string): void {
    const persist = state !== e.state || status !== e.status;
    e.state = state;
    e.status = status;
    if (state === 'Running') e.uptimeAt = performance.now();
    if (state === 'Off' || state === 'Crashed') {
      for (const w of e.offWaiters) w();
      e.offWaiters.clear();
    }
    if (persist && this.#vms.has(e.config.id)) this.#persist(e);
    for (const l of e.listeners) l();
  }

  #persist(e: VmEntry): void {
    try {
      this.registry.save({ version: 1, config: e.config, state: e.state, status: e.status, hasSavedState: e.hasSavedState });
    } catch (err) {
      this.#log(`cannot write the configuration of ${e.config.name}: ${errorMessage(err)}`);
    }
  }

  #attach(e: VmEntry, w: WorkerHandle): void {
    e.worker = w;
    w.onEvent((ev) => this.#onWorkerEvent(e, w, ev));
    w.onGone((reason, exit) => this.#onWorkerGone(e, w, reason, exit));
  }

  #mirror(e: VmEntry, s: WorkerStatus): void {
    e.serial.reset(s.serialEnd, new Uint8Array(Buffer.from(s.scrollback, 'base64')));
    e.uptimeMs = s.uptimeMs;
    e.uptimeAt = performance.now();
  }

  #onWorkerEvent(e: VmEntry, w: WorkerHandle, ev: WorkerEvent): void {
    if (e.worker !== w) return;
    switch (ev.type) {
      case 'serial': {
        let data = new Uint8Array(Buffer.from(ev.data, 'base64'));
        if (ev.offset < e.serial.end) data = data.subarray(Math.min(data.length, e.serial.end - ev.offset));   // overlap
        else if (ev.offset > e.serial.end) e.serial.reset(ev.offset, new Uint8Array(0));                        // gap: bytes lost
        e.serial.write(data);
        for (const l of e.listeners) l();
        return;
      }
      case 'progress': e.progress = { op: ev.op, done: ev.done, total: ev.total }; return;
      case 'stats':
        e.cpuPercent = ev.cpuPercent;
        e.rssBytes = ev.rssBytes;
        return;
      case 'exit': this.#onExitReport(e, ev); return;
    }
  }

  #onExitReport(e: VmEntry, ev: ExitReport): void {
    // The worker exits right after reporting the end of the run: it is no longer this VM's.
    e.worker?.expectExit();
    e.worker = undefined;
    e.rssBytes = null;
    if (ev.kind === 'guestOff') this.#apply(e, 'guestOff', ev.reason);
    else this.#apply(e, 'crashed', ev.reason);
  }

  #onWorkerGone(e: VmEntry, w: WorkerHandle, reason: string, exit: ExitReport | null): void {
    if (e.worker !== w) return;
    e.worker = undefined;
    e.rssBytes = null;
    e.progress = null;
    if (exit !== null && e.state !== 'Off' && e.state !== 'Crashed') { this.#onExitReport(e, exit); return; }
    if (w.exitExpected || e.state === 'Off' || e.state === 'Crashed') return;
    if (e.state === 'Saved' && e.hasSavedState) {
      this.#set(e, 'Saved', `saved state on disk (its worker ended: ${reason})`);
      return;
    }
    this.#log(`${e.config.name}: ${reason}`);
    this.#apply(e, 'crashed', reason);
  }

  async #spawn(e: VmEntry): Promise<WorkerHandle> {
    const w = await WorkerHandle.spawn(this.paths, e.config.id, join(vmDir(this.paths, e.config.id), 'worker.log'));
    e.spawnMs = w.spawnMs !== undefined ? Math.round(w.spawnMs * 10) / 10 : null;
    e.serial = new Scrollback(SCROLLBACK_BYTES);
    this.#attach(e, w);
    return w;
  }

  // -------------------------------------------------------------------------------------------
  // Operations

  create(req: NewVmRequest): VmInfo {
    for (const e of this.#vms.values()) {
      if (e.config.name === req.name) throw new ApiError(409, 'ESTATE', `a VM named ${req.name} already exists (${e.config.id})`);
    }
    if (req.boot.kind === 'flat') {
      const st = statSync(req.boot.file, { throwIfNoEntry: false });
      if (st === undefined || !st.isFile()) throw new ApiError(400, 'EINVAL', `boot.file ${req.boot.file} is not a readable file`);
      if (st.size > req.memoryBytes - req.boot.loadGpa) throw new ApiError(400, 'EINVAL', `boot.file (${st.size} bytes) does not fit in guest memory above loadGpa`);
    } else {
      for (const f of [req.boot.kernel, req.boot.initrd]) {
        if (f !== undefined && !existsSync(f)) throw new ApiError(400, 'EINVAL', `${f} does not exist`);
      }
    }
    const config: VmConfig = {
      id: randomUUID(), name: req.name, memoryBytes: req.memoryBytes, cpus: req.cpus,
      backend: req.backend ?? 'auto', boot: req.boot, createdAt: new Date().toISOString(),
    };
    const e = this.#entry({ version: 1, config, state: 'Off', status: 'created', hasSavedState: false });
    this.registry.save({ version: 1, config, state: 'Off', status: 'created', hasSavedState: false });
    this.#vms.set(config.id, e);
    return this.info(e);
  }

  async start(ref: string): Promise<VmInfo> {
    const e = this.resolve(ref);
    const next = this.#check(e, 'start');
    if (next === 'Restoring') return this.#restore(e);
    this.#set(e, 'Starting', 'starting');
    e.serial = new Scrollback(SCROLLBACK_BYTES);
    let w: WorkerHandle | undefined;
    try {
      w = await this.#spawn(e);
      const s = await w.request({ type: 'start', config: e.config }, REQUEST_TIMEOUT_MS);
      e.uptimeMs = s.uptimeMs;
      this.#apply(e, 'started', OPERATING);
    } catch (err) {
      if (w !== undefined) { w.expectExit(); w.kill(); }
      e.worker = undefined;
      if (e.state === 'Starting') this.#apply(e, 'startFailed', `start failed: ${errorMessage(err)}`);
      throw toApiError(err);
    }
    return this.info(e);
  }

  async #restore(e: VmEntry): Promise<VmInfo> {
    const path = saveFilePath(this.paths, e.config.id);
    this.#set(e, 'Restoring', 'restoring');
    e.progress = { op: 'restore', done: 0, total: 0 };
    try {
      let w = e.worker;
      if (w === undefined || w.gone) w = await this.#spawn(e);
      const s = await w.request({ type: 'restore', config: e.config, path }, LONG_OP_TIMEOUT_MS);
      e.uptimeMs = s.uptimeMs;
      e.hasSavedState = false;
      rmSync(path, { force: true });
      this.#apply(e, 'restored', OPERATING);
    } catch (err) {
      if (e.state === 'Restoring') this.#apply(e, 'restoreFailed', `restore refused: ${errorMessage(err)}`);
      throw toApiError(err);
    } finally {
      e.progress = null;
    }
    return this.info(e);
  }

  #worker(e: VmEntry): WorkerHandle {
    if (e.worker === undefined || e.worker.gone) throw new ApiError(500, 'EWORKER', `VM ${e.config.name} has no worker process`);
    return e.worker;
  }

  async pause(ref: string): Promise<VmInfo> {
    const e = this.resolve(ref);
    this.#check(e, 'pause');
    await this.#worker(e).request({ type: 'pause' }, REQUEST_TIMEOUT_MS).catch((err: unknown) => { throw toApiError(err); });
    this.#apply(e, 'pause', OPERATING);
    return this.info(e);
  }

  async resume(ref: string): Promise<VmInfo> {
    const e = this.resolve(ref);
    this.#check(e, 'resume');
    await this.#worker(e).request({ type: 'resume' }, REQUEST_TIMEOUT_MS).catch((err: unknown) => { throw toApiError(err); });
    this.#apply(e, 'resume', OPERATING);
    return this.info(e);
  }

  async save(ref: string): Promise<VmInfo> {
    const e = this.resolve(ref);
    this.#check(e, 'save');
    const w = this.#worker(e);
    this.#set(e, 'Saving', 'saving');
    e.progress = { op: 'save', done: 0, total: 0 };
    try {
      await w.request({ type: 'save', path: saveFilePath(this.paths, e.config.id) }, LONG_OP_TIMEOUT_MS);
      e.hasSavedState = true;
      this.#apply(e, 'saved', 'saved');
    } catch (err) {
      if (e.state === 'Saving') this.#apply(e, 'saveFailed', `save failed: ${errorMessage(err)}`);
      throw toApiError(err);
    } finally {
      e.progress = null;
    }
    return this.info(e);
  }

  async stop(ref: string, opts: { turnOff?: boolean | undefined; timeoutMs?: number | undefined }): Promise<VmInfo> {
    const e = this.resolve(ref);
    const turnOff = opts.turnOff === true || e.state === 'Saved' || e.state === 'Crashed' || e.state === 'Starting';
    const next = this.#check(e, turnOff ? 'turnOff' : 'stop');
    if (next === 'Off') {               // Crashed: nothing runs; just clear it
      this.#set(e, 'Off', 'turned off');
      return this.info(e);
    }
    const from = e.state;
    this.#set(e, 'Stopping', 'stopping');
    let status = 'turned off';
    if (!turnOff && from === 'Running') {
      // DEVNOTE: a graceful stop needs ACPI power-button or the shutdown integration service,
      // neither of which exists yet. Wait for the guest to power off by itself, then cut power.
      const timeoutMs = opts.timeoutMs ?? 10000;
      const ended = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => { e.offWaiters.delete(done); resolve(false); }, timeoutMs);
        const done = (): void => { clearTimeout(t); resolve(true); };
        e.offWaiters.add(done);
      });
      if (ended) return this.info(e);
      status = `turned off after ${timeoutMs} ms: graceful shutdown needs the ACPI power button or the shutdown integration service, which tshv does not have yet`;
    }
    const w = e.worker;
    if (w !== undefined && !w.gone) {
      w.expectExit();
      try {
        await w.request({ type: 'turnOff' }, 10000);
      } catch {
        w.kill();
      }
    }
    if (e.hasSavedState) {
      rmSync(saveFilePath(this.paths, e.config.id), { force: true });
      e.hasSavedState = false;
    }
    e.worker = undefined;
    if (e.state === 'Stopping') this.#apply(e, 'stopped', status);
    return this.info(e);
  }

  remove(ref: string): void {
    const e = this.resolve(ref);
    this.#check(e, 'remove');
    const w = e.worker;
    if (w !== undefined) { w.expectExit(); w.kill(); }
    e.worker = undefined;
    this.#vms.delete(e.config.id);
    this.registry.remove(e.config.id);
    for (const l of e.listeners) l();
  }

  // -------------------------------------------------------------------------------------------
  // Console

  /** Serial output from `since`; with `waitMs`, waits for output when there is none yet. */
  async consoleRead(ref: string, since: number | undefined, waitMs: number | undefined): Promise<ConsoleChunk> {
    const e = this.resolve(ref);
    const from = since ?? e.serial.start;
    if (waitMs !== undefined && waitMs > 0 && e.serial.end <= from && (e.state === 'Running' || e.state === 'Starting' || e.state === 'Restoring' || e.state === 'Paused')) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { e.listeners.delete(wake); resolve(); }, waitMs);
        const wake = (): void => { clearTimeout(t); e.listeners.delete(wake); resolve(); };
        e.listeners.add(wake);
      });
    }
    const r = e.serial.read(from, 1024 * 1024);
    return { start: r.start, end: r.end, lost: r.lost, data: Buffer.from(r.data).toString('base64') };
  }

  /** Follow the serial output from `since` until the VM leaves Running/Paused or `signal` fires. */
  consoleSubscribe(ref: string, since: number | undefined, onData: (b: Uint8Array) => void, onEnd: () => void): () => void {
    const e = this.resolve(ref);
    let pos = since ?? e.serial.start;
    let ended = false;
    const pump = (): void => {
      if (ended) return;
      const r = e.serial.read(pos, 1024 * 1024);
      pos = r.end;
      if (r.data.length > 0) onData(r.data);
      if (!this.#vms.has(e.config.id) || e.state === 'Off' || e.state === 'Crashed' || e.state === 'Saved') stop();
    };
    const stop = (): void => {
      if (ended) return;
      ended = true;
      e.listeners.delete(pump);
      onEnd();
    };
    e.listeners.add(pump);
    pump();
    return stop;
  }

  async consoleInput(ref: string, data: Uint8Array): Promise<void> {
    const e = this.resolve(ref);
    if (e.state !== 'Running' && e.state !== 'Paused') throw new ApiError(409, 'ESTATE', `VM ${e.config.name} is ${e.state}; console input needs it Running`);
    await this.#worker(e).request({ type: 'serialInput', data: Buffer.from(data).toString('base64') }, REQUEST_TIMEOUT_MS)
      .catch((err: unknown) => { throw toApiError(err); });
  }

  /** Drop every worker connection, leaving the workers running (service shutdown). */
  detachAll(): void {
    for (const e of this.#vms.values()) {
      e.worker?.detach();
      e.worker = undefined;
      for (const l of e.listeners) l();
    }
  }
}

function phaseToState(p: WorkerStatus['phase']): VmState | undefined {
  switch (p) {
    case 'running': return 'Running';
    case 'paused': return 'Paused';
    case 'saved': return 'Saved';
    case 'starting': case 'saving': case 'restoring': case 'empty': case 'ended': return undefined;
  }
}
