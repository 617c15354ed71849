/**
 * Debian packages without installing them: apt-cache / apt-get download / dpkg-deb, and a
 * streaming tar reader that picks single files out of a package's data archive.
 *
 * `dpkg-deb --fsys-tarfile X.deb` writes the package's filesystem tree as one uncompressed tar
 * stream (it handles the .deb's ar container and whatever compression data.tar uses); we read
 * that stream in Node and keep only the entries a caller selects, so unpacking the 400 MB kernel
 * tree costs one pass and a few megabytes of memory, and nothing is written to disk but what we
 * keep. Tar format: POSIX ustar (with the GNU 'L' long-name and pax 'x' path extensions dpkg may
 * use), 512-byte blocks, sizes in octal or GNU base-256.
 *
 * Errors: a missing tool or a failing one is TshvError('ETOOL') with the tool's name and the tail
 * of its stderr; a malformed tar stream is TshvError('EIMAGE') naming the package.
 */
import { spawn } from 'node:child_process';
import { TshvError } from '../base/errors.js';

export interface ToolPaths {
  readonly aptGet?: string;
  readonly aptCache?: string;
  readonly dpkgDeb?: string;
  readonly xz?: string;
}

export interface ToolResult { readonly stdout: string; readonly stderr: string }

/** The last `n` lines of a tool's stderr, for error messages. */
export function stderrTail(stderr: string, n = 8): string {
  const lines = stderr.split('\n').map((l) => l.trimEnd()).filter((l) => l.length > 0);
  return lines.slice(-n).join('\n');
}

function missingToolHint(tool: string): string {
  if (/apt-(get|cache)$/.test(tool)) return ' (tshv image build needs a Debian or Ubuntu host with apt; or pass --kernel and --initrd)';
  if (tool.endsWith('dpkg-deb')) return ' (install dpkg)';
  return '';
}

/**
 * Run a tool to completion. `onStatusLine` receives lines from file descriptor 3 (APT's
 * Status-Fd progress protocol) when given.
 */
export function runTool(tool: string, args: readonly string[], opts: { cwd?: string; onStatusLine?: (line: string) => void } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    if (opts.onStatusLine) stdio.push('pipe');
    const child = spawn(tool, args, { stdio, ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}), env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    let spawnError: Error | undefined;
    child.stdout?.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr?.on('data', (c: Buffer) => { stderr += c.toString(); if (stderr.length > 65536) stderr = stderr.slice(-32768); });
    const status = child.stdio[3];
    if (opts.onStatusLine && status && 'on' in status) {
      let pending = '';
      status.on('data', (c: Buffer) => {
        pending += c.toString();
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          opts.onStatusLine?.(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      });
    }
    child.on('error', (e) => { spawnError = e; });
    child.on('close', (code, signal) => {
      if (spawnError) {
        const code2 = (spawnError as NodeJS.ErrnoException).code;
        return reject(new TshvError('ETOOL', code2 === 'ENOENT'
          ? `${tool} not found${missingToolHint(tool)}`
          : `could not run ${tool}: ${spawnError.message}`, { cause: spawnError }));
      }
      if (code !== 0) {
        const tail = stderrTail(stderr);
        return reject(new TshvError('ETOOL', `${tool} ${args.join(' ')} failed (${signal ?? `exit ${String(code)}`})${tail ? ':\n' + tail : ''}`));
      }
      resolve({ stdout, stderr });
    });
  });
}

/** The package that a metapackage (e.g. linux-image-amd64) currently depends on, matching `prefix`. */
export async function resolveDependency(tools: ToolPaths, metaPackage: string, prefix: string): Promise<string> {
  const tool = tools.aptCache ?? 'apt-cache';
  const { stdout } = await runTool(tool, ['depends', metaPackage]);
  for (const line of stdout.split('\n')) {
    const m = /^\s*\|?Depends:\s*(\S+)/.exec(line);
    if (m?.[1]?.startsWith(prefix)) return m[1];
  }
  throw new TshvError('ETOOL', `${tool} depends ${metaPackage}: no dependency named ${prefix}* (run apt-get update?)\n${stdout.trim()}`);
}

/**
 * `apt-get download` the packages into `dir`. Progress (0..100) comes from APT's Status-Fd
 * "dlstatus:<n>:<percent>:<text>" lines.
 */
