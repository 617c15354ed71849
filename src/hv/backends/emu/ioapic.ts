/**
 * The I/O APIC of the `emu` backend: an Intel 82093AA-compatible interrupt router with 24 pins
 * (GSIs 0-23), as Linux (arch/x86/kernel/apic/io_apic.c) drives it, so that
 * `Partition.setIrqLine` works on `emu` as it does with KVM's in-kernel irqchip.
 *
 * Spec: Intel 82093AA I/O Advanced Programmable Interrupt Controller datasheet (290566), with
 * the ICH-style version 0x20 additions (the EOI register at offset 0x40, which Linux uses for
 * IOAPICs of version >= 0x20 to clear Remote IRR directly).
 *
 * Registers. MMIO window at IOAPIC_BASE (0xFEC00000), 4 KiB:
 *   0x00 IOREGSEL  bits 7:0 select the register seen through IOWIN (byte, word or dword write)
 *   0x10 IOWIN     the selected register (dword accesses only, as the datasheet requires)
 *   0x40 EOI       write a vector: clears Remote IRR of the level-triggered entries with it
 * and through IOWIN: IOAPICID (0x00, ID in bits 27:24), IOAPICVER (0x01: 0x00170020, version
 * 0x20, maximum redirection entry 23), IOAPICARB (0x02, read-only, mirrors the ID as the
 * datasheet's "same data is loaded into both"), and the redirection table at 0x10 + 2n (low
 * dword) / 0x11 + 2n (high dword) for n = 0..23.
 *
 * Access policy (the datasheet calls anything but 32-bit IOWIN accesses undefined; this is what
 * we define): IOREGSEL reads of any naturally aligned size return its bytes (bits 31:8 read 0);
 * writes of 1, 2 or 4 bytes at offset 0 load bits 7:0. IOWIN and EOI need aligned dwords.
 * Every other access (other offsets, sizes, misalignment) reads 0 and ignores writes; it is
 * counted in `stats.badAccesses`. Reserved registers (IOREGSEL 0x03-0x0F, 0x40-0xFF) read 0
 * and ignore writes. Reserved bits of a redirection entry (55:17) read 0; Delivery Status
 * (bit 12) always reads 0 (messages are sent synchronously), Remote IRR (bit 14) is read-only.
 *
 * Pins. `setIrq(gsi, level)` drives the electrical level of a pin. A pin is *asserted* when its
 * level differs from its Polarity bit (bit 13: 1 = active low). With `activeLowPins` (the
 * board's wiring, as the ACPI tables declare it) a device passes "asserting" instead and the
 * IOAPIC derives the electrical level, so an idle active-low line is high, as with a pull-up.
 *   edge (trigger 0):  a deasserted -> asserted transition sends one message if unmasked;
 *                      an edge on a masked pin is lost (datasheet: "not delivered or held").
 *   level (trigger 1): while asserted, unmasked and Remote IRR clear, send one message and
 *                      set Remote IRR. The local APIC's EOI of that vector (broadcast for
 *                      TMR-set vectors) -> `eoi(vector)` clears Remote IRR and, if the pin is
 *                      still asserted and unmasked, sends again. Unmasking an asserted level
 *                      pin sends then (the level is sampled, nothing is "held" beyond it).
 * ISA IRQ 0 -> GSI 2 (the MADT interrupt source override) is the caller's mapping.
 *
 * Messages. An entry is sent as the MSI it is equivalent to (address 0xFEE00000 | dest << 12 |
 * destMode << 2, data vector | deliveryMode << 8 | 1 << 14 | trigger << 15; see msiAddress()
 * and msiData()) through the `IoapicDeliver` callback, with plain numbers so that no BigInt or
 * object is made per interrupt. Reserved delivery modes (3, 6) are not sent and are counted.
 *
 * DEVNOTE: all volatile state is in typed arrays plus two numbers, so the hot paths (setIrq,
 * eoi, MMIO) allocate nothing. Nothing here logs; misuse by the guest is counted in `stats`,
 * and a caller's out-of-range GSI is ignored and counted rather than thrown, because setIrq
 * runs on device paths. `save()` / `restore()` use a plain, versioned object; `restore()`
 * treats it as untrusted (own data properties only, exact field set, every value bounded) and
 * changes nothing when it throws.
 */
import { TshvError } from '../../../base/errors.js';

