/**
 * The KVM userspace ABI that this backend uses: ioctl numbers, capability and exit codes, and
 * the byte layouts of the structures it exchanges with the kernel, plus pure encoders and
 * decoders between those structures and the backend-neutral types of ../state.ts.
 *
 * Spec: the Linux uapi headers <linux/kvm.h> and <asm/kvm.h> (x86_64), and
 * Documentation/virt/kvm/api.rst. Every number here is checked against the installed headers
 * by abi.test.ts (it compiles a C program that prints them), so a typo cannot survive a test run.
 *
 * DEVNOTE: structures are encoded by hand into Uint8Array/DataView instead of koffi struct
 * types: the layouts are fixed by the kernel ABI, hand encoding keeps the hot path free of
 * koffi marshalling, and the same bytes can be unit tested without /dev/kvm.
 */
import type { GeneralRegisters, PendingEvents, SegmentRegister, SpecialRegisters, TableRegister } from '../state.js';
import { SEG_UNUSABLE, XSAVE_AREA_SIZE } from '../state.js';
import type { CpuidEntry } from '../backend.js';

// ---- ioctl request numbers (x86_64) ----
export const KVM_GET_API_VERSION = 0xae00;
export const KVM_CREATE_VM = 0xae01;
export const KVM_CHECK_EXTENSION = 0xae03;
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05;
export const KVM_GET_MSR_INDEX_LIST = 0xc004ae02;
export const KVM_SET_TSS_ADDR = 0xae47;
export const KVM_SET_IDENTITY_MAP_ADDR = 0x4008ae48;
export const KVM_CREATE_IRQCHIP = 0xae60;
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
export const KVM_ENABLE_CAP = 0x4068aea3;
export const KVM_X86_SET_MSR_FILTER = 0x4188aec6;
export const KVM_CREATE_VCPU = 0xae41;
export const KVM_RUN = 0xae80;
export const KVM_GET_REGS = 0x8090ae81;
export const KVM_SET_REGS = 0x4090ae82;
export const KVM_GET_SREGS = 0x8138ae83;
export const KVM_SET_SREGS = 0x4138ae84;
export const KVM_GET_XSAVE = 0x9000aea4;
export const KVM_SET_XSAVE = 0x5000aea5;
export const KVM_GET_FPU = 0x81a0ae8c;
export const KVM_SET_FPU = 0x41a0ae8d;
export const KVM_GET_XCRS = 0x8188aea6;
export const KVM_SET_XCRS = 0x4188aea7;
export const KVM_GET_MSRS = 0xc008ae88;
export const KVM_SET_MSRS = 0x4008ae89;
export const KVM_GET_LAPIC = 0x8400ae8e;
export const KVM_SET_LAPIC = 0x4400ae8f;
export const KVM_GET_VCPU_EVENTS = 0x8040ae9f;
export const KVM_SET_VCPU_EVENTS = 0x4040aea0;
export const KVM_GET_MP_STATE = 0x8004ae98;
export const KVM_SET_MP_STATE = 0x4004ae99;
export const KVM_SET_CPUID2 = 0x4008ae90;
export const KVM_IRQ_LINE = 0x4008ae61;
export const KVM_SIGNAL_MSI = 0x4020aea5;

