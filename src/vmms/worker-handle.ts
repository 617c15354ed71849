/**
 * The service's end of one worker process: spawns it (or reconnects to a live one after a
 * service restart), sends typed requests and matches their replies, delivers the worker's
 * events, and notices when the worker is gone (process exit, lost connection, protocol error).
 *
 * The worker is spawned by file path (dist/src/vmwp/worker-main.js) with child_process.fork,
 * detached into its own session so that it outlives the service; the service never imports
 * vmwp code. Spawn readiness comes over the fork IPC channel (one validated `ready` message);
 * everything else goes over the worker's Unix socket (src/defs/channel.ts, src/defs/ipc.ts).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { JsonChannel } from '../defs/channel.js';
import {
  IPC_PROTOCOL_VERSION, MAX_IPC_LINE_BYTES, parseFromWorker,
  type ExitReport, type FromWorker, type IpcError, type ToWorker, type WorkerRequest, type WorkerStatus,
} from '../defs/ipc.js';
import { workerSocketPath, workerStateFile, type TshvPaths } from '../defs/paths.js';

export const WORKER_MAIN = fileURLToPath(new URL('../vmwp/worker-main.js', import.meta.url));
const SPAWN_TIMEOUT_MS = 15000;

export class WorkerRequestError extends Error {
  constructor(readonly code: string, message: string) { super(message); }
}

export type WorkerEvent = Exclude<FromWorker, { type: 'reply' } | { type: 'ready' }>;

export function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** The worker's state file: {pid, socket, exit}. Undefined when absent or malformed. */
export function readWorkerState(paths: TshvPaths, vmId: string): { pid: number; socket: string; exit: ExitReport | null } | undefined {
  try {
    const v: unknown = JSON.parse(readFileSync(workerStateFile(paths, vmId), 'utf8'));
    if (typeof v !== 'object' || v === null) return undefined;
    const r = v as Record<string, unknown>;
    const pid = r['pid'];
    const socket = r['socket'];
    if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0 || typeof socket !== 'string') return undefined;
    const ex = r['exit'];
    let exit: ExitReport | null = null;
    if (ex !== null && ex !== undefined) {
      const p = parseFromWorker(ex);
      if (p.ok && p.value.type === 'exit') exit = p.value;
    }
    return { pid, socket, exit };
  } catch {
    return undefined;
  }
}

function connectChannel(socketPath: string, timeoutMs: number): Promise<JsonChannel<FromWorker, ToWorker>> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath);
    const t = setTimeout(() => { s.destroy(); reject(new Error(`timed out connecting to ${socketPath}`)); }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(new JsonChannel<FromWorker, ToWorker>(s, parseFromWorker, MAX_IPC_LINE_BYTES));
    });
    s.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}

export class WorkerHandle {
  readonly vmId: string;
  readonly pid: number;
  /** Milliseconds from fork() to the worker's `ready` (undefined for a reconnected worker). */
  readonly spawnMs: number | undefined;
  readonly #paths: TshvPaths;
  readonly #channel: JsonChannel<FromWorker, ToWorker>;
  readonly #child: ChildProcess | undefined;
  #seq = 1;
  readonly #pending = new Map<number, { resolve: (s: WorkerStatus) => void; reject: (e: Error) => void; timer: NodeJS.Timeout | undefined }>();
  #onEvent: ((e: WorkerEvent) => void) | undefined;
  /** Events that arrived before anyone listened (the same chunk as the hello reply). */
  readonly #early: WorkerEvent[] = [];
  #onGone: (reason: string, exit: ExitReport | null) => void = () => undefined;
  #gone = false;
  #expectExit = false;