export const IOAPIC_BASE = 0xfec00000;
export const IOAPIC_SIZE = 0x1000;
export const IOAPIC_PINS = 24;

// MMIO offsets.
export const IOREGSEL = 0x00, IOWIN = 0x10, IOAPIC_EOI = 0x40;
// IOREGSEL register indices.
export const IOAPICID = 0x00, IOAPICVER = 0x01, IOAPICARB = 0x02, IOREDTBL = 0x10;

/** IOAPICVER: version 0x20, maximum redirection entry 23 (bits 23:16). */
export const IOAPICVER_VALUE = 0x20 | ((IOAPIC_PINS - 1) << 16);

// Redirection entry low-dword bits.
export const REDIR_VECTOR = 0xff;
export const REDIR_DELMOD_SHIFT = 8;
export const REDIR_DESTMOD = 1 << 11;
export const REDIR_DELIVS = 1 << 12;
export const REDIR_INTPOL = 1 << 13;
export const REDIR_REMOTE_IRR = 1 << 14;
export const REDIR_TRIGGER = 1 << 15;
export const REDIR_MASK = 1 << 16;
/** Low-dword bits the guest may write (all defined bits except Delivery Status and Remote IRR). */
const REDIR_LO_WRITABLE = 0x1ffff & ~(REDIR_DELIVS | REDIR_REMOTE_IRR);
/** High dword: Destination Field, bits 63:56. */
const REDIR_HI_WRITABLE = 0xff000000;

/** Delivery modes (bits 10:8), spec names. */
export const DELMOD = { FIXED: 0, LOWEST_PRIORITY: 1, SMI: 2, NMI: 4, INIT: 5, EXTINT: 7 } as const;

/**
 * Where the IOAPIC sends an interrupt message; the arguments are the fields of the equivalent
 * MSI. level: the MSI "level" (assert) bit, always 1 from an IOAPIC. trigger: 0 edge, 1 level
 * (the target LAPIC sets its TMR bit for level, and its EOI of the vector must reach eoi()).
 */
export type IoapicDeliver = (destination: number, destMode: number, deliveryMode: number, vector: number, level: number, trigger: number) => void;

/** The MSI address equivalent to an entry's destination fields. */
export function msiAddress(destination: number, destMode: number): number {
  return (0xfee00000 | ((destination & 0xff) << 12) | ((destMode & 1) << 2)) >>> 0;
}

/** The MSI data equivalent to an entry's vector, delivery mode and trigger mode (assert set). */
export function msiData(vector: number, deliveryMode: number, trigger: number): number {
  return (vector & 0xff) | ((deliveryMode & 7) << 8) | (1 << 14) | ((trigger & 1) << 15);
}

export const IOAPIC_STATE_SCHEMA = 'emu.ioapic';
export const IOAPIC_STATE_VERSION = 1;

/** The saved state: a plain object, as JSON would carry it. */
export interface IoapicSavedState {
  schema: typeof IOAPIC_STATE_SCHEMA;
  version: typeof IOAPIC_STATE_VERSION;
  /** IOAPICID bits 27:24. */
  id: number;
  /** IOREGSEL bits 7:0. */
  ioregsel: number;
  /** 48 dwords: entry n low at [2n], high at [2n+1]. */
  redirection: number[];
  /** Electrical pin levels, bit n = GSI n. */
  lines: number;
}

/** restore() got a malformed saved state. */
export class IoapicStateError extends TshvError {
  constructor(readonly field: string, detail: string) {
    super('EINVAL', `saved state ${IOAPIC_STATE_SCHEMA}: ${field}: ${detail}`);
    this.name = 'IoapicStateError';
  }
}

export interface IoapicOptions {
  /** Initial IOAPICID (0-15), as the MADT declares it. Default 0. */
  id?: number;
  /**
   * Bit n set: GSI n is wired active low on the board (the ACPI tables say so), so
   * setIrq(n, true) means "the device asserts" and drives the pin low. Default 0: every
   * `level` is the electrical level.
   */
  activeLowPins?: number;
}

const SAVED_KEYS = ['schema', 'version', 'id', 'ioregsel', 'redirection', 'lines'] as const;
const ALL_PINS = (1 << IOAPIC_PINS) - 1;

