/**
 * The tshv save file: the complete state of a paused VM, in a named, versioned, checksummed
 * container. Pure encoders and decoders over byte chunks; the file I/O is in savestate.ts.
 *
 * Layout (all integers little endian; "u64" lengths are held as two u32 halves and must be
 * below 2^53):
 *
 *   Header    16 bytes   "TSHVSAVE" | u32 format version (SAVE_FORMAT_VERSION) | u32 flags (0)
 *   Section*             "SECT" | u16 nameLen | u16 flags (0) | u64 payloadLen | name
 *                        | payload (payloadLen bytes)
 *                        | sha256(section header || payload) (32 bytes)
 *   Trailer   56 bytes   "TSHVEND!" | u32 sectionCount | u32 flags (0) | u64 fileBytes
 *                        | file digest (32 bytes)
 *
 * The file digest is sha256(header || for every section: its header and its digest ||
 * the first 24 trailer bytes). Every byte of the file is therefore covered: payloads by their
 * section digest, everything else by the file digest (which also covers the section digests).
 * DEVNOTE: a Merkle-style file digest instead of a second sha256 over every payload byte
 * halves the hashing cost of a large memory image and detects exactly as much.
 *
 * Sections (names are ASCII [a-z0-9._/-], at most 64 bytes; no duplicates):
 *   machine          JSON MachineInfo: VP count, memory size, blocks, devices, backend, time.
 *                    Always the first section.
 *   config           JSON: the VM's configuration as the caller (vmms) gave it. Second.
 *   vp/<n>           one VpState, encoded field by field (encodeVpState): every general and
 *                    special register, xcr0, pending events, halted, the 4096-byte XSAVE
 *                    area, the 1024-byte LAPIC page, and the MSRs as (index, value) pairs
 *                    (at most MAX_VP_MSRS).
 *   device/<name>    JSON of the device's SavedState ({schema, version, ...fields}).
 *   memory/<block>   one memory block: u8 kind (0 RAM, 1 ROM) | 3 reserved | u32 page size
 *                    (4096) | u32 pageCount | u32 presentCount | bitmap (ceil(pageCount/8)
 *                    bytes, bit i = page i is stored; bits past pageCount are 0) | the stored
 *                    pages, in page order. Pages that are all zero are not stored, so a
 *                    mostly empty 256 MiB guest saves and restores in milliseconds.
 *
 * Versioning: the reader accepts exactly SAVE_FORMAT_VERSION; any layout change bumps it.
 * Device states carry their own schema and version (src/vid/savedstate.ts).
 *
 * The reader treats the file as untrusted: every length is checked against the file size
 * before anything is read or allocated, counts are capped, names validated, and every problem
 * is a TshvError('EIMAGE') naming the file and what is wrong. It is fuzzed in
 * savefile.test.ts (random bytes, every truncation, every single-bit flip of a small file).
 */
import { createHash, type Hash } from 'node:crypto';
import { TshvError } from '../base/errors.js';
import {
  LAPIC_STATE_SIZE, XSAVE_AREA_SIZE,
  type GeneralRegisters, type SegmentRegister, type SpecialRegisters, type TableRegister, type VpState,
} from '../hv/backends/state.js';

export const SAVE_MAGIC = 'TSHVSAVE';
export const SAVE_FORMAT_VERSION = 1;
export const HEADER_BYTES = 16;
export const SECTION_MAGIC = 'SECT';
export const SECTION_HEADER_FIXED_BYTES = 16;
export const DIGEST_BYTES = 32;
export const TRAILER_MAGIC = 'TSHVEND!';
export const TRAILER_BYTES = 56;
const TRAILER_DIGEST_OFFSET = 24;

export const MAX_SECTIONS = 1024;
export const MAX_SECTION_NAME_BYTES = 64;
/** Largest JSON section (config, machine, device state). */
export const MAX_JSON_SECTION_BYTES = 1 << 20;
export const MAX_VP_MSRS = 1024;
export const SAVE_PAGE_SIZE = 4096;
/** 64 GiB of pages: the largest VM (vm.ts MAX_MEMORY_BYTES). */
export const MAX_BLOCK_PAGES = 1 << 24;
const MAX_SAFE_HI = 0x1fffff;                         // high half of a u64 below 2^53

const SECTION_NAME_RE = /^[a-z0-9][a-z0-9._/-]{0,63}$/;
const VP_NAME_RE = /^vp\/(0|[1-9][0-9]{0,2})$/;

/** What a section holds, from its name. */
export type SectionKind = 'machine' | 'config' | 'vp' | 'device' | 'memory';

function bad(file: string, what: string): TshvError {
  return new TshvError('EIMAGE', `save file ${file}: ${what}`);
}

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const MAGIC_BYTES = ascii(SAVE_MAGIC);
const SECTION_MAGIC_BYTES = ascii(SECTION_MAGIC);
const TRAILER_MAGIC_BYTES = ascii(TRAILER_MAGIC);

function sameBytes(a: Uint8Array, aOff: number, b: Uint8Array): boolean {
  if (aOff + b.length > a.length) return false;
  for (let i = 0; i < b.length; i++) if (a[aOff + i] !== b[i]) return false;
  return true;
}

function dv(b: Uint8Array): DataView { return new DataView(b.buffer, b.byteOffset, b.byteLength); }

