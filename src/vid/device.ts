/**
 * Device capability interfaces: what an emulated device offers the VID's dispatcher.
 *
 * After OpenVMM's `chipset_device::ChipsetDevice`: a device is a named object that answers
 * capability queries (`supportsPio()`, `supportsMmio()`), each returning a small interface or
 * nothing. The dispatcher (`dispatch.ts`, our "vmotherboard") asks once at registration and
 * then calls the intercepts directly on every exit.
 *
 * Hot-path contract (no allocation per access, no Promise, no BigInt):
 * - `IoResult` is a constant string ('ok' or an IoError name); returning one allocates nothing.
 * - `PortIoIntercept.ioRead` returns the value itself, as an unsigned number of `size` bytes
 *   (0 ... 2^(8*size)-1). An error is signalled by returning a NEGATIVE number, one of the
 *   `IO_READ_*` codes below (use `ioReadError(err)` to produce one and `ioReadErrorOf(v)` to
 *   decode it). Valid values are never negative, so the two cannot be confused.
 * - MMIO passes the backend's data buffer through: `mmioRead` fills `data` (1-8 bytes, little
 *   endian as the guest sees memory), `mmioWrite` reads it. The device must not keep `data`.
 *
 * Bus policy is not the device's business: on an error the dispatcher returns all-ones for a
 * read and drops a write, counts it and logs it rate-limited. Devices never log on guest paths
 * except through a RateLimitedLog, and never throw on a guest-reachable path.
 *
 * Interrupts and power actions reach the partition through the plain interfaces at the end of
 * this file; the composition root (vmwp) wires them to `Partition.setIrqLine`,
 * `Partition.signalMsi` and its own reset / power-off logic.
 */

/** Errors a device may report for one access (OpenVMM `IoError`, minus the async cases). */
export type IoError = 'InvalidRegister' | 'InvalidAccessSize' | 'UnalignedAccess';

/** The outcome of a write (or of an MMIO read): 'ok', or an IoError. Constant strings only. */
export type IoResult = 'ok' | IoError;

/** Port access sizes that IN/OUT can produce. */
export type PioSize = 1 | 2 | 4;

/** `ioRead` return codes for errors; every valid read value is >= 0. */
export const IO_READ_INVALID_REGISTER = -1;
export const IO_READ_INVALID_ACCESS_SIZE = -2;
export const IO_READ_UNALIGNED_ACCESS = -3;

/** The negative `ioRead` return value for an error. */
export function ioReadError(err: IoError): number {
  switch (err) {
    case 'InvalidRegister': return IO_READ_INVALID_REGISTER;
    case 'InvalidAccessSize': return IO_READ_INVALID_ACCESS_SIZE;
    case 'UnalignedAccess': return IO_READ_UNALIGNED_ACCESS;
  }
}

/** The IoError that an `ioRead` return value encodes, or undefined for a valid value. */
export function ioReadErrorOf(v: number): IoError | undefined {
  if (v >= 0) return undefined;
  if (v === IO_READ_INVALID_ACCESS_SIZE) return 'InvalidAccessSize';
  if (v === IO_READ_UNALIGNED_ACCESS) return 'UnalignedAccess';
  return 'InvalidRegister';   // any other negative value: treat as a bad register
}

/** A named, inclusive range of I/O ports or guest physical addresses. */
export interface IoRegion {
  readonly name: string;
  /** First port / GPA of the region. */
  readonly first: number;
  /** Last port / GPA of the region (inclusive). */
  readonly last: number;
}

export interface PortIoIntercept {
  /** The port ranges the device decodes; asked once, at registration. */
  pioRegions(): readonly IoRegion[];
  /**
   * IN of `size` bytes at `port` (the whole access lies in one of the device's regions).
   * Returns the value (0 ... 2^(8*size)-1) or a negative IO_READ_* code.
   */
  ioRead(port: number, size: PioSize): number;
  /** OUT of the low `size` bytes of `value` (an unsigned number) at `port`. */
  ioWrite(port: number, size: PioSize, value: number): IoResult;
}

export interface MmioIntercept {
  /** The GPA ranges the device decodes; asked once, at registration. */
  mmioRegions(): readonly IoRegion[];
  /** Fill `data` (1-8 bytes) with what the guest reads at `gpa`. */
  mmioRead(gpa: number, data: Uint8Array): IoResult;
  /** The guest wrote `data` (1-8 bytes) at `gpa`. */
  mmioWrite(gpa: number, data: Uint8Array): IoResult;
}

/** An emulated device, by capability (OpenVMM ChipsetDevice). */
export interface ChipsetDevice {
  /** Unique within one dispatcher; used in statistics and log lines. */
  readonly debugName: string;
  supportsPio?(): PortIoIntercept | undefined;
  supportsMmio?(): MmioIntercept | undefined;
}

/**
 * A saved device state: a named, versioned, JSON-compatible plain object. `restore()` treats
 * it as untrusted input and validates every field (see savedstate.ts).
 */
export interface SavedState {
  readonly schema: string;
  readonly version: number;
  readonly [field: string]: unknown;
}

/** A device with volatile state that the worker can reset, save and restore. */
export interface StateUnit {
  /** Back to the power-on state. */
  reset(): void;
  save(): SavedState;
  /** Replace the state with a validated saved one; throws SavedStateError and changes nothing if invalid. */
  restore(saved: unknown): void;
}

/** One interrupt line (an ISA IRQ / IOAPIC pin), driven as a level. */
export interface IrqLine {
  set(level: boolean): void;
}

/** Sends a message-signalled interrupt: address and data as PCI MSI defines them. */
export type MsiSender = (address: bigint, data: number) => void;

/** Machine-level power actions a device may trigger (keyboard-controller reset, port 0x92). */
export interface PowerControl {
  reset(): void;
  powerOff(): void;
}
