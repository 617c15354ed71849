/**
 * cpio "newc" archives: the writer that makes tshv's initramfs, and a bounded reader.
 *
 * Format (the kernel's own reference: Documentation/driver-api/early-userspace/buffer-format.rst,
 * and init/initramfs.c): each entry is a 110-byte ASCII header
 *
 *   c_magic "070701", then 13 fields of 8 hex digits: c_ino c_mode c_uid c_gid c_nlink
 *   c_mtime c_filesize c_devmajor c_devminor c_rdevmajor c_rdevminor c_namesize c_check
 *
 * followed by the NUL-terminated name (c_namesize counts the NUL), padded with NULs so that
 * header + name ends on a 4-byte boundary, then c_filesize data bytes padded to 4 bytes. A
 * symlink's data is its target. The archive ends with an entry named "TRAILER!!!". Names have no
 * leading "/" (the kernel unpacks relative to "/").
 *
 * The reader is used by tests and by `tshv image info`; it accepts "070701" and "070702" (whose
 * c_check is a byte sum, not verified), walks at most `maxEntries`, never reads past the buffer,
 * and fails only with TshvError('EIMAGE') naming the archive.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';
import { align4, parseHex8 } from '../loader/kernel-file.js';

/** st_mode file type bits (include/uapi/linux/stat.h). */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export type CpioEntry =
  | { readonly kind: 'dir'; readonly name: string; readonly mode: number }
  | { readonly kind: 'file'; readonly name: string; readonly mode: number; readonly data: Uint8Array }
  | { readonly kind: 'symlink'; readonly name: string; readonly target: string }
  | { readonly kind: 'chardev' | 'blockdev'; readonly name: string; readonly mode: number; readonly major: number; readonly minor: number };

const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const MAX_NAME = 4096; // PATH_MAX
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: false });

function checkName(name: string): void {
  if (name.length === 0 || name.startsWith('/') || name.includes('\0') || name === TRAILER || enc.encode(name).length >= MAX_NAME) {
    throw new TshvError('EINVAL', `cpio: invalid entry name ${JSON.stringify(name)}`);
  }
}

function checkMode(mode: number): void {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new TshvError('EINVAL', `cpio: invalid permission bits ${String(mode)}`);
}

/**
 * Builds a newc archive in memory. Inode numbers are assigned in order; mtime is fixed (0 by
 * default) so that the same inputs give byte-identical archives (and stable checksums).
 */
export class CpioWriter {
  #parts: Uint8Array[] = [];
  #size = 0;
  #ino = 1;
  #names = new Set<string>();
  #finished = false;

  constructor(private readonly mtime = 0) {}

