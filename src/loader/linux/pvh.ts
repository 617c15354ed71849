/**
 * Linux loader, PVH boot: enter an uncompressed vmlinux at its XEN_ELFNOTE_PHYS32_ENTRY in
 * 32-bit protected mode with an hvm_start_info structure (ADR 0010).
 *
 * Specs (facts from the Linux 6.1 tree):
 * - include/xen/interface/hvm/start_info.h: hvm_start_info (magic 0x336ec578 "xEn3", version 1
 *   adds memmap_paddr/memmap_entries), hvm_modlist_entry (32 bytes), hvm_memmap_table_entry
 *   (24 bytes, types = ACPI address range types: 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable).
 * - arch/x86/platform/pvh/head.S (the ABI at pvh_start_xen): EBX = start_info physical address;
 *   CR0.PE set, other writable CR0 bits clear; CR4 = 0; CS a 32-bit execute/read segment,
 *   DS/ES 32-bit read/write segments, all base 0 limit 0xFFFFFFFF (selectors unspecified); TR a
 *   32-bit busy TSS; EFLAGS.VM, IF and TF clear. The kernel loads its own GDT and stack at once.
 * - arch/x86/platform/pvh/enlighten.c: the kernel copies memmap into boot_params.e820_table
 *   (E820_MAX_ENTRIES_ZEROPAGE = 128, one slot kept for the ISA range it adds itself), takes
 *   module 0 as the initrd (ramdisk_image/ramdisk_size are 32-bit fields: the initrd must lie
 *   below 4 GiB), cmdline_paddr as cmd_line_ptr, and rsdp_paddr as the ACPI root pointer.
 * - The command line is at most COMMAND_LINE_SIZE = 2048 bytes on x86, NUL included.
 * - The kernel is not relocated on this path: PT_LOAD segments go to their p_paddr (16 MiB for
 *   a stock x86-64 kernel, LOAD_PHYSICAL_ADDR).
 *
 * Guest physical memory layout (PVH_LAYOUT):
 *
 *   0x00000-0x00FFF  untouched (real-mode IVT / BIOS data area: zero, the kernel tolerates it)
 *   0x01000-0x0102F  GDT (src/loader/flat.ts: null, code32 0x08, data 0x10, code64, TSS 0x20)
 *   0x01100-0x01167  TSS (zero)
 *   0x06000-0x06037  hvm_start_info                  (EBX at entry)
 *   0x06040-0x0605F  hvm_modlist_entry[1]            (the initrd)
 *   0x06080-0x06C7F  hvm_memmap_table_entry[<=128]   (the e820 map)
 *   0x07000-0x077FF  command line, NUL-terminated (<= 2048 bytes)
 *   0x08000-0x9FFFF  free low RAM (the kernel's trampoline and low-memory allocations)
 *   0xA0000-0xDFFFF  reserved (legacy VGA / option ROM hole: e820 reserved)
 *   0xE0000-0xFFFFF  ACPI tables, RSDP first (e820: ACPI for the pages used, the rest reserved)
 *   0x100000-...     RAM; the kernel's segments at their p_paddr (16 MiB up)
 *   high in low RAM  the initrd, page-aligned, ending at min(low RAM end, initrd_addr_max)
 *   low RAM end-3GiB not RAM (MMIO hole: IOAPIC 0xFEC00000, LAPIC 0xFEE00000; absent from e820)
 *   4 GiB-...        the rest of RAM, for guests with more than 3 GiB
 *
 * Everything the kernel must not reuse before it has read it sits below 1 MiB, which Linux
 * (since 5.13) reserves as a whole early in setup_arch; the initrd is reserved by the kernel
 * through ramdisk_image. Only the ACPI tables stay in use afterwards, hence their e820 type.
 *
 * DEVNOTE: the ABI asks for TR base 0; this loader reuses flat.ts's GDT, whose busy TSS sits
 * at 0x1100. Linux never uses the firmware's TR (it loads its own TSS), and a TR that matches
 * its descriptor is what VMX entry checks want.
 */
