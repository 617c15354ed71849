/**
 * IoDispatcher: the VID's "vmotherboard" — routes port I/O and MMIO intercepts to devices and
 * owns the bus policy.
 *
 * After OpenVMM's chipset dispatcher (vmotherboard) and the bus-policy notes in
 * shared/reference/style-by-example.md. Devices register by capability (`ChipsetDevice`,
 * device.ts); every exit then costs one table lookup and one call:
 * - ports: an Int16Array of 65536 entries maps each port to a PIO region index (-1: none);
 * - MMIO: regions sorted by first GPA in Float64Arrays, found by binary search.
 * The four entry points have the shape of ExitHandler's pio/mmio methods
 * (src/hv/backends/backend.ts), so the composition root forwards exits to them unchanged.
 *
 * Bus policy (devices never decide these):
 * - An unmapped read returns all-ones of the access size (0xFF, 0xFFFF, 0xFFFFFFFF; MMIO: every
 *   byte 0xFF); an unmapped write is dropped. Both are counted and logged rate-limited.
 * - A device error (IoError) is treated the same way: all-ones / dropped, counted against the
 *   device, logged rate-limited.
 * - Registration rejects any overlap between regions (PIO with PIO, MMIO with MMIO), with an
 *   error that names both devices, and is all-or-nothing per device.
 * - An access that starts inside a region and runs past its end (or starts in one region and
 *   ends in another, or in a hole) is SPLIT into single-byte accesses, each dispatched on its
 *   own (to whichever device decodes that byte, or unmapped), and the bytes are reassembled
 *   little-endian. DEVNOTE: this is what an ISA bus does with a wide cycle to 8-bit decoders,
 *   and it means a device never sees an access that leaves its region (no device has to bounds
 *   check against its own end, which is the crosvm bug class). Devices that want only aligned
 *   wide accesses reject the single bytes with InvalidAccessSize and the bus turns those
 *   bytes into 0xFF. A port access past 0xFFFF sees the bytes above 0xFFFF as unmapped.
 *
 * Counters are plain numbers on preallocated objects; `stats()` copies them into a plain
 * object for statistics. Hot paths allocate nothing: the log message closures are created once
 * and read the last access from fields, and a FloodGate keeps floods of unmapped accesses
 * (port 0x80 delays, probing) from reading the clock on every access, so such a flood costs a
 * counter increment and a decrement.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';
import { Logger, RateLimitedLog } from '../base/log.js';
import { MAX_GPA } from '../guestmem/guestmem.js';
import type { ChipsetDevice, IoError, IoRegion, MmioIntercept, PioSize, PortIoIntercept } from './device.js';
import { ioReadErrorOf } from './device.js';
import { RomDevice, type RomRegion } from './rom.js';

/** Per-device counters (accesses that reached the device; errors it returned). */
export interface DeviceCounters {
  pioReads: number;
  pioWrites: number;
  mmioReads: number;
  mmioWrites: number;
  errors: number;
}

/** Bus-level counters. */
export interface BusCounters {
  unmappedPioReads: number;
  unmappedPioWrites: number;
  unmappedMmioReads: number;
  unmappedMmioWrites: number;
  /** Accesses that crossed a region boundary and were split into bytes. */
  splitAccesses: number;
  /** Guest writes into ROM that no device owned. */
  romWritesDropped: number;
}

export interface DispatcherStats {
  bus: BusCounters;
  devices: Record<string, DeviceCounters>;
}

export interface IoDispatcherOptions {
  /** Logger for bus warnings (default: component 'vid'). */
  logger?: Logger;
  /** Rate limit per warning kind: at most `burst` lines per `periodMs` (default 10 / 5 s). */
  burst?: number;
  periodMs?: number;
  /** Clock for the rate limiter (tests). */
  now?: () => number;
}

interface DeviceSlot {
  readonly device: ChipsetDevice;
  readonly pio: PortIoIntercept | undefined;
  readonly mmio: MmioIntercept | undefined;
  readonly counters: DeviceCounters;
}

interface RegionEntry {
  readonly slot: DeviceSlot;
  readonly name: string;
  readonly first: number;
  readonly last: number;
}

