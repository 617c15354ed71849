/**
 * Kernel and initrd files: validation and parsing, before anything is loaded into a guest.
 *
 * What it accepts:
 * - a vmlinux: an ELF64 little-endian x86-64 executable (ELF spec, "System V ABI AMD64
 *   supplement"). Its PT_LOAD program headers become `KernelSegment`s (physical address, file
 *   bytes, memory size); its PT_NOTE segments are searched for the Xen note
 *   XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen", xen/include/public/elfnote.h), which is the
 *   32-bit PVH entry point that Linux publishes when built with CONFIG_PVH
 *   (arch/x86/platform/pvh/head.S). `e_entry` (the physical address of startup_64 in a vmlinux)
 *   is the 64-bit boot protocol entry (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL").
 * - an initrd: a newc cpio archive ("070701", or "070702" with checksums), walked header by
 *   header up to TRAILER!!!, or gzip / xz / zstd compressed data recognised by magic.
 *
 * A bzImage is recognised (`identifyKernelFile`) but not parsed here: the payload has to be
 * decompressed first, which src/image does (src/image/bzimage.ts) before calling `parseVmlinux`.
 *
 * DEVNOTE: this module is pure (no node:* imports: the loader layer writes guest memory and
 * nothing else); it takes the file's bytes and its name, and every failure is a TshvError with
 * code 'EIMAGE' whose message names the file. The files are user-supplied and may be anything:
 * every offset and size is bounds-checked against the buffer before use, every loop is bounded
 * by the buffer length or a fixed cap, and 64-bit fields are read as bigint and only turned into
 * numbers after a range check.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';

/** One PT_LOAD segment of a vmlinux. Addresses are guest physical. */
export interface KernelSegment {
  /** Guest physical load address (p_paddr). */
  readonly paddr: number;
  /** Link-time virtual address (p_vaddr), e.g. 0xffffffff81000000. */
  readonly vaddr: bigint;
  /** Offset of the segment's bytes in the file (p_offset). */
  readonly fileOffset: number;
  /** Bytes taken from the file (p_filesz). */
  readonly fileSize: number;
  /** Bytes occupied in memory (p_memsz); the tail past fileSize is zero (bss). */
  readonly memSize: number;
  /** PF_X = 1, PF_W = 2, PF_R = 4. */
  readonly flags: number;
  /** View (not a copy) of the file bytes [fileOffset, fileOffset + fileSize). */
  readonly data: Uint8Array;
}

export interface KernelImage {
  readonly fileName: string;
  /** Physical address of the 64-bit entry (e_entry, translated to physical if needed). */
  readonly entry64?: number;
  /** 32-bit PVH entry point from XEN_ELFNOTE_PHYS32_ENTRY, if the kernel has one. */
  readonly pvhEntry?: number;
  /** PT_LOAD segments in file order, non-overlapping in physical memory. */
  readonly segments: readonly KernelSegment[];
  /** Lowest and highest (exclusive) guest physical address the segments occupy. */
  readonly physStart: number;
  readonly physEnd: number;
}

export type KernelFileKind = 'elf' | 'bzimage' | 'unknown';

export type InitrdFormat = 'cpio-newc' | 'cpio-newc-crc' | 'gzip' | 'xz' | 'zstd';

export interface InitrdInfo {
  readonly fileName: string;
  readonly format: InitrdFormat;
  readonly sizeBytes: number;
  /** For an uncompressed cpio: entries before TRAILER!!! (excluding it). */
  readonly entries?: number;
}