  dir(name: string, mode = 0o755): this { checkMode(mode); return this.#entry(name, S_IFDIR | mode, 2, new Uint8Array(0), 0, 0); }

  file(name: string, data: Uint8Array, mode = 0o644): this { checkMode(mode); return this.#entry(name, S_IFREG | mode, 1, data, 0, 0); }

  symlink(name: string, target: string): this {
    if (target.length === 0 || target.includes('\0')) throw new TshvError('EINVAL', `cpio: invalid symlink target for ${name}`);
    return this.#entry(name, S_IFLNK | 0o777, 1, enc.encode(target), 0, 0);
  }

  chardev(name: string, major: number, minor: number, mode = 0o600): this { checkMode(mode); return this.#entry(name, S_IFCHR | mode, 1, new Uint8Array(0), major, minor); }

  blockdev(name: string, major: number, minor: number, mode = 0o600): this { checkMode(mode); return this.#entry(name, S_IFBLK | mode, 1, new Uint8Array(0), major, minor); }

  /** Add any entry of the reader's shape. */
  add(e: CpioEntry): this {
    switch (e.kind) {
      case 'dir': return this.dir(e.name, e.mode & 0o7777);
      case 'file': return this.file(e.name, e.data, e.mode & 0o7777);
      case 'symlink': return this.symlink(e.name, e.target);
      case 'chardev': return this.chardev(e.name, e.major, e.minor, e.mode & 0o7777);
      case 'blockdev': return this.blockdev(e.name, e.major, e.minor, e.mode & 0o7777);
    }
  }

  /** Append TRAILER!!! and return the archive. The writer cannot be used afterwards. */
  finish(): Uint8Array {
    if (this.#finished) throw new TshvError('ESTATE', 'cpio: archive already finished');
    this.#header(TRAILER, 0, 0, 1, 0, 0, 0);
    this.#finished = true;
    const out = new Uint8Array(this.#size);
    let p = 0;
    for (const part of this.#parts) { out.set(part, p); p += part.length; }
    this.#parts = [];
    return out;
  }

  #entry(name: string, mode: number, nlink: number, data: Uint8Array, rdevMajor: number, rdevMinor: number): this {
    if (this.#finished) throw new TshvError('ESTATE', 'cpio: archive already finished');
    checkName(name);
    if (this.#names.has(name)) throw new TshvError('EINVAL', `cpio: duplicate entry ${name}`);
    for (const v of [rdevMajor, rdevMinor]) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TshvError('EINVAL', `cpio: invalid device number for ${name}`);
    }
    if (data.length > 0xffffffff) throw new TshvError('EINVAL', `cpio: ${name} is too large for newc (4 GiB limit)`);
    this.#names.add(name);
    this.#header(name, this.#ino++, mode, nlink, data.length, rdevMajor, rdevMinor);
    this.#push(data);
    this.#pad();
    return this;
  }

  #header(name: string, ino: number, mode: number, nlink: number, fileSize: number, rdevMajor: number, rdevMinor: number): void {
    const nameBytes = enc.encode(name);
    const fields = [ino, mode, 0, 0, nlink, this.mtime, fileSize, 0, 0, rdevMajor, rdevMinor, nameBytes.length + 1, 0];
    const h = '070701' + fields.map((f) => (f >>> 0).toString(16).padStart(8, '0')).join('');
    this.#push(enc.encode(h));
    this.#push(nameBytes);
    this.#push(new Uint8Array(1));
    this.#pad();
  }

  #push(b: Uint8Array): void { if (b.length > 0) { this.#parts.push(b); this.#size += b.length; } }

  #pad(): void {
    const n = align4(this.#size) - this.#size;
    if (n > 0) this.#push(new Uint8Array(n));
  }
}

export interface ReadCpioOptions {
  /** Stop with EIMAGE after this many entries (default 100000). */
  readonly maxEntries?: number;
}

/** Read a newc archive up to TRAILER!!!. File data are views into `bytes`, not copies. */
export function readCpio(bytes: Uint8Array, archiveName: string, opts: ReadCpioOptions = {}): CpioEntry[] {
  const maxEntries = opts.maxEntries ?? 100_000;
  const fail = (at: number, what: string): never => { throw new TshvError('EIMAGE', `${archiveName}: cpio ${what} (entry at ${hex(at)})`); };
  const out: CpioEntry[] = [];
  let p = 0;
  for (;;) {
    if (out.length >= maxEntries) fail(p, `archive has more than ${maxEntries} entries`);
    if (p + HEADER_SIZE > bytes.length) fail(p, `archive truncated: header runs past the end (${bytes.length} bytes)`);
    const magicOk = bytes[p] === 0x30 && bytes[p + 1] === 0x37 && bytes[p + 2] === 0x30 && bytes[p + 3] === 0x37 &&
      bytes[p + 4] === 0x30 && (bytes[p + 5] === 0x31 || bytes[p + 5] === 0x32);
    if (!magicOk) fail(p, 'bad header magic (expected "070701")');
    const f: number[] = [];
    for (let i = 0; i < 13; i++) {
      const v = parseHex8(bytes, p + 6 + i * 8);
      if (v === undefined) return fail(p, `non-hex digit in header field ${i}`);
      f.push(v);
    }
    const mode = f[1] ?? 0;
    const fileSize = f[6] ?? 0;
    const rdevMajor = f[9] ?? 0;
    const rdevMinor = f[10] ?? 0;
    const nameSize = f[11] ?? 0;
    if (nameSize === 0 || nameSize > MAX_NAME) fail(p, `name size ${nameSize} out of range`);
    const nameStart = p + HEADER_SIZE;
    const nameEnd = nameStart + nameSize;
    if (nameEnd > bytes.length) fail(p, 'archive truncated inside a name');
    if (bytes[nameEnd - 1] !== 0) fail(p, 'name is not NUL-terminated');
    const name = dec.decode(bytes.subarray(nameStart, nameEnd - 1));
    const dataStart = align4(nameEnd);
    const dataEnd = dataStart + fileSize;
    if (dataEnd > bytes.length) fail(p, `archive truncated: ${name} has ${fileSize} data bytes, past the end (${bytes.length} bytes)`);
    if (name === TRAILER) return out;
    const data = bytes.subarray(dataStart, dataEnd);
    const perm = mode & 0o7777;
    switch (mode & S_IFMT) {
      case S_IFDIR: out.push({ kind: 'dir', name, mode: perm }); break;
      case S_IFREG: out.push({ kind: 'file', name, mode: perm, data }); break;
      case S_IFLNK:
        if (fileSize === 0) fail(p, `symlink ${name} has an empty target`);
        out.push({ kind: 'symlink', name, target: dec.decode(data) });
        break;
      case S_IFCHR: out.push({ kind: 'chardev', name, mode: perm, major: rdevMajor, minor: rdevMinor }); break;
      case S_IFBLK: out.push({ kind: 'blockdev', name, mode: perm, major: rdevMajor, minor: rdevMinor }); break;
      default: fail(p, `${name} has unsupported file type ${hex(mode & S_IFMT)}`);
    }
    p = align4(dataEnd);
  }
}