/**
 * A RateLimitedLog in front of which floods are thinned out.
 *
 * DEVNOTE: RateLimitedLog reads its clock on every call, and `Date.now()` returns a boxed heap
 * number, so calling it per unmapped access allocated ~16 bytes per exit (measured: 313
 * scavenges per 20M unmapped port writes, none with this gate). Once the limiter has started
 * suppressing, the gate skips the next `stride - 1` calls without asking it (counting them in
 * `skipped`), then asks again. Cost: after a window ends, up to `stride - 1` more events of the
 * same flood go unlogged, and the limiter's "N similar messages suppressed" line counts only
 * the calls it saw; `suppressed` here is the true total.
 */
class FloodGate {
  #skip = 0;
  skipped = 0;
  constructor(readonly log: RateLimitedLog, readonly stride = 256) {}

  warn(msg: () => string): void {
    if (this.#skip > 0) {
      this.#skip--;
      this.skipped++;
      return;
    }
    const before = this.log.suppressed;
    this.log.warn(msg);
    if (this.log.suppressed !== before) this.#skip = this.stride - 1;
  }

  get suppressed(): number { return this.log.suppressed + this.skipped; }
}

const PORT_COUNT = 0x10000;
const MAX_REGIONS = 0x7fff;   // region indices live in an Int16Array

function sizeMask(size: number): number {
  return size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff;
}

export class IoDispatcher {
  // Fixed configuration
  readonly #slots: DeviceSlot[] = [];
  readonly #names = new Set<string>();
  readonly #portMap = new Int16Array(PORT_COUNT).fill(-1);
  readonly #pioRegions: RegionEntry[] = [];
  #mmioRegions: RegionEntry[] = [];
  #mmioFirst = new Float64Array(0);
  #mmioLast = new Float64Array(0);