export async function aptDownload(tools: ToolPaths, packages: readonly string[], dir: string, onPercent?: (percent: number) => void): Promise<void> {
  await runTool(tools.aptGet ?? 'apt-get', ['-o', 'APT::Status-Fd=3', '-q', 'download', ...packages], {
    cwd: dir,
    onStatusLine: (line) => {
      const m = /^dlstatus:[^:]*:([0-9.]+):/.exec(line);
      if (m?.[1] !== undefined && onPercent) onPercent(Math.min(100, Number(m[1])));
    },
  });
  onPercent?.(100);
}

/** Control fields of a .deb (`dpkg-deb -f`). */
export async function debFields(tools: ToolPaths, debPath: string, fields: readonly string[]): Promise<Map<string, string>> {
  const { stdout } = await runTool(tools.dpkgDeb ?? 'dpkg-deb', ['-f', debPath, ...fields]);
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return out;
}

export interface TarEntry {
  /** Path without a leading "./" or "/". */
  readonly path: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  readonly size: number;
  readonly mode: number;
  readonly linkName: string;
}

/** Per-entry callback: return true to receive the entry's bytes through `onFile`. */
export type TarSelect = (e: TarEntry) => boolean;

const BLOCK = 512;
/** No single file we extract comes near this; a bigger size field is a corrupt stream. */
export const MAX_TAR_ENTRY = 1 << 30;

function cstr(b: Uint8Array, start: number, len: number): string {
  let e = start;
  while (e < start + len && b[e] !== 0) e++;
  return new TextDecoder().decode(b.subarray(start, e));
}