function setU64n(v: DataView, off: number, n: number): void {
  v.setUint32(off, n % 0x100000000, true);
  v.setUint32(off + 4, Math.floor(n / 0x100000000), true);
}

/** A u64 length or offset as a number, or undefined if it is 2^53 or more. */
function getU64n(v: DataView, off: number): number | undefined {
  const hi = v.getUint32(off + 4, true);
  if (hi > MAX_SAFE_HI) return undefined;
  return hi * 0x100000000 + v.getUint32(off, true);
}

/** The kind of a valid section name, or undefined if the name is not one tshv writes. */
export function sectionKind(name: string): SectionKind | undefined {
  if (!SECTION_NAME_RE.test(name) || name.includes('//') || name.endsWith('/')) return undefined;
  if (name === 'machine') return 'machine';
  if (name === 'config') return 'config';
  if (VP_NAME_RE.test(name)) return 'vp';
  if (name.startsWith('device/') && name.length > 7) return 'device';
  if (name.startsWith('memory/') && name.length > 7) return 'memory';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Header, section header, trailer

export function encodeHeader(): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES);
  b.set(MAGIC_BYTES, 0);
  dv(b).setUint32(8, SAVE_FORMAT_VERSION, true);
  return b;
}

/** Check the 16-byte header; returns the format version. */
export function decodeHeader(b: Uint8Array, file: string): { formatVersion: number } {
  if (b.length < HEADER_BYTES) throw bad(file, `truncated: ${b.length} bytes, a save file starts with a ${HEADER_BYTES}-byte header`);
  if (!sameBytes(b, 0, MAGIC_BYTES)) throw bad(file, `bad magic: not a tshv save file (expected "${SAVE_MAGIC}")`);
  const v = dv(b);
  const version = v.getUint32(8, true);
  if (version !== SAVE_FORMAT_VERSION) throw bad(file, `unsupported format version ${version} (this build reads version ${SAVE_FORMAT_VERSION})`);
  const flags = v.getUint32(12, true);
  if (flags !== 0) throw bad(file, `unknown header flags 0x${flags.toString(16)}`);
  return { formatVersion: version };
}

export function encodeSectionHeader(name: string, payloadBytes: number): Uint8Array {
  if (sectionKind(name) === undefined) throw new TshvError('EINVAL', `invalid save file section name ${JSON.stringify(name)}`);
  if (!Number.isSafeInteger(payloadBytes) || payloadBytes < 0) throw new TshvError('EINVAL', `invalid section length ${payloadBytes}`);
  const b = new Uint8Array(SECTION_HEADER_FIXED_BYTES + name.length);
  const v = dv(b);
  b.set(SECTION_MAGIC_BYTES, 0);
  v.setUint16(4, name.length, true);
  setU64n(v, 8, payloadBytes);
  b.set(ascii(name), SECTION_HEADER_FIXED_BYTES);
  return b;
}

/** The fixed 16 bytes of a section header: the name length and payload length. */
export function decodeSectionHeaderFixed(b: Uint8Array, file: string, at: number): { nameBytes: number; payloadBytes: number } {
  if (b.length < SECTION_HEADER_FIXED_BYTES) throw bad(file, `truncated section header at offset ${at}`);
  if (!sameBytes(b, 0, SECTION_MAGIC_BYTES)) throw bad(file, `bad section magic at offset ${at}`);
  const v = dv(b);
  const nameBytes = v.getUint16(4, true);
  if (nameBytes === 0 || nameBytes > MAX_SECTION_NAME_BYTES) throw bad(file, `section at offset ${at}: name length ${nameBytes} is not 1..${MAX_SECTION_NAME_BYTES}`);
  const flags = v.getUint16(6, true);
  if (flags !== 0) throw bad(file, `section at offset ${at}: unknown flags 0x${flags.toString(16)}`);
  const payloadBytes = getU64n(v, 8);
  if (payloadBytes === undefined) throw bad(file, `section at offset ${at}: length does not fit in 2^53`);
  return { nameBytes, payloadBytes };
}

/** The name bytes of a section header: validated ASCII, a known kind. */
export function decodeSectionName(b: Uint8Array, file: string, at: number): { name: string; kind: SectionKind } {
  let name = '';
  for (const c of b) {
    if (c < 0x20 || c > 0x7e) throw bad(file, `section at offset ${at}: name is not printable ASCII`);
    name += String.fromCharCode(c);
  }
  const kind = sectionKind(name);
  if (kind === undefined) throw bad(file, `section at offset ${at}: unknown section name ${JSON.stringify(name)}`);
  return { name, kind };
}

export function encodeTrailerFields(sectionCount: number, fileBytes: number): Uint8Array {
  const b = new Uint8Array(TRAILER_DIGEST_OFFSET);
  const v = dv(b);
  b.set(TRAILER_MAGIC_BYTES, 0);
  v.setUint32(8, sectionCount, true);
  setU64n(v, 16, fileBytes);
  return b;
}

export function isTrailerStart(b: Uint8Array): boolean { return sameBytes(b, 0, TRAILER_MAGIC_BYTES.subarray(0, 4)); }

