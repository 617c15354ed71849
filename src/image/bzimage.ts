/**
 * bzImage: the x86 Linux boot image, parsed, and its compressed payload turned into a vmlinux.
 *
 * Spec: Documentation/arch/x86/boot.rst ("THE REAL-MODE KERNEL HEADER", "DETAILS OF HEADER
 * FIELDS") and arch/x86/boot/header.S. Layout: a real-mode setup of (setup_sects + 1) * 512
 * bytes (setup_sects 0 means 4), then the protected-mode kernel. From protocol 2.08 on, the
 * setup header's payload_offset / payload_length locate the compressed vmlinux inside the
 * protected-mode part; arch/x86/boot/compressed/Makefile appends the uncompressed size as a
 * little-endian u32 after the compressed stream (`size_append`), and payload_length includes it.
 *
 * `parseBzImage` is pure and bounded: every field is range-checked against the file, and every
 * failure is TshvError('EIMAGE') naming the file. `extractVmlinux` then decompresses the payload
 * (xz only: that is what Debian and most distributions use; other compressions get a clear
 * error naming them) and checks the result against the size trailer.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';
import { identifyKernelFile } from '../loader/kernel-file.js';
import { hasXzMagic, xzDecompress } from './xz.js';

/** The setup header fields tshv uses, names as in boot.rst. */
export interface SetupHeader {
  readonly setup_sects: number;
  readonly boot_flag: number;
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  readonly version: number;
  readonly loadflags: number;
  readonly code32_start: number;
  readonly initrd_addr_max: number;
  readonly kernel_alignment: number;
  readonly relocatable_kernel: number;
  readonly min_alignment: number;
  readonly xloadflags: number;
  readonly cmdline_size: number;
  readonly payload_offset: number;
  readonly payload_length: number;
  readonly pref_address: bigint;
  readonly init_size: number;
  readonly handover_offset: number;
}

export type PayloadCompression = 'gzip' | 'bzip2' | 'lzma' | 'xz' | 'lzo' | 'lz4' | 'zstd' | 'unknown';

export interface BzImage {
  readonly fileName: string;
  readonly header: SetupHeader;
  /** Kernel version string pointed to by kernel_version, e.g. "6.1.0-56-amd64 (debian-kernel@...) #1 SMP ...". */
  readonly versionString?: string;
  /** File offset of the protected-mode kernel ((setup_sects + 1) * 512). */
  readonly protectedModeOffset: number;
  /** File offset and length of the compressed stream, without the 4-byte size trailer. */
  readonly payloadOffset: number;
  readonly payloadLength: number;
  readonly compression: PayloadCompression;
  /** The uncompressed vmlinux size recorded in the trailer. */
  readonly uncompressedSize: number;
}

/** loadflags / xloadflags bits (boot.rst). */
export const LOADED_HIGH = 0x01;
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;

const MIN_PROTOCOL = 0x0208; // payload_offset / payload_length appeared in 2.08
/** No vmlinux comes near 1 GiB; this bounds what a hostile size trailer can make us allocate. */
export const MAX_VMLINUX_SIZE = 1 << 30;

function fail(fileName: string, what: string): never {
  throw new TshvError('EIMAGE', `${fileName}: ${what}`);
}

