/**
 * GuestMemory: the one type that touches guest RAM bytes.
 *
 * A partition's guest physical address space is a set of non-overlapping regions, each backed by
 * a MemoryBlock (a page-aligned SharedArrayBuffer, so that virtual-processor threads and the
 * device thread all see the same bytes). Every access through GuestMemory is bounds checked
 * against exactly one region; an access that leaves the region, or that lands where nothing is
 * mapped, fails with GuestMemoryError rather than touching anything.
 *
 * DEVNOTE: reads return copies (`read()` slices), so a parser never looks at bytes that the
 * guest can change under it (no double fetch). The processor backends are the one documented
 * exception: they are the "hardware" and get the raw region list through `regions()`.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';

/** A guest physical address: a non-negative safe integer below 2^52. */
export type Gpa = number & { readonly __brand: 'Gpa' };

export const PAGE_SIZE = 4096;
export const MAX_GPA = 2 ** 52;

export function gpa(n: number): Gpa {
  if (!Number.isSafeInteger(n) || n < 0 || n >= MAX_GPA) {
    throw new TshvError('EGUESTMEM', `invalid guest physical address ${String(n)}`);
  }
  return n as Gpa;
}

export type GuestMemoryErrorKind = 'OutOfRange' | 'Unmapped' | 'ReadOnly';

export class GuestMemoryError extends TshvError {
  constructor(readonly op: 'read' | 'write', readonly at: number, readonly len: number, readonly kind: GuestMemoryErrorKind) {
    super('EGUESTMEM', `guest memory ${op} error at ${hex(at)}+${hex(len)}: ${kind}`);
    this.name = 'GuestMemoryError';
  }
}

/**
 * A block of host memory that can back guest RAM or ROM: a SharedArrayBuffer of whole pages.
 * The buffer is over-allocated by one page so that a backend needing page-aligned host
 * addresses (KVM) can align it; `bytes` is the aligned view, `byteOffset` its start inside
 * `buffer`, both chosen by the backend through `alignTo`.
 */
export class MemoryBlock {
  readonly buffer: SharedArrayBuffer;
  #bytes: Uint8Array;
  /** Whether `bytes` was ever handed out (so the block may hold data). */
  #exposed = false;

  constructor(readonly size: number, readonly name: string) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new TshvError('EINVAL', `memory block ${name}: size ${size} is not a positive multiple of ${PAGE_SIZE}`);
    }
    this.buffer = new SharedArrayBuffer(size + PAGE_SIZE);
    this.#bytes = new Uint8Array(this.buffer, 0, size);
  }

  /** The block's bytes: what the guest sees at the region's first GPA. */
  get bytes(): Uint8Array {
    this.#exposed = true;
    return this.#bytes;
  }

  /**
   * Re-base the view so that it starts `offset` bytes into the buffer (0 <= offset < page).
   * Only a backend calls this, when it maps the block. If the view was handed out before,
   * the contents move with it; otherwise nothing is copied.
   * DEVNOTE: a fresh block is never copied, so a 256 MiB guest's RAM is not touched (and not
   * made resident) when it is mapped.
   */
  alignTo(offset: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= PAGE_SIZE) throw new TshvError('EINVAL', `bad alignment offset ${offset}`);
    const cur = this.#bytes.byteOffset;
    if (offset === cur) return;
    if (this.#exposed) new Uint8Array(this.buffer).copyWithin(offset, cur, cur + this.size);
    this.#bytes = new Uint8Array(this.buffer, offset, this.size);
  }
}

export interface Region {
  readonly start: number;         // first GPA
  readonly end: number;           // one past the last GPA
  readonly block: MemoryBlock;
  readonly writable: boolean;     // false for ROM: the guest's writes are intercepted
}

export class GuestMemory {
  #regions: Region[] = [];
  #view: DataView[] = [];

  /** Add a region; regions may not overlap. */
  map(at: Gpa, block: MemoryBlock, writable: boolean): Region {
    const end = at + block.size;
    if (end > MAX_GPA) throw new GuestMemoryError('write', at, block.size, 'OutOfRange');
    for (const r of this.#regions) {
      if (at < r.end && r.start < end) {
        throw new TshvError('EINVAL', `region ${block.name} at ${hex(at)} overlaps ${r.block.name} at ${hex(r.start)}`);
      }
    }
    const region: Region = { start: at, end, block, writable };
    this.#regions.push(region);
    this.#regions.sort((a, b) => a.start - b.start);
    this.#view = this.#regions.map((r) => new DataView(r.block.bytes.buffer, r.block.bytes.byteOffset, r.block.size));
    return region;
  }

