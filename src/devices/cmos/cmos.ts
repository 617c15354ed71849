/**
 * CmosRtc: the MC146818-compatible CMOS real-time clock and its 128 bytes of CMOS RAM at
 * ports 0x70 (index; bit 7 masks NMI, recorded only) and 0x71 (data).
 *
 * Time follows host time: the clock is host UTC plus an offset that guest writes to the time
 * registers move. Every read computes the current time, so a read never sees an update in
 * progress: register A's UIP bit reads 0 and register D's VRT bit (valid RAM and time) 1.
 * Register B's DM (binary instead of BCD) and 24/12 bits select the format, as on the chip;
 * with SET the guest stops the clock to write it, and the time it wrote runs on from when it
 * clears SET. Register 0x32 holds the century (BCD or binary like the other fields). The
 * weekday is derived from the date (a write to it is ignored), and a time outside the years
 * 0000-9999, which the registers cannot show, is not taken.
 *
 * Why it matters: Linux reads its wall clock here at boot (mach_get_cmos_time through
 * mc146818_avoid_UIP). Ports that decode to nothing read 0xFF, a UIP bit that never clears, and
 * the kernel retried for one second (10,000 udelay(100)) and then started in 1970.
 *
 * Not emulated: the periodic, alarm and update-ended interrupts (register C reads 0, IRQ 8 is
 * never raised); the FADT keeps saying CMOS_RTC_NOT_PRESENT, so Linux binds no rtc-cmos
 * driver that would wait for them. Daylight saving (DSE) is recorded, not applied.
 *
 * Saved state: schema 'tshv.cmos' version 1 (index, RAM, offset from host time in ms).
 */
import type { ChipsetDevice, IoRegion, IoResult, PioSize, PortIoIntercept, SavedState, StateUnit } from '../../vid/device.js';
import { IO_READ_INVALID_ACCESS_SIZE } from '../../vid/device.js';
import { openSaved } from '../../vid/savedstate.js';

export const CMOS_INDEX_PORT = 0x70;
export const CMOS_DATA_PORT = 0x71;
export const CMOS_SCHEMA = 'tshv.cmos';
export const CMOS_VERSION = 1;

export const REG_SECONDS = 0x00, REG_MINUTES = 0x02, REG_HOURS = 0x04, REG_WEEKDAY = 0x06, REG_DAY = 0x07;
export const REG_MONTH = 0x08, REG_YEAR = 0x09, REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c, REG_D = 0x0d, REG_CENTURY = 0x32;
export const B_SET = 0x80, B_DM_BINARY = 0x04, B_24H = 0x02;
export const D_VRT = 0x80;
/** Register A after power-on: 32.768 kHz time base, 1024 Hz periodic rate (what PC firmware sets). */
const A_DEFAULT = 0x26;
/** Register B after power-on: 24-hour, BCD. */
const B_DEFAULT = B_24H;
/** The guest may move the clock by at most this much from host time (about +-10,000 years). */
const MAX_OFFSET_MS = 10_000 * 366 * 86_400_000;

export interface CmosRtcOptions {
  /** Host time in ms since the epoch (default Date.now); tests pass their own. */
  now?: () => number;
  name?: string;
}

interface State {
  index: number;
  nmiMasked: boolean;
  ram: Uint8Array;
  /** Guest time minus host time, ms. */
  offsetMs: number;
}

/** Calendar fields of a time in ms since the epoch (UTC). */
interface Fields { sec: number; min: number; hour: number; wday: number; day: number; month: number; year: number }

function fieldsOf(ms: number): Fields {
  const d = new Date(ms);
  return {
    sec: d.getUTCSeconds(), min: d.getUTCMinutes(), hour: d.getUTCHours(), wday: d.getUTCDay() + 1,
    day: d.getUTCDate(), month: d.getUTCMonth() + 1, year: d.getUTCFullYear(),
  };
}

const toBcd = (v: number): number => ((Math.floor(v / 10) % 10) << 4) | (v % 10);
/** BCD byte to binary; digits above 9 are taken as they are (the guest's garbage, bounded). */
const fromBcd = (v: number): number => (v >> 4) * 10 + (v & 0x0f);