import { TshvError } from '../../base/errors.js';
import { hex } from '../../base/hex.js';
import { PAGE_SIZE, type GuestMemory } from '../../guestmem/guestmem.js';
import type { VpState } from '../../hv/backends/state.js';
import { CR0_ET, CR0_PE, FLAT_LAYOUT, buildGdt, initialState } from '../flat.js';
import type { KernelImage } from '../kernel-file.js';
import { writeAcpiTables, type AcpiTablesLayout, type AcpiTablesOptions } from '../acpi/tables.js';

export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
export const HVM_START_INFO_VERSION = 1;
export const HVM_START_INFO_SIZE = 56;
export const HVM_MODLIST_ENTRY_SIZE = 32;
export const HVM_MEMMAP_ENTRY_SIZE = 24;
/** COMMAND_LINE_SIZE (arch/x86/include/asm/setup.h... uapi/asm/setup.h): bytes including the NUL. */
export const COMMAND_LINE_SIZE = 2048;
/** E820_MAX_ENTRIES_ZEROPAGE, less the slot the PVH code uses for the ISA range. */
export const MAX_MEMMAP_ENTRIES = 127;
/** The 64-bit boot protocol's initrd_addr_max for x86-64 kernels (boot.rst): 2 GiB - 1. */
export const INITRD_ADDR_MAX = 0x7fffffff;

/** e820 / hvm_memmap types (XEN_HVM_MEMMAP_TYPE_*, ACPI "Address Range Types"). */
export const E820 = { RAM: 1, RESERVED: 2, ACPI: 3, NVS: 4, UNUSABLE: 5 } as const;
export type E820Type = (typeof E820)[keyof typeof E820];

export const PVH_LAYOUT = {
  startInfo: 0x6000,
  modlist: 0x6040,
  memmap: 0x6080,
  cmdline: 0x7000,
  /** Lowest address of the legacy hole below 1 MiB. */
  legacyHole: 0xa0000,
  acpi: 0xe0000,
  acpiMaxBytes: 0x20000,
  /** 1 MiB: kernel segments and the initrd go at or above this. */
  highMemory: 0x100000,
} as const;

const MIB = 0x100000;
const GIB4 = 2 ** 32;

export interface RamRange {
  readonly start: number;
  readonly size: number;
}

export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: E820Type;
}

/** The PC RAM layout of src/vmwp/vm.ts: RAM below 3 GiB at 0, the rest at 4 GiB. */
export function pcRamLayout(memoryBytes: number): RamRange[] {
  const lowLimit = 0xc0000000;
  const low = Math.min(memoryBytes, lowLimit);
  const out: RamRange[] = [{ start: 0, size: low }];
  if (memoryBytes > low) out.push({ start: GIB4, size: memoryBytes - low });
  return out;
}

export interface PvhLoadOptions {
  kernel: KernelImage;
  /** The initrd (initramfs) bytes; omitted or empty: no module. */
  initrd?: Uint8Array;
  cmdline: string;
  /** Guest RAM, sorted, non-overlapping, page-aligned; the first range starts at 0. */
  ram: readonly RamRange[];
  vpCount: number;
  /** ACPI table options (DSDT devices, MADT, FADT); vpCount is taken from above. */
  acpi?: Omit<AcpiTablesOptions, 'vpCount'>;
  /** Non-register state to keep (flat.ts initialState). */
  base?: VpState;
}

export interface PvhLoadResult {
  /** Initial state of VP 0 (the other VPs wait for INIT/SIPI). */
  state: VpState;
  startInfoPaddr: number;
  cmdlinePaddr: number;
  initrd: { paddr: number; size: number } | undefined;
  acpi: AcpiTablesLayout;
  e820: readonly E820Entry[];
}

function inval(what: string): never {
  throw new TshvError('EINVAL', `Linux loader: ${what}`);
}

