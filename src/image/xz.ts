/**
 * xz decompression for the kernel payload (and xz-compressed modules or initrds).
 *
 * Two decoders:
 * - the `xz-decompress` npm package (xz-embedded compiled to WebAssembly, no native code), used
 *   when the stream's filter chain is plain LZMA2;
 * - the `xz` tool (`xz -dc`, from xz-utils), used when the chain has a branch/call/jump filter.
 *
 * DEVNOTE: measured with linux-image-6.1.0-56-amd64: the kernel's payload is made by
 * scripts/xz_wrap.sh with `--x86 --lzma2=dict=32MiB`, i.e. the x86 BCJ filter in front of
 * LZMA2. The xz-embedded build inside xz-decompress 0.2.3 has no BCJ filters and rejects that
 * stream with XZ_OPTIONS_ERROR (code 6) at the first block header. So the kernel always goes
 * through `xz -dc` (about 0.6 s for 8 MB -> 66 MB); the WASM path stays for LZMA2-only data.
 * We read the filter IDs from the first block header (xz file format 1.1.0, section 3.1) to pick
 * the decoder up front instead of trying one and falling back.
 */
import { spawn } from 'node:child_process';
import xzPkg from 'xz-decompress';
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';

export const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] as const;
/** xz filter IDs (xz file format, section 5.3). */
export const XZ_FILTER_LZMA2 = 0x21;
export const XZ_FILTER_DELTA = 0x03;

export function hasXzMagic(b: Uint8Array): boolean {
  return b.length >= 6 && XZ_MAGIC.every((m, i) => b[i] === m);
}

function readVarint(b: Uint8Array, at: number, end: number): { value: number; next: number } | undefined {
  let v = 0;
  for (let i = 0; i < 9; i++) {
    const c = b[at + i];
    if (c === undefined || at + i >= end) return undefined;
    v += (c & 0x7f) * 2 ** (7 * i);
    if ((c & 0x80) === 0) return { value: v, next: at + i + 1 };
  }
  return undefined;
}

/**
 * The filter IDs of the first block of an xz stream, in chain order (the last one is LZMA2).
 * Returns [] for a stream with no blocks. Pure and bounded; throws EIMAGE naming `what`.
 */
export function xzFilterChain(b: Uint8Array, what: string): number[] {
  if (!hasXzMagic(b)) throw new TshvError('EIMAGE', `${what}: not xz data (bad magic)`);
  if (b.length < 13) throw new TshvError('EIMAGE', `${what}: xz stream truncated`);
  const sizeByte = b[12] ?? 0;
  if (sizeByte === 0) return []; // index indicator: no blocks
  const hdrEnd = 12 + (sizeByte + 1) * 4;
  if (hdrEnd > b.length) throw new TshvError('EIMAGE', `${what}: xz block header truncated`);
  const flags = b[13] ?? 0;
  const nFilters = (flags & 3) + 1;
  let p = 14;
  for (const present of [(flags & 0x40) !== 0, (flags & 0x80) !== 0]) {
    if (!present) continue;
    const v = readVarint(b, p, hdrEnd);
    if (v === undefined) throw new TshvError('EIMAGE', `${what}: bad xz block header at ${hex(12)}`);
    p = v.next;
  }
  const ids: number[] = [];
  for (let i = 0; i < nFilters; i++) {
    const id = readVarint(b, p, hdrEnd);
    if (id === undefined) throw new TshvError('EIMAGE', `${what}: bad xz filter flags`);
    const propSize = readVarint(b, id.next, hdrEnd);
    if (propSize === undefined || propSize.next + propSize.value > hdrEnd) throw new TshvError('EIMAGE', `${what}: bad xz filter properties`);
    ids.push(id.value);
    p = propSize.next + propSize.value;
  }
  return ids;
}

export interface XzOptions {
  /** Named in error messages, e.g. "vmlinuz-6.1.0-56-amd64 payload". */
  readonly what: string;
  /** Abort with EIMAGE once the output exceeds this many bytes. */
  readonly maxOutput: number;
  /** Path of the xz tool; default "xz" from PATH. */
  readonly xzTool?: string;
}

/** Decompress one xz stream (plus optional padding). */
export async function xzDecompress(data: Uint8Array, opts: XzOptions): Promise<Uint8Array> {
  const chain = xzFilterChain(data, opts.what);
  const wasmCan = chain.every((id) => id === XZ_FILTER_LZMA2 || id === XZ_FILTER_DELTA);
  return wasmCan ? xzDecompressWasm(data, opts) : xzDecompressTool(data, opts);
}

/** Through xz-decompress (WASM). Errors from the decoder become EIMAGE. */
export async function xzDecompressWasm(data: Uint8Array, opts: XzOptions): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    const stream = new xzPkg.XzReadableStream(new Blob([data]).stream());
    for await (const chunk of stream) {
      total += chunk.length;
      if (total > opts.maxOutput) {
        await stream.cancel().catch(() => undefined);
        throw new TshvError('EIMAGE', `${opts.what}: decompresses to more than ${opts.maxOutput} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (e) {
    if (e instanceof TshvError) throw e;
    throw new TshvError('EIMAGE', `${opts.what}: xz data is corrupt or truncated (${e instanceof Error ? e.message : String(e)})`, { cause: e });
  }
  return concat(chunks, total);
}

/** Through `xz -dc` with the data on stdin. */
export function xzDecompressTool(data: Uint8Array, opts: XzOptions): Promise<Uint8Array> {
  const tool = opts.xzTool ?? 'xz';
  return new Promise((resolve, reject) => {
    const child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const chunks: Uint8Array[] = [];
    let total = 0;
    let stderr = '';
    let failed: TshvError | undefined;
    child.on('error', (e: NodeJS.ErrnoException) => {
      failed ??= e.code === 'ENOENT'
        ? new TshvError('ETOOL', `${opts.what}: the '${tool}' tool was not found; it is needed because the WASM decoder lacks the x86 BCJ filter that kernel payloads use (install xz-utils)`)
        : new TshvError('ETOOL', `${opts.what}: could not run '${tool}': ${e.message}`);
    });
    child.stdout.on('data', (c: Buffer) => {
      total += c.length;
      if (total > opts.maxOutput) {
        failed ??= new TshvError('EIMAGE', `${opts.what}: decompresses to more than ${opts.maxOutput} bytes`);
        child.kill('SIGKILL');
        return;
      }
      chunks.push(c);
    });
    child.stderr.on('data', (c: Buffer) => { if (stderr.length < 4096) stderr += c.toString(); });
    child.stdin.on('error', () => { /* EPIPE when xz stops early; its exit status says why */ });
    child.on('close', (code) => {
      if (failed) return reject(failed);
      if (code !== 0) return reject(new TshvError('EIMAGE', `${opts.what}: xz data is corrupt or truncated (xz: ${stderr.trim() || `exit ${String(code)}`})`));
      resolve(concat(chunks, total));
    });
    child.stdin.end(data);
  });
}

function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let p = 0;
  for (const c of chunks) { out.set(c, p); p += c.length; }
  return out;
}