export function decodeTrailer(b: Uint8Array, file: string): { sectionCount: number; fileBytes: number; digest: Uint8Array } {
  if (b.length < TRAILER_BYTES) throw bad(file, 'truncated: the trailer is incomplete');
  if (!sameBytes(b, 0, TRAILER_MAGIC_BYTES)) throw bad(file, 'bad trailer magic');
  const v = dv(b);
  const flags = v.getUint32(12, true);
  if (flags !== 0) throw bad(file, `unknown trailer flags 0x${flags.toString(16)}`);
  const fileBytes = getU64n(v, 16);
  if (fileBytes === undefined) throw bad(file, 'trailer file length does not fit in 2^53');
  return { sectionCount: v.getUint32(8, true), fileBytes, digest: b.slice(TRAILER_DIGEST_OFFSET, TRAILER_BYTES) };
}

// ---------------------------------------------------------------------------------------------
// Writer: produces the container bytes in order; payloads stream through it.

/**
 * Builds a save file incrementally. The caller writes, in order: header(), then per section
 * beginSection() + its payload chunks (each passed to payload()) + endSection(), then trailer().
 * Every method returns the bytes to append (payload() returns nothing: the caller appends the
 * chunk it passed). The writer counts bytes and checks each payload has the declared length.
 */
export class SaveFileWriter {
  readonly #file = createHash('sha256');
  #section: { name: string; hash: Hash; declared: number; seen: number } | undefined;
  #sections = 0;
  #offset = 0;
  #names = new Set<string>();
  #started = false;