/** Names for error messages, by request number. */
export const IOCTL_NAMES: ReadonlyMap<number, string> = new Map([
  [KVM_GET_API_VERSION, 'KVM_GET_API_VERSION'], [KVM_CREATE_VM, 'KVM_CREATE_VM'],
  [KVM_CHECK_EXTENSION, 'KVM_CHECK_EXTENSION'], [KVM_GET_VCPU_MMAP_SIZE, 'KVM_GET_VCPU_MMAP_SIZE'],
  [KVM_GET_SUPPORTED_CPUID, 'KVM_GET_SUPPORTED_CPUID'], [KVM_GET_MSR_INDEX_LIST, 'KVM_GET_MSR_INDEX_LIST'],
  [KVM_SET_TSS_ADDR, 'KVM_SET_TSS_ADDR'], [KVM_SET_IDENTITY_MAP_ADDR, 'KVM_SET_IDENTITY_MAP_ADDR'],
  [KVM_CREATE_IRQCHIP, 'KVM_CREATE_IRQCHIP'], [KVM_SET_USER_MEMORY_REGION, 'KVM_SET_USER_MEMORY_REGION'],
  [KVM_ENABLE_CAP, 'KVM_ENABLE_CAP'], [KVM_X86_SET_MSR_FILTER, 'KVM_X86_SET_MSR_FILTER'],
  [KVM_CREATE_VCPU, 'KVM_CREATE_VCPU'], [KVM_RUN, 'KVM_RUN'],
  [KVM_GET_REGS, 'KVM_GET_REGS'], [KVM_SET_REGS, 'KVM_SET_REGS'],
  [KVM_GET_SREGS, 'KVM_GET_SREGS'], [KVM_SET_SREGS, 'KVM_SET_SREGS'],
  [KVM_GET_XSAVE, 'KVM_GET_XSAVE'], [KVM_SET_XSAVE, 'KVM_SET_XSAVE'],
  [KVM_GET_FPU, 'KVM_GET_FPU'], [KVM_SET_FPU, 'KVM_SET_FPU'],
  [KVM_GET_XCRS, 'KVM_GET_XCRS'], [KVM_SET_XCRS, 'KVM_SET_XCRS'],
  [KVM_GET_MSRS, 'KVM_GET_MSRS'], [KVM_SET_MSRS, 'KVM_SET_MSRS'],
  [KVM_GET_LAPIC, 'KVM_GET_LAPIC'], [KVM_SET_LAPIC, 'KVM_SET_LAPIC'],
  [KVM_GET_VCPU_EVENTS, 'KVM_GET_VCPU_EVENTS'], [KVM_SET_VCPU_EVENTS, 'KVM_SET_VCPU_EVENTS'],
  [KVM_GET_MP_STATE, 'KVM_GET_MP_STATE'], [KVM_SET_MP_STATE, 'KVM_SET_MP_STATE'],
  [KVM_SET_CPUID2, 'KVM_SET_CPUID2'], [KVM_IRQ_LINE, 'KVM_IRQ_LINE'], [KVM_SIGNAL_MSI, 'KVM_SIGNAL_MSI'],
]);

// ---- capabilities ----
export const KVM_API_VERSION = 12;
export const KVM_CAP_IRQCHIP = 0x0;
export const KVM_CAP_USER_MEMORY = 0x3;
export const KVM_CAP_SET_TSS_ADDR = 0x4;
export const KVM_CAP_EXT_CPUID = 0x7;
export const KVM_CAP_NR_MEMSLOTS = 0xa;
export const KVM_CAP_MP_STATE = 0xe;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 0x25;
export const KVM_CAP_VCPU_EVENTS = 0x29;
export const KVM_CAP_XSAVE = 0x37;
export const KVM_CAP_XCRS = 0x38;
export const KVM_CAP_SIGNAL_MSI = 0x4d;
export const KVM_CAP_READONLY_MEM = 0x51;
export const KVM_CAP_IMMEDIATE_EXIT = 0x88;
export const KVM_CAP_X86_USER_SPACE_MSR = 0xbc;
export const KVM_CAP_X86_MSR_FILTER = 0xbd;

export const KVM_MSR_EXIT_REASON_INVAL = 1 << 0;
export const KVM_MSR_EXIT_REASON_UNKNOWN = 1 << 1;
export const KVM_MSR_EXIT_REASON_FILTER = 1 << 2;
export const KVM_MSR_FILTER_READ = 1 << 0;
export const KVM_MSR_FILTER_WRITE = 1 << 1;
export const KVM_MSR_FILTER_DEFAULT_ALLOW = 0;
export const KVM_MSR_FILTER_MAX_RANGES = 16;
export const KVM_MSR_FILTER_MAX_BITMAP_SIZE = 0x600;