function magicOf(b: Uint8Array, at: number): PayloadCompression {
  const m = (...xs: number[]): boolean => xs.every((x, i) => b[at + i] === x);
  if (m(0x1f, 0x8b)) return 'gzip';
  if (m(0x42, 0x5a, 0x68)) return 'bzip2';
  if (m(0x5d, 0x00, 0x00)) return 'lzma';
  if (hasXzMagic(b.subarray(at, at + 6))) return 'xz';
  if (m(0x89, 0x4c, 0x5a, 0x4f)) return 'lzo';
  if (m(0x02, 0x21, 0x4c, 0x18)) return 'lz4';
  if (m(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  return 'unknown';
}

/** Parse a bzImage's setup header and locate its payload. Pure; throws EIMAGE naming the file. */
export function parseBzImage(bytes: Uint8Array, fileName: string): BzImage {
  if (bytes.length < 0x208) fail(fileName, `too short for a bzImage setup header (${bytes.length} bytes)`);
  if (identifyKernelFile(bytes) !== 'bzimage') fail(fileName, 'not a bzImage (no 0xAA55 boot flag and "HdrS" header magic)');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint16(0x206, true);
  if (version < MIN_PROTOCOL) fail(fileName, `boot protocol ${hex(version)} is older than 2.08 (no payload fields)`);
  if (bytes.length < 0x264) fail(fileName, `setup header truncated (${bytes.length} bytes, protocol ${hex(version)} needs 0x264)`);
  const setup_sects = bytes[0x1f1] === 0 ? 4 : (bytes[0x1f1] ?? 4);
  const header: SetupHeader = {
    setup_sects,
    boot_flag: dv.getUint16(0x1fe, true),
    version,
    loadflags: dv.getUint8(0x211),
    code32_start: dv.getUint32(0x214, true),
    initrd_addr_max: dv.getUint32(0x22c, true),
    kernel_alignment: dv.getUint32(0x230, true),
    relocatable_kernel: dv.getUint8(0x234),
    min_alignment: dv.getUint8(0x235),
    xloadflags: dv.getUint16(0x236, true),
    cmdline_size: dv.getUint32(0x238, true),
    payload_offset: dv.getUint32(0x248, true),
    payload_length: dv.getUint32(0x24c, true),
    pref_address: bytes.length >= 0x260 ? dv.getBigUint64(0x258, true) : 0n,
    init_size: dv.getUint32(0x260, true),
    handover_offset: bytes.length >= 0x268 ? dv.getUint32(0x264, true) : 0,
  };
  const protectedModeOffset = (setup_sects + 1) * 512;
  if (protectedModeOffset > bytes.length) fail(fileName, `setup (${setup_sects} sectors) runs past the end of the file (${bytes.length} bytes)`);
  const start = protectedModeOffset + header.payload_offset;
  const end = start + header.payload_length;
  if (header.payload_length < 8) fail(fileName, `payload_length ${header.payload_length} is too small`);
  if (end > bytes.length) fail(fileName, `payload ${hex(start)}+${hex(header.payload_length)} runs past the end of the file (${bytes.length} bytes; truncated?)`);
  const uncompressedSize = dv.getUint32(end - 4, true);
  if (uncompressedSize === 0 || uncompressedSize > MAX_VMLINUX_SIZE) fail(fileName, `payload size trailer ${hex(uncompressedSize)} is not a plausible vmlinux size`);

  let versionString: string | undefined;
  const kv = dv.getUint16(0x20e, true);
  if (kv !== 0 && kv + 0x200 < bytes.length) {
    let e = kv + 0x200;
    const limit = Math.min(bytes.length, e + 256);
    while (e < limit && bytes[e] !== 0) e++;
    const raw = bytes.subarray(kv + 0x200, e);
    if (raw.every((c) => c >= 0x20 && c < 0x7f)) versionString = String.fromCharCode(...raw);
  }
  return {
    fileName,
    header,
    ...(versionString !== undefined ? { versionString } : {}),
    protectedModeOffset,
    payloadOffset: start,
    payloadLength: header.payload_length - 4,
    compression: magicOf(bytes, start),
    uncompressedSize,
  };
}

export interface ExtractOptions {
  /** Path of the xz tool (see xz.ts); default "xz". */
  readonly xzTool?: string;
}

/** Decompress a bzImage's payload into the vmlinux ELF it carries. */
export async function extractVmlinux(bytes: Uint8Array, fileName: string, opts: ExtractOptions = {}): Promise<{ bz: BzImage; vmlinux: Uint8Array }> {
  const bz = parseBzImage(bytes, fileName);
  if (bz.compression !== 'xz') {
    fail(fileName, bz.compression === 'unknown'
      ? 'payload compression not recognised (no known magic at payload_offset)'
      : `payload is ${bz.compression}-compressed; tshv extracts xz-compressed kernels only (pass a vmlinux instead)`);
  }
  const payload = bytes.subarray(bz.payloadOffset, bz.payloadOffset + bz.payloadLength);
  const vmlinux = await xzDecompress(payload, {
    what: `${fileName} (bzImage payload)`,
    maxOutput: bz.uncompressedSize,
    ...(opts.xzTool !== undefined ? { xzTool: opts.xzTool } : {}),
  });
  if (vmlinux.length !== bz.uncompressedSize) {
    fail(fileName, `payload decompressed to ${vmlinux.length} bytes but the size trailer says ${bz.uncompressedSize}`);
  }
  if (identifyKernelFile(vmlinux) !== 'elf') fail(fileName, 'payload did not decompress to an ELF file');
  return { bz, vmlinux };
}
