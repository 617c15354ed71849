/**
 * A small AML (ACPI Machine Language) encoder: just enough of the grammar to write a DSDT that
 * describes a handful of fixed devices, as byte strings the guest's AML interpreter executes.
 *
 * Spec: ACPI 6.5, chapter 20 "ACPI Machine Language (AML) Specification"
 * (https://uefi.org/specs/ACPI/6.5/20_AML_Specification.html): 20.2.4 (PkgLength, NameSeg,
 * NameString), 20.2.3 (ComputationalData: BytePrefix 0x0A, WordPrefix 0x0B, DWordPrefix 0x0C,
 * StringPrefix 0x0D, QWordPrefix 0x0E, ZeroOp 0x00, OneOp 0x01, OnesOp 0xFF), 20.2.5
 * (DefName 0x08, DefScope 0x10, DefBuffer 0x11, DefPackage 0x12, DefMethod 0x14,
 * DefDevice 0x5B 0x82, DefReturn 0xA4).
 *
 * Every builder returns a fresh Uint8Array holding one complete AML term; composite builders
 * (scope, device, method, package, buffer) take the already-encoded terms of their body and
 * wrap them with the right PkgLength. Inputs come from tshv itself (the VM configuration), not
 * from the guest, but they are still validated: a bad name or an out-of-range integer is a
 * TshvError('EINVAL'), never a silently wrong table.
 *
 * DEVNOTE: integers pick the shortest encoding (ZeroOp/OneOp for 0 and 1, then the smallest
 * prefix that holds the value), which is what iasl emits for the same ASL; the tests compare
 * against iasl's output byte for byte. OnesOp is only emitted by the explicit `ONES` constant,
 * because its value depends on the table's revision (32 or 64 bits).
 */
import { TshvError } from '../../base/errors.js';
import { hex } from '../../base/hex.js';

export const AML = {
  ZeroOp: 0x00,
  OneOp: 0x01,
  NameOp: 0x08,
  BytePrefix: 0x0a,
  WordPrefix: 0x0b,
  DWordPrefix: 0x0c,
  StringPrefix: 0x0d,
  QWordPrefix: 0x0e,
  ScopeOp: 0x10,
  BufferOp: 0x11,
  PackageOp: 0x12,
  MethodOp: 0x14,
  DualNamePrefix: 0x2e,
  MultiNamePrefix: 0x2f,
  ExtOpPrefix: 0x5b,
  DeviceOp: 0x82,          // after ExtOpPrefix
  RootChar: 0x5c,          // '\'
  ParentPrefixChar: 0x5e,  // '^'
  ReturnOp: 0xa4,
  OnesOp: 0xff,
} as const;

/** PkgLength can describe at most 2^28 - 1 bytes (four bytes, 28 bits). */
export const MAX_PKG_LENGTH = 0x0fffffff;

function bad(what: string): never {
  throw new TshvError('EINVAL', `AML: ${what}`);
}

/** Concatenate byte strings. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The PkgLength of a package whose contents after the PkgLength are `payloadLen` bytes. The
 * encoded value counts the PkgLength bytes themselves (20.2.4): one byte holds up to 63 in
 * bits 0-5; otherwise bits 7-6 of the lead byte give the number of following bytes (1-3), the
 * lead byte's bits 3-0 are the low nibble and each following byte adds 8 more bits.
 */
export function pkgLength(payloadLen: number): Uint8Array {
  if (!Number.isSafeInteger(payloadLen) || payloadLen < 0) bad(`bad package length ${String(payloadLen)}`);
  if (payloadLen + 1 <= 0x3f) return Uint8Array.of(payloadLen + 1);
  for (let follow = 1; follow <= 3; follow++) {
    const total = payloadLen + 1 + follow;
    if (total < 2 ** (4 + 8 * follow)) {
      const out = new Uint8Array(1 + follow);
      out[0] = (follow << 6) | (total & 0x0f);
      let rest = Math.floor(total / 16);
      for (let i = 1; i <= follow; i++) {
        out[i] = rest & 0xff;
        rest = Math.floor(rest / 256);
      }
      return out;
    }
  }
  return bad(`package of ${payloadLen} bytes exceeds the PkgLength limit ${hex(MAX_PKG_LENGTH)}`);
}

function isLeadNameChar(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || c === 0x5f;          // 'A'-'Z', '_'
}
function isNameChar(c: number): boolean {
  return isLeadNameChar(c) || (c >= 0x30 && c <= 0x39);   // plus '0'-'9'
}

/** One NameSeg: 1-4 characters [A-Z_][A-Z0-9_]*, padded with '_' to four bytes. */
export function nameSeg(seg: string): Uint8Array {
  if (seg.length < 1 || seg.length > 4) bad(`name segment "${seg}" must have 1-4 characters`);
  const out = new Uint8Array(4).fill(0x5f);
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i);
    if (i === 0 ? !isLeadNameChar(c) : !isNameChar(c)) bad(`name segment "${seg}" has an invalid character at ${i}`);
    out[i] = c;
  }
  return out;
}

/**
 * A NameString: an optional root ('\') or parent prefixes ('^'), then dot-separated segments,
 * e.g. "\\_SB.COM1", "^^FOO", "_HID". One segment is written bare, two with DualNamePrefix,
 * more with MultiNamePrefix and a count. "\\" alone is the root (RootChar + NullName).
 */
