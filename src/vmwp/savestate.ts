/**
 * Save and restore of a whole VM: every VP's architectural state (registers, MSRs, XSAVE,
 * LAPIC, pending events), every device's saved state, and guest memory, into the save file of
 * savefile.ts (the format, its checksums and its limits are described there).
 *
 * saveVm: the VM must be paused. It reads the VP and device states, finds the non-zero pages
 * of each memory block (a memcmp per page), and streams the file through one reusable buffer,
 * so a large guest is never held twice. The file is written atomically: a temporary file in
 * the target's directory, fsync, rename over the target, fsync of the directory. A failure
 * leaves any existing file at `path` untouched and removes the temporary file.
 *
 * restoreVm: the file is untrusted input. Pass 1 reads the whole file and checks its structure
 * and every checksum (scanSaveFile), then decodes and checks every section against the target
 * VM (same VP count, memory blocks, devices, and configuration if the caller gives one),
 * before anything the guest can see is changed. Pass 2 applies: VP states, device states (all
 * or nothing, each validated by its device), then memory, re-reading the pages and checking
 * their checksum again (the file might change between the passes). If any step of pass 2
 * fails, the VP and device states are put back and blocks that were all zero before (those of
 * a freshly created VM) are zeroed again. Progress counts file bytes read over both passes:
 * total = 2 x the file size.
 *
 * Not in the file (known gaps): the state of the backend's platform interrupt controllers
 * (the in-kernel IOAPIC/PIC/PIT of the kvm backend) has no winhv interface yet; the guests
 * that run on kvm today either use no interrupts or only LAPIC-delivered MSIs, whose state is
 * in the LAPIC page. Host-side handlers installed with installMsrIntercept are the caller's.
 */
import { open, rename, unlink, stat, type FileHandle } from 'node:fs/promises';
import { randomBytes, createHash } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { TshvError, errorMessage } from '../base/errors.js';
import type { VpState } from '../winhv/winhv.js';
import type { Vm } from './vm.js';
import {
  DIGEST_BYTES, HEADER_BYTES, SAVE_PAGE_SIZE, TRAILER_BYTES, SECTION_HEADER_FIXED_BYTES,
  SaveFileWriter, checkDeviceEnvelope, decodeHeader, decodeJson, decodeVpState, encodeJson,
  encodeMemoryHeader, encodeVpState, memorySectionBytes, parseMachineInfo, presentPages, scanSaveFile,
  type ByteSource, type MachineInfo, type MemorySectionHeader, type ScannedFile, type ScannedSection,
} from './savefile.js';

export type ProgressCallback = (doneBytes: number, totalBytes: number) => void;

export interface SaveOptions {
  /** The VM's configuration (JSON), stored so that restore can check it matches. */
  config: unknown;
  onProgress?: ProgressCallback;
}

export interface RestoreOptions {
  /** If given, must equal (as JSON, key order ignored) the configuration in the file. */
  config?: unknown;
  onProgress?: ProgressCallback;
}

export interface SaveFileInfo {
  path: string;
  fileBytes: number;
  /** True when the structure and every checksum are good. */
  valid: boolean;
  /** Why not, when !valid. */
  error?: string;
  formatVersion?: number;
  machine?: MachineInfo;
  config?: unknown;
  sections: { name: string; bytes: number }[];
  memory?: { totalBytes: number; storedPages: number; zeroPages: number };
}

/** Bytes per write / read of bulk data. */
const IO_CHUNK_BYTES = 8 << 20;

function ioError(op: string, path: string, e: unknown): TshvError {
  if (e instanceof TshvError) return e;
  return new TshvError('EINVAL', `cannot ${op} save file ${path}: ${errorMessage(e)}`, { cause: e });
}

// ---------------------------------------------------------------------------------------------
// Save

/**
 * Buffered, hashed output: container bytes and payload bytes go through two reusable buffers.
 * DEVNOTE: double buffering lets the thread pool write one buffer while this thread copies and
 * hashes into the other; at most two buffers of a large guest are ever held.
 */
class Output {
  readonly #bufs = [Buffer.allocUnsafe(IO_CHUNK_BYTES), Buffer.allocUnsafe(IO_CHUNK_BYTES)] as const;
  #buf: Buffer = this.#bufs[0];
  #n = 0;
  /** Start of payload bytes in the buffer not yet given to the writer's hash, or -1. */
  #hashFrom = -1;
  #pos = 0;
  #pending: Promise<void> = Promise.resolve();