export class CmosRtc implements ChipsetDevice, PortIoIntercept, StateUnit {
  readonly debugName: string;
  readonly #regions: readonly IoRegion[] = [{ name: 'cmos', first: CMOS_INDEX_PORT, last: CMOS_DATA_PORT }];
  readonly #now: () => number;
  #s: State;
  /** The time the guest is writing while SET is on (fields of the frozen clock). */
  #frozen: Fields | null = null;

  constructor(opts: CmosRtcOptions = {}) {
    this.#now = opts.now ?? Date.now;
    this.debugName = opts.name ?? 'cmos';
    this.#s = CmosRtc.#initial();
  }

  static #initial(): State {
    const ram = new Uint8Array(128);
    ram[REG_A] = A_DEFAULT;
    ram[REG_B] = B_DEFAULT;
    ram[REG_D] = D_VRT;
    return { index: 0, nmiMasked: false, ram, offsetMs: 0 };
  }

  supportsPio(): PortIoIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#regions; }

  /** The guest's clock now, ms since the epoch. */
  guestTime(): number { return this.#now() + this.#s.offsetMs; }

  ioRead(port: number, size: PioSize): number {
    if (size !== 1) return IO_READ_INVALID_ACCESS_SIZE;
    if (port === CMOS_INDEX_PORT) return this.#s.index | (this.#s.nmiMasked ? 0x80 : 0);
    return this.#readReg(this.#s.index);
  }

  ioWrite(port: number, size: PioSize, value: number): IoResult {
    if (size !== 1) return 'InvalidAccessSize';
    const v = value & 0xff;
    if (port === CMOS_INDEX_PORT) {
      this.#s.index = v & 0x7f;
      this.#s.nmiMasked = (v & 0x80) !== 0;
    } else {
      this.#writeReg(this.#s.index, v);
    }
    return 'ok';
  }

  #fields(): Fields { return this.#frozen ?? fieldsOf(this.guestTime()); }

  /** A time field in the guest's format (register B). */
  #encode(v: number, hour = false): number {
    const b = this.#s.ram[REG_B]!;
    let pm = 0;
    if (hour && (b & B_24H) === 0) { pm = v >= 12 ? 0x80 : 0; v = v % 12 === 0 ? 12 : v % 12; }
    return ((b & B_DM_BINARY) !== 0 ? v : toBcd(v)) | pm;
  }

  #decode(v: number, hour = false): number {
    const b = this.#s.ram[REG_B]!;
    const pm = hour && (b & B_24H) === 0 ? v & 0x80 : 0;
    const raw = hour && (b & B_24H) === 0 ? v & 0x7f : v;
    let n = (b & B_DM_BINARY) !== 0 ? raw : fromBcd(raw);
    if (hour && (b & B_24H) === 0) n = (n % 12) + (pm !== 0 ? 12 : 0);
    return n;
  }

  #readReg(r: number): number {
    switch (r) {
      case REG_A: return this.#s.ram[REG_A]! & 0x7f;   // UIP never set
      case REG_C: return 0;                              // no interrupt flags
      case REG_D: return D_VRT;
      case REG_SECONDS: case REG_MINUTES: case REG_HOURS: case REG_WEEKDAY: case REG_DAY: case REG_MONTH: case REG_YEAR: case REG_CENTURY:
        return this.#readTime(r);
      default: return this.#s.ram[r]!;
    }
  }

  #readTime(r: number): number {
    const f = this.#fields();
    switch (r) {
      case REG_SECONDS: return this.#encode(f.sec);
      case REG_MINUTES: return this.#encode(f.min);
      case REG_HOURS: return this.#encode(f.hour, true);
      case REG_WEEKDAY: return this.#encode(f.wday);
      case REG_DAY: return this.#encode(f.day);
      case REG_MONTH: return this.#encode(f.month);
      case REG_YEAR: return this.#encode(f.year % 100);
      default: return this.#encode(Math.floor(f.year / 100) % 100);
    }
  }

  #writeReg(r: number, v: number): void {
    const ram = this.#s.ram;
    switch (r) {
      case REG_SECONDS: case REG_MINUTES: case REG_HOURS: case REG_WEEKDAY: case REG_DAY: case REG_MONTH: case REG_YEAR: case REG_CENTURY: {
        const f = { ...this.#fields() };
        const n = this.#decode(v, r === REG_HOURS);
        if (r === REG_SECONDS) f.sec = n;
        else if (r === REG_MINUTES) f.min = n;
        else if (r === REG_HOURS) f.hour = n;
        else if (r === REG_WEEKDAY) f.wday = n;
        else if (r === REG_DAY) f.day = n;
        else if (r === REG_MONTH) f.month = n;
        else if (r === REG_YEAR) f.year = Math.floor(f.year / 100) * 100 + (n % 100);
        else f.year = (n % 100) * 100 + (f.year % 100);
        if (this.#frozen !== null) this.#frozen = f;
        else this.#setTime(f);
        return;
      }
      case REG_A: ram[REG_A] = v & 0x7f; return;
      case REG_B: {
        const wasSet = (ram[REG_B]! & B_SET) !== 0;
        if ((v & B_SET) !== 0 && !wasSet) this.#frozen = fieldsOf(this.guestTime());
        ram[REG_B] = v;
        if ((v & B_SET) === 0 && wasSet && this.#frozen !== null) { const f = this.#frozen; this.#frozen = null; this.#setTime(f); }
        return;
      }
      case REG_C: case REG_D: return;   // read-only
      default: ram[r] = v;
    }
  }

  /** The offset that makes the clock show `f` now (out-of-range fields roll over), or null outside the years 0000-9999. */
  #offsetFor(f: Fields): number | null {
    // setUTCFullYear, not Date.UTC: Date.UTC reads years 0-99 as 1900-1999.
    const d = new Date(0);
    d.setUTCFullYear(f.year, f.month - 1, f.day);
    d.setUTCHours(f.hour, f.min, f.sec, 0);
    // Only years the registers can show (fields out of range roll over, e.g. month 0 of year 0).
    const y = d.getUTCFullYear();
    if (!(y >= 0 && y <= 9999)) return null;
    const off = d.getTime() - Math.floor(this.#now() / 1000) * 1000;
    return Math.abs(off) <= MAX_OFFSET_MS ? off : null;
  }

  #setTime(f: Fields): void {
    const off = this.#offsetFor(f);
    if (off !== null) this.#s.offsetMs = off;
  }

  reset(): void {
    // The clock keeps running across a reset; the chip's registers come back to their defaults.
    const offsetMs = this.#s.offsetMs;
    this.#s = CmosRtc.#initial();
    this.#s.offsetMs = offsetMs;
    this.#frozen = null;
  }

  save(): SavedState {
    // A clock the guest has stopped (SET) is saved as the time it shows; restore starts it again.
    const s = this.#s;
    const offsetMs = this.#frozen === null ? s.offsetMs : this.#offsetFor(this.#frozen) ?? s.offsetMs;
    const fields = { index: s.index, nmiMasked: s.nmiMasked, ram: Array.from(s.ram), offsetMs } satisfies Record<keyof State, unknown>;
    return { schema: CMOS_SCHEMA, version: CMOS_VERSION, ...fields };
  }

  restore(saved: unknown): void {
    const r = openSaved(saved, CMOS_SCHEMA, CMOS_VERSION);
    const index = r.bits8('index', 0x7f);
    const nmiMasked = r.bool('nmiMasked');
    const bytes = r.bytes('ram', 128);
    const offsetMs = r.int('offsetMs', -MAX_OFFSET_MS, MAX_OFFSET_MS);
    r.done();
    const ram = new Uint8Array(128);
    ram.set(bytes);
    ram[REG_B] = ram[REG_B]! & ~B_SET;
    this.#s = { index, nmiMasked, ram, offsetMs };
    this.#frozen = null;
  }
}