export function namePath(path: string): Uint8Array {
  const prefix: number[] = [];
  let i = 0;
  if (path.startsWith('\\')) {
    prefix.push(AML.RootChar);
    i = 1;
  } else {
    while (path.charCodeAt(i) === AML.ParentPrefixChar) {
      prefix.push(AML.ParentPrefixChar);
      i++;
    }
  }
  const rest = path.slice(i);
  if (rest === '') {
    if (prefix.length === 0) bad('empty name');
    return Uint8Array.from([...prefix, 0x00]);
  }
  const segs = rest.split('.').map(nameSeg);
  if (segs.length > 255) bad(`name "${path}" has more than 255 segments`);
  let head: number[];
  if (segs.length === 1) head = prefix;
  else if (segs.length === 2) head = [...prefix, AML.DualNamePrefix];
  else head = [...prefix, AML.MultiNamePrefix, segs.length];
  return concat([Uint8Array.from(head), ...segs]);
}

/** An integer constant in its shortest encoding (see the module note). 0 <= v < 2^64. */
export function integer(v: number | bigint): Uint8Array {
  const b = typeof v === 'bigint' ? v : Number.isSafeInteger(v) ? BigInt(v) : bad(`integer ${String(v)} is not a safe integer`);
  if (b < 0n || b >= 1n << 64n) bad(`integer ${String(v)} is out of the 64-bit unsigned range`);
  if (b === 0n) return Uint8Array.of(AML.ZeroOp);
  if (b === 1n) return Uint8Array.of(AML.OneOp);
  let prefix: number;
  let size: number;
  if (b <= 0xffn) { prefix = AML.BytePrefix; size = 1; }
  else if (b <= 0xffffn) { prefix = AML.WordPrefix; size = 2; }
  else if (b <= 0xffffffffn) { prefix = AML.DWordPrefix; size = 4; }
  else { prefix = AML.QWordPrefix; size = 8; }
  const out = new Uint8Array(1 + size);
  out[0] = prefix;
  let x = b;
  for (let i = 1; i <= size; i++) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

export const ZERO = Uint8Array.of(AML.ZeroOp);
export const ONE = Uint8Array.of(AML.OneOp);
export const ONES = Uint8Array.of(AML.OnesOp);

/** A String constant: ASCII characters 0x01-0x7F, NUL-terminated. */
export function string(s: string): Uint8Array {
  const out = new Uint8Array(s.length + 2);
  out[0] = AML.StringPrefix;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x01 || c > 0x7f) bad(`string "${s}" has a character outside ASCII 0x01-0x7F at ${i}`);
    out[i + 1] = c;
  }
  return out;                                            // last byte stays 0 (NullChar)
}

/** DefBuffer: BufferOp PkgLength BufferSize ByteList, BufferSize = the byte count. */
export function buffer(bytes: Uint8Array): Uint8Array {
  const body = concat([integer(bytes.length), bytes]);
  return concat([Uint8Array.of(AML.BufferOp), pkgLength(body.length), body]);
}

/** DefPackage: PackageOp PkgLength NumElements PackageElementList (at most 255 elements). */
export function pkg(elements: readonly Uint8Array[]): Uint8Array {
  if (elements.length > 255) bad(`package of ${elements.length} elements (a Package holds at most 255; VarPackage is not supported)`);
  const body = concat([Uint8Array.of(elements.length), ...elements]);
  return concat([Uint8Array.of(AML.PackageOp), pkgLength(body.length), body]);
}

/** DefName: NameOp NameString DataRefObject. */
export function name(path: string, value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(AML.NameOp), namePath(path), value]);
}

/** DefScope: ScopeOp PkgLength NameString TermList. */
export function scope(path: string, body: readonly Uint8Array[]): Uint8Array {
  const inner = concat([namePath(path), ...body]);
  return concat([Uint8Array.of(AML.ScopeOp), pkgLength(inner.length), inner]);
}

/** DefDevice: ExtOpPrefix DeviceOp PkgLength NameString TermList. */
export function device(path: string, body: readonly Uint8Array[]): Uint8Array {
  const inner = concat([namePath(path), ...body]);
  return concat([Uint8Array.of(AML.ExtOpPrefix, AML.DeviceOp), pkgLength(inner.length), inner]);
}

/**
 * DefMethod: MethodOp PkgLength NameString MethodFlags TermList. MethodFlags bits 0-2 are the
 * argument count (0-7), bit 3 SerializeFlag, bits 4-7 SyncLevel (0 here).
 */
export function method(path: string, argCount: number, serialized: boolean, body: readonly Uint8Array[]): Uint8Array {
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) bad(`method ${path}: argument count ${argCount} is not 0-7`);
  const flags = argCount | (serialized ? 0x08 : 0);
  const inner = concat([namePath(path), Uint8Array.of(flags), ...body]);
  return concat([Uint8Array.of(AML.MethodOp), pkgLength(inner.length), inner]);
}

/** DefReturn: ReturnOp ArgObject. */
export function ret(value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(AML.ReturnOp), value]);
}

/**
 * The 32-bit compressed EISA id of a "PNPxxxx"-style id (what ASL's EISAID() produces): three
 * letters in 5 bits each (A = 1) and four hex digits, stored so that the bytes read in
 * big-endian order; the returned number is the little-endian value AML stores.
 */
export function eisaId(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) bad(`"${id}" is not an EISA id (three capital letters and four hex digits)`);
  const l = (i: number): number => id.charCodeAt(i) - 0x40;
  const hi = (l(0) << 10) | (l(1) << 5) | l(2);
  const product = Number.parseInt(id.slice(3), 16);
  const be = [(hi >> 8) & 0xff, hi & 0xff, (product >> 8) & 0xff, product & 0xff];
  return ((be[3]! << 24) | (be[2]! << 16) | (be[1]! << 8) | be[0]!) >>> 0;
}

/** True when `id` has the EISA form that eisaId() compresses. */
export function isEisaId(id: string): boolean {
  return /^[A-Z]{3}[0-9A-F]{4}$/.test(id);
}
