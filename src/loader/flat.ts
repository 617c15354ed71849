/**
 * Flat-binary loader: places a raw image (no headers: the bytes as `objcopy -O binary` writes
 * them) into guest memory and builds the virtual processor state a loader hands over in one of
 * three x86 operating modes.
 *
 * Modes (Intel SDM Vol. 3A, ch. 9 "Processor Management and Initialization"):
 * - `real`:   16-bit real mode. CS:IP points at the entry (CS = entry's 64 KiB-aligned segment,
 *             IP = the rest), DS = ES = FS = GS = CS, SS:SP = 0x0800:0x8000 (top at 0x10000).
 *             IDTR is the real-mode IVT (base 0, limit 0x3FF). Nothing is written but the image.
 * - `prot32`: 32-bit protected mode, paging off, flat 4 GiB code (0x08) and data (0x10)
 *             segments from a GDT the loader writes; CR0.PE. ESP = 0x10000.
 * - `long64`: 64-bit long mode: the same GDT with a 64-bit code segment (0x18, CS.L = 1),
 *             identity-mapped 4-level page tables for the first 4 GiB in 2 MiB pages,
 *             CR0.PE|PG, CR4.PAE, EFER.LME|LMA, CR3 -> PML4. RSP = 0x10000.
 * In every mode IDTR has limit 0 outside real mode (the guest installs its own IDT; an
 * exception before that is a triple fault, which the VM reports as shutdown), interrupts are
 * disabled (RFLAGS = 0x2), the LAPIC is at its architectural reset state (software-disabled,
 * LVTs masked) at base 0xFEE00000, and TR holds a busy TSS (VMX requires a usable TR outside
 * real mode).
 *
 * Guest physical memory layout (FLAT_LAYOUT):
 *
 *   0x00000-0x00FFF  untouched (real-mode IVT / BIOS data area if a guest wants one)
 *   0x01000-0x0102F  GDT: null, code32 0x08, data 0x10, code64 0x18, TSS 0x20 (16 bytes)
 *   0x01100-0x01167  TSS (all zero: no ring changes, no IST)
 *   0x02000-0x02FFF  PML4 (long64): entry 0 -> PDPT
 *   0x03000-0x03FFF  PDPT: entries 0-3 -> the four page directories
 *   0x04000-0x07FFF  four page directories, 512 x 2 MiB pages each (0-4 GiB, identity);
 *                    the fourth GiB (MMIO: test devices, IOAPIC, LAPIC, ROM) is PCD|PWT
 *   0x08000-0x0FFFF  initial stack, growing down from 0x10000
 *   0x10000-...      images (load GPA chosen by the caller, at or above IMAGE_MIN_GPA)
 *
 * The whole range below 0x10000 is reserved in every mode so that one layout serves all.
 *
 * DEVNOTE: this module depends on the VpState *type* of src/hv/backends/state.ts (type-only
 * import, erased at compile time): the loader's product is exactly the state a backend takes.
 * It imports no code from hv/.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';
import type { GuestMemory } from '../guestmem/guestmem.js';
import type { GeneralRegisters, SegmentRegister, SpecialRegisters, VpState } from '../hv/backends/state.js';

export type BootMode = 'real' | 'prot32' | 'long64';

export const BOOT_MODES: readonly BootMode[] = ['real', 'prot32', 'long64'];

export function isBootMode(s: string): s is BootMode {
  return (BOOT_MODES as readonly string[]).includes(s);
}

export const FLAT_LAYOUT = {
  gdt: 0x1000,
  gdtEntries: 6,
  tss: 0x1100,
  tssLimit: 0x67,
  pml4: 0x2000,
  pdpt: 0x3000,
  pd: 0x4000,
  pdCount: 4,
  stackBottom: 0x8000,
  stackTop: 0x10000,
  /** Lowest GPA an image may occupy: everything below is the loader's. */
  imageMinGpa: 0x10000,
  /** Real-mode SS:SP giving the same stack top. */
  realSs: 0x0800,
  realSp: 0x8000,
} as const;

export const GDT_SELECTORS = { code32: 0x08, data: 0x10, code64: 0x18, tss: 0x20 } as const;

/** VMX access-rights encodings (state.ts SegmentRegister.attributes) of the loader's segments. */
export const SEG_ATTR = {
  /** Execute/read code, accessed, S, P: real-mode CS. */
  realCode: 0x009b,
  /** Read/write data, accessed, S, P: real-mode data segments. */
  realData: 0x0093,
  /** 32-bit flat code: type 0xB, S, P, D/B, G. */
  code32: 0xc09b,
  /** Flat data: type 0x3, S, P, D/B, G. */
  data: 0xc093,
  /** 64-bit code: type 0xB, S, P, L, G (D/B must be 0 with L). */
  code64: 0xa09b,
  /** Busy TSS (type 0xB: 32-bit busy in protected mode, 64-bit busy in long mode), P. */
  tssBusy: 0x008b,
  /** LDT (type 2), P: the LDTR's reset value. */
  ldt: 0x0082,
} as const;