export const KVM_MEM_READONLY = 0x2;

// ---- exit reasons ----
export const KVM_EXIT_UNKNOWN = 0x0;
export const KVM_EXIT_IO = 0x2;
export const KVM_EXIT_HLT = 0x5;
export const KVM_EXIT_MMIO = 0x6;
export const KVM_EXIT_SHUTDOWN = 0x8;
export const KVM_EXIT_FAIL_ENTRY = 0x9;
export const KVM_EXIT_INTR = 0xa;
export const KVM_EXIT_INTERNAL_ERROR = 0x11;
export const KVM_EXIT_SYSTEM_EVENT = 0x18;
export const KVM_EXIT_X86_RDMSR = 0x1d;
export const KVM_EXIT_X86_WRMSR = 0x1e;
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export const KVM_MP_STATE_RUNNABLE = 0x0;
export const KVM_MP_STATE_UNINITIALIZED = 0x1;
export const KVM_MP_STATE_INIT_RECEIVED = 0x2;
export const KVM_MP_STATE_HALTED = 0x3;
export const KVM_MP_STATE_SIPI_RECEIVED = 0x4;

export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
export const KVM_VCPUEVENT_VALID_SHADOW = 0x4;
export const KVM_X86_SHADOW_INT_MOV_SS = 0x1;
export const KVM_X86_SHADOW_INT_STI = 0x2;

/** KVM_INTERNAL_ERROR_* suberror names (Documentation/virt/kvm/api.rst). */
export function internalErrorName(suberror: number): string {
  switch (suberror) {
    case 1: return 'emulation failure';
    case 2: return 'simultaneous exception';
    case 3: return 'delivery event';
    case 4: return 'unexpected exit reason';
    default: return 'unknown suberror';
  }
}

// ---- struct kvm_run ----
export const RUN_IMMEDIATE_EXIT = 1;
export const RUN_EXIT_REASON = 8;
export const RUN_IO_DIRECTION = 32;
export const RUN_IO_SIZE = 33;
export const RUN_IO_PORT = 34;
export const RUN_IO_COUNT = 36;
export const RUN_IO_DATA_OFFSET = 40;
export const RUN_MMIO_PHYS_ADDR = 32;
export const RUN_MMIO_DATA = 40;
export const RUN_MMIO_LEN = 48;
export const RUN_MMIO_IS_WRITE = 52;
export const RUN_MSR_ERROR = 32;
export const RUN_MSR_REASON = 40;
export const RUN_MSR_INDEX = 44;
export const RUN_MSR_DATA = 48;
export const RUN_INTERNAL_SUBERROR = 32;
export const RUN_INTERNAL_NDATA = 36;
export const RUN_INTERNAL_DATA = 40;
export const RUN_FAIL_ENTRY_REASON = 32;
export const RUN_FAIL_ENTRY_CPU = 40;
export const RUN_SYSTEM_EVENT_TYPE = 32;
export const RUN_SYSTEM_EVENT_NDATA = 36;
export const KVM_RUN_SIZE = 2352;

// ---- structure sizes ----
export const KVM_REGS_SIZE = 144;
export const KVM_SREGS_SIZE = 312;
export const KVM_SEGMENT_SIZE = 24;
export const KVM_FPU_SIZE = 416;
export const KVM_XSAVE_SIZE = 4096;
export const KVM_XCRS_SIZE = 392;
export const KVM_LAPIC_SIZE = 1024;
export const KVM_VCPU_EVENTS_SIZE = 64;
export const KVM_CPUID_ENTRY2_SIZE = 40;
export const KVM_MSR_ENTRY_SIZE = 16;
export const KVM_USERSPACE_MEMORY_REGION_SIZE = 32;
export const KVM_ENABLE_CAP_SIZE = 104;
export const KVM_MSR_FILTER_SIZE = 392;
export const KVM_MSR_FILTER_RANGE_SIZE = 24;
export const KVM_MSI_SIZE = 32;
export const KVM_IRQ_LEVEL_SIZE = 8;