/** Encode and check the command line: ASCII/UTF-8 without NUL, at most 2047 bytes. */
export function encodeCmdline(cmdline: string): Uint8Array {
  const bytes = new TextEncoder().encode(cmdline);
  if (bytes.includes(0)) inval('the kernel command line contains a NUL character');
  if (bytes.length + 1 > COMMAND_LINE_SIZE) {
    inval(`the kernel command line is ${bytes.length} bytes; the kernel takes at most ${COMMAND_LINE_SIZE - 1}`);
  }
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

function checkRam(ram: readonly RamRange[]): void {
  if (ram.length === 0) inval('no guest RAM');
  let prevEnd = -1;
  for (const r of ram) {
    if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.size) || r.size <= 0 || r.start % PAGE_SIZE !== 0 || r.size % PAGE_SIZE !== 0) {
      inval(`RAM range ${hex(r.start)}+${hex(r.size)} is not page-aligned and non-empty`);
    }
    if (r.start < prevEnd) inval(`RAM range ${hex(r.start)} is out of order or overlaps the previous one`);
    prevEnd = r.start + r.size;
  }
  if (ram[0]!.start !== 0 || ram[0]!.size < 2 * MIB) inval('the first RAM range must start at 0 and hold at least 2 MiB');
}

function inRam(ram: readonly RamRange[], at: number, len: number): boolean {
  return ram.some((r) => at >= r.start && at + len <= r.start + r.size);
}

/**
 * The e820 map: RAM below the legacy hole, the hole reserved with the ACPI pages typed ACPI,
 * then every RAM range from 1 MiB up. Addresses not listed (the MMIO hole below 4 GiB) are
 * not RAM. Pure.
 */
export function buildE820(ram: readonly RamRange[], acpiRanges: readonly RamRange[]): E820Entry[] {
  checkRam(ram);
  const l = PVH_LAYOUT;
  let acpiStart = Infinity;
  let acpiEnd = 0;
  for (const a of acpiRanges) {
    acpiStart = Math.min(acpiStart, Math.floor(a.start / PAGE_SIZE) * PAGE_SIZE);
    acpiEnd = Math.max(acpiEnd, Math.ceil((a.start + a.size) / PAGE_SIZE) * PAGE_SIZE);
  }
  if (acpiRanges.length > 0 && (acpiStart < l.legacyHole || acpiEnd > l.highMemory)) {
    inval(`ACPI tables ${hex(acpiStart)}-${hex(acpiEnd)} must lie in the legacy hole ${hex(l.legacyHole)}-${hex(l.highMemory)}`);
  }
  const out: E820Entry[] = [{ addr: 0, size: l.legacyHole, type: E820.RAM }];
  const hole = (from: number, to: number): void => {
    if (to > from) out.push({ addr: from, size: to - from, type: E820.RESERVED });
  };
  if (acpiRanges.length > 0) {
    hole(l.legacyHole, acpiStart);
    out.push({ addr: acpiStart, size: acpiEnd - acpiStart, type: E820.ACPI });
    hole(acpiEnd, l.highMemory);
  } else {
    hole(l.legacyHole, l.highMemory);
  }
  for (const r of ram) {
    const start = Math.max(r.start, l.highMemory);
    const end = r.start + r.size;
    if (end > start) out.push({ addr: start, size: end - start, type: E820.RAM });
  }
  if (out.length > MAX_MEMMAP_ENTRIES) inval(`the memory map has ${out.length} entries (the kernel takes ${MAX_MEMMAP_ENTRIES})`);
  return out;
}

/** hvm_memmap_table_entry[] bytes for `e820`. */
export function encodeMemmap(e820: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(e820.length * HVM_MEMMAP_ENTRY_SIZE);
  const dv = new DataView(out.buffer);
  e820.forEach((e, i) => {
    const at = i * HVM_MEMMAP_ENTRY_SIZE;
    dv.setBigUint64(at, BigInt(e.addr), true);
    dv.setBigUint64(at + 8, BigInt(e.size), true);
    dv.setUint32(at + 16, e.type, true);
    dv.setUint32(at + 20, 0, true);
  });
  return out;
}

export interface StartInfoFields {
  nrModules: number;
  modlistPaddr: number;
  cmdlinePaddr: number;
  rsdpPaddr: number;
  memmapPaddr: number;
  memmapEntries: number;
}