export const CR0_PE = 1n << 0n;
export const CR0_ET = 1n << 4n;
export const CR0_NE = 1n << 5n;
export const CR0_PG = 1n << 31n;
export const CR4_PAE = 1n << 5n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;

/** Page-table entry bits (SDM Vol. 3A, 4.5). */
export const PTE_P = 0x1;
export const PTE_RW = 0x2;
export const PTE_PWT = 0x8;
export const PTE_PCD = 0x10;
export const PTE_PS = 0x80;

export const LAPIC_BASE = 0xfee00000;
/** IA32_APIC_BASE: base | EN (bit 11) | BSP (bit 8). */
export const APIC_BASE_MSR_VALUE = BigInt(LAPIC_BASE) | (1n << 11n) | (1n << 8n);

const GIB = 0x40000000;
const MIB2 = 0x200000;

/**
 * Encode one 8-byte segment descriptor (SDM Vol. 3A, 3.4.5) from a base, a byte limit and
 * access rights in the VMX layout of SegmentRegister.attributes. With G set the limit is
 * stored in 4 KiB units. Returns the two little-endian dwords.
 */
export function encodeDescriptor(base: number, limit: number, attributes: number): [number, number] {
  const g = (attributes & 0x8000) !== 0;
  const raw = g ? Math.floor(limit / 4096) : limit;
  if (raw > 0xfffff || raw < 0) throw new TshvError('EINVAL', `segment limit ${hex(limit)} does not fit a descriptor`);
  const lo = ((base & 0xffff) << 16) | (raw & 0xffff);
  const hi = (base & 0xff000000) | ((attributes & 0xf000) << 8) | (raw & 0xf0000) | ((attributes & 0xff) << 8) | ((base >>> 16) & 0xff);
  return [lo >>> 0, hi >>> 0];
}

/** The GDT bytes of FLAT_LAYOUT: null, code32, data, code64, then a 16-byte TSS descriptor. */
export function buildGdt(): Uint8Array {
  const out = new Uint8Array(FLAT_LAYOUT.gdtEntries * 8);
  const dv = new DataView(out.buffer);
  const put = (index: number, [lo, hi]: [number, number]): void => {
    dv.setUint32(index * 8, lo, true);
    dv.setUint32(index * 8 + 4, hi, true);
  };
  put(GDT_SELECTORS.code32 >> 3, encodeDescriptor(0, 0xffffffff, SEG_ATTR.code32));
  put(GDT_SELECTORS.data >> 3, encodeDescriptor(0, 0xffffffff, SEG_ATTR.data));
  put(GDT_SELECTORS.code64 >> 3, encodeDescriptor(0, 0xffffffff, SEG_ATTR.code64));
  put(GDT_SELECTORS.tss >> 3, encodeDescriptor(FLAT_LAYOUT.tss, FLAT_LAYOUT.tssLimit, SEG_ATTR.tssBusy));
  // Upper half of the 16-byte long-mode TSS descriptor: base[63:32] = 0, rest reserved zero.
  put((GDT_SELECTORS.tss >> 3) + 1, [0, 0]);
  return out;
}

/**
 * The page directories' entries for the identity map of 0-4 GiB in 2 MiB pages, as
 * [low dword, high dword] pairs: entry `i` of directory `d` maps GPA d * 1 GiB + i * 2 MiB.
 * The fourth GiB is uncached (PCD|PWT): it holds the platform's MMIO.
 */
export function pdEntry(d: number, i: number): number {
  const addr = d * GIB + i * MIB2;
  const cache = d === 3 ? PTE_PCD | PTE_PWT : 0;
  return (addr | PTE_P | PTE_RW | PTE_PS | cache) >>> 0;
}

/** Write the GDT and TSS (all protected modes). */
function writeGdt(mem: GuestMemory): void {
  mem.write(FLAT_LAYOUT.gdt, buildGdt(), { host: true });
  mem.fill(FLAT_LAYOUT.tss, FLAT_LAYOUT.tssLimit + 1, 0, { host: true });
}