  // Runtime glue
  readonly #byte = new Uint8Array(1);           // scratch for split MMIO accesses
  readonly #bus: BusCounters = {
    unmappedPioReads: 0, unmappedPioWrites: 0, unmappedMmioReads: 0, unmappedMmioWrites: 0,
    splitAccesses: 0, romWritesDropped: 0,
  };
  readonly #unmappedLog: FloodGate;
  readonly #errorLog: FloodGate;
  readonly #romLog: FloodGate;
  // The last access that produced a warning; read by the preallocated message closures.
  #lastSpace: 'port' | 'mmio' = 'port';
  #lastWrite = false;
  #lastAddr = 0;
  #lastSize = 0;
  #lastDevice = '';
  #lastError: IoError = 'InvalidRegister';
  #lastRom = '';
  readonly #unmappedMsg = (): string =>
    `unmapped ${this.#lastSpace} ${this.#lastWrite ? 'write' : 'read'} at ${hex(this.#lastAddr)} size ${this.#lastSize}`;
  readonly #errorMsg = (): string =>
    `${this.#lastDevice}: ${this.#lastError} on ${this.#lastSpace} ${this.#lastWrite ? 'write' : 'read'} at ${hex(this.#lastAddr)} size ${this.#lastSize}`;
  readonly #romMsg = (): string =>
    `guest write to ROM ${this.#lastRom} at ${hex(this.#lastAddr)} size ${this.#lastSize} dropped`;

  constructor(opts: IoDispatcherOptions = {}) {
    const logger = opts.logger ?? new Logger('vid');
    const burst = opts.burst ?? 10;
    const period = opts.periodMs ?? 5000;
    const now = opts.now ?? Date.now;
    this.#unmappedLog = new FloodGate(new RateLimitedLog(logger, burst, period, now));
    this.#errorLog = new FloodGate(new RateLimitedLog(logger, burst, period, now));
    this.#romLog = new FloodGate(new RateLimitedLog(logger, burst, period, now));
  }

  // ---------------------------------------------------------------- registration (host only)

  /**
   * Register a device's PIO and MMIO regions. Throws TshvError('EINVAL') on a duplicate name, a
   * malformed region or an overlap; on error nothing is registered.
   */
  register(device: ChipsetDevice): void {
    const name = device.debugName;
    if (this.#names.has(name)) throw new TshvError('EINVAL', `device ${name} is already registered`);
    const pio = device.supportsPio?.();
    const mmio = device.supportsMmio?.();
    const slot: DeviceSlot = { device, pio, mmio, counters: { pioReads: 0, pioWrites: 0, mmioReads: 0, mmioWrites: 0, errors: 0 } };

    const newPio: RegionEntry[] = [];
    for (const r of pio?.pioRegions() ?? []) {
      this.#checkRegion(name, 'port', r, PORT_COUNT - 1);
      newPio.push({ slot, name: r.name, first: r.first, last: r.last });
    }
    const newMmio: RegionEntry[] = [];
    for (const r of mmio?.mmioRegions() ?? []) {
      this.#checkRegion(name, 'mmio', r, MAX_GPA - 1);
      newMmio.push({ slot, name: r.name, first: r.first, last: r.last });
    }
    IoDispatcher.#checkOverlaps('port', newPio, this.#pioRegions);
    IoDispatcher.#checkOverlaps('mmio', newMmio, this.#mmioRegions);
    if (this.#pioRegions.length + newPio.length > MAX_REGIONS) throw new TshvError('EINVAL', 'too many port regions');

    // Commit.
    this.#names.add(name);
    this.#slots.push(slot);
    for (const e of newPio) {
      const idx = this.#pioRegions.length;
      this.#pioRegions.push(e);
      this.#portMap.fill(idx, e.first, e.last + 1);
    }
    if (newMmio.length > 0) {
      this.#mmioRegions = [...this.#mmioRegions, ...newMmio].sort((a, b) => a.first - b.first);
      this.#mmioFirst = Float64Array.from(this.#mmioRegions, (e) => e.first);
      this.#mmioLast = Float64Array.from(this.#mmioRegions, (e) => e.last);
    }
  }

  /**
   * Register a ROM region: guest writes into it are handed to `owner` if given, else dropped
   * (counted in `romWritesDropped`, warned rate-limited). Returns the intercept standing for it.
   */
  registerRom(rom: RomRegion, owner?: MmioIntercept): RomDevice {
    const dev = new RomDevice(rom, owner, (r, gpa, len) => {
      this.#bus.romWritesDropped++;
      this.#lastRom = r.name;
      this.#lastAddr = gpa;
      this.#lastSize = len;
      this.#romLog.warn(this.#romMsg);
    });
    this.register(dev);
    return dev;
  }

  #checkRegion(device: string, space: string, r: IoRegion, max: number): void {
    if (!Number.isSafeInteger(r.first) || !Number.isSafeInteger(r.last) || r.first < 0 || r.last < r.first || r.last > max) {
      throw new TshvError('EINVAL', `device ${device}: bad ${space} region ${r.name} ${hex(r.first)}-${hex(r.last)}`);
    }
  }

  static #checkOverlaps(space: string, added: readonly RegionEntry[], existing: readonly RegionEntry[]): void {
    const all = [...existing, ...added];
    for (let i = existing.length; i < all.length; i++) {
      const a = all[i]!;
      for (let j = 0; j < i; j++) {
        const b = all[j]!;
        if (a.first <= b.last && b.first <= a.last) {
          throw new TshvError('EINVAL',
            `${space} region ${a.slot.device.debugName}/${a.name} ${hex(a.first)}-${hex(a.last)} overlaps ` +
            `${b.slot.device.debugName}/${b.name} ${hex(b.first)}-${hex(b.last)}`);
        }
      }
    }
  }

  /** The devices registered, in order. */
  devices(): readonly ChipsetDevice[] { return this.#slots.map((s) => s.device); }

  // ---------------------------------------------------------------- port I/O (hot path)

  /** IN: the value of the low `size` bytes (all-ones where nothing answers). */
  pioRead(_vp: number, port: number, size: PioSize): number {
    const e = this.#pioEntry(port, size);
    if (e !== undefined) return this.#pioReadOne(e, port, size);
    if (port + size - 1 > this.#pioEntryLastOrHole(port)) return this.#pioReadSplit(port, size);
    return this.#unmappedPioRead(port, size);
  }

  /** OUT of the low `size` bytes of `value`. */
  pioWrite(_vp: number, port: number, size: PioSize, value: number): void {
    const e = this.#pioEntry(port, size);
    if (e !== undefined) {
      this.#pioWriteOne(e, port, size, (value & sizeMask(size)) >>> 0);
      return;
    }
    if (port + size - 1 > this.#pioEntryLastOrHole(port)) {
      this.#pioWriteSplit(port, size, value);
      return;
    }
    this.#unmappedPioWrite(port, size);
  }

  /** The region entry holding the whole access [port, port+size), if one does. */
  #pioEntry(port: number, size: number): RegionEntry | undefined {
    const idx = this.#portMap[port];
    if (idx === undefined || idx < 0) return undefined;
    const e = this.#pioRegions[idx];
    return e !== undefined && port + size - 1 <= e.last ? e : undefined;
  }

  /**
   * Where the access starting at `port` stops being decoded the same way: the last port of
   * its region, or for a hole, the last port before the next region starts.
   */
  #pioEntryLastOrHole(port: number): number {
    const map = this.#portMap;
    const idx = map[port];
    if (idx === undefined) return Infinity;   // outside the port space: treat as one unmapped access
    if (idx >= 0) return this.#pioRegions[idx]!.last;
    let p = port + 1;
    while (p < PORT_COUNT && p < port + 4 && map[p] === -1) p++;
    return p >= PORT_COUNT ? Infinity : p - 1;
  }

  #pioReadOne(e: RegionEntry, port: number, size: PioSize): number {
    const slot = e.slot;
    slot.counters.pioReads++;
    const v = slot.pio!.ioRead(port, size);
    if (v < 0 || !Number.isFinite(v)) {
      this.#deviceError(slot, 'port', false, port, size, ioReadErrorOf(v) ?? 'InvalidRegister');
      return sizeMask(size);
    }
    return (v & sizeMask(size)) >>> 0;
  }

  #pioWriteOne(e: RegionEntry, port: number, size: PioSize, value: number): void {
    const slot = e.slot;
    slot.counters.pioWrites++;
    const r = slot.pio!.ioWrite(port, size, value);
    if (r !== 'ok') this.#deviceError(slot, 'port', true, port, size, r);
  }

  #pioReadSplit(port: number, size: PioSize): number {
    this.#bus.splitAccesses++;
    let v = 0;
    for (let i = 0; i < size; i++) {
      const p = port + i;
      const e = p < PORT_COUNT ? this.#pioEntry(p, 1) : undefined;
      const b = e !== undefined ? this.#pioReadOne(e, p, 1) : this.#unmappedPioRead(p, 1);
      v += b * 2 ** (8 * i);
    }
    return v;
  }

  #pioWriteSplit(port: number, size: PioSize, value: number): void {
    this.#bus.splitAccesses++;
    const v = (value & sizeMask(size)) >>> 0;
    for (let i = 0; i < size; i++) {
      const p = port + i;
      const b = (v >>> (8 * i)) & 0xff;
      const e = p < PORT_COUNT ? this.#pioEntry(p, 1) : undefined;
      if (e !== undefined) this.#pioWriteOne(e, p, 1, b);
      else this.#unmappedPioWrite(p, 1);
    }
  }

  #unmappedPioRead(port: number, size: number): number {
    this.#bus.unmappedPioReads++;
    this.#warnUnmapped('port', false, port, size);
    return sizeMask(size);
  }

  #unmappedPioWrite(port: number, size: number): void {
    this.#bus.unmappedPioWrites++;
    this.#warnUnmapped('port', true, port, size);
  }

  // ---------------------------------------------------------------- MMIO (hot path)

  /** A read of `data.length` bytes at `gpa`: fills `data` (all-ones where nothing answers). */
  mmioRead(_vp: number, gpa: number, data: Uint8Array): void {
    const len = data.length;
    if (len === 0) return;
    const i = this.#mmioIndex(gpa);
    if (i >= 0 && gpa + len - 1 <= this.#mmioLast[i]!) {
      this.#mmioReadOne(this.#mmioRegions[i]!.slot, gpa, data);
      return;
    }
    if (i < 0 && this.#mmioIndex(gpa + len - 1) < 0 && !this.#mmioAnyStartsIn(gpa, gpa + len - 1)) {
      this.#bus.unmappedMmioReads++;
      this.#warnUnmapped('mmio', false, gpa, len);
      data.fill(0xff);
      return;
    }
    // Crosses a boundary: byte by byte.
    this.#bus.splitAccesses++;
    const b = this.#byte;
    for (let k = 0; k < len; k++) {
      const a = gpa + k;
      const j = this.#mmioIndex(a);
      if (j >= 0) {
        this.#mmioReadOne(this.#mmioRegions[j]!.slot, a, b);
        data[k] = b[0]!;
      } else {
        this.#bus.unmappedMmioReads++;
        this.#warnUnmapped('mmio', false, a, 1);
        data[k] = 0xff;
      }
    }
  }

  /** A write of `data` at `gpa` (dropped where nothing decodes it). */
  mmioWrite(_vp: number, gpa: number, data: Uint8Array): void {
    const len = data.length;
    if (len === 0) return;
    const i = this.#mmioIndex(gpa);
    if (i >= 0 && gpa + len - 1 <= this.#mmioLast[i]!) {
      this.#mmioWriteOne(this.#mmioRegions[i]!.slot, gpa, data);
      return;
    }
    if (i < 0 && this.#mmioIndex(gpa + len - 1) < 0 && !this.#mmioAnyStartsIn(gpa, gpa + len - 1)) {
      this.#bus.unmappedMmioWrites++;
      this.#warnUnmapped('mmio', true, gpa, len);
      return;
    }
    this.#bus.splitAccesses++;
    const b = this.#byte;
    for (let k = 0; k < len; k++) {
      const a = gpa + k;
      const j = this.#mmioIndex(a);
      if (j >= 0) {
        b[0] = data[k]!;
        this.#mmioWriteOne(this.#mmioRegions[j]!.slot, a, b);
      } else {
        this.#bus.unmappedMmioWrites++;
        this.#warnUnmapped('mmio', true, a, 1);
      }
    }
  }

  /** Index of the last MMIO region starting at or below `gpa`, or -1 (binary search). */
  #mmioFloor(gpa: number): number {
    const first = this.#mmioFirst;
    let lo = 0;
    let hi = first.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (first[mid]! <= gpa) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  }

  /** Index of the MMIO region containing `gpa`, or -1. */
  #mmioIndex(gpa: number): number {
    const i = this.#mmioFloor(gpa);
    return i >= 0 && gpa <= this.#mmioLast[i]! ? i : -1;
  }

  /** Whether some region starts inside [from, to] (an access straddling a hole into a region). */
  #mmioAnyStartsIn(from: number, to: number): boolean {
    const i = this.#mmioFloor(to);
    return i >= 0 && this.#mmioFirst[i]! >= from;
  }

  #mmioReadOne(slot: DeviceSlot, gpa: number, data: Uint8Array): void {
    slot.counters.mmioReads++;
    const r = slot.mmio!.mmioRead(gpa, data);
    if (r !== 'ok') {
      data.fill(0xff);
      this.#deviceError(slot, 'mmio', false, gpa, data.length, r);
    }
  }

  #mmioWriteOne(slot: DeviceSlot, gpa: number, data: Uint8Array): void {
    slot.counters.mmioWrites++;
    const r = slot.mmio!.mmioWrite(gpa, data);
    if (r !== 'ok') this.#deviceError(slot, 'mmio', true, gpa, data.length, r);
  }

  // ---------------------------------------------------------------- policy helpers

  #warnUnmapped(space: 'port' | 'mmio', write: boolean, addr: number, size: number): void {
    this.#lastSpace = space;
    this.#lastWrite = write;
    this.#lastAddr = addr;
    this.#lastSize = size;
    this.#unmappedLog.warn(this.#unmappedMsg);
  }

  #deviceError(slot: DeviceSlot, space: 'port' | 'mmio', write: boolean, addr: number, size: number, err: IoError): void {
    slot.counters.errors++;
    this.#lastDevice = slot.device.debugName;
    this.#lastError = err;
    this.#lastSpace = space;
    this.#lastWrite = write;
    this.#lastAddr = addr;
    this.#lastSize = size;
    this.#errorLog.warn(this.#errorMsg);
  }

  // ---------------------------------------------------------------- statistics

  /** A snapshot of the counters as a plain object. */
  stats(): DispatcherStats {
    const devices: Record<string, DeviceCounters> = Object.create(null) as Record<string, DeviceCounters>;
    for (const s of this.#slots) devices[s.device.debugName] = { ...s.counters };
    return { bus: { ...this.#bus }, devices };
  }

  /** Log lines suppressed by the rate limiters so far. */
  get suppressedWarnings(): number {
    return this.#unmappedLog.suppressed + this.#errorLog.suppressed + this.#romLog.suppressed;
  }
}