// ---- general registers: struct kvm_regs is 18 u64 in this order ----
const REG_ORDER = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const satisfies readonly (keyof GeneralRegisters)[];
export const REGS_RAX = 0;
export const REGS_RCX = 16;
export const REGS_RDX = 24;
export const REGS_R8 = 64;
export const REGS_RIP = 128;

function dv(b: Uint8Array): DataView { return new DataView(b.buffer, b.byteOffset, b.byteLength); }

function need(b: Uint8Array, size: number, what: string): DataView {
  if (b.byteLength < size) throw new RangeError(`${what}: buffer of ${b.byteLength} bytes, need ${size}`);
  return dv(b);
}

export function decodeRegs(b: Uint8Array): GeneralRegisters {
  const v = need(b, KVM_REGS_SIZE, 'kvm_regs');
  const r: Partial<GeneralRegisters> = {};
  REG_ORDER.forEach((k, i) => { r[k] = v.getBigUint64(i * 8, true); });
  return r as GeneralRegisters;
}

export function encodeRegs(r: GeneralRegisters, b: Uint8Array): void {
  const v = need(b, KVM_REGS_SIZE, 'kvm_regs');
  REG_ORDER.forEach((k, i) => { v.setBigUint64(i * 8, BigInt.asUintN(64, r[k]), true); });
}

// ---- segments: struct kvm_segment ----
/** Pack a kvm_segment's descriptor bits into the VMX access-rights layout of state.ts. */
export function decodeSegment(b: Uint8Array, off: number): SegmentRegister {
  const v = need(b, off + KVM_SEGMENT_SIZE, 'kvm_segment');
  const u8 = (o: number): number => v.getUint8(off + o);
  const attributes =
    (u8(14) & 0xf) | ((u8(18) & 1) << 4) | ((u8(16) & 3) << 5) | ((u8(15) & 1) << 7) |
    ((u8(21) & 1) << 12) | ((u8(19) & 1) << 13) | ((u8(17) & 1) << 14) | ((u8(20) & 1) << 15) |
    (u8(22) !== 0 ? SEG_UNUSABLE : 0);
  return {
    base: v.getBigUint64(off, true),
    limit: v.getUint32(off + 8, true),
    selector: v.getUint16(off + 12, true),
    attributes,
  };
}

export function encodeSegment(s: SegmentRegister, b: Uint8Array, off: number): void {
  const v = need(b, off + KVM_SEGMENT_SIZE, 'kvm_segment');
  const a = s.attributes;
  v.setBigUint64(off, BigInt.asUintN(64, s.base), true);
  v.setUint32(off + 8, s.limit >>> 0, true);
  v.setUint16(off + 12, s.selector & 0xffff, true);
  v.setUint8(off + 14, a & 0xf);          // type
  v.setUint8(off + 15, (a >> 7) & 1);     // present
  v.setUint8(off + 16, (a >> 5) & 3);     // dpl
  v.setUint8(off + 17, (a >> 14) & 1);    // db
  v.setUint8(off + 18, (a >> 4) & 1);     // s
  v.setUint8(off + 19, (a >> 13) & 1);    // l
  v.setUint8(off + 20, (a >> 15) & 1);    // g
  v.setUint8(off + 21, (a >> 12) & 1);    // avl
  v.setUint8(off + 22, (a & SEG_UNUSABLE) !== 0 ? 1 : 0);
  v.setUint8(off + 23, 0);
}

// ---- struct kvm_sregs ----
const SEG_ORDER = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const satisfies readonly (keyof SpecialRegisters)[];
const SREGS_GDT = 192;
const SREGS_IDT = 208;
const SREGS_CR_ORDER = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const satisfies readonly (keyof SpecialRegisters)[];
const SREGS_CR0 = 224;
export const SREGS_INTERRUPT_BITMAP = 280;

