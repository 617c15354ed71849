/**
 * The per-VP mailbox between a vCPU thread and the device thread: one SharedArrayBuffer that
 * carries one exit at a time. Layout (Int32 slots, then a data area):
 *
 *   STATE  IDLE -> POSTED (vCPU thread wrote an exit and notified)
 *                -> REPLIED (device thread wrote the reply and notified) -> IDLE (vCPU thread)
 *          A STOP exit is posted without waiting; the device thread sets IDLE when it takes it.
 *   STOP_REQ  set to 1 by the device thread before it kicks the vCPU (requestStop).
 *
 * 64-bit values travel as two u32 halves so the vCPU thread never allocates a BigInt.
 */
export const MB_STATE = 0;
export const MB_KIND = 1;
export const MB_A = 2;            // port | gpa low | msr index | stop reason
export const MB_B = 3;            // size | gpa high | stop detail
export const MB_C = 4;            // count | length | stop detail 2
export const MB_STOP_REQ = 5;
export const MB_V0 = 6;           // value low / hypercall RCX low ...
export const MB_RCX = 6;          // RCX lo, hi
export const MB_RDX = 8;          // RDX lo, hi
export const MB_R8 = 10;          // R8 lo, hi
export const MB_REPLY = 12;       // reply value lo, hi
export const MB_REPLY_ERR = 14;   // 1: inject #GP (MSR)
export const MB_D0 = 16;          // stop: extra detail (lo, hi)
export const MB_SLOTS = 32;

export const MB_DATA_OFFSET = MB_SLOTS * 4;
/** A PIO string exit carries at most one page of data (KVM's PIO page). */
export const MB_DATA_SIZE = 4096;
export const MB_BYTES = MB_DATA_OFFSET + MB_DATA_SIZE;

/**
 * DEVNOTE: both sides spin briefly before sleeping. KVM's own PIO exit round trip is ~7-11 us
 * here (a C loop); a futex sleep and wake-up on each side adds tens of microseconds. The vCPU
 * thread spins VCPU_SPIN_ITERATIONS loads (a few microseconds) for the reply; the device thread
 * spins up to DEVICE_SPIN_MS for the next exit, but only while such spins keep succeeding
 * (on a loaded host spinning steals the CPU the other side needs), and hands back to the event
 * loop after DEVICE_BATCH exits in a row so timers and other VPs get their turn.
 */
export const VCPU_SPIN_ITERATIONS = 2000;
export const DEVICE_SPIN_MS = 0.02;
export const DEVICE_SPIN_MAX_MISSES = 4;
export const DEVICE_BATCH = 256;

export const ST_IDLE = 0;
export const ST_POSTED = 1;
export const ST_REPLIED = 2;

export const EX_PIO_IN = 1;
export const EX_PIO_OUT = 2;
export const EX_MMIO_READ = 3;
export const EX_MMIO_WRITE = 4;
export const EX_MSR_READ = 5;
export const EX_MSR_WRITE = 6;
export const EX_HYPERCALL = 7;
export const EX_STOP = 8;

/** Stop reasons carried in MB_A of an EX_STOP. */
export const STOP_REQUESTED = 1;
export const STOP_SHUTDOWN = 2;
export const STOP_HALTED = 3;
export const STOP_INTERNAL_ERROR = 4;   // B: suberror, C: ndata, D0: data[0]
export const STOP_FAIL_ENTRY = 5;       // B/C: hardware reason lo/hi, D0: cpu
export const STOP_SYSTEM_EVENT = 6;     // B: type
export const STOP_RUN_ERRNO = 7;        // B: errno of KVM_RUN
export const STOP_UNKNOWN_EXIT = 8;     // B: exit reason
export const STOP_BAD_EXIT = 9;         // B: exit reason, C: what was out of bounds

/** Messages from the device thread to a vCPU thread (rare; not on the exit path). */
export type ToVcpu =
  | { op: 'run' }
  | { op: 'getState'; id: number }
  | { op: 'setState'; id: number; state: import('../state.js').VpState }
  | { op: 'dispose' };

export interface VcpuInit {
  vmFd: number;
  index: number;
  mailbox: SharedArrayBuffer;
  hypercallPort: number;
  mmapSize: number;
  /** struct kvm_cpuid2 for this VP. */
  cpuid: Uint8Array;
  /** MSRs to save/restore (already filtered to what KVM supports). */
  stateMsrs: number[];
  hasXsave: boolean;
  hasXcrs: boolean;
}

export type FromVcpu =
  | { op: 'ready'; tid: number; vcpuFd: number }
  | { op: 'initError'; message: string }
  | { op: 'state'; id: number; state: import('../state.js').VpState }
  | { op: 'stateSet'; id: number }
  | { op: 'stateError'; id: number; message: string }
  | { op: 'disposed' };
