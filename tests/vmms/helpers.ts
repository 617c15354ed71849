/**
 * Shared pieces of the management-plane tests: a private TSHV_HOME per test, the service
 * started as its own process, the CLI run as a process, raw HTTP over the API socket, the
 * serial transcript of the counting guest, and cleanup that kills every process that carries
 * this test's TSHV_HOME in its environment (service and workers), even when a test fails.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tshvPaths, type TshvPaths } from '../../src/defs/paths.js';
import type { VmInfo, VmList } from '../../src/defs/api.js';
import { buildGuests, type BuiltGuest } from '../guests/build.js';
import { backendFor } from '../guests/harness.js';

export const VMMS_MAIN = fileURLToPath(new URL('../../src/vmms/main.js', import.meta.url));
export const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
export const COUNT_FOREVER = 0xffffffff;
export const MIB = 1024 * 1024;

/** Why tests on this backend must be skipped on this host, or undefined. */
export function backendSkipReason(kind: 'kvm' | 'emu'): string | undefined {
  const b = backendFor(kind);
  return b.ok ? undefined : b.reason;
}

/** Why the kvm-backed tests must be skipped on this host, or undefined. */
export function kvmSkipReason(): string | undefined {
  return backendSkipReason('kvm');
}

let counter: BuiltGuest | undefined;
export function counterGuest(): BuiltGuest {
  counter ??= buildGuests({ only: ['long64-counter'] }).get('long64-counter');
  if (counter === undefined) throw new Error('long64-counter was not built');
  return counter;
}

export interface RawResponse { status: number; body: unknown; text: string }

export function rawRequest(socketPath: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const h: Record<string, string | number> = { ...headers };
    if (body !== undefined) {
      h['content-length'] = Buffer.byteLength(body);
      h['content-type'] ??= 'application/json';
    }
    const req = request({ socketPath, method, path, headers: h, timeout: 60000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try { parsed = text === '' ? undefined : JSON.parse(text); } catch { parsed = undefined; }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.end(body);
  });
}

export class TestHome {
  readonly home: string;
  readonly paths: TshvPaths;

  constructor(tag: string) {
    this.home = mkdtempSync(join(tmpdir(), `tshv-${tag}-`));
    this.paths = tshvPaths({ TSHV_HOME: this.home });
  }

  get env(): NodeJS.ProcessEnv { return { ...process.env, TSHV_HOME: this.home }; }

  /** Start the service process and wait for it to answer. */
  async startService(): Promise<number> {
    mkdirSync(this.home, { recursive: true });
    const logPath = join(this.home, 'vmms-test.log');
    const log = openSync(logPath, 'a');
    const child = spawn(process.execPath, [VMMS_MAIN], { env: this.env, stdio: ['ignore', log, log], detached: true });
    closeSync(log);
    const err = (): string => { try { return readFileSync(logPath, 'utf8'); } catch { return ''; } };
    child.unref();
    const deadline = performance.now() + 15000;
    while (performance.now() < deadline) {
      if (existsSync(this.paths.apiSocket)) {
        const r = await rawRequest(this.paths.apiSocket, 'GET', '/v1/service').catch(() => undefined);
        if (r?.status === 200) return (r.body as { pid: number }).pid;
      }
      if (child.exitCode !== null) throw new Error(`the service exited: ${err()}`);
      await sleep(30);
    }
    throw new Error(`the service did not answer: ${err()}`);
  }

  /** Stop the service (workers keep running) and wait until its socket is gone. */
  async stopService(): Promise<void> {
    await rawRequest(this.paths.apiSocket, 'POST', '/v1/service/shutdown', '{}');
    for (let i = 0; i < 200 && existsSync(this.paths.apiSocket); i++) await sleep(20);
  }

  api(method: string, path: string, body?: unknown): Promise<RawResponse> {
    return rawRequest(this.paths.apiSocket, method, path, body === undefined ? undefined : JSON.stringify(body));
  }