function decodeTable(v: DataView, off: number): TableRegister {
  return { base: v.getBigUint64(off, true), limit: v.getUint16(off + 8, true) };
}

export function decodeSregs(b: Uint8Array): SpecialRegisters {
  const v = need(b, KVM_SREGS_SIZE, 'kvm_sregs');
  const r: Partial<Record<keyof SpecialRegisters, unknown>> = {};
  SEG_ORDER.forEach((k, i) => { r[k] = decodeSegment(b, i * KVM_SEGMENT_SIZE); });
  r.gdt = decodeTable(v, SREGS_GDT);
  r.idt = decodeTable(v, SREGS_IDT);
  SREGS_CR_ORDER.forEach((k, i) => { r[k] = v.getBigUint64(SREGS_CR0 + i * 8, true); });
  return r as SpecialRegisters;
}

/** Encode sregs; the interrupt bitmap is cleared (pending interrupts travel in vcpu events). */
export function encodeSregs(s: SpecialRegisters, b: Uint8Array): void {
  const v = need(b, KVM_SREGS_SIZE, 'kvm_sregs');
  SEG_ORDER.forEach((k, i) => { encodeSegment(s[k], b, i * KVM_SEGMENT_SIZE); });
  for (const [off, t] of [[SREGS_GDT, s.gdt], [SREGS_IDT, s.idt]] as const) {
    v.setBigUint64(off, BigInt.asUintN(64, t.base), true);
    v.setUint16(off + 8, t.limit & 0xffff, true);
    v.setUint16(off + 10, 0, true); v.setUint32(off + 12, 0, true);
  }
  SREGS_CR_ORDER.forEach((k, i) => { v.setBigUint64(SREGS_CR0 + i * 8, BigInt.asUintN(64, s[k]), true); });
  b.fill(0, SREGS_INTERRUPT_BITMAP, KVM_SREGS_SIZE);
}

// ---- struct kvm_vcpu_events ----
export function decodeEvents(b: Uint8Array): PendingEvents {
  const v = need(b, KVM_VCPU_EVENTS_SIZE, 'kvm_vcpu_events');
  const excInjected = v.getUint8(0) !== 0 || v.getUint8(3) !== 0;
  return {
    exception: excInjected
      ? { vector: v.getUint8(1), errorCode: v.getUint8(2) !== 0 ? v.getUint32(4, true) : null }
      : null,
    interrupt: v.getUint8(8) !== 0 ? { vector: v.getUint8(9) } : null,
    nmiPending: v.getUint8(12) !== 0 || v.getUint8(13) !== 0,
    nmiMasked: v.getUint8(14) !== 0,
    interruptShadow: (v.getUint8(11) & (KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI)) !== 0,
  };
}

/**
 * DEVNOTE: without KVM_CAP_EXCEPTION_PAYLOAD KVM folds "pending" into "injected" and rejects a
 * set with pending=1, so an exception is always restored as injected. An NMI in flight is
 * restored as pending: it is delivered again, which is what the guest would have seen.
 */
export function encodeEvents(e: PendingEvents, b: Uint8Array): void {
  const v = need(b, KVM_VCPU_EVENTS_SIZE, 'kvm_vcpu_events');
  b.fill(0, 0, KVM_VCPU_EVENTS_SIZE);
  if (e.exception !== null) {
    v.setUint8(0, 1);
    v.setUint8(1, e.exception.vector & 0xff);
    v.setUint8(2, e.exception.errorCode !== null ? 1 : 0);
    v.setUint32(4, (e.exception.errorCode ?? 0) >>> 0, true);
  }
  if (e.interrupt !== null) { v.setUint8(8, 1); v.setUint8(9, e.interrupt.vector & 0xff); }
  v.setUint8(11, e.interruptShadow ? KVM_X86_SHADOW_INT_STI : 0);
  v.setUint8(13, e.nmiPending ? 1 : 0);
  v.setUint8(14, e.nmiMasked ? 1 : 0);
  v.setUint32(20, KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW, true);
}

