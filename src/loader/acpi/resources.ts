/**
 * Resource descriptors for _CRS (ResourceTemplate) buffers.
 *
 * Spec: ACPI 6.5, 6.4 "Resource Data Types for ACPI"
 * (https://uefi.org/specs/ACPI/6.5/06_Device_Configuration.html#resource-data-types-for-acpi):
 * small items 6.4.2 (IRQ 0x22/0x23, I/O Port 0x47, End Tag 0x79), large items 6.4.3
 * (32-Bit Fixed Memory Range 0x86, DWord Address Space 0x87, Extended Interrupt 0x89,
 * QWord Address Space 0x8A).
 *
 * Each builder returns the bytes of one descriptor; `resourceTemplate()` joins them, appends the
 * End Tag and wraps them in an AML Buffer, as ASL's ResourceTemplate() does. Field encodings
 * follow iasl's defaults for the same ASL (ResourceConsumer, Decode16, MinFixed/MaxFixed for
 * address spaces whose length equals max - min + 1); the tests compare against iasl output.
 */
import { TshvError } from '../../base/errors.js';
import { hex } from '../../base/hex.js';
import { buffer, concat } from './aml.js';

function bad(what: string): never {
  throw new TshvError('EINVAL', `ACPI resource: ${what}`);
}

function u(v: number, max: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > max) bad(`${what} ${String(v)} is out of range 0-${hex(max)}`);
  return v;
}

/** IO(Decode16, min, max, alignment, length): the 8-byte I/O Port Descriptor. */
export function io(min: number, max: number, alignment: number, length: number): Uint8Array {
  u(min, 0xffff, 'I/O minimum');
  u(max, 0xffff, 'I/O maximum');
  u(alignment, 0xff, 'I/O alignment');
  u(length, 0xff, 'I/O length');
  if (max < min) bad(`I/O maximum ${hex(max)} is below the minimum ${hex(min)}`);
  return Uint8Array.of(0x47, 0x01, min & 0xff, min >> 8, max & 0xff, max >> 8, alignment, length);
}

/** IRQNoFlags(){...}: the 3-byte IRQ descriptor (edge, active high, exclusive), ISA IRQs 0-15. */
export function irqNoFlags(irqs: readonly number[]): Uint8Array {
  let mask = 0;
  for (const irq of irqs) mask |= 1 << u(irq, 15, 'ISA IRQ');
  return Uint8Array.of(0x22, mask & 0xff, mask >> 8);
}

/** Memory32Fixed(ReadWrite|ReadOnly, base, length): 12-byte 32-bit fixed memory range. */
export function memory32Fixed(base: number, length: number, writable = true): Uint8Array {
  u(base, 0xffffffff, 'memory base');
  u(length, 0xffffffff, 'memory length');
  if (base + length > 2 ** 32) bad(`fixed memory range ${hex(base)}+${hex(length)} ends above 4 GiB`);
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  out[0] = 0x86;
  dv.setUint16(1, 9, true);
  out[3] = writable ? 1 : 0;
  dv.setUint32(4, base, true);
  dv.setUint32(8, length, true);
  return out;
}

/** Cacheability of a memory address-space descriptor (_MEM). */
export type MemoryCaching = 'NonCacheable' | 'Cacheable' | 'WriteCombining' | 'Prefetchable';
const CACHING: Record<MemoryCaching, number> = { NonCacheable: 0, Cacheable: 1, WriteCombining: 2, Prefetchable: 3 };

export interface AddressMemoryRange {
  /** First and last byte address (_MIN, _MAX), and the length (_LEN). */
  min: number | bigint;
  max: number | bigint;
  length: number | bigint;
  /** Producer for a bridge's window (ResourceProducer); default consumer. */
  producer?: boolean;
  caching?: MemoryCaching;
  writable?: boolean;
}

/**
 * General flags (6.4.3.5.1): bit 3 _MAF, bit 2 _MIF (fixed when the length covers the whole
 * range, as iasl's MinFixed/MaxFixed), bit 1 _DEC (positive decode: 0), bit 0 consumer (1) /
 * producer (0). Type-specific flags: bit 0 _RW, bits 1-2 _MEM, bits 3-4 _MTP (memory: 0).
 */
function addressFlags(r: AddressMemoryRange): [number, number] {
  const general = (r.producer === true ? 0 : 1) | 0x04 | 0x08;
  const specific = (r.writable === false ? 0 : 1) | (CACHING[r.caching ?? 'NonCacheable'] << 1);
  return [general, specific];
}

