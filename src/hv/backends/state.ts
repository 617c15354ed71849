/**
 * The full architectural state of one virtual processor, as the hypervisor layer sees it.
 * Both backends get and set exactly this, so save/restore, LiveKd and tests never depend on a
 * backend. 64-bit values are bigint here: state transfer is rare and never on a hot path.
 */

/** A segment register. `attributes` packs the descriptor bits as VMX access rights do:
 * bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G, 16 unusable. */
export interface SegmentRegister {
  selector: number;
  base: bigint;
  limit: number;          // byte-granular limit, u32
  attributes: number;
}

export const SEG_UNUSABLE = 1 << 16;

export interface TableRegister {
  base: bigint;
  limit: number;          // u16
}

export interface GeneralRegisters {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

export interface SpecialRegisters {
  cs: SegmentRegister; ds: SegmentRegister; es: SegmentRegister;
  fs: SegmentRegister; gs: SegmentRegister; ss: SegmentRegister;
  tr: SegmentRegister; ldt: SegmentRegister;
  gdt: TableRegister; idt: TableRegister;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint;
  apicBase: bigint;
}

/**
 * x87/SSE/AVX state as an XSAVE image: the first 512 bytes are the FXSAVE legacy area, then
 * the 64-byte XSAVE header, then extended components at their standard offsets.
 * Always 4096 bytes.
 */
export const XSAVE_AREA_SIZE = 4096;

/** Interrupt/exception state pending or in flight at the moment the VP stopped. */
export interface PendingEvents {
  /** An exception being delivered (vector, optional error code), or null. */
  exception: { vector: number; errorCode: number | null } | null;
  /** An external interrupt injected but not yet delivered, or null. */
  interrupt: { vector: number } | null;
  nmiPending: boolean;
  nmiMasked: boolean;
  /** Interrupt shadow after STI / MOV SS. */
  interruptShadow: boolean;
}

/** Local APIC register page, bytes 0x000-0x3FF in the architectural layout. */
export const LAPIC_STATE_SIZE = 1024;

export interface VpState {
  regs: GeneralRegisters;
  sregs: SpecialRegisters;
  xsave: Uint8Array;
  xcr0: bigint;
  /** Model-specific registers by index (architectural ones such as EFER live in sregs). */
  msrs: Map<number, bigint>;
  lapic: Uint8Array;
  events: PendingEvents;
  /** For a VP that has executed HLT and waits for an interrupt. */
  halted: boolean;
}

export function zeroSegment(): SegmentRegister {
  return { selector: 0, base: 0n, limit: 0xffff, attributes: 0 };
}