// ---- struct kvm_fpu <-> FXSAVE legacy area (fallback when KVM_CAP_XSAVE is absent) ----
const FPU_FCW = 128, FPU_FSW = 130, FPU_FTWX = 132, FPU_LAST_OPCODE = 134, FPU_LAST_IP = 136, FPU_LAST_DP = 144;
const FPU_XMM = 152, FPU_MXCSR = 408;
const XSAVE_HEADER_XSTATE_BV = 512;

/** Convert struct kvm_fpu into a 4096-byte XSAVE image (x87 and SSE components). */
export function fpuToXsave(fpu: Uint8Array): Uint8Array {
  const f = need(fpu, KVM_FPU_SIZE, 'kvm_fpu');
  const out = new Uint8Array(XSAVE_AREA_SIZE);
  const x = dv(out);
  x.setUint16(0, f.getUint16(FPU_FCW, true), true);
  x.setUint16(2, f.getUint16(FPU_FSW, true), true);
  x.setUint8(4, f.getUint8(FPU_FTWX));
  x.setUint16(6, f.getUint16(FPU_LAST_OPCODE, true), true);
  x.setBigUint64(8, f.getBigUint64(FPU_LAST_IP, true), true);
  x.setBigUint64(16, f.getBigUint64(FPU_LAST_DP, true), true);
  x.setUint32(24, f.getUint32(FPU_MXCSR, true), true);
  x.setUint32(28, 0xffff, true);                                  // MXCSR_MASK
  for (let i = 0; i < 8; i++) out.set(fpu.subarray(i * 16, i * 16 + 16), 32 + i * 16);
  out.set(fpu.subarray(FPU_XMM, FPU_XMM + 256), 160);
  x.setBigUint64(XSAVE_HEADER_XSTATE_BV, 3n, true);               // x87 | SSE
  return out;
}

export function xsaveToFpu(xsave: Uint8Array, fpu: Uint8Array): void {
  const x = need(xsave, 512, 'xsave legacy area');
  const f = need(fpu, KVM_FPU_SIZE, 'kvm_fpu');
  fpu.fill(0, 0, KVM_FPU_SIZE);
  for (let i = 0; i < 8; i++) fpu.set(xsave.subarray(32 + i * 16, 32 + i * 16 + 16), i * 16);
  f.setUint16(FPU_FCW, x.getUint16(0, true), true);
  f.setUint16(FPU_FSW, x.getUint16(2, true), true);
  f.setUint8(FPU_FTWX, x.getUint8(4));
  f.setUint16(FPU_LAST_OPCODE, x.getUint16(6, true), true);
  f.setBigUint64(FPU_LAST_IP, x.getBigUint64(8, true), true);
  f.setBigUint64(FPU_LAST_DP, x.getBigUint64(16, true), true);
  fpu.set(xsave.subarray(160, 160 + 256), FPU_XMM);
  f.setUint32(FPU_MXCSR, x.getUint32(24, true), true);
}

// ---- struct kvm_xcrs ----
export function decodeXcr0(b: Uint8Array): bigint | null {
  const v = need(b, KVM_XCRS_SIZE, 'kvm_xcrs');
  const n = Math.min(v.getUint32(0, true), 16);
  for (let i = 0; i < n; i++) {
    if (v.getUint32(8 + i * 16, true) === 0) return v.getBigUint64(8 + i * 16 + 8, true);
  }
  return null;
}

export function encodeXcr0(xcr0: bigint, b: Uint8Array): void {
  const v = need(b, KVM_XCRS_SIZE, 'kvm_xcrs');
  b.fill(0, 0, KVM_XCRS_SIZE);
  v.setUint32(0, 1, true);
  v.setBigUint64(16, BigInt.asUintN(64, xcr0), true);
}