  private constructor(paths: TshvPaths, vmId: string, pid: number, channel: JsonChannel<FromWorker, ToWorker>, child: ChildProcess | undefined, spawnMs: number | undefined) {
    this.#paths = paths;
    this.vmId = vmId;
    this.pid = pid;
    this.#channel = channel;
    this.#child = child;
    this.spawnMs = spawnMs;
    channel.onMessage((m) => this.#onMessage(m));
    channel.onClose((reason) => this.#onChannelClose(reason));
    if (child !== undefined) {
      child.on('exit', (code, signal) => {
        const exit = readWorkerState(this.#paths, this.vmId)?.exit ?? null;
        const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code ?? '?'}`;
        this.#markGone(`worker process ${pid} ${how}`, exit);
      });
    }
  }

  /** Fork a new worker for `vmId` and connect to it. */
  static async spawn(paths: TshvPaths, vmId: string, logFile: string): Promise<WorkerHandle> {
    const t0 = performance.now();
    const log = openSync(logFile, 'a', 0o600);
    let child: ChildProcess;
    try {
      child = fork(WORKER_MAIN, [vmId], {
        detached: true,
        stdio: ['ignore', log, log, 'ipc'],
        env: process.env,
        serialization: 'json',
      });
    } finally {
      closeSync(log);
    }
    const ready = await new Promise<{ pid: number; socket: string }>((resolve, reject) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the worker did not start within ${SPAWN_TIMEOUT_MS} ms (see ${logFile})`)); }, SPAWN_TIMEOUT_MS);
      child.once('message', (m: unknown) => {
        clearTimeout(timer);
        const p = parseFromWorker(m);
        if (p.ok && p.value.type === 'ready' && p.value.socket === workerSocketPath(paths, vmId)) resolve({ pid: p.value.pid, socket: p.value.socket });
        else { child.kill('SIGKILL'); reject(new Error(`the worker sent an invalid ready message${p.ok ? '' : `: ${p.error}`}`)); }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the worker exited during start-up (${signal ?? `code ${code ?? '?'}`}); see ${logFile}`));
      });
      child.once('error', (e) => { clearTimeout(timer); reject(e); });
    });
    child.unref();
    let channel: JsonChannel<FromWorker, ToWorker>;
    try {
      channel = await connectChannel(ready.socket, 5000);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    const spawnMs = performance.now() - t0;
    const h = new WorkerHandle(paths, vmId, ready.pid, channel, child, spawnMs);
    await h.request({ type: 'hello', protocol: IPC_PROTOCOL_VERSION }, 5000);
    return h;
  }

  /** Reconnect to the live worker recorded in the state file; returns its status. */
  static async reconnect(paths: TshvPaths, vmId: string, pid: number): Promise<{ handle: WorkerHandle; status: WorkerStatus }> {
    const channel = await connectChannel(workerSocketPath(paths, vmId), 3000);
    const h = new WorkerHandle(paths, vmId, pid, channel, undefined, undefined);
    const status = await h.request({ type: 'hello', protocol: IPC_PROTOCOL_VERSION }, 5000);
    if (status.pid !== pid || status.vmId !== vmId) {
      h.kill();
      throw new Error(`the worker at the socket is pid ${status.pid} for ${status.vmId}, not ${pid} for ${vmId}`);
    }
    return { handle: h, status };
  }

  get gone(): boolean { return this.#gone; }
  /** Deliver events to `fn`, starting with any that arrived before it was set. */
  onEvent(fn: (e: WorkerEvent) => void): void {
    this.#onEvent = fn;
    for (const e of this.#early.splice(0)) fn(e);
  }
  onGone(fn: (reason: string, exit: ExitReport | null) => void): void { this.#onGone = fn; }
  /** The next exit of the worker is expected (turn-off), not a crash. */
  expectExit(): void { this.#expectExit = true; }
  get exitExpected(): boolean { return this.#expectExit; }

  request(msg: WorkerRequest, timeoutMs?: number): Promise<WorkerStatus> {
    if (this.#gone) return Promise.reject(new WorkerRequestError('EWORKER', 'the worker process is gone'));
    const seq = this.#seq++;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs !== undefined
        ? setTimeout(() => {
          this.#pending.delete(seq);
          reject(new WorkerRequestError('EWORKER', `the worker did not answer ${msg.type} within ${timeoutMs} ms`));
        }, timeoutMs)
        : undefined;
      this.#pending.set(seq, { resolve, reject, timer });
      this.#channel.send({ ...msg, seq });
    });
  }

  #onMessage(m: FromWorker): void {
    if (m.type === 'ready') return;
    if (m.type === 'reply') {
      const p = this.#pending.get(m.seq);
      if (p === undefined) return;
      this.#pending.delete(m.seq);
      if (p.timer !== undefined) clearTimeout(p.timer);
      if (m.ok && m.status !== undefined) p.resolve(m.status);
      else {
        const err: IpcError = m.error ?? { code: 'EWORKER', message: 'the worker answered without a status' };
        p.reject(new WorkerRequestError(err.code, err.message));
      }
      return;
    }
    if (this.#onEvent !== undefined) this.#onEvent(m);
    else if (this.#early.length < 1024) this.#early.push(m);
  }

  #onChannelClose(reason: string): void {
    if (this.#gone) return;
    // A spawned child reports its own exit (with the signal); give it a moment.
    if (this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null) {
      const t = setTimeout(() => {
        if (this.#gone) return;
        if (processAlive(this.pid)) this.kill();
        this.#markGone(`lost the connection to worker ${this.pid} (${reason})`, null);
      }, 1000);
      t.unref();
      return;
    }
    const poll = (left: number): void => {
      if (this.#gone) return;
      const st = readWorkerState(this.#paths, this.vmId);
      if (!processAlive(this.pid) || left <= 0) {
        if (processAlive(this.pid)) this.kill();
        this.#markGone(`worker process ${this.pid} is gone (${reason})`, st?.exit ?? null);
        return;
      }
      setTimeout(() => poll(left - 1), 50).unref();
    };
    poll(20);
  }

  #markGone(reason: string, exit: ExitReport | null): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#channel.close('worker gone');
    for (const [, p] of this.#pending) {
      if (p.timer !== undefined) clearTimeout(p.timer);
      p.reject(new WorkerRequestError('EWORKER', reason));
    }
    this.#pending.clear();
    this.#onGone(reason, exit);
  }

  /** Kill the worker process at once (SIGKILL). */
  kill(): void {
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* already gone */ }
  }

  /** Leave the worker running and drop the connection (service shutdown). */
  detach(): void {
    this.#gone = true;
    this.#channel.close('service detached');
    if (this.#child?.connected === true) this.#child.disconnect();
  }

  /** Whether the socket file of this worker still exists. */
  socketExists(): boolean { return existsSync(workerSocketPath(this.#paths, this.vmId)); }
}