  get offset(): number { return this.#offset; }

  header(): Uint8Array {
    if (this.#started) throw new TshvError('ESTATE', 'save file header already written');
    this.#started = true;
    const h = encodeHeader();
    this.#file.update(h);
    this.#offset += h.length;
    return h;
  }

  beginSection(name: string, payloadBytes: number): Uint8Array {
    if (!this.#started || this.#section !== undefined) throw new TshvError('ESTATE', 'save file writer: section out of order');
    if (this.#names.has(name)) throw new TshvError('EINVAL', `duplicate save file section ${name}`);
    if (this.#sections >= MAX_SECTIONS) throw new TshvError('EINVAL', `more than ${MAX_SECTIONS} save file sections`);
    const h = encodeSectionHeader(name, payloadBytes);
    this.#names.add(name);
    this.#file.update(h);
    const hash = createHash('sha256').update(h);
    this.#section = { name, hash, declared: payloadBytes, seen: 0 };
    this.#offset += h.length;
    return h;
  }

  payload(chunk: Uint8Array): void {
    const s = this.#section;
    if (s === undefined) throw new TshvError('ESTATE', 'save file writer: payload outside a section');
    s.seen += chunk.length;
    if (s.seen > s.declared) throw new TshvError('ESTATE', `section ${s.name}: more than the declared ${s.declared} bytes`);
    s.hash.update(chunk);
    this.#offset += chunk.length;
  }

  endSection(): Uint8Array {
    const s = this.#section;
    if (s === undefined) throw new TshvError('ESTATE', 'save file writer: no open section');
    if (s.seen !== s.declared) throw new TshvError('ESTATE', `section ${s.name}: ${s.seen} bytes written, ${s.declared} declared`);
    const d = new Uint8Array(s.hash.digest());
    this.#file.update(d);
    this.#section = undefined;
    this.#sections++;
    this.#offset += d.length;
    return d;
  }

  trailer(): Uint8Array {
    if (!this.#started || this.#section !== undefined) throw new TshvError('ESTATE', 'save file writer: trailer out of order');
    const fields = encodeTrailerFields(this.#sections, this.#offset + TRAILER_BYTES);
    this.#file.update(fields);
    const out = new Uint8Array(TRAILER_BYTES);
    out.set(fields, 0);
    out.set(this.#file.digest(), TRAILER_DIGEST_OFFSET);
    this.#offset += out.length;
    return out;
  }
}

/** A whole save file in memory (tests, small files). */
export function encodeSaveFile(sections: readonly { name: string; payload: Uint8Array }[]): Uint8Array {
  const w = new SaveFileWriter();
  const parts: Uint8Array[] = [w.header()];
  for (const s of sections) {
    parts.push(w.beginSection(s.name, s.payload.length));
    w.payload(s.payload);
    parts.push(s.payload, w.endSection());
  }
  parts.push(w.trailer());
  return concat(parts);
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSON sections

export function encodeJson(value: unknown): Uint8Array {
  const text = JSON.stringify(value);
  if (typeof text !== 'string') throw new TshvError('EINVAL', 'value is not representable as JSON');
  const b = new TextEncoder().encode(text);
  if (b.length > MAX_JSON_SECTION_BYTES) throw new TshvError('EINVAL', `JSON section of ${b.length} bytes exceeds ${MAX_JSON_SECTION_BYTES}`);
  return b;
}

export function decodeJson(b: Uint8Array, file: string, section: string): unknown {
  if (b.length > MAX_JSON_SECTION_BYTES) throw bad(file, `section ${section}: ${b.length} bytes of JSON, at most ${MAX_JSON_SECTION_BYTES}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw bad(file, `section ${section}: not UTF-8`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw bad(file, `section ${section}: not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
}

/** The shape of a device SavedState envelope ({schema, version, ...}); the device checks the rest. */
export function checkDeviceEnvelope(v: unknown, file: string, section: string): { schema: string; version: number } {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(file, `section ${section}: a device state must be a JSON object`);
  const schema = Object.getOwnPropertyDescriptor(v, 'schema')?.value as unknown;
  const version = Object.getOwnPropertyDescriptor(v, 'version')?.value as unknown;
  if (typeof schema !== 'string' || schema.length === 0 || schema.length > 64) throw bad(file, `section ${section}: device state has no schema name`);
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 0) throw bad(file, `section ${section}: device state has no version`);
  return { schema, version };
}

/** The machine a save file was taken from; restore checks it against the target VM. */
export interface MachineInfo {
  vpCount: number;
  memoryBytes: number;
  backend: string;
  createdAt: string;
  blocks: { name: string; kind: 'ram' | 'rom'; bytes: number }[];
  devices: string[];
}

const BLOCK_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,47}$/;
const DEVICE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,47}$/;

/** Validate the machine section (a plain object with exactly these fields). */
export function parseMachineInfo(v: unknown, file: string): MachineInfo {
  const fail = (what: string): never => { throw bad(file, `section machine: ${what}`); };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('not an object');
  const o = v as Record<string, unknown>;
  const get = (k: string): unknown => (Object.hasOwn(o, k) ? o[k] : fail(`missing ${k}`));
  const int = (k: string, min: number, max: number): number => {
    const x = get(k);
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min || x > max) fail(`${k} must be an integer in [${min}, ${max}]`);
    return x as number;
  };
  const str = (k: string, max: number): string => {
    const x = get(k);
    if (typeof x !== 'string' || x.length > max) fail(`${k} must be a string of at most ${max} characters`);
    return x as string;
  };
  for (const k of Object.keys(o)) {
    if (!['vpCount', 'memoryBytes', 'backend', 'createdAt', 'blocks', 'devices'].includes(k)) fail(`unknown field ${k.slice(0, 40)}`);
  }
  const blocksRaw = get('blocks');
  if (!Array.isArray(blocksRaw) || blocksRaw.length > 64) fail('blocks must be an array of at most 64');
  const blocks = (blocksRaw as unknown[]).map((b, i) => {
    if (typeof b !== 'object' || b === null || Array.isArray(b)) fail(`blocks[${i}] is not an object`);
    const r = b as Record<string, unknown>;
    const name = r['name'], kind = r['kind'], bytes = r['bytes'];
    if (typeof name !== 'string' || !BLOCK_NAME_RE.test(name)) fail(`blocks[${i}].name is invalid`);
    if (kind !== 'ram' && kind !== 'rom') fail(`blocks[${i}].kind must be ram or rom`);
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0 || bytes % SAVE_PAGE_SIZE !== 0 || bytes / SAVE_PAGE_SIZE > MAX_BLOCK_PAGES) {
      fail(`blocks[${i}].bytes is invalid`);
    }
    if (Object.keys(r).length !== 3) fail(`blocks[${i}] has unknown fields`);
    return { name: name as string, kind: kind as 'ram' | 'rom', bytes: bytes as number };
  });
  const devRaw = get('devices');
  if (!Array.isArray(devRaw) || devRaw.length > 64) fail('devices must be an array of at most 64');
  const devices = (devRaw as unknown[]).map((d, i) => {
    if (typeof d !== 'string' || !DEVICE_NAME_RE.test(d)) fail(`devices[${i}] is invalid`);
    return d as string;
  });
  return {
    vpCount: int('vpCount', 1, 64),
    memoryBytes: int('memoryBytes', SAVE_PAGE_SIZE, 2 ** 40),
    backend: str('backend', 16),
    createdAt: str('createdAt', 40),
    blocks,
    devices,
  };
}

// ---------------------------------------------------------------------------------------------
// VP state

const GPR_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const satisfies readonly (keyof GeneralRegisters)[];
const SEG_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const satisfies readonly (keyof SpecialRegisters)[];
const CR_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const satisfies readonly (keyof SpecialRegisters)[];

const VP_GPR_OFF = 0;
const VP_SEG_OFF = VP_GPR_OFF + 18 * 8;               // 144
const SEG_BYTES = 24;
const VP_TABLE_OFF = VP_SEG_OFF + 8 * SEG_BYTES;      // 336
const VP_CR_OFF = VP_TABLE_OFF + 32;                   // 368
const VP_XCR0_OFF = VP_CR_OFF + 7 * 8;                 // 424
const VP_EVENTS_OFF = VP_XCR0_OFF + 8;                 // 432
const VP_MSRCOUNT_OFF = VP_EVENTS_OFF + 8;             // 440
const VP_XSAVE_OFF = VP_MSRCOUNT_OFF + 8;              // 448
const VP_LAPIC_OFF = VP_XSAVE_OFF + XSAVE_AREA_SIZE;   // 4544
/** Bytes of an encoded VpState before its MSR list. */
export const VP_FIXED_BYTES = VP_LAPIC_OFF + LAPIC_STATE_SIZE;   // 5568
const MSR_ENTRY_BYTES = 16;
export const MAX_VP_SECTION_BYTES = VP_FIXED_BYTES + MAX_VP_MSRS * MSR_ENTRY_BYTES;

const EV_EXCEPTION = 1 << 0;
const EV_ERROR_CODE = 1 << 1;
const EV_INTERRUPT = 1 << 2;
const EV_NMI_PENDING = 1 << 3;
const EV_NMI_MASKED = 1 << 4;
const EV_SHADOW = 1 << 5;
const EV_HALTED = 1 << 6;
const EV_ALL = 0x7f;
/** VMX access-rights bits that SegmentRegister.attributes may use (0-7, 12-16). */
const SEG_ATTR_MASK = 0x1f0ff;

const u64 = (x: bigint): bigint => BigInt.asUintN(64, x);

/** Encode one VP's state, every field explicitly (layout in the module header and above). */
export function encodeVpState(s: VpState): Uint8Array {
  if (s.xsave.length !== XSAVE_AREA_SIZE) throw new TshvError('EINVAL', `xsave area of ${s.xsave.length} bytes`);
  if (s.lapic.length !== LAPIC_STATE_SIZE) throw new TshvError('EINVAL', `lapic page of ${s.lapic.length} bytes`);
  if (s.msrs.size > MAX_VP_MSRS) throw new TshvError('EINVAL', `${s.msrs.size} MSRs, at most ${MAX_VP_MSRS}`);
  const b = new Uint8Array(VP_FIXED_BYTES + s.msrs.size * MSR_ENTRY_BYTES);
  const v = dv(b);
  GPR_NAMES.forEach((n, i) => v.setBigUint64(VP_GPR_OFF + i * 8, u64(s.regs[n]), true));
  SEG_NAMES.forEach((n, i) => {
    const seg = s.sregs[n];
    const o = VP_SEG_OFF + i * SEG_BYTES;
    v.setBigUint64(o, u64(seg.base), true);
    v.setUint32(o + 8, seg.limit >>> 0, true);
    v.setUint16(o + 12, seg.selector & 0xffff, true);
    v.setUint32(o + 16, (seg.attributes & SEG_ATTR_MASK) >>> 0, true);
  });
  const table = (t: TableRegister, o: number): void => {
    v.setBigUint64(o, u64(t.base), true);
    v.setUint16(o + 8, t.limit & 0xffff, true);
  };
  table(s.sregs.gdt, VP_TABLE_OFF);
  table(s.sregs.idt, VP_TABLE_OFF + 16);
  CR_NAMES.forEach((n, i) => v.setBigUint64(VP_CR_OFF + i * 8, u64(s.sregs[n]), true));
  v.setBigUint64(VP_XCR0_OFF, u64(s.xcr0), true);
  const e = s.events;
  let flags = 0;
  if (e.exception !== null) {
    flags |= EV_EXCEPTION;
    v.setUint8(VP_EVENTS_OFF + 1, e.exception.vector & 0x1f);
    if (e.exception.errorCode !== null) { flags |= EV_ERROR_CODE; v.setUint32(VP_EVENTS_OFF + 4, e.exception.errorCode >>> 0, true); }
  }
  if (e.interrupt !== null) { flags |= EV_INTERRUPT; v.setUint8(VP_EVENTS_OFF + 2, e.interrupt.vector & 0xff); }
  if (e.nmiPending) flags |= EV_NMI_PENDING;
  if (e.nmiMasked) flags |= EV_NMI_MASKED;
  if (e.interruptShadow) flags |= EV_SHADOW;
  if (s.halted) flags |= EV_HALTED;
  v.setUint8(VP_EVENTS_OFF, flags);
  v.setUint32(VP_MSRCOUNT_OFF, s.msrs.size, true);
  b.set(s.xsave, VP_XSAVE_OFF);
  b.set(s.lapic, VP_LAPIC_OFF);
  let o = VP_FIXED_BYTES;
  for (const [index, value] of [...s.msrs].sort((x, y) => x[0] - y[0])) {
    v.setUint32(o, index >>> 0, true);
    v.setBigUint64(o + 8, u64(value), true);
    o += MSR_ENTRY_BYTES;
  }
  return b;
}

/** Decode and validate one VP's state; every problem is an EIMAGE naming the section. */
export function decodeVpState(b: Uint8Array, file: string, section: string): VpState {
  const fail = (what: string): never => { throw bad(file, `section ${section}: ${what}`); };
  if (b.length < VP_FIXED_BYTES) fail(`${b.length} bytes, a VP state has at least ${VP_FIXED_BYTES}`);
  const v = dv(b);
  const count = v.getUint32(VP_MSRCOUNT_OFF, true);
  if (count > MAX_VP_MSRS) fail(`${count} MSRs, at most ${MAX_VP_MSRS}`);
  if (v.getUint32(VP_MSRCOUNT_OFF + 4, true) !== 0) fail('reserved bytes are not zero');
  if (b.length !== VP_FIXED_BYTES + count * MSR_ENTRY_BYTES) fail(`length ${b.length} does not match ${count} MSRs`);
  const regs = {} as GeneralRegisters;
  GPR_NAMES.forEach((n, i) => { regs[n] = v.getBigUint64(VP_GPR_OFF + i * 8, true); });
  const seg = (i: number): SegmentRegister => {
    const o = VP_SEG_OFF + i * SEG_BYTES;
    if (v.getUint16(o + 14, true) !== 0 || v.getUint32(o + 20, true) !== 0) fail(`segment ${SEG_NAMES[i] ?? i}: reserved bytes are not zero`);
    const attributes = v.getUint32(o + 16, true);
    if ((attributes & ~SEG_ATTR_MASK) !== 0) fail(`segment ${SEG_NAMES[i] ?? i}: reserved attribute bits set`);
    return { base: v.getBigUint64(o, true), limit: v.getUint32(o + 8, true), selector: v.getUint16(o + 12, true), attributes };
  };
  const table = (o: number, name: string): TableRegister => {
    if (v.getUint16(o + 10, true) !== 0 || v.getUint32(o + 12, true) !== 0) fail(`${name}: reserved bytes are not zero`);
    return { base: v.getBigUint64(o, true), limit: v.getUint16(o + 8, true) };
  };
  const cr = (i: number): bigint => v.getBigUint64(VP_CR_OFF + i * 8, true);
  const sregs: SpecialRegisters = {
    cs: seg(0), ds: seg(1), es: seg(2), fs: seg(3), gs: seg(4), ss: seg(5), tr: seg(6), ldt: seg(7),
    gdt: table(VP_TABLE_OFF, 'gdt'), idt: table(VP_TABLE_OFF + 16, 'idt'),
    cr0: cr(0), cr2: cr(1), cr3: cr(2), cr4: cr(3), cr8: cr(4), efer: cr(5), apicBase: cr(6),
  };
  const flags = v.getUint8(VP_EVENTS_OFF);
  if ((flags & ~EV_ALL) !== 0) fail('unknown event flags');
  const excVector = v.getUint8(VP_EVENTS_OFF + 1);
  const intVector = v.getUint8(VP_EVENTS_OFF + 2);
  const errorCode = v.getUint32(VP_EVENTS_OFF + 4, true);
  if (v.getUint8(VP_EVENTS_OFF + 3) !== 0) fail('reserved event byte is not zero');
  if ((flags & EV_EXCEPTION) === 0 && (excVector !== 0 || (flags & EV_ERROR_CODE) !== 0)) fail('exception fields without an exception');
  if (excVector > 31) fail(`exception vector ${excVector} is not 0..31`);
  if ((flags & EV_ERROR_CODE) === 0 && errorCode !== 0) fail('error code without its flag');
  if ((flags & EV_INTERRUPT) === 0 && intVector !== 0) fail('interrupt vector without an interrupt');
  const msrs = new Map<number, bigint>();
  for (let i = 0; i < count; i++) {
    const o = VP_FIXED_BYTES + i * MSR_ENTRY_BYTES;
    const index = v.getUint32(o, true);
    if (v.getUint32(o + 4, true) !== 0) fail(`MSR entry ${i}: reserved bytes are not zero`);
    if (msrs.has(index)) fail(`MSR 0x${index.toString(16)} appears twice`);
    msrs.set(index, v.getBigUint64(o + 8, true));
  }
  return {
    regs,
    sregs,
    xsave: b.slice(VP_XSAVE_OFF, VP_XSAVE_OFF + XSAVE_AREA_SIZE),
    xcr0: v.getBigUint64(VP_XCR0_OFF, true),
    msrs,
    lapic: b.slice(VP_LAPIC_OFF, VP_LAPIC_OFF + LAPIC_STATE_SIZE),
    events: {
      exception: (flags & EV_EXCEPTION) !== 0 ? { vector: excVector, errorCode: (flags & EV_ERROR_CODE) !== 0 ? errorCode : null } : null,
      interrupt: (flags & EV_INTERRUPT) !== 0 ? { vector: intVector } : null,
      nmiPending: (flags & EV_NMI_PENDING) !== 0,
      nmiMasked: (flags & EV_NMI_MASKED) !== 0,
      interruptShadow: (flags & EV_SHADOW) !== 0,
    },
    halted: (flags & EV_HALTED) !== 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Memory sections

export const MEMORY_HEADER_FIXED_BYTES = 16;
export type MemoryKind = 'ram' | 'rom';

export interface MemorySectionHeader {
  kind: MemoryKind;
  pageCount: number;
  presentCount: number;
  /** Bit i (byte i >> 3, bit i & 7) set: page i is stored. */
  bitmap: Uint8Array;
  /** Bytes of the memory header (fixed part + bitmap); pages follow. */
  headerBytes: number;
}

export function bitmapBytes(pageCount: number): number { return Math.ceil(pageCount / 8); }

/** Which pages of `bytes` (a whole number of pages) hold any non-zero byte. */
export function presentPages(bytes: Uint8Array): { bitmap: Uint8Array; presentCount: number } {
  if (bytes.length % SAVE_PAGE_SIZE !== 0) throw new TshvError('EINVAL', 'memory is not a whole number of pages');
  const pageCount = bytes.length / SAVE_PAGE_SIZE;
  const bitmap = new Uint8Array(bitmapBytes(pageCount));
  let presentCount = 0;
  // DEVNOTE: Buffer.compare is a memcmp; a word loop in JS is several times slower.
  const zero = Buffer.alloc(SAVE_PAGE_SIZE);
  const whole = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  for (let p = 0; p < pageCount; p++) {
    const page = whole.subarray(p * SAVE_PAGE_SIZE, (p + 1) * SAVE_PAGE_SIZE);
    if (Buffer.compare(page, zero) !== 0) {
      bitmap[p >> 3]! |= 1 << (p & 7);
      presentCount++;
    }
  }
  return { bitmap, presentCount };
}

export function encodeMemoryHeader(kind: MemoryKind, pageCount: number, bitmap: Uint8Array, presentCount: number): Uint8Array {
  if (bitmap.length !== bitmapBytes(pageCount)) throw new TshvError('EINVAL', 'bitmap length does not match the page count');
  const b = new Uint8Array(MEMORY_HEADER_FIXED_BYTES + bitmap.length);
  const v = dv(b);
  v.setUint8(0, kind === 'ram' ? 0 : 1);
  v.setUint32(4, SAVE_PAGE_SIZE, true);
  v.setUint32(8, pageCount, true);
  v.setUint32(12, presentCount, true);
  b.set(bitmap, MEMORY_HEADER_FIXED_BYTES);
  return b;
}

/** Payload length of a memory section. */
export function memorySectionBytes(pageCount: number, presentCount: number): number {
  return MEMORY_HEADER_FIXED_BYTES + bitmapBytes(pageCount) + presentCount * SAVE_PAGE_SIZE;
}

/** The fixed 16 bytes: kind and counts, checked against the section's payload length. */
export function decodeMemoryHeaderFixed(b: Uint8Array, payloadBytes: number, file: string, section: string): { kind: MemoryKind; pageCount: number; presentCount: number } {
  const fail = (what: string): never => { throw bad(file, `section ${section}: ${what}`); };
  if (b.length < MEMORY_HEADER_FIXED_BYTES || payloadBytes < MEMORY_HEADER_FIXED_BYTES) fail('truncated memory header');
  const v = dv(b);
  const k = v.getUint8(0);
  if (k > 1) fail(`unknown memory kind ${k}`);
  if (v.getUint8(1) !== 0 || v.getUint16(2, true) !== 0) fail('reserved bytes are not zero');
  const pageSize = v.getUint32(4, true);
  if (pageSize !== SAVE_PAGE_SIZE) fail(`page size ${pageSize}, expected ${SAVE_PAGE_SIZE}`);
  const pageCount = v.getUint32(8, true);
  const presentCount = v.getUint32(12, true);
  if (pageCount === 0 || pageCount > MAX_BLOCK_PAGES) fail(`page count ${pageCount} is not 1..${MAX_BLOCK_PAGES}`);
  if (presentCount > pageCount) fail(`${presentCount} stored pages of ${pageCount}`);
  if (memorySectionBytes(pageCount, presentCount) !== payloadBytes) fail(`length ${payloadBytes} does not match ${presentCount} stored pages of ${pageCount}`);
  return { kind: k === 0 ? 'ram' : 'rom', pageCount, presentCount };
}

/** Check the bitmap: no bits past pageCount, exactly presentCount bits set. */
export function checkMemoryBitmap(bitmap: Uint8Array, pageCount: number, presentCount: number, file: string, section: string): void {
  if (bitmap.length !== bitmapBytes(pageCount)) throw bad(file, `section ${section}: truncated page bitmap`);
  let n = 0;
  for (const byte of bitmap) { let x = byte; while (x !== 0) { x &= x - 1; n++; } }
  const tail = pageCount & 7;
  if (tail !== 0 && (bitmap[bitmap.length - 1]! >> tail) !== 0) throw bad(file, `section ${section}: page bitmap has bits past the last page`);
  if (n !== presentCount) throw bad(file, `section ${section}: page bitmap has ${n} pages, header says ${presentCount}`);
}

// ---------------------------------------------------------------------------------------------
// Scanner: structural validation of a whole file through a random-access byte source.

/** Random access to the file's bytes (a file handle in savestate.ts, an array in tests). */
export interface ByteSource {
  readonly size: number;
  /** Exactly `length` bytes at `position` (the caller has checked the range). */
  read(position: number, length: number): Promise<Uint8Array>;
}

export function bytesSource(b: Uint8Array): ByteSource {
  return { size: b.length, read: (position, length) => Promise.resolve(b.subarray(position, position + length)) };
}

export interface ScannedSection {
  name: string;
  kind: SectionKind;
  /** Offset of the section header. */
  offset: number;
  payloadOffset: number;
  payloadBytes: number;
  digest: Uint8Array;
  /** The payload, for every section but memory (all bounded small). */
  payload: Uint8Array | undefined;
  /** The decoded memory header, for memory sections. */
  memory: MemorySectionHeader | undefined;
}

export interface ScannedFile {
  formatVersion: number;
  fileBytes: number;
  sections: ScannedSection[];
}

export interface ScanOptions {
  /** For messages: the file's path. */
  file: string;
  /** Bytes per read of bulk payload; default 4 MiB. */
  chunkBytes?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

const DEFAULT_CHUNK_BYTES = 4 << 20;

function digestEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/**
 * Validate a save file's structure and every checksum: header, each section (header, name,
 * length within the file, digest), the trailer (count, length, file digest), no duplicate
 * sections, machine first and config second. Decodes the small sections' payloads and memory
 * headers. Throws TshvError('EIMAGE') on the first problem. Reads every byte once.
 */
export async function scanSaveFile(src: ByteSource, opts: ScanOptions): Promise<ScannedFile> {
  const file = opts.file;
  const size = src.size;
  const chunk = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const progress = opts.onProgress;
  const need = async (at: number, len: number, what: string): Promise<Uint8Array> => {
    if (at + len > size) throw bad(file, `truncated: ${what} at offset ${at} needs ${len} bytes, the file ends at ${size}`);
    const b = await src.read(at, len);
    if (b.length !== len) throw bad(file, `short read of ${what} at offset ${at}`);
    return b;
  };
  const fileHash = createHash('sha256');
  const head = await need(0, Math.min(HEADER_BYTES, size), 'header');
  const { formatVersion } = decodeHeader(head, file);
  fileHash.update(head);
  const sections: ScannedSection[] = [];
  const names = new Set<string>();
  let pos = HEADER_BYTES;
  for (;;) {
    const tag = await need(pos, 4, 'section or trailer');
    if (isTrailerStart(tag)) break;
    if (sections.length >= MAX_SECTIONS) throw bad(file, `more than ${MAX_SECTIONS} sections`);
    const offset = pos;
    const fixed = await need(pos, SECTION_HEADER_FIXED_BYTES, 'section header');
    const { nameBytes, payloadBytes } = decodeSectionHeaderFixed(fixed, file, pos);
    const nameRaw = await need(pos + SECTION_HEADER_FIXED_BYTES, nameBytes, 'section name');
    const { name, kind } = decodeSectionName(nameRaw, file, pos);
    if (names.has(name)) throw bad(file, `duplicate section ${name}`);
    names.add(name);
    if (sections.length === 0 && kind !== 'machine') throw bad(file, `the first section is ${name}, expected machine`);
    if (sections.length === 1 && kind !== 'config') throw bad(file, `the second section is ${name}, expected config`);
    if (sections.length >= 2 && (kind === 'machine' || kind === 'config')) throw bad(file, `section ${name} out of place`);
    const payloadOffset = pos + SECTION_HEADER_FIXED_BYTES + nameBytes;
    if (payloadOffset + payloadBytes + DIGEST_BYTES + TRAILER_BYTES > size) {
      throw bad(file, `truncated: section ${name} at offset ${offset} declares ${payloadBytes} bytes, more than the file holds`);
    }
    const h = createHash('sha256').update(fixed).update(nameRaw);
    fileHash.update(fixed).update(nameRaw);
    let payload: Uint8Array | undefined;
    let memory: MemorySectionHeader | undefined;
    if (kind === 'memory') {
      const mfixed = await need(payloadOffset, Math.min(MEMORY_HEADER_FIXED_BYTES, payloadBytes), `section ${name} memory header`);
      const m = decodeMemoryHeaderFixed(mfixed, payloadBytes, file, name);
      const bitmap = await need(payloadOffset + MEMORY_HEADER_FIXED_BYTES, bitmapBytes(m.pageCount), `section ${name} page bitmap`);
      checkMemoryBitmap(bitmap, m.pageCount, m.presentCount, file, name);
      h.update(mfixed).update(bitmap);
      const headerBytes = MEMORY_HEADER_FIXED_BYTES + bitmap.length;
      memory = { ...m, bitmap: bitmap.slice(), headerBytes };
      for (let at = payloadOffset + headerBytes; at < payloadOffset + payloadBytes;) {
        const n = Math.min(chunk, payloadOffset + payloadBytes - at);
        h.update(await need(at, n, `section ${name} pages`));
        at += n;
        progress?.(at, size);
      }
    } else {
      const max = kind === 'vp' ? MAX_VP_SECTION_BYTES : MAX_JSON_SECTION_BYTES;
      if (payloadBytes > max) throw bad(file, `section ${name}: ${payloadBytes} bytes, at most ${max}`);
      payload = (await need(payloadOffset, payloadBytes, `section ${name}`)).slice();
      h.update(payload);
    }
    const digest = await need(payloadOffset + payloadBytes, DIGEST_BYTES, `section ${name} checksum`);
    if (!digestEqual(new Uint8Array(h.digest()), digest)) throw bad(file, `checksum mismatch in section ${name} (offset ${offset})`);
    fileHash.update(digest);
    sections.push({ name, kind, offset, payloadOffset, payloadBytes, digest: digest.slice(), payload, memory });
    pos = payloadOffset + payloadBytes + DIGEST_BYTES;
    progress?.(pos, size);
  }
  const tb = await need(pos, TRAILER_BYTES, 'trailer');
  const t = decodeTrailer(tb, file);
  if (t.sectionCount !== sections.length) throw bad(file, `trailer counts ${t.sectionCount} sections, the file holds ${sections.length}`);
  if (t.fileBytes !== pos + TRAILER_BYTES) throw bad(file, `trailer says ${t.fileBytes} bytes, it ends at ${pos + TRAILER_BYTES}`);
  if (size !== pos + TRAILER_BYTES) throw bad(file, `${size - pos - TRAILER_BYTES} unexpected bytes after the trailer`);
  fileHash.update(tb.subarray(0, TRAILER_DIGEST_OFFSET));
  if (!digestEqual(new Uint8Array(fileHash.digest()), t.digest)) throw bad(file, 'whole-file checksum mismatch (header, section table or trailer damaged)');
  if (sections.length < 2) throw bad(file, 'missing the machine and config sections');
  progress?.(size, size);
  return { formatVersion, fileBytes: size, sections };
}