// ELF constants (ELF spec, System V gABI).
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EV_CURRENT = 1;
const ET_EXEC = 2;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_NOTE = 4;
const ELF64_EHDR_SIZE = 64;
const ELF64_PHDR_SIZE = 56;
/** xen/include/public/elfnote.h */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** DEVNOTE: caps that no real kernel comes near; they stop hostile files from making us spin. */
const MAX_PHNUM = 128;
const MAX_NOTES_PER_SEGMENT = 4096;
/** A single segment bigger than 1 GiB is not a kernel. */
const MAX_SEGMENT_MEMSZ = 1 << 30;
/** Kernels load below 4 GiB in every boot protocol we implement. */
const MAX_PHYS = 2 ** 32;
const MAX_CPIO_ENTRIES = 1_000_000;

function fail(fileName: string, what: string): never {
  throw new TshvError('EIMAGE', `${fileName}: ${what}`);
}

/** Recognise a kernel file by its first bytes. */
export function identifyKernelFile(bytes: Uint8Array): KernelFileKind {
  if (bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46) return 'elf';
  // Boot sector signature 0xAA55 at 0x1FE and "HdrS" at 0x202 (boot.rst, "THE REAL-MODE KERNEL HEADER").
  if (bytes.length >= 0x206 && bytes[0x1fe] === 0x55 && bytes[0x1ff] === 0xaa &&
      bytes[0x202] === 0x48 && bytes[0x203] === 0x64 && bytes[0x204] === 0x72 && bytes[0x205] === 0x53) return 'bzimage';
  return 'unknown';
}

function u64AsNumber(fileName: string, v: bigint, what: string, max: number): number {
  if (v > BigInt(max)) fail(fileName, `${what} ${hex(v)} is out of range (limit ${hex(max)})`);
  return Number(v);
}

/**
 * Parse a vmlinux (ELF64 x86-64 executable). Throws TshvError('EIMAGE') naming `fileName` on
 * anything malformed: bad magic / class / machine, program headers outside the file, segments
 * outside the file or overlapping, absurd sizes, notes that run past their segment, or no entry.
 */