export class Ioapic {
  // Fixed configuration
  readonly #initialId: number;
  readonly #activeLowPins: number;
  // Runtime glue
  readonly #deliver: IoapicDeliver;
  // Volatile state
  /** Entry n: low dword at [2n], high dword at [2n+1]. */
  readonly #redir = new Uint32Array(IOAPIC_PINS * 2);
  /** Electrical level of each pin (0/1). */
  readonly #line = new Uint8Array(IOAPIC_PINS);
  #id = 0;
  #ioregsel = 0;
  // Statistics
  readonly stats = { messages: 0, lostEdges: 0, reservedModes: 0, eois: 0, badAccesses: 0, badGsis: 0 };

  constructor(deliver: IoapicDeliver, options: IoapicOptions = {}) {
    const id = options.id ?? 0;
    if (!Number.isInteger(id) || id < 0 || id > 15) throw new TshvError('EINVAL', `I/O APIC id ${String(id)} is not 0-15`);
    const low = options.activeLowPins ?? 0;
    if (!Number.isInteger(low) || low < 0 || low > ALL_PINS) throw new TshvError('EINVAL', `activeLowPins ${String(low)} is not a 24-bit mask`);
    this.#initialId = id;
    this.#activeLowPins = low;
    this.#deliver = deliver;
    for (let n = 0; n < IOAPIC_PINS; n++) this.#line[n] = (low >>> n) & 1;  // idle: deasserted
    this.reset();
  }