  unmap(region: Region): void {
    const i = this.#regions.indexOf(region);
    if (i < 0) return;
    this.#regions.splice(i, 1);
    this.#view.splice(i, 1);
  }

  /** For processor backends only (see the module note). */
  regions(): readonly Region[] { return this.#regions; }

  /** The region holding [at, at+len), or undefined. */
  find(at: number, len: number): Region | undefined {
    const i = this.#index(at, len);
    return i < 0 ? undefined : this.#regions[i];
  }

  isMapped(at: number, len = 1): boolean { return this.#index(at, len) >= 0; }

  #index(at: number, len: number): number {
    if (!Number.isSafeInteger(at) || !Number.isSafeInteger(len) || at < 0 || len < 0) return -1;
    const regions = this.#regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      if (at >= r.start && at + len <= r.end) return i;
    }
    return -1;
  }

  #resolve(op: 'read' | 'write', at: number, len: number, bypassRom = false): number {
    if (!Number.isSafeInteger(at) || !Number.isSafeInteger(len) || at < 0 || len < 0 || at + len > MAX_GPA) {
      throw new GuestMemoryError(op, at, len, 'OutOfRange');
    }
    const i = this.#index(at, len);
    if (i < 0) throw new GuestMemoryError(op, at, len, 'Unmapped');
    if (op === 'write' && !bypassRom && !this.#regions[i]!.writable) throw new GuestMemoryError(op, at, len, 'ReadOnly');
    return i;
  }

  /** A copy of len bytes at `at`. */
  read(at: number, len: number): Uint8Array {
    const i = this.#resolve('read', at, len);
    const r = this.#regions[i]!;
    const off = at - r.start;
    return r.block.bytes.slice(off, off + len);
  }

  readU8(at: number): number {
    const i = this.#resolve('read', at, 1);
    return this.#view[i]!.getUint8(at - this.#regions[i]!.start);
  }
  readU16(at: number): number {
    const i = this.#resolve('read', at, 2);
    return this.#view[i]!.getUint16(at - this.#regions[i]!.start, true);
  }
  readU32(at: number): number {
    const i = this.#resolve('read', at, 4);
    return this.#view[i]!.getUint32(at - this.#regions[i]!.start, true);
  }
  readU64(at: number): bigint {
    const i = this.#resolve('read', at, 8);
    return this.#view[i]!.getBigUint64(at - this.#regions[i]!.start, true);
  }

  /**
   * Write bytes. `host: true` is for the parent (loaders, restore) writing into ROM regions;
   * guest-originated writes never pass it.
   */
  write(at: number, data: Uint8Array, opts?: { host?: boolean }): void {
    const i = this.#resolve('write', at, data.length, opts?.host === true);
    const r = this.#regions[i]!;
    r.block.bytes.set(data, at - r.start);
  }
  writeU8(at: number, v: number): void {
    const i = this.#resolve('write', at, 1);
    this.#view[i]!.setUint8(at - this.#regions[i]!.start, v);
  }
  writeU16(at: number, v: number): void {
    const i = this.#resolve('write', at, 2);
    this.#view[i]!.setUint16(at - this.#regions[i]!.start, v, true);
  }
  writeU32(at: number, v: number): void {
    const i = this.#resolve('write', at, 4);
    this.#view[i]!.setUint32(at - this.#regions[i]!.start, v >>> 0, true);
  }
  writeU64(at: number, v: bigint): void {
    const i = this.#resolve('write', at, 8);
    this.#view[i]!.setBigUint64(at - this.#regions[i]!.start, BigInt.asUintN(64, v), true);
  }
  fill(at: number, len: number, value: number, opts?: { host?: boolean }): void {
    const i = this.#resolve('write', at, len, opts?.host === true);
    const r = this.#regions[i]!;
    r.block.bytes.fill(value & 0xff, at - r.start, at - r.start + len);
  }
}