  constructor(readonly fh: FileHandle, readonly writer: SaveFileWriter, readonly progress: (pos: number) => void) {}

  #hashPending(): void {
    if (this.#hashFrom >= 0) {
      this.writer.payload(this.#buf.subarray(this.#hashFrom, this.#n));
      this.#hashFrom = -1;
    }
  }

  async #writeAll(buf: Buffer, len: number, pos: number): Promise<void> {
    let off = 0;
    while (off < len) {
      const { bytesWritten } = await this.fh.write(buf, off, len - off, pos + off);
      if (bytesWritten <= 0) throw new TshvError('EINVAL', 'write made no progress');
      off += bytesWritten;
    }
    this.progress(pos + len);
  }

  /** Start writing the current buffer (after the previous write has finished) and switch buffers. */
  async flush(): Promise<void> {
    this.#hashPending();
    await this.#pending;
    const p = this.#writeAll(this.#buf, this.#n, this.#pos);
    p.catch(() => undefined);             // awaited by the next flush() or finish()
    this.#pending = p;
    this.#pos += this.#n;
    this.#n = 0;
    this.#buf = this.#buf === this.#bufs[0] ? this.#bufs[1] : this.#bufs[0];
  }

  /** Wait for the write in flight, ignoring its outcome (error paths, before closing). */
  settled(): Promise<void> { return this.#pending.catch(() => undefined); }

  /** Write everything still buffered and wait for it. */
  async finish(): Promise<void> {
    await this.flush();
    await this.#pending;
  }

  async #put(b: Uint8Array, payload: boolean): Promise<void> {
    let off = 0;
    while (off < b.length) {
      if (this.#n === this.#buf.length) await this.flush();
      if (!payload) this.#hashPending();
      else if (this.#hashFrom < 0) this.#hashFrom = this.#n;
      const n = Math.min(b.length - off, this.#buf.length - this.#n);
      this.#buf.set(b.subarray(off, off + n), this.#n);
      this.#n += n;
      off += n;
    }
  }

  /** Container bytes the writer produced (already counted by it). */
  raw(b: Uint8Array): Promise<void> { return this.#put(b, false); }
  /** Payload bytes of the open section. */
  payload(b: Uint8Array): Promise<void> { return this.#put(b, true); }

  async section(name: string, payloadBytes: number, body: () => Promise<void>): Promise<void> {
    await this.raw(this.writer.beginSection(name, payloadBytes));
    await body();
    this.#hashPending();
    await this.raw(this.writer.endSection());
  }
}

/**
 * Save the paused VM to `path` (atomically). Returns the file size and the time taken.
 * Throws ESTATE if the VM is running.
 */
export async function saveVm(vm: Vm, path: string, opts: SaveOptions): Promise<{ bytes: number; ms: number }> {
  if (vm.running) throw new TshvError('ESTATE', 'the VM must be paused before it is saved');
  const t0 = performance.now();
  const vps: Uint8Array[] = [];
  for (let i = 0; i < vm.vpCount; i++) vps.push(encodeVpState(await vm.getVpState(i)));
  const devices = vm.captureDeviceState();
  const blocks = vm.blocks.list().map((e) => {
    const pages = presentPages(e.block.bytes);
    const pageCount = e.block.size / SAVE_PAGE_SIZE;
    return { entry: e, pageCount, ...pages, header: encodeMemoryHeader(e.kind, pageCount, pages.bitmap, pages.presentCount) };
  });
  const machine: MachineInfo = {
    vpCount: vm.vpCount,
    memoryBytes: vm.memoryBytes,
    backend: vm.backend,
    createdAt: new Date().toISOString(),
    blocks: blocks.map((b) => ({ name: b.entry.name, kind: b.entry.kind, bytes: b.entry.block.size })),
    devices: [...devices.keys()],
  };
  const small: { name: string; payload: Uint8Array }[] = [
    { name: 'machine', payload: encodeJson(machine) },
    { name: 'config', payload: encodeJson(opts.config ?? null) },
    ...vps.map((payload, i) => ({ name: `vp/${i}`, payload })),
    ...[...devices].map(([name, state]) => ({ name: `device/${name}`, payload: encodeJson(state) })),
  ];
  const sectionOverhead = (name: string): number => SECTION_HEADER_FIXED_BYTES + name.length + DIGEST_BYTES;
  let total = HEADER_BYTES + TRAILER_BYTES;
  for (const s of small) total += sectionOverhead(s.name) + s.payload.length;
  for (const b of blocks) total += sectionOverhead(`memory/${b.entry.name}`) + memorySectionBytes(b.pageCount, b.presentCount);

  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh: FileHandle | undefined;
  let out: Output | undefined;
  try {
    fh = await open(tmp, 'wx', 0o600);
    const writer = new SaveFileWriter();
    const o = new Output(fh, writer, (pos) => opts.onProgress?.(pos, total));
    out = o;
    opts.onProgress?.(0, total);
    await o.raw(writer.header());
    for (const s of small) await o.section(s.name, s.payload.length, () => o.payload(s.payload));
    for (const b of blocks) {
      const bytes = b.entry.block.bytes;
      await o.section(`memory/${b.entry.name}`, memorySectionBytes(b.pageCount, b.presentCount), async () => {
        await o.payload(b.header);
        for (let p = 0; p < b.pageCount; p++) {
          if ((b.bitmap[p >> 3]! & (1 << (p & 7))) === 0) continue;
          await o.payload(bytes.subarray(p * SAVE_PAGE_SIZE, (p + 1) * SAVE_PAGE_SIZE));
        }
      });
    }
    await o.raw(writer.trailer());
    await o.finish();
    if (writer.offset !== total) throw new TshvError('ESTATE', `save file size ${writer.offset} differs from the computed ${total}`);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    await out?.settled();
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw ioError('write', path, e);
  }
  // The rename is durable only once the directory is synced.
  try {
    const d = await open(dir, 'r');
    try { await d.sync(); } finally { await d.close(); }
  } catch (e) {
    throw ioError('sync the directory of', path, e);
  }
  return { bytes: total, ms: performance.now() - t0 };
}

// ---------------------------------------------------------------------------------------------
// Restore

function fileSource(fh: FileHandle, size: number): ByteSource {
  return {
    size,
    async read(position, length) {
      const b = Buffer.allocUnsafe(length);
      let off = 0;
      while (off < length) {
        const { bytesRead } = await fh.read(b, off, length - off, position + off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return off === length ? b : b.subarray(0, off);
    },
  };
}

/** JSON text with object keys sorted, for comparing configurations. */
export function canonicalJson(v: unknown): string {
  const norm = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(norm);
    if (typeof x === 'object' && x !== null) {
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(x).sort()) Object.defineProperty(o, k, { value: norm((x as Record<string, unknown>)[k]), enumerable: true });
      return o;
    }
    return x;
  };
  return JSON.stringify(norm(JSON.parse(JSON.stringify(v ?? null)) as unknown)) ?? 'null';
}

interface Decoded {
  machine: MachineInfo;
  config: unknown;
  vps: VpState[];
  devices: Map<string, unknown>;
  memory: { section: ScannedSection; header: MemorySectionHeader; block: Uint8Array }[];
}

function imageError(path: string, what: string): TshvError {
  return new TshvError('EIMAGE', `save file ${path}: ${what}`);
}

/** Decode every section and check it against the target VM. Changes nothing. */
function decodeFor(vm: Vm, path: string, scanned: ScannedFile, opts: RestoreOptions): Decoded {
  const byName = new Map(scanned.sections.map((s) => [s.name, s]));
  const payloadOf = (name: string): Uint8Array => {
    const p = byName.get(name)?.payload;
    if (p === undefined) throw imageError(path, `missing section ${name}`);
    return p;
  };
  const machine = parseMachineInfo(decodeJson(payloadOf('machine'), path, 'machine'), path);
  const config = decodeJson(payloadOf('config'), path, 'config');
  const mismatch = (what: string): TshvError => new TshvError('ESTATE', `save file ${path} does not fit this VM: ${what}`);
  if (opts.config !== undefined && canonicalJson(opts.config) !== canonicalJson(config)) {
    throw mismatch('the configuration differs from the one the file was saved with');
  }
  if (machine.vpCount !== vm.vpCount) throw mismatch(`${machine.vpCount} virtual processors in the file, ${vm.vpCount} in the VM`);
  if (machine.memoryBytes !== vm.memoryBytes) throw mismatch(`${machine.memoryBytes} bytes of memory in the file, ${vm.memoryBytes} in the VM`);
  const vmBlocks = vm.blocks.list();
  if (machine.blocks.length !== vmBlocks.length) throw mismatch(`${machine.blocks.length} memory blocks in the file, ${vmBlocks.length} in the VM`);
  const units = vm.stateUnits().map((u) => u.name);
  if (machine.devices.length !== units.length || !units.every((n) => machine.devices.includes(n))) {
    throw mismatch(`devices in the file: ${machine.devices.join(', ')}; in the VM: ${units.join(', ')}`);
  }
  const expected = new Set<string>(['machine', 'config']);
  const vps: VpState[] = [];
  for (let i = 0; i < vm.vpCount; i++) {
    const name = `vp/${i}`;
    expected.add(name);
    vps.push(decodeVpState(payloadOf(name), path, name));
  }
  const devices = new Map<string, unknown>();
  for (const d of units) {
    const name = `device/${d}`;
    expected.add(name);
    const v = decodeJson(payloadOf(name), path, name);
    checkDeviceEnvelope(v, path, name);
    devices.set(d, v);
  }
  const memory: Decoded['memory'] = [];
  for (const e of vmBlocks) {
    const name = `memory/${e.name}`;
    expected.add(name);
    const info = machine.blocks.find((b) => b.name === e.name);
    if (info === undefined || info.kind !== e.kind || info.bytes !== e.block.size) {
      throw mismatch(`memory block ${e.name} (${e.kind}, ${e.block.size} bytes) is not in the file as it is in the VM`);
    }
    const s = byName.get(name);
    if (s?.memory === undefined) throw imageError(path, `missing section ${name}`);
    if (s.memory.kind !== e.kind || s.memory.pageCount * SAVE_PAGE_SIZE !== e.block.size) {
      throw imageError(path, `section ${name} holds ${s.memory.pageCount} ${s.memory.kind} pages, the machine section says ${e.block.size} bytes of ${e.kind}`);
    }
    memory.push({ section: s, header: s.memory, block: e.block.bytes });
  }
  for (const s of scanned.sections) if (!expected.has(s.name)) throw imageError(path, `unexpected section ${s.name}`);
  return { machine, config, vps, devices, memory };
}

function isAllZero(b: Uint8Array): boolean {
  const zero = Buffer.alloc(Math.min(b.length, 1 << 20));
  const whole = Buffer.from(b.buffer, b.byteOffset, b.length);
  for (let o = 0; o < b.length; o += zero.length) {
    const n = Math.min(zero.length, b.length - o);
    if (Buffer.compare(whole.subarray(o, o + n), zero.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/** Pass 2 for one memory block: pages from the file into the block, checksum checked again. */
async function applyMemory(src: ByteSource, path: string, m: Decoded['memory'][number], blockIsZero: boolean, progress: (pos: number) => void): Promise<void> {
  const { section, header, block } = m;
  const h = createHash('sha256');
  const headEnd = section.payloadOffset + header.headerBytes;
  h.update(await src.read(section.offset, headEnd - section.offset));
  const pagesEnd = section.payloadOffset + section.payloadBytes;
  let page = 0;
  const nextPresent = (): number => {
    // DEVNOTE: a block that is all zero already (a fresh VM's) is not zero-filled again: that
    // would make the host commit memory for every page the guest never touched.
    while (page < header.pageCount && (header.bitmap[page >> 3]! & (1 << (page & 7))) === 0) {
      if (!blockIsZero) block.fill(0, page * SAVE_PAGE_SIZE, (page + 1) * SAVE_PAGE_SIZE);
      page++;
    }
    return page;
  };
  for (let at = headEnd; at < pagesEnd;) {
    const n = Math.min(IO_CHUNK_BYTES, pagesEnd - at);
    const chunk = await src.read(at, n);
    if (chunk.length !== n) throw imageError(path, `section ${section.name} became shorter while it was restored`);
    h.update(chunk);
    for (let o = 0; o < n; o += SAVE_PAGE_SIZE) {
      const p = nextPresent();
      if (p >= header.pageCount) throw imageError(path, `section ${section.name} changed while it was restored`);
      block.set(chunk.subarray(o, o + SAVE_PAGE_SIZE), p * SAVE_PAGE_SIZE);
      page++;
    }
    at += n;
    progress(at);
  }
  nextPresent();
  const digest = new Uint8Array(h.digest());
  if (Buffer.compare(digest, section.digest) !== 0) throw imageError(path, `checksum mismatch in section ${section.name}: the file changed while it was restored`);
}

/**
 * Restore the VM from `path`. The VM must be freshly created with the same memory size, VP
 * count and devices, and not running. A bad file (EIMAGE) or a file that does not fit the VM
 * (ESTATE) is refused before anything the guest can see changes; the file is only read.
 */
export async function restoreVm(vm: Vm, path: string, opts: RestoreOptions = {}): Promise<void> {
  if (vm.running) throw new TshvError('ESTATE', 'the VM must not be running while it is restored');
  let fh: FileHandle;
  let size: number;
  try {
    fh = await open(path, 'r');
    size = (await fh.stat()).size;
  } catch (e) {
    throw ioError('open', path, e);
  }
  try {
    const src = fileSource(fh, size);
    const total = 2 * size;
    const report = opts.onProgress;
    report?.(0, total);
    const scanned = await scanSaveFile(src, { file: path, onProgress: (d) => report?.(d, total) });
    const dec = decodeFor(vm, path, scanned, opts);

    // Pass 2: apply, with rollback.
    const oldVps: VpState[] = [];
    for (let i = 0; i < vm.vpCount; i++) oldVps.push(await vm.getVpState(i));
    const oldDevices = vm.captureDeviceState();
    const wasZero = dec.memory.map((m) => isAllZero(m.block));
    let vpsSet = 0;
    let devicesSet = false;
    try {
      for (let i = 0; i < vm.vpCount; i++) {
        try {
          await vm.setVpState(i, dec.vps[i]!);
        } catch (e) {
          throw imageError(path, `section vp/${i}: the processor refused the state: ${errorMessage(e)}`);
        }
        vpsSet++;
      }
      try {
        vm.restoreDeviceState(dec.devices);
      } catch (e) {
        throw imageError(path, `device state refused: ${errorMessage(e)}`);
      }
      devicesSet = true;
      for (const [i, m] of dec.memory.entries()) await applyMemory(src, path, m, wasZero[i] === true, (pos) => report?.(size + pos, total));
    } catch (e) {
      for (let i = 0; i < vpsSet; i++) await vm.setVpState(i, oldVps[i]!).catch(() => undefined);
      if (devicesSet) vm.restoreDeviceState(oldDevices);
      dec.memory.forEach((m, i) => { if (wasZero[i] === true) m.block.fill(0); });
      throw e;
    }
    report?.(total, total);
  } catch (e) {
    throw ioError('read', path, e);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Inspect

/** What a save file holds and whether it is intact (for `tshv show`). Reads the whole file. */
export async function inspectSaveFile(path: string): Promise<SaveFileInfo> {
  let fh: FileHandle;
  let size: number;
  try {
    fh = await open(path, 'r');
    size = (await stat(path)).size;
  } catch (e) {
    throw ioError('open', path, e);
  }
  try {
    const src = fileSource(fh, size);
    const info: SaveFileInfo = { path, fileBytes: size, valid: false, sections: [] };
    try {
      const head = await src.read(0, Math.min(size, HEADER_BYTES));
      info.formatVersion = decodeHeader(head, path).formatVersion;
      const scanned = await scanSaveFile(src, { file: path });
      info.sections = scanned.sections.map((s) => ({ name: s.name, bytes: s.payloadBytes }));
      const machineRaw = scanned.sections[0]?.payload;
      const configRaw = scanned.sections[1]?.payload;
      if (machineRaw !== undefined) info.machine = parseMachineInfo(decodeJson(machineRaw, path, 'machine'), path);
      if (configRaw !== undefined) info.config = decodeJson(configRaw, path, 'config');
      let totalBytes = 0, storedPages = 0;
      for (const s of scanned.sections) {
        if (s.memory === undefined) continue;
        totalBytes += s.memory.pageCount * SAVE_PAGE_SIZE;
        storedPages += s.memory.presentCount;
      }
      info.memory = { totalBytes, storedPages, zeroPages: totalBytes / SAVE_PAGE_SIZE - storedPages };
      info.valid = true;
    } catch (e) {
      if (!(e instanceof TshvError) || e.code !== 'EIMAGE') throw e;
      info.error = e.message;
    }
    return info;
  } catch (e) {
    throw ioError('read', path, e);
  } finally {
    await fh.close().catch(() => undefined);
  }
}
