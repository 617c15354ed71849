/**
 * Hyper-V definitions from the Top-Level Functional Specification (TLFS) that the hypervisor
 * layer uses: status codes, the hypercall input value, synthetic MSR numbers. Wire values are
 * open enums (a const object plus number), never TS enums.
 */

/** HV_STATUS values (TLFS "Hypercall Status Codes"). */
export const HvStatus = {
  SUCCESS: 0x0000,
  INVALID_HYPERCALL_CODE: 0x0002,
  INVALID_HYPERCALL_INPUT: 0x0003,
  INVALID_ALIGNMENT: 0x0004,
  INVALID_PARAMETER: 0x0005,
  ACCESS_DENIED: 0x0006,
  INVALID_PARTITION_STATE: 0x0007,
  OPERATION_DENIED: 0x0008,
  UNKNOWN_PROPERTY: 0x0009,
  INSUFFICIENT_MEMORY: 0x000b,
  INVALID_PARTITION_ID: 0x000d,
  INVALID_VP_INDEX: 0x000e,
  INVALID_PORT_ID: 0x0011,
  INVALID_CONNECTION_ID: 0x0012,
  INSUFFICIENT_BUFFERS: 0x0013,
} as const;
export type HvStatus = number;

/** The first and last MSR of the range the hypervisor owns (synthetic MSRs). */
export const HV_MSR_FIRST = 0x40000000;
export const HV_MSR_LAST = 0x400001ff;

export const HV_X64_MSR_GUEST_OS_ID = 0x40000000;
export const HV_X64_MSR_HYPERCALL = 0x40000001;
export const HV_X64_MSR_VP_INDEX = 0x40000002;

/**
 * The hypercall input value (RCX), decoded. Layout (TLFS 3.7): bits 15:0 call code, 16 fast,
 * 26:17 variable header size (in 8-byte units), 31 is-nested, 43:32 rep count,
 * 59:48 rep start index; bits 30:27, 47:44 and 63:60 are reserved and must be zero.
 */
export interface HypercallInput {
  code: number;
  fast: boolean;
  varHeaderQwords: number;
  nested: boolean;
  repCount: number;
  repStart: number;
}

const RESERVED_MASK = (0xfn << 27n) | (0xfn << 44n) | (0xfn << 60n);

/** Parse RCX. Pure; returns null when reserved bits are set (the caller answers INVALID_HYPERCALL_INPUT). */
export function parseHypercallInput(rcx: bigint): HypercallInput | null {
  const v = BigInt.asUintN(64, rcx);
  if ((v & RESERVED_MASK) !== 0n) return null;
  const lo = Number(v & 0xffffffffn);
  const hi = Number(v >> 32n);
  return {
    code: lo & 0xffff,
    fast: ((lo >>> 16) & 1) === 1,
    varHeaderQwords: (lo >>> 17) & 0x3ff,
    nested: ((lo >>> 31) & 1) === 1,
    repCount: hi & 0xfff,
    repStart: (hi >>> 16) & 0xfff,
  };
}

/** The hypercall result value (RAX): bits 15:0 status, 43:32 reps completed. */
export function hypercallResult(status: HvStatus, repsCompleted = 0): bigint {
  return BigInt(status & 0xffff) | (BigInt(repsCompleted & 0xfff) << 32n);
}