export function parseVmlinux(bytes: Uint8Array, fileName: string): KernelImage {
  const kind = identifyKernelFile(bytes);
  if (kind === 'bzimage') fail(fileName, 'is a bzImage, not a vmlinux ELF (extract it first)');
  if (kind !== 'elf') fail(fileName, 'not an ELF file (bad magic)');
  if (bytes.length < ELF64_EHDR_SIZE) fail(fileName, `truncated ELF header (${bytes.length} of ${ELF64_EHDR_SIZE} bytes)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes[4] !== ELFCLASS64) fail(fileName, `not a 64-bit ELF (EI_CLASS ${bytes[4]})`);
  if (bytes[5] !== ELFDATA2LSB) fail(fileName, `not a little-endian ELF (EI_DATA ${bytes[5]})`);
  if (bytes[6] !== EV_CURRENT) fail(fileName, `unknown ELF version ${bytes[6]}`);
  const eType = dv.getUint16(0x10, true);
  const eMachine = dv.getUint16(0x12, true);
  if (eMachine !== EM_X86_64) fail(fileName, `not an x86-64 ELF (e_machine ${eMachine})`);
  if (eType !== ET_EXEC) fail(fileName, `not an executable ELF (e_type ${eType})`);
  const eEntry = dv.getBigUint64(0x18, true);
  const ePhoff = dv.getBigUint64(0x20, true);
  const ePhentsize = dv.getUint16(0x36, true);
  const ePhnum = dv.getUint16(0x38, true);
  if (ePhnum === 0) fail(fileName, 'ELF has no program headers');
  if (ePhnum > MAX_PHNUM) fail(fileName, `ELF has ${ePhnum} program headers (limit ${MAX_PHNUM})`);
  if (ePhentsize !== ELF64_PHDR_SIZE) fail(fileName, `ELF e_phentsize ${ePhentsize} (expected ${ELF64_PHDR_SIZE})`);
  const phoff = u64AsNumber(fileName, ePhoff, 'e_phoff', bytes.length);
  if (phoff + ePhnum * ELF64_PHDR_SIZE > bytes.length) {
    fail(fileName, `program headers at ${hex(phoff)} (${ePhnum} x ${ELF64_PHDR_SIZE}) run past the end of the file (${bytes.length} bytes)`);
  }

  const segments: KernelSegment[] = [];
  const notes: { offset: number; size: number }[] = [];
  for (let i = 0; i < ePhnum; i++) {
    const ph = phoff + i * ELF64_PHDR_SIZE;
    const pType = dv.getUint32(ph, true);
    if (pType !== PT_LOAD && pType !== PT_NOTE) continue;
    const pFlags = dv.getUint32(ph + 4, true);
    const pOffset = dv.getBigUint64(ph + 8, true);
    const pVaddr = dv.getBigUint64(ph + 16, true);
    const pPaddr = dv.getBigUint64(ph + 24, true);
    const pFilesz = dv.getBigUint64(ph + 32, true);
    const pMemsz = dv.getBigUint64(ph + 40, true);
    const what = `program header ${i}`;
    const fileOffset = u64AsNumber(fileName, pOffset, `${what} p_offset`, bytes.length);
    const fileSize = u64AsNumber(fileName, pFilesz, `${what} p_filesz`, bytes.length);
    if (fileOffset + fileSize > bytes.length) {
      fail(fileName, `${what}: bytes ${hex(fileOffset)}+${hex(fileSize)} run past the end of the file (${bytes.length} bytes)`);
    }
    if (pType === PT_NOTE) {
      notes.push({ offset: fileOffset, size: fileSize });
      continue;
    }
    const memSize = u64AsNumber(fileName, pMemsz, `${what} p_memsz`, MAX_SEGMENT_MEMSZ);
    if (fileSize > memSize) fail(fileName, `${what}: p_filesz ${hex(fileSize)} exceeds p_memsz ${hex(memSize)}`);
    const paddr = u64AsNumber(fileName, pPaddr, `${what} p_paddr`, MAX_PHYS);
    if (paddr + memSize > MAX_PHYS) fail(fileName, `${what}: ${hex(paddr)}+${hex(memSize)} ends above 4 GiB`);
    if (memSize === 0) continue;
    for (const s of segments) {
      if (paddr < s.paddr + s.memSize && s.paddr < paddr + memSize) {
        fail(fileName, `${what}: ${hex(paddr)}+${hex(memSize)} overlaps the segment at ${hex(s.paddr)}+${hex(s.memSize)}`);
      }
    }
    segments.push({ paddr, vaddr: pVaddr, fileOffset, fileSize, memSize, flags: pFlags, data: bytes.subarray(fileOffset, fileOffset + fileSize) });
  }
  if (segments.length === 0) fail(fileName, 'ELF has no loadable (PT_LOAD) segments');

  let pvhEntry: number | undefined;
  for (const n of notes) {
    const found = findPvhNote(bytes, dv, n.offset, n.size, fileName);
    if (found !== undefined) pvhEntry = found;
  }

  const inSegment = (pa: number): boolean => segments.some((s) => pa >= s.paddr && pa < s.paddr + s.memSize);
  if (pvhEntry !== undefined && !inSegment(pvhEntry)) fail(fileName, `PVH entry ${hex(pvhEntry)} is outside every loaded segment`);

  // e_entry of a vmlinux is physical (startup_64); accept a virtual one too and translate it.
  let entry64: number | undefined;
  if (eEntry < BigInt(MAX_PHYS) && inSegment(Number(eEntry))) {
    entry64 = Number(eEntry);
  } else {
    for (const s of segments) {
      if (eEntry >= s.vaddr && eEntry < s.vaddr + BigInt(s.memSize)) entry64 = s.paddr + Number(eEntry - s.vaddr);
    }
  }
  if (entry64 === undefined && pvhEntry === undefined) {
    fail(fileName, `no usable entry point: e_entry ${hex(eEntry)} is outside every segment and there is no PVH note`);
  }
  let physStart = Infinity;
  let physEnd = 0;
  for (const s of segments) {
    physStart = Math.min(physStart, s.paddr);
    physEnd = Math.max(physEnd, s.paddr + s.memSize);
  }
  return {
    fileName,
    segments,
    physStart,
    physEnd,
    ...(entry64 !== undefined ? { entry64 } : {}),
    ...(pvhEntry !== undefined ? { pvhEntry } : {}),
  };
}

/** Walk one PT_NOTE segment (Elf64_Nhdr: namesz, descsz, type; name and desc 4-byte aligned). */
function findPvhNote(bytes: Uint8Array, dv: DataView, offset: number, size: number, fileName: string): number | undefined {
  const end = offset + size;
  let p = offset;
  let result: number | undefined;
  for (let count = 0; p + 12 <= end; count++) {
    if (count >= MAX_NOTES_PER_SEGMENT) fail(fileName, `more than ${MAX_NOTES_PER_SEGMENT} ELF notes in one segment`);
    const namesz = dv.getUint32(p, true);
    const descsz = dv.getUint32(p + 4, true);
    const type = dv.getUint32(p + 8, true);
    const nameOff = p + 12;
    const descOff = nameOff + align4(namesz);
    const next = descOff + align4(descsz);
    if (namesz > size || descsz > size || next > end) fail(fileName, `ELF note at ${hex(p)} runs past its segment`);
    if (type === XEN_ELFNOTE_PHYS32_ENTRY && namesz === 4 &&
        bytes[nameOff] === 0x58 && bytes[nameOff + 1] === 0x65 && bytes[nameOff + 2] === 0x6e && bytes[nameOff + 3] === 0) {
      // The note is an _ASM_PTR: 4 bytes on 32-bit builds, 8 on 64-bit ones.
      if (descsz === 4) {
        result = dv.getUint32(descOff, true);
      } else if (descsz === 8) {
        const v = dv.getBigUint64(descOff, true);
        if (v >= BigInt(MAX_PHYS)) fail(fileName, `PVH entry ${hex(v)} is not a 32-bit address`);
        result = Number(v);
      } else {
        fail(fileName, `XEN_ELFNOTE_PHYS32_ENTRY has a ${descsz}-byte descriptor (expected 4 or 8)`);
      }
    }
    p = next;
  }
  return result;
}

/** Round up to a multiple of 4 without 32-bit bitwise operators (sizes may exceed 2^31). */
export function align4(n: number): number {
  return n + ((4 - (n % 4)) % 4);
}

// ---------------------------------------------------------------------------------------------
// initrd

const CPIO_HEADER_SIZE = 110;

function startsWith(bytes: Uint8Array, magic: readonly number[]): boolean {
  if (bytes.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic[i]) return false;
  return true;
}

/** Parse an 8-hex-digit newc field, or undefined if any character is not a hex digit. */
export function parseHex8(bytes: Uint8Array, at: number): number | undefined {
  let v = 0;
  for (let i = 0; i < 8; i++) {
    const c = bytes[at + i];
    let d: number;
    if (c === undefined) return undefined;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
    else return undefined;
    v = v * 16 + d;
  }
  return v;
}

/**
 * Validate an initrd. An uncompressed newc cpio is walked entry by entry up to TRAILER!!!, so a
 * truncated or corrupt archive is caught here; compressed data is recognised by magic and
 * checked for the minimum size of its container (and, for xz, the stream footer magic), which
 * catches empty and badly truncated files but not every corruption inside the payload (the
 * guest kernel reports those).
 */
export function validateInitrd(bytes: Uint8Array, fileName: string): InitrdInfo {
  const sizeBytes = bytes.length;
  if (sizeBytes === 0) fail(fileName, 'initrd is empty');
  if (startsWith(bytes, [0x30, 0x37, 0x30, 0x37, 0x30])) {
    const sixth = bytes[5];
    if (sixth === 0x31 || sixth === 0x32) {
      const entries = walkNewc(bytes, fileName);
      return { fileName, format: sixth === 0x31 ? 'cpio-newc' : 'cpio-newc-crc', sizeBytes, entries };
    }
    if (sixth === 0x37) fail(fileName, 'initrd is an old-style (odc) cpio archive; the kernel only accepts newc ("070701")');
  }
  if (startsWith(bytes, [0x1f, 0x8b])) {
    // 10-byte header + at least an empty deflate block + 8-byte trailer.
    if (sizeBytes < 20) fail(fileName, `gzip initrd is truncated (${sizeBytes} bytes)`);
    if (bytes[2] !== 8) fail(fileName, `gzip initrd uses compression method ${bytes[2]} (only deflate exists)`);
    return { fileName, format: 'gzip', sizeBytes };
  }
  if (startsWith(bytes, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) {
    // Stream header 12 + footer 12; the footer ends in "YZ" (after optional 4-byte-aligned zero padding).
    let end = sizeBytes;
    while (end > 0 && bytes[end - 1] === 0) end--;
    if (sizeBytes < 32 || bytes[end - 2] !== 0x59 || bytes[end - 1] !== 0x5a) {
      fail(fileName, 'xz initrd is truncated (no xz stream footer)');
    }
    return { fileName, format: 'xz', sizeBytes };
  }
  if (startsWith(bytes, [0x28, 0xb5, 0x2f, 0xfd])) {
    if (sizeBytes < 9) fail(fileName, `zstd initrd is truncated (${sizeBytes} bytes)`);
    return { fileName, format: 'zstd', sizeBytes };
  }
  const head = Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return fail(fileName, `not an initrd: unknown format (first bytes ${head}); expected a newc cpio archive or gzip / xz / zstd data`);
}

function walkNewc(bytes: Uint8Array, fileName: string): number {
  let p = 0;
  for (let entries = 0; entries < MAX_CPIO_ENTRIES; entries++) {
    if (p + CPIO_HEADER_SIZE > bytes.length) fail(fileName, `cpio archive truncated: header at ${hex(p)} runs past the end (${bytes.length} bytes)`);
    if (!(bytes[p] === 0x30 && bytes[p + 1] === 0x37 && bytes[p + 2] === 0x30 && bytes[p + 3] === 0x37 && bytes[p + 4] === 0x30 &&
        (bytes[p + 5] === 0x31 || bytes[p + 5] === 0x32))) {
      fail(fileName, `cpio archive corrupt: bad header magic at ${hex(p)}`);
    }
    const fileSize = parseHex8(bytes, p + 6 + 6 * 8);
    const nameSize = parseHex8(bytes, p + 6 + 11 * 8);
    if (fileSize === undefined || nameSize === undefined) fail(fileName, `cpio archive corrupt: non-hex header field at ${hex(p)}`);
    if (nameSize === 0) fail(fileName, `cpio archive corrupt: empty name at ${hex(p)}`);
    const nameEnd = p + CPIO_HEADER_SIZE + nameSize;
    const dataStart = align4(nameEnd);
    const dataEnd = dataStart + fileSize;
    if (nameEnd > bytes.length || dataEnd > bytes.length) fail(fileName, `cpio archive truncated: entry at ${hex(p)} runs past the end (${bytes.length} bytes)`);
    if (bytes[nameEnd - 1] !== 0) fail(fileName, `cpio archive corrupt: name at ${hex(p)} is not NUL-terminated`);
    if (nameSize === 11 && isTrailer(bytes, p + CPIO_HEADER_SIZE)) return entries;
    p = align4(dataEnd);
  }
  return fail(fileName, `cpio archive has more than ${MAX_CPIO_ENTRIES} entries`);
}

const TRAILER = 'TRAILER!!!';
function isTrailer(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < TRAILER.length; i++) if (bytes[at + i] !== TRAILER.charCodeAt(i)) return false;
  return true;
}