function parseNumeric(b: Uint8Array, start: number, len: number): number | undefined {
  const first = b[start] ?? 0;
  if (first & 0x80) {
    // GNU base-256: big-endian, first byte's top bit is the marker.
    let v = first & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + (b[start + i] ?? 0);
    return Number.isSafeInteger(v) ? v : undefined;
  }
  const s = cstr(b, start, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return undefined;
  return parseInt(s, 8);
}

/**
 * Incremental tar parser: feed it chunks of a tar stream in order. Bounded: sizes are checked,
 * the header checksum is verified, and only selected entries are buffered.
 */
export class TarReader {
  #hdr = new Uint8Array(BLOCK);
  #hdrFill = 0;
  #remaining = 0; // data bytes of the current entry still to come
  #pad = 0; // padding bytes after the data
  #collect: Uint8Array | undefined;
  #collectPos = 0;
  #current: TarEntry | undefined;
  #longName: string | undefined;
  #paxPath: string | undefined;
  #meta: 'L' | 'x' | undefined;
  #ended = false;
  bytesSeen = 0;

  constructor(private readonly what: string, private readonly select: TarSelect, private readonly onFile: (e: TarEntry, data: Uint8Array) => void) {}

  get ended(): boolean { return this.#ended; }

  push(chunk: Uint8Array): void {
    this.bytesSeen += chunk.length;
    let p = 0;
    while (p < chunk.length && !this.#ended) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - p);
        if (this.#collect) { this.#collect.set(chunk.subarray(p, p + n), this.#collectPos); this.#collectPos += n; }
        this.#remaining -= n;
        p += n;
        if (this.#remaining === 0) this.#finishEntry();
        continue;
      }
      if (this.#pad > 0) {
        const n = Math.min(this.#pad, chunk.length - p);
        this.#pad -= n;
        p += n;
        continue;
      }
      const n = Math.min(BLOCK - this.#hdrFill, chunk.length - p);
      this.#hdr.set(chunk.subarray(p, p + n), this.#hdrFill);
      this.#hdrFill += n;
      p += n;
      if (this.#hdrFill === BLOCK) { this.#hdrFill = 0; this.#header(); }
    }
  }

  /** Call at end of stream: a stream that stops inside an entry is truncated. */
  end(): void {
    if (this.#remaining > 0 || this.#hdrFill > 0) throw new TshvError('EIMAGE', `${this.what}: tar stream truncated`);
  }

  #fail(msg: string): never { throw new TshvError('EIMAGE', `${this.what}: ${msg}`); }

  #header(): void {
    const h = this.#hdr;
    if (h.every((b) => b === 0)) { this.#ended = true; return; }
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] ?? 0);
    const stored = parseNumeric(h, 148, 8);
    if (stored !== sum) this.#fail(`tar header checksum mismatch at byte ${this.bytesSeen}`);
    const size = parseNumeric(h, 124, 12);
    if (size === undefined || size > MAX_TAR_ENTRY) this.#fail(`bad tar entry size at byte ${this.bytesSeen}`);
    const mode = parseNumeric(h, 100, 8) ?? 0;
    const flag = String.fromCharCode(h[156] ?? 0);
    const isUstar = cstr(h, 257, 5) === 'ustar';
    let name = cstr(h, 0, 100);
    if (isUstar) {
      const prefix = cstr(h, 345, 155);
      if (prefix) name = prefix + '/' + name;
    }
    if (this.#paxPath !== undefined) { name = this.#paxPath; this.#paxPath = undefined; }
    if (this.#longName !== undefined) { name = this.#longName; this.#longName = undefined; }
    this.#remaining = size;
    this.#pad = (BLOCK - (size % BLOCK)) % BLOCK;
    this.#collect = undefined;
    this.#collectPos = 0;
    this.#meta = undefined;
    if (flag === 'L' || flag === 'x') {
      if (size > 1 << 20) this.#fail('tar extended header too large');
      this.#meta = flag;
      this.#collect = new Uint8Array(size);
      this.#current = undefined;
    } else if (flag === 'g' || flag === 'K') {
      this.#current = undefined; // global pax header / long link name: skipped
    } else {
      const type: TarEntry['type'] = flag === '0' || flag === '\0' || flag === '7' ? 'file' : flag === '5' ? 'dir'
        : flag === '2' ? 'symlink' : flag === '1' ? 'hardlink' : 'other';
      const path = name.replace(/^(\.\/|\/)+/, '');
      const entry: TarEntry = { path, type, size: type === 'file' ? size : 0, mode: mode & 0o7777, linkName: cstr(h, 157, 100) };
      this.#current = entry;
      if (type === 'file' && this.select(entry)) this.#collect = new Uint8Array(size);
    }
    if (size === 0) this.#finishEntry();
  }

  #finishEntry(): void {
    const data = this.#collect;
    this.#collect = undefined;
    if (this.#meta !== undefined && data) {
      const text = new TextDecoder().decode(data);
      if (this.#meta === 'L') {
        this.#longName = text.replace(/\0.*$/s, '');
      } else {
        // pax records: "<len> key=value\n"
        for (const rec of text.split('\n')) {
          const m = /^\d+ path=(.*)$/s.exec(rec);
          if (m?.[1] !== undefined) this.#paxPath = m[1];
        }
      }
      this.#meta = undefined;
      return;
    }
    const e = this.#current;
    this.#current = undefined;
    if (e && data) this.onFile(e, data);
  }
}

/**
 * Stream `dpkg-deb --fsys-tarfile <deb>` through a TarReader. `onBytes` reports tar bytes read
 * so far (for progress).
 */
export function extractFromDeb(tools: ToolPaths, debPath: string, select: TarSelect,
  onFile: (e: TarEntry, data: Uint8Array) => void, onBytes?: (n: number) => void): Promise<void> {
  const tool = tools.dpkgDeb ?? 'dpkg-deb';
  return new Promise((resolve, reject) => {
    const reader = new TarReader(debPath, select, onFile);
    const child = spawn(tool, ['--fsys-tarfile', debPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let failed: Error | undefined;
    child.stdout.on('data', (c: Buffer) => {
      if (failed || reader.ended) return;
      try {
        reader.push(c);
        onBytes?.(reader.bytesSeen);
      } catch (e) {
        failed = e instanceof Error ? e : new Error(String(e));
        child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (c: Buffer) => { if (stderr.length < 16384) stderr += c.toString(); });
    child.on('error', (e: NodeJS.ErrnoException) => {
      failed ??= new TshvError('ETOOL', e.code === 'ENOENT' ? `${tool} not found${missingToolHint(tool)}` : `could not run ${tool}: ${e.message}`, { cause: e });
    });
    child.on('close', (code) => {
      if (failed) return reject(failed);
      if (code !== 0) return reject(new TshvError('ETOOL', `${tool} --fsys-tarfile ${debPath} failed (exit ${String(code)})${stderr ? ':\n' + stderrTail(stderr) : ''}`));
      try {
        if (!reader.ended) reader.end();
      } catch (e) {
        return reject(e instanceof Error ? e : new Error(String(e)));
      }
      resolve();
    });
  });
}