function big(v: number | bigint, max: bigint, what: string): bigint {
  const b = typeof v === 'bigint' ? v : Number.isSafeInteger(v) ? BigInt(v) : bad(`${what} ${String(v)} is not an integer`);
  if (b < 0n || b > max) bad(`${what} ${hex(b)} is out of range`);
  return b;
}

function checkRange(r: AddressMemoryRange, max: bigint): [bigint, bigint, bigint] {
  const min = big(r.min, max, 'range minimum');
  const mx = big(r.max, max, 'range maximum');
  const len = big(r.length, max + 1n, 'range length');
  if (mx < min) bad(`range maximum ${hex(mx)} is below the minimum ${hex(min)}`);
  if (len !== mx - min + 1n) bad(`range length ${hex(len)} does not equal maximum - minimum + 1 (${hex(mx - min + 1n)})`);
  return [min, mx, len];
}

/** DWordMemory(...): 26-byte DWord Address Space Descriptor, resource type 0 (memory). */
export function dwordMemory(r: AddressMemoryRange): Uint8Array {
  const [min, max, len] = checkRange(r, 0xffffffffn);
  const [general, specific] = addressFlags(r);
  const out = new Uint8Array(26);
  const dv = new DataView(out.buffer);
  out[0] = 0x87;
  dv.setUint16(1, 23, true);
  out[3] = 0;                                  // resource type: memory
  out[4] = general;
  out[5] = specific;
  dv.setUint32(6, 0, true);                    // granularity (_GRA)
  dv.setUint32(10, Number(min), true);
  dv.setUint32(14, Number(max), true);
  dv.setUint32(18, 0, true);                   // translation offset (_TRA)
  dv.setUint32(22, Number(len), true);
  return out;
}

/** QWordMemory(...): 46-byte QWord Address Space Descriptor, resource type 0 (memory). */
export function qwordMemory(r: AddressMemoryRange): Uint8Array {
  const [min, max, len] = checkRange(r, 0xffffffffffffffffn);
  const [general, specific] = addressFlags(r);
  const out = new Uint8Array(46);
  const dv = new DataView(out.buffer);
  out[0] = 0x8a;
  dv.setUint16(1, 43, true);
  out[3] = 0;
  out[4] = general;
  out[5] = specific;
  dv.setBigUint64(6, 0n, true);
  dv.setBigUint64(14, min, true);
  dv.setBigUint64(22, max, true);
  dv.setBigUint64(30, 0n, true);
  dv.setBigUint64(38, len, true);
  return out;
}

export interface ExtendedInterrupt {
  /** Global system interrupts (GSIs). */
  gsis: readonly number[];
  /** Edge-triggered (default) or level-triggered. */
  level?: boolean;
  /** Active low (default active high). */
  activeLow?: boolean;
  shared?: boolean;
  wake?: boolean;
}

/**
 * Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared){...}: the
 * Extended Interrupt Descriptor. Flags: bit 0 consumer, bit 1 edge (1) / level (0), bit 2
 * active low, bit 3 shared, bit 4 wake capable.
 */
export function interrupt(d: ExtendedInterrupt): Uint8Array {
  if (d.gsis.length < 1 || d.gsis.length > 255) bad(`an Interrupt descriptor holds 1-255 interrupts, got ${d.gsis.length}`);
  const n = d.gsis.length;
  const out = new Uint8Array(5 + 4 * n);
  const dv = new DataView(out.buffer);
  out[0] = 0x89;
  dv.setUint16(1, 2 + 4 * n, true);
  out[3] = 0x01 | (d.level === true ? 0 : 0x02) | (d.activeLow === true ? 0x04 : 0) | (d.shared === true ? 0x08 : 0) | (d.wake === true ? 0x10 : 0);
  out[4] = n;
  d.gsis.forEach((g, i) => dv.setUint32(5 + 4 * i, u(g, 0xffffffff, 'GSI'), true));
  return out;
}

/** End Tag (6.4.2.9) with checksum 0, which means "treat the checksum as valid". */
export const END_TAG = Uint8Array.of(0x79, 0x00);

/** ResourceTemplate(){...}: the descriptors plus End Tag, as an AML Buffer. */
export function resourceTemplate(descriptors: readonly Uint8Array[]): Uint8Array {
  return buffer(concat([...descriptors, END_TAG]));
}