  /** A request that must succeed; returns its body. */
  async ok<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.api(method, path, body);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${path}: HTTP ${r.status} ${r.text}`);
    return r.body as T;
  }

  async vm(ref: string): Promise<VmInfo> { return this.ok<VmInfo>('GET', `/v1/vms/${ref}`); }
  async list(): Promise<VmInfo[]> { return (await this.ok<VmList>('GET', '/v1/vms')).vms; }

  /** Run the CLI with this home. */
  cli(args: string[], timeoutMs = 60000): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e',
        `const m = await import(${JSON.stringify(new URL('../../src/cli/main.js', import.meta.url).href)}); process.exitCode = await m.runCli([process.argv[0], 'tshv', ...process.argv.slice(1)]);`,
        '--', ...args], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
      const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tshv ${args.join(' ')} timed out`)); }, timeoutMs);
      child.on('exit', (code) => { clearTimeout(t); resolve({ code: code ?? -1, stdout, stderr }); });
    });
  }

  /** The serial transcript of a VM from offset 0, as text. */
  async transcript(ref: string): Promise<string> {
    const c = await this.ok<{ start: number; data: string }>('GET', `/v1/vms/${ref}/console?since=0`);
    return Buffer.from(c.data, 'base64').toString('latin1');
  }

  /** Wait until the counting guest has printed at least `n` more count lines than `after`. */
  async waitForCount(ref: string, atLeast: number, timeoutMs = 20000): Promise<number[]> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const counts = parseCounts(await this.transcript(ref));
      if (counts.length > 0 && (counts[counts.length - 1] ?? -1) >= atLeast) return counts;
      if (performance.now() > deadline) throw new Error(`${ref}: count did not reach ${atLeast} (last ${counts[counts.length - 1] ?? 'none'})`);
      await sleep(50);
    }
  }

  async waitForState(ref: string, state: string, timeoutMs = 15000): Promise<VmInfo> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const v = await this.vm(ref);
      if (v.state === state) return v;
      if (performance.now() > deadline) throw new Error(`${ref} stayed ${v.state} (${v.status}), expected ${state}`);
      await sleep(50);
    }
  }

  newCounterBody(name: string, opts: { scratch?: number; memoryBytes?: number; backend?: 'kvm' | 'emu' } = {}): Record<string, unknown> {
    const g = counterGuest();
    return {
      name, memoryBytes: opts.memoryBytes ?? 16 * MIB, cpus: 1, backend: opts.backend ?? 'kvm',
      boot: { kind: 'flat', file: g.binPath, mode: 'long64', loadGpa: g.spec.loadGpa, entryGpa: g.entryGpa, scratch: opts.scratch ?? COUNT_FOREVER },
    };
  }

  /** Pids of every live process whose environment carries this TSHV_HOME. */
  processes(): number[] {
    const needle = Buffer.from(`TSHV_HOME=${this.home}\0`);
    const out: number[] = [];
    for (const name of readdirSync('/proc')) {
      if (!/^[0-9]+$/.test(name) || Number(name) === process.pid) continue;
      try {
        if (readFileSync(`/proc/${name}/environ`).includes(needle)) out.push(Number(name));
      } catch { /* gone or not ours */ }
    }
    return out;
  }

  /** Kill every process of this home (service, workers, CLI) and remove the directory. */
  async cleanup(): Promise<void> {
    for (let round = 0; round < 20; round++) {
      const pids = this.processes();
      if (pids.length === 0) break;
      for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      await sleep(50);
    }
    rmSync(this.home, { recursive: true, force: true });
  }
}

export function parseCounts(transcript: string): number[] {
  const out: number[] = [];
  const lines = transcript.split('\n');
  lines.pop();                          // the last piece is not a complete line yet
  for (const line of lines) {
    const m = /^count=([0-9]+)$/.exec(line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

/** Counts must run 0, 1, 2, ... with no gap and no repeat. */
export function checkConsecutive(counts: readonly number[]): string | undefined {
  for (let i = 0; i < counts.length; i++) if (counts[i] !== i) return `count #${i} is ${counts[i]}, expected ${i} (context ${counts.slice(Math.max(0, i - 3), i + 3).join(',')})`;
  return undefined;
}

export function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}