// ---- struct kvm_msrs ----
export function encodeMsrs(entries: readonly (readonly [number, bigint])[]): Uint8Array {
  const b = new Uint8Array(8 + entries.length * KVM_MSR_ENTRY_SIZE);
  const v = dv(b);
  v.setUint32(0, entries.length, true);
  entries.forEach(([index, value], i) => {
    v.setUint32(8 + i * KVM_MSR_ENTRY_SIZE, index >>> 0, true);
    v.setBigUint64(8 + i * KVM_MSR_ENTRY_SIZE + 8, BigInt.asUintN(64, value), true);
  });
  return b;
}

export function decodeMsrs(b: Uint8Array, count: number): Map<number, bigint> {
  const v = need(b, 8 + count * KVM_MSR_ENTRY_SIZE, 'kvm_msrs');
  const m = new Map<number, bigint>();
  for (let i = 0; i < count; i++) {
    m.set(v.getUint32(8 + i * KVM_MSR_ENTRY_SIZE, true), v.getBigUint64(8 + i * KVM_MSR_ENTRY_SIZE + 8, true));
  }
  return m;
}

// ---- struct kvm_cpuid2 ----
export function encodeCpuid2(entries: readonly CpuidEntry[], flagsFor: (e: CpuidEntry) => number): Uint8Array {
  const b = new Uint8Array(8 + entries.length * KVM_CPUID_ENTRY2_SIZE);
  const v = dv(b);
  v.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const o = 8 + i * KVM_CPUID_ENTRY2_SIZE;
    v.setUint32(o, e.function >>> 0, true);
    v.setUint32(o + 4, e.index >>> 0, true);
    v.setUint32(o + 8, flagsFor(e) >>> 0, true);
    v.setUint32(o + 12, e.eax >>> 0, true);
    v.setUint32(o + 16, e.ebx >>> 0, true);
    v.setUint32(o + 20, e.ecx >>> 0, true);
    v.setUint32(o + 24, e.edx >>> 0, true);
  });
  return b;
}

export interface KvmCpuidEntry extends CpuidEntry { flags: number }

export function decodeCpuid2(b: Uint8Array): KvmCpuidEntry[] {
  const v = need(b, 8, 'kvm_cpuid2');
  const n = v.getUint32(0, true);
  need(b, 8 + n * KVM_CPUID_ENTRY2_SIZE, 'kvm_cpuid2 entries');
  const out: KvmCpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * KVM_CPUID_ENTRY2_SIZE;
    out.push({
      function: v.getUint32(o, true), index: v.getUint32(o + 4, true), flags: v.getUint32(o + 8, true),
      eax: v.getUint32(o + 12, true), ebx: v.getUint32(o + 16, true), ecx: v.getUint32(o + 20, true), edx: v.getUint32(o + 24, true),
    });
  }
  return out;
}

/** KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the leaves whose ECX subleaf selects the output. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;
const INDEXED_LEAVES = new Set([0x4, 0x7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x1f, 0x24, 0x8000001d, 0x80000020]);
export function cpuidFlagsFor(e: CpuidEntry): number {
  return INDEXED_LEAVES.has(e.function >>> 0) ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
}

/**
 * The CPUID table one VP sees: the partition's table with that VP's APIC ID patched into
 * leaf 1 EBX[31:24] and the x2APIC ID of leaves 0xB / 0x1F (EDX). KVM's LAPIC ID is the vcpu id.
 */
export function cpuidForVp(entries: readonly CpuidEntry[], apicId: number): CpuidEntry[] {
  return entries.map((e) => {
    const f = e.function >>> 0;
    if (f === 1) return { ...e, ebx: ((e.ebx & 0x00ffffff) | ((apicId & 0xff) << 24)) >>> 0 };
    if (f === 0xb || f === 0x1f) return { ...e, edx: apicId >>> 0 };
    return { ...e };
  });
}

// ---- struct kvm_msr_filter ----
export interface MsrFilterRange { first: number; last: number }

/**
 * Split intercept ranges into kvm_msr_filter_range chunks whose bitmaps fit the kernel limit.
 * Each chunk is { base, nmsrs }; its bitmap is all zeros (deny = exit to userspace).
 * Throws RangeError when the ranges are malformed or need more than 16 filter ranges.
 */