/** hvm_start_info version 1 bytes (56). */
export function encodeStartInfo(f: StartInfoFields): Uint8Array {
  const out = new Uint8Array(HVM_START_INFO_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, XEN_HVM_START_MAGIC_VALUE, true);
  dv.setUint32(4, HVM_START_INFO_VERSION, true);
  dv.setUint32(8, 0, true);                                 // flags (SIF_*): none
  dv.setUint32(12, f.nrModules, true);
  dv.setBigUint64(16, BigInt(f.modlistPaddr), true);
  dv.setBigUint64(24, BigInt(f.cmdlinePaddr), true);
  dv.setBigUint64(32, BigInt(f.rsdpPaddr), true);
  dv.setBigUint64(40, BigInt(f.memmapPaddr), true);
  dv.setUint32(48, f.memmapEntries, true);
  dv.setUint32(52, 0, true);                                // reserved
  return out;
}

/** hvm_modlist_entry bytes (32) for one module without a command line. */
export function encodeModlistEntry(paddr: number, size: number): Uint8Array {
  const out = new Uint8Array(HVM_MODLIST_ENTRY_SIZE);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(paddr), true);
  dv.setBigUint64(8, BigInt(size), true);
  return out;                                               // cmdline_paddr, reserved: 0
}

interface Placement {
  what: string;
  start: number;
  end: number;
}

/**
 * Where the initrd goes: the highest page-aligned address in the first RAM range such that it
 * ends at or below min(that range's end, INITRD_ADDR_MAX + 1) and starts above the kernel.
 */
export function placeInitrd(ram: readonly RamRange[], kernelEnd: number, size: number): number {
  checkRam(ram);
  if (!Number.isSafeInteger(size) || size <= 0) inval(`bad initrd size ${String(size)}`);
  const low = ram[0]!;
  const top = Math.min(low.start + low.size, INITRD_ADDR_MAX + 1, GIB4);
  const at = Math.floor((top - size) / PAGE_SIZE) * PAGE_SIZE;
  const floor = Math.max(PVH_LAYOUT.highMemory, Math.ceil(kernelEnd / PAGE_SIZE) * PAGE_SIZE);
  if (at < floor) {
    inval(`the initrd (${size} bytes) does not fit in guest RAM between the kernel's end ${hex(floor)} and ${hex(top)}; ` +
      `give the VM more memory (it needs at least ${Math.ceil((floor + size) / MIB)} MiB)`);
  }
  return at;
}

/**
 * Load `opts.kernel` for PVH entry: write the segments (zeroing each bss tail), the initrd, the
 * command line, the ACPI tables, the memory map, the module list, hvm_start_info and the GDT,
 * and return VP 0's initial state. Every placement is validated (in RAM, mapped, no overlap)
 * before the first byte is written; a bad layout is a TshvError.
 */