  /** Power-on / RESET# state: every entry masked, IOREGSEL 0, the configured ID. */
  reset(): void {
    // DEVNOTE: the pin levels are not reset: they are driven by the devices, not held here.
    for (let n = 0; n < IOAPIC_PINS; n++) { this.#redir[2 * n] = REDIR_MASK; this.#redir[2 * n + 1] = 0; }
    this.#id = this.#initialId;
    this.#ioregsel = 0;
  }

  // ------------------------------------------------------------------ pins

  #asserted(n: number): boolean {
    return (this.#line[n]! ^ ((this.#redir[2 * n]! >>> 13) & 1)) !== 0;
  }

  /**
   * Drive pin `gsi` (0-23). `level` is the electrical level, or "asserting" for a pin named in
   * `activeLowPins`. Out-of-range GSIs are ignored and counted.
   */
  setIrq(gsi: number, level: boolean): void {
    if (!(gsi >= 0 && gsi < IOAPIC_PINS) || (gsi | 0) !== gsi) { this.stats.badGsis++; return; }
    const line = (level ? 1 : 0) ^ ((this.#activeLowPins >>> gsi) & 1);
    const before = this.#asserted(gsi);
    this.#line[gsi] = line;
    const now = this.#asserted(gsi);
    const lo = this.#redir[2 * gsi]!;
    if ((lo & REDIR_TRIGGER) === 0) {
      if (now && !before) {
        if ((lo & REDIR_MASK) !== 0) this.stats.lostEdges++;
        else this.#send(gsi);
      }
    } else this.#serviceLevel(gsi);
  }

  /** Is pin `gsi` currently asserted (after polarity)? For diagnostics and tests. */
  asserted(gsi: number): boolean {
    return gsi >= 0 && gsi < IOAPIC_PINS && (gsi | 0) === gsi && this.#asserted(gsi);
  }

  /**
   * The LAPIC's EOI of a level-triggered `vector` (its TMR bit was set), or a write to the EOI
   * register: clear Remote IRR of every entry with that vector; send again where the pin is
   * still asserted and unmasked.
   */
  eoi(vector: number): void {
    vector &= 0xff;
    this.stats.eois++;
    for (let n = 0; n < IOAPIC_PINS; n++) {
      const lo = this.#redir[2 * n]!;
      if ((lo & REDIR_VECTOR) !== vector || (lo & REDIR_REMOTE_IRR) === 0) continue;
      this.#redir[2 * n] = lo & ~REDIR_REMOTE_IRR;
      this.#serviceLevel(n);
    }
  }

  /** A level-triggered pin: send if asserted, unmasked and Remote IRR is clear. */
  #serviceLevel(n: number): void {
    const lo = this.#redir[2 * n]!;
    if ((lo & (REDIR_TRIGGER | REDIR_MASK | REDIR_REMOTE_IRR)) === REDIR_TRIGGER && this.#asserted(n)) this.#send(n);
  }

  #send(n: number): void {
    const lo = this.#redir[2 * n]!;
    const mode = (lo >>> REDIR_DELMOD_SHIFT) & 7;
    if (mode === 3 || mode === 6) { this.stats.reservedModes++; return; }
    const trigger = (lo >>> 15) & 1;
    if (trigger !== 0) this.#redir[2 * n] = lo | REDIR_REMOTE_IRR;
    this.stats.messages++;
    this.#deliver(this.#redir[2 * n + 1]! >>> 24, (lo >>> 11) & 1, mode, lo & REDIR_VECTOR, 1, trigger);
  }

  // ------------------------------------------------------------------ MMIO

  /** A guest read of `size` (1, 2, 4 or 8) bytes at `offset` (0-0xFFF) of the window: the value, zero-extended. */
  read(offset: number, size: number): number {
    if (size !== 1 && size !== 2 && size !== 4) { this.stats.badAccesses++; return 0; }
    if ((offset & (size - 1)) !== 0 || (offset | 0) !== offset || offset < 0 || offset >= IOAPIC_SIZE) { this.stats.badAccesses++; return 0; }
    if (offset < 4) {
      const shift = offset * 8;
      return size === 4 ? this.#ioregsel : (this.#ioregsel >>> shift) & (size === 1 ? 0xff : 0xffff);
    }
    if (offset === IOWIN && size === 4) return this.readRegister(this.#ioregsel);
    this.stats.badAccesses++;
    return 0;
  }

  /** A guest write of `size` bytes of `value` at `offset` of the window. */
  write(offset: number, size: number, value: number): void {
    if ((size !== 1 && size !== 2 && size !== 4) || (offset & (size - 1)) !== 0 || (offset | 0) !== offset || offset < 0 || offset >= IOAPIC_SIZE) {
      this.stats.badAccesses++;
      return;
    }
    if (offset === IOREGSEL) { this.#ioregsel = value & 0xff; return; }
    if (offset < 4) return;  // IOREGSEL bits 31:8: reserved
    if (size !== 4) { this.stats.badAccesses++; return; }
    if (offset === IOWIN) this.writeRegister(this.#ioregsel, value >>> 0);
    else if (offset === IOAPIC_EOI) this.eoi(value);
    else this.stats.badAccesses++;
  }

  /** ExitHandler.mmioRead shape: fill `data` (1-8 bytes) from `offset`. An 8-byte read reads 0. */
  mmioRead(offset: number, data: Uint8Array): void {
    const v = this.read(offset, data.length);
    for (let i = 0; i < data.length; i++) data[i] = i < 4 ? (v >>> (8 * i)) & 0xff : 0;
  }

  /** ExitHandler.mmioWrite shape: write `data` (1-8 bytes, little-endian) at `offset`. */
  mmioWrite(offset: number, data: Uint8Array): void {
    let v = 0;
    for (let i = Math.min(data.length, 4) - 1; i >= 0; i--) v = (v << 8) | data[i]!;
    this.write(offset, data.length, v >>> 0);
  }

  /** The register at IOREGSEL index `index`, as IOWIN reads it. Reserved indices read 0. */
  readRegister(index: number): number {
    index &= 0xff;
    if (index === IOAPICID || index === IOAPICARB) return (this.#id << 24) >>> 0;
    if (index === IOAPICVER) return IOAPICVER_VALUE;
    if (index >= IOREDTBL && index < IOREDTBL + 2 * IOAPIC_PINS) return this.#redir[index - IOREDTBL]!;
    return 0;
  }

  /** A write through IOWIN to register `index`. Read-only and reserved bits and registers ignore it. */
  writeRegister(index: number, value: number): void {
    index &= 0xff;
    if (index === IOAPICID) { this.#id = (value >>> 24) & 0xf; return; }
    if (index < IOREDTBL || index >= IOREDTBL + 2 * IOAPIC_PINS) return;  // VER, ARB, reserved
    const i = index - IOREDTBL;
    if ((i & 1) !== 0) { this.#redir[i] = value & REDIR_HI_WRITABLE; return; }
    const old = this.#redir[i]!;
    let lo = (value & REDIR_LO_WRITABLE) | (old & REDIR_REMOTE_IRR);
    // Remote IRR is meaningless for edge triggering; an 82093AA clears it when the entry is
    // switched to edge (older Linux relies on this: level -> edge -> level clears it).
    if ((lo & REDIR_TRIGGER) === 0) lo &= ~REDIR_REMOTE_IRR;
    this.#redir[i] = lo >>> 0;
    // DEVNOTE: only a low-dword write can make a level pin deliverable (mask, trigger,
    // polarity); Linux writes the high dword first when it programs an unmasked entry. A
    // polarity flip on an edge pin is not an edge: edges come from setIrq only.
    this.#serviceLevel(i >>> 1);
  }

  // ------------------------------------------------------------------ save / restore

  save(): IoapicSavedState {
    let lines = 0;
    for (let n = 0; n < IOAPIC_PINS; n++) lines |= this.#line[n]! << n;
    return {
      schema: IOAPIC_STATE_SCHEMA,
      version: IOAPIC_STATE_VERSION,
      id: this.#id,
      ioregsel: this.#ioregsel,
      redirection: Array.from(this.#redir),
      lines: lines >>> 0,
    };
  }

  /** Replace the state with a validated saved one; throws IoapicStateError and changes nothing if invalid. */
  restore(saved: unknown): void {
    const s = parseIoapicState(saved);
    this.#id = s.id;
    this.#ioregsel = s.ioregsel;
    this.#redir.set(s.redirection);
    for (let n = 0; n < IOAPIC_PINS; n++) this.#line[n] = (s.lines >>> n) & 1;
  }
}

/** An own data property of `o`, or undefined when absent; getters are refused. */
function field(o: object, name: string): unknown {
  const d = Object.getOwnPropertyDescriptor(o, name);
  if (d === undefined) throw new IoapicStateError(name, 'missing');
  if (!('value' in d)) throw new IoapicStateError(name, 'not a data property');
  return d.value;
}

function uint(o: object, name: string, max: number): number {
  const v = field(o, name);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new IoapicStateError(name, `must be an integer in [0, ${max}]`);
  return v;
}

/** Validate an untrusted saved state (pure; bounded work). */
export function parseIoapicState(saved: unknown): IoapicSavedState {
  if (typeof saved !== 'object' || saved === null || Array.isArray(saved)) throw new IoapicStateError('(root)', 'not an object');
  const keys = Object.keys(saved);
  if (keys.length !== SAVED_KEYS.length) throw new IoapicStateError('(root)', `expected fields ${SAVED_KEYS.join(', ')}`);
  for (const k of keys) if (!(SAVED_KEYS as readonly string[]).includes(k)) throw new IoapicStateError(k.slice(0, 40), 'unknown field');
  if (field(saved, 'schema') !== IOAPIC_STATE_SCHEMA) throw new IoapicStateError('schema', `must be ${IOAPIC_STATE_SCHEMA}`);
  if (field(saved, 'version') !== IOAPIC_STATE_VERSION) throw new IoapicStateError('version', `must be ${IOAPIC_STATE_VERSION}`);
  const id = uint(saved, 'id', 15);
  const ioregsel = uint(saved, 'ioregsel', 0xff);
  const lines = uint(saved, 'lines', ALL_PINS);
  const arr = field(saved, 'redirection');
  if (!Array.isArray(arr)) throw new IoapicStateError('redirection', 'not an array');
  const list: unknown[] = arr;
  if (list.length !== IOAPIC_PINS * 2) throw new IoapicStateError('redirection', `must have ${IOAPIC_PINS * 2} entries`);
  const redirection: number[] = [];
  for (let i = 0; i < IOAPIC_PINS * 2; i++) {
    const name = `redirection[${i}]`;
    const d = Object.getOwnPropertyDescriptor(list, i);
    const v: unknown = d !== undefined && 'value' in d ? d.value : undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new IoapicStateError(name, 'must be a 32-bit unsigned integer');
    if ((i & 1) !== 0) {
      if ((v & ~REDIR_HI_WRITABLE) !== 0) throw new IoapicStateError(name, 'reserved bits 55:32 set');
    } else {
      if ((v & ~(REDIR_LO_WRITABLE | REDIR_REMOTE_IRR)) !== 0) throw new IoapicStateError(name, 'reserved or delivery-status bits set');
      if ((v & REDIR_REMOTE_IRR) !== 0 && (v & REDIR_TRIGGER) === 0) throw new IoapicStateError(name, 'Remote IRR set on an edge-triggered entry');
    }
    redirection.push(v);
  }
  return { schema: IOAPIC_STATE_SCHEMA, version: IOAPIC_STATE_VERSION, id, ioregsel, redirection, lines };
}