export function msrFilterChunks(ranges: readonly MsrFilterRange[]): { base: number; nmsrs: number }[] {
  const maxPerRange = KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8;
  const out: { base: number; nmsrs: number }[] = [];
  for (const r of ranges) {
    if (!Number.isInteger(r.first) || !Number.isInteger(r.last) || r.first < 0 || r.last > 0xffffffff || r.last < r.first) {
      throw new RangeError(`bad MSR range ${r.first}-${r.last}`);
    }
    for (let base = r.first; base <= r.last; base += maxPerRange) {
      out.push({ base, nmsrs: Math.min(maxPerRange, r.last - base + 1) });
      if (out.length > KVM_MSR_FILTER_MAX_RANGES) throw new RangeError(`MSR intercepts need more than ${KVM_MSR_FILTER_MAX_RANGES} filter ranges`);
    }
  }
  return out;
}

/** Encode struct kvm_msr_filter; every range points at `bitmapAddress` (a zeroed bitmap). */
export function encodeMsrFilter(chunks: readonly { base: number; nmsrs: number }[], bitmapAddress: number): Uint8Array {
  const b = new Uint8Array(KVM_MSR_FILTER_SIZE);
  const v = dv(b);
  v.setUint32(0, KVM_MSR_FILTER_DEFAULT_ALLOW, true);
  chunks.forEach((c, i) => {
    const o = 8 + i * KVM_MSR_FILTER_RANGE_SIZE;
    v.setUint32(o, KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, true);
    v.setUint32(o + 4, c.nmsrs, true);
    v.setUint32(o + 8, c.base >>> 0, true);
    v.setBigUint64(o + 16, BigInt(bitmapAddress), true);
  });
  return b;
}

// ---- small structs ----
export function encodeMemoryRegion(slot: number, flags: number, gpa: number, size: number, hostAddress: number): Uint8Array {
  const b = new Uint8Array(KVM_USERSPACE_MEMORY_REGION_SIZE);
  const v = dv(b);
  v.setUint32(0, slot, true);
  v.setUint32(4, flags, true);
  v.setBigUint64(8, BigInt(gpa), true);
  v.setBigUint64(16, BigInt(size), true);
  v.setBigUint64(24, BigInt(hostAddress), true);
  return b;
}

export function encodeEnableCap(cap: number, arg0: number): Uint8Array {
  const b = new Uint8Array(KVM_ENABLE_CAP_SIZE);
  const v = dv(b);
  v.setUint32(0, cap, true);
  v.setBigUint64(8, BigInt(arg0), true);
  return b;
}

/** struct kvm_msi from a PCI MSI address/data pair. */
export function encodeMsi(address: bigint, data: number, b: Uint8Array): void {
  const v = need(b, KVM_MSI_SIZE, 'kvm_msi');
  const a = BigInt.asUintN(64, address);
  b.fill(0, 0, KVM_MSI_SIZE);
  v.setUint32(0, Number(a & 0xffffffffn), true);
  v.setUint32(4, Number(a >> 32n), true);
  v.setUint32(8, data >>> 0, true);
}

/** The MSRs a Linux guest needs saved and restored (EFER, FS/GS base live in sregs). */
export const STATE_MSRS: readonly number[] = [
  0x10,         // IA32_TSC
  0x174,        // IA32_SYSENTER_CS
  0x175,        // IA32_SYSENTER_ESP
  0x176,        // IA32_SYSENTER_EIP
  0x1a0,        // IA32_MISC_ENABLE
  0x277,        // IA32_PAT
  0x6e0,        // IA32_TSC_DEADLINE
  0xc0000081,   // STAR
  0xc0000082,   // LSTAR
  0xc0000083,   // CSTAR
  0xc0000084,   // SFMASK
  0xc0000102,   // KERNEL_GS_BASE
  0xc0000103,   // TSC_AUX
];