/** Write PML4, PDPT and the four page directories (long64). */
function writePageTables(mem: GuestMemory): void {
  const l = FLAT_LAYOUT;
  mem.fill(l.pml4, 0x1000, 0, { host: true });
  mem.fill(l.pdpt, 0x1000, 0, { host: true });
  mem.writeU64(l.pml4, BigInt(l.pdpt | PTE_P | PTE_RW));
  for (let d = 0; d < l.pdCount; d++) {
    const pd = l.pd + d * 0x1000;
    mem.writeU64(l.pdpt + d * 8, BigInt(pd | PTE_P | PTE_RW));
    const table = new Uint8Array(0x1000);
    const dv = new DataView(table.buffer);
    for (let i = 0; i < 512; i++) dv.setUint32(i * 8, pdEntry(d, i), true);
    mem.write(pd, table, { host: true });
  }
}

function seg(selector: number, base: number, limit: number, attributes: number): SegmentRegister {
  return { selector, base: BigInt(base), limit: limit >>> 0, attributes };
}

function zeroRegs(): GeneralRegisters {
  return {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
    rip: 0n, rflags: 0x2n,
  };
}

/**
 * The register state for `mode` entering at `entryGpa` (pure: writes nothing). For `real`
 * the entry must lie below 1 MiB.
 */
export function bootRegisters(mode: BootMode, entryGpa: number): { regs: GeneralRegisters; sregs: SpecialRegisters } {
  if (!Number.isSafeInteger(entryGpa) || entryGpa < 0) throw new TshvError('EINVAL', `bad entry point ${String(entryGpa)}`);
  const regs = zeroRegs();
  const l = FLAT_LAYOUT;
  const ldt = seg(0, 0, 0xffff, SEG_ATTR.ldt);
  switch (mode) {
    case 'real': {
      if (entryGpa >= 0x100000) throw new TshvError('EINVAL', `real-mode entry ${hex(entryGpa)} is not below 1 MiB`);
      const cs = (entryGpa >>> 16) << 12;
      const base = cs << 4;
      regs.rip = BigInt(entryGpa - base);
      regs.rsp = BigInt(l.realSp);
      const data = (): SegmentRegister => seg(cs, base, 0xffff, SEG_ATTR.realData);
      return {
        regs,
        sregs: {
          cs: seg(cs, base, 0xffff, SEG_ATTR.realCode),
          ds: data(), es: data(), fs: data(), gs: data(),
          ss: seg(l.realSs, l.realSs << 4, 0xffff, SEG_ATTR.realData),
          tr: seg(0, 0, 0xffff, SEG_ATTR.tssBusy),
          ldt,
          gdt: { base: 0n, limit: 0xffff },
          idt: { base: 0n, limit: 0x3ff },
          cr0: CR0_ET | CR0_NE, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n,
          efer: 0n,
          apicBase: APIC_BASE_MSR_VALUE,
        },
      };
    }
    case 'prot32':
    case 'long64': {
      const long = mode === 'long64';
      if (!long && entryGpa > 0xffffffff) throw new TshvError('EINVAL', `32-bit entry ${hex(entryGpa)} is above 4 GiB`);
      regs.rip = BigInt(entryGpa);
      regs.rsp = BigInt(l.stackTop);
      const data = (): SegmentRegister => seg(GDT_SELECTORS.data, 0, 0xffffffff, SEG_ATTR.data);
      return {
        regs,
        sregs: {
          cs: long ? seg(GDT_SELECTORS.code64, 0, 0xffffffff, SEG_ATTR.code64) : seg(GDT_SELECTORS.code32, 0, 0xffffffff, SEG_ATTR.code32),
          ds: data(), es: data(), fs: data(), gs: data(), ss: data(),
          tr: seg(GDT_SELECTORS.tss, l.tss, l.tssLimit, SEG_ATTR.tssBusy),
          ldt,
          gdt: { base: BigInt(l.gdt), limit: l.gdtEntries * 8 - 1 },
          idt: { base: 0n, limit: 0 },
          cr0: long ? CR0_PE | CR0_ET | CR0_NE | CR0_PG : CR0_PE | CR0_ET | CR0_NE,
          cr2: 0n,
          cr3: long ? BigInt(l.pml4) : 0n,
          cr4: long ? CR4_PAE : 0n,
          cr8: 0n,
          efer: long ? EFER_LME | EFER_LMA : 0n,
          apicBase: APIC_BASE_MSR_VALUE,
        },
      };
    }
  }
}

/** LAPIC register offsets used for the reset page (Intel SDM Vol. 3A, table 11-1). */
const LAPIC_LVT_OFFSETS = [0x2f0, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370] as const;
const LAPIC_DFR = 0xe0;
const LAPIC_SVR = 0xf0;
const LVT_MASKED = 0x10000;