export function loadLinuxPvh(mem: GuestMemory, opts: PvhLoadOptions): PvhLoadResult {
  const { kernel, ram } = opts;
  checkRam(ram);
  const l = PVH_LAYOUT;
  if (kernel.pvhEntry === undefined) {
    throw new TshvError('EIMAGE', `${kernel.fileName}: no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); the kernel needs CONFIG_PVH=y`);
  }
  const cmdline = encodeCmdline(opts.cmdline);
  const initrd = opts.initrd !== undefined && opts.initrd.length > 0 ? opts.initrd : undefined;

  // Plan every placement first.
  const placements: Placement[] = [
    { what: 'boot structures (GDT, TSS)', start: FLAT_LAYOUT.gdt, end: FLAT_LAYOUT.tss + FLAT_LAYOUT.tssLimit + 1 },
    { what: 'hvm_start_info, module list and memory map', start: l.startInfo, end: l.memmap + MAX_MEMMAP_ENTRIES * HVM_MEMMAP_ENTRY_SIZE },
    { what: 'command line', start: l.cmdline, end: l.cmdline + cmdline.length },
    { what: 'ACPI tables', start: l.acpi, end: l.acpi + l.acpiMaxBytes },
  ];
  for (const [i, s] of kernel.segments.entries()) {
    const what = `kernel segment ${i} (${hex(s.paddr)}+${hex(s.memSize)})`;
    if (!inRam(ram, s.paddr, s.memSize)) {
      inval(`${what} does not lie in guest RAM (${ram.map((r) => `${hex(r.start)}-${hex(r.start + r.size)}`).join(', ')}); ` +
        `give the VM more memory (at least ${Math.ceil(kernel.physEnd / MIB) + 1} MiB)`);
    }
    placements.push({ what, start: s.paddr, end: s.paddr + s.memSize });
  }
  let initrdAt: number | undefined;
  if (initrd !== undefined) {
    initrdAt = placeInitrd(ram, kernel.physEnd, initrd.length);
    placements.push({ what: 'initrd', start: initrdAt, end: initrdAt + initrd.length });
  }
  for (let i = 0; i < placements.length; i++) {
    for (let j = i + 1; j < placements.length; j++) {
      const a = placements[i]!;
      const b = placements[j]!;
      if (a.start < b.end && b.start < a.end) {
        inval(`${a.what} at ${hex(a.start)}-${hex(a.end)} overlaps ${b.what} at ${hex(b.start)}-${hex(b.end)}`);
      }
    }
  }
  for (const p of placements) {
    const r = mem.find(p.start, p.end - p.start);
    if (r === undefined || !r.writable) {
      throw new TshvError('EGUESTMEM', `Linux loader: ${p.what} at ${hex(p.start)}-${hex(p.end)} does not lie in one writable RAM region`);
    }
  }

  // Write.
  const acpi = writeAcpiTables(mem, l.acpi, { ...opts.acpi, vpCount: opts.vpCount, maxBytes: l.acpiMaxBytes });
  for (const s of kernel.segments) {
    mem.write(s.paddr, s.data);
    if (s.memSize > s.fileSize) mem.fill(s.paddr + s.fileSize, s.memSize - s.fileSize, 0);
  }
  if (initrd !== undefined && initrdAt !== undefined) mem.write(initrdAt, initrd);
  mem.fill(l.cmdline, COMMAND_LINE_SIZE, 0);
  mem.write(l.cmdline, cmdline);
  const e820 = buildE820(ram, acpi.ranges);
  mem.fill(l.startInfo, l.memmap + MAX_MEMMAP_ENTRIES * HVM_MEMMAP_ENTRY_SIZE - l.startInfo, 0);
  mem.write(l.memmap, encodeMemmap(e820));
  if (initrdAt !== undefined && initrd !== undefined) mem.write(l.modlist, encodeModlistEntry(initrdAt, initrd.length));
  mem.write(l.startInfo, encodeStartInfo({
    nrModules: initrd !== undefined ? 1 : 0,
    modlistPaddr: initrd !== undefined ? l.modlist : 0,
    cmdlinePaddr: l.cmdline,
    rsdpPaddr: acpi.rsdpPaddr,
    memmapPaddr: l.memmap,
    memmapEntries: e820.length,
  }));
  mem.write(FLAT_LAYOUT.gdt, buildGdt());
  mem.fill(FLAT_LAYOUT.tss, FLAT_LAYOUT.tssLimit + 1, 0);

  const state = pvhEntryState(kernel.pvhEntry, l.startInfo, opts.base);
  return {
    state,
    startInfoPaddr: l.startInfo,
    cmdlinePaddr: l.cmdline,
    initrd: initrdAt !== undefined && initrd !== undefined ? { paddr: initrdAt, size: initrd.length } : undefined,
    acpi,
    e820,
  };
}

/**
 * VP state at the PVH entry (head.S ABI): flat.ts's 32-bit protected-mode state with EBX =
 * start_info, CR0 = PE (ET is read-only 1), CR4 = 0, paging off, RFLAGS = 0x2 (IF, TF, VM
 * clear), no stack (the kernel sets its own).
 */
export function pvhEntryState(entry: number, startInfoPaddr: number, base?: VpState): VpState {
  const state = initialState('prot32', entry, base);
  state.regs.rbx = BigInt(startInfoPaddr);
  state.regs.rsp = 0n;
  state.sregs.cr0 = CR0_PE | CR0_ET;
  state.sregs.cr4 = 0n;
  state.sregs.efer = 0n;
  return state;
}