/** The LAPIC register page at power-up (SDM Vol. 3A, 11.4.7.1): LVTs masked, SVR 0xFF, DFR all ones. */
export function resetLapicPage(apicId = 0): Uint8Array {
  const page = new Uint8Array(1024);
  const dv = new DataView(page.buffer);
  dv.setUint32(0x20, (apicId & 0xff) << 24, true);
  dv.setUint32(LAPIC_DFR, 0xffffffff, true);
  dv.setUint32(LAPIC_SVR, 0xff, true);
  for (const off of LAPIC_LVT_OFFSETS) dv.setUint32(off, LVT_MASKED, true);
  return page;
}

/** An XSAVE image in the init state: FCW 0x037F, MXCSR 0x1F80, XSTATE_BV = x87|SSE. */
export function initXsaveArea(): Uint8Array {
  const area = new Uint8Array(4096);
  const dv = new DataView(area.buffer);
  dv.setUint16(0, 0x037f, true);         // FCW
  dv.setUint32(24, 0x1f80, true);        // MXCSR
  dv.setUint32(28, 0xffff, true);        // MXCSR_MASK (informational)
  dv.setUint32(512, 0x3, true);          // XSTATE_BV
  return area;
}

/**
 * The complete initial VpState for `mode` at `entryGpa`. Pure. `base`, when given (for
 * instance the VP's state as the backend created it), supplies the non-register parts
 * (xsave, xcr0, msrs, lapic); otherwise they are the architectural reset values.
 */
export function initialState(mode: BootMode, entryGpa: number, base?: VpState): VpState {
  const { regs, sregs } = bootRegisters(mode, entryGpa);
  return {
    regs,
    sregs,
    xsave: base ? base.xsave.slice() : initXsaveArea(),
    xcr0: base ? base.xcr0 : 1n,
    msrs: base ? new Map(base.msrs) : new Map<number, bigint>(),
    lapic: base ? base.lapic.slice() : resetLapicPage(0),
    events: { exception: null, interrupt: null, nmiPending: false, nmiMasked: false, interruptShadow: false },
    halted: false,
  };
}

export interface FlatImageOptions {
  mode: BootMode;
  /** GPA of the image's first byte; at or above FLAT_LAYOUT.imageMinGpa. */
  loadGpa: number;
  /** GPA execution starts at; inside the image. Defaults to loadGpa. */
  entryGpa?: number;
  /** Non-register state to keep (see initialState). */
  base?: VpState;
}

/**
 * Write `image` at `opts.loadGpa` and the mode's boot structures (GDT, TSS, page tables), and
 * return the initial state. Throws a TshvError (EINVAL for a bad layout, EGUESTMEM when the
 * memory it needs is not mapped RAM) before writing anything if the layout is wrong.
 */
export function loadFlatImage(mem: GuestMemory, image: Uint8Array, opts: FlatImageOptions): VpState {
  const { mode, loadGpa } = opts;
  const entryGpa = opts.entryGpa ?? loadGpa;
  if (image.length === 0) throw new TshvError('EINVAL', 'flat image is empty');
  if (!Number.isSafeInteger(loadGpa) || loadGpa < FLAT_LAYOUT.imageMinGpa) {
    throw new TshvError('EINVAL', `load address ${hex(loadGpa)} is below ${hex(FLAT_LAYOUT.imageMinGpa)} (the loader's boot structures and stack)`);
  }
  const end = loadGpa + image.length;
  if (!Number.isSafeInteger(entryGpa) || entryGpa < loadGpa || entryGpa >= end) {
    throw new TshvError('EINVAL', `entry ${hex(entryGpa)} is outside the image ${hex(loadGpa)}-${hex(end)}`);
  }
  if (mode !== 'long64' && end > 0x100000000) throw new TshvError('EINVAL', `image end ${hex(end)} is above 4 GiB`);
  const state = initialState(mode, entryGpa, opts.base);   // validates the entry for the mode
  const need: [number, number, string][] = [[loadGpa, image.length, 'image']];
  if (mode !== 'real') need.push([FLAT_LAYOUT.gdt, FLAT_LAYOUT.stackBottom - FLAT_LAYOUT.gdt, 'boot structures']);
  need.push([FLAT_LAYOUT.stackBottom, FLAT_LAYOUT.stackTop - FLAT_LAYOUT.stackBottom, 'stack']);
  for (const [at, len, what] of need) {
    const r = mem.find(at, len);
    if (r === undefined || !r.writable) {
      throw new TshvError('EGUESTMEM', `${what} at ${hex(at)}+${hex(len)} does not lie in one writable RAM region`);
    }
  }
  mem.write(loadGpa, image);
  if (mode !== 'real') writeGdt(mem);
  if (mode === 'long64') writePageTables(mem);
  return state;
}
