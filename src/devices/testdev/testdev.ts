/**
 * TestDevice: a device for freestanding test guests (after QEMU's isa-debug-exit and
 * pc-testdev). It lets a tiny guest prove port and MMIO round trips, end the run with an exit
 * code, and ask the host to deliver an interrupt.
 *
 * Port I/O block, default base 0xF0 (offsets from the base):
 *
 *   +0..+3  SCRATCH   r/w  a 32-bit register, byte-addressable: an access of 1, 2 or 4 bytes
 *                          that lies inside +0..+3 reads / writes those bytes (little endian).
 *                          Returns what was last written. Resets to 0.
 *   +4      EXIT      w    1, 2 or 4 bytes: calls `exit(value)` with the value written.
 *                          Reads: InvalidRegister (the bus returns all-ones).
 *   +5      reserved       InvalidRegister.
 *   +6      DOORBELL  r/w  1 byte. Write a vector V (16..255): the host sends the MSI
 *                          address 0xFEE00000 (destination APIC 0, fixed, physical), data V,
 *                          through the MsiSender. Vectors 0..15 are not valid x86 interrupt
 *                          vectors and get InvalidRegister. Read: the last vector rung (0 if none).
 *   +7      ID        r    1 byte: 0x54 ('T'). Writes: InvalidRegister.
 *
 * An access to a register at the wrong width gets InvalidAccessSize; an access straddling two
 * registers gets UnalignedAccess.
 *
 * MMIO window, default 0xFEB00000, 4 KiB (offsets from the base; accesses must be 1, 2, 4 or 8
 * bytes and naturally aligned, else InvalidAccessSize / UnalignedAccess):
 *
 *   0x000  ID        r    32 bits: 0x56485354 (the bytes 'T' 'S' 'H' 'V'); 64-bit reads give
 *                          the ID in the low half and 0 in the high half. Writes: InvalidRegister.
 *   0x008  SCRATCH   r/w  64 bits, any aligned sub-access; returns what was last written.
 *   other            InvalidRegister.
 *
 * Saved state: schema 'tshv.testdev' version 1 (the two scratch registers and the last vector).
 */
import type {
  ChipsetDevice, IoRegion, IoResult, MmioIntercept, MsiSender, PioSize, PortIoIntercept, SavedState, StateUnit,
} from '../../vid/device.js';
import { IO_READ_INVALID_ACCESS_SIZE, IO_READ_INVALID_REGISTER, IO_READ_UNALIGNED_ACCESS } from '../../vid/device.js';
import { openSaved, SavedStateError } from '../../vid/savedstate.js';

export const TESTDEV_PIO_BASE = 0xf0;
export const TESTDEV_PIO_SCRATCH = 0;
export const TESTDEV_PIO_EXIT = 4;
export const TESTDEV_PIO_DOORBELL = 6;
export const TESTDEV_PIO_ID = 7;
export const TESTDEV_PIO_ID_VALUE = 0x54;

export const TESTDEV_MMIO_BASE = 0xfeb00000;
export const TESTDEV_MMIO_SIZE = 0x1000;
export const TESTDEV_MMIO_ID = 0x000;
export const TESTDEV_MMIO_SCRATCH = 0x008;
export const TESTDEV_MMIO_ID_VALUE = 0x56485354;

/** The MSI address for destination APIC 0, fixed delivery, physical destination mode. */
export const MSI_ADDRESS_APIC0 = 0xfee00000n;

export const TESTDEV_SCHEMA = 'tshv.testdev';
export const TESTDEV_VERSION = 1;

export interface TestDeviceOptions {
  /** Called when the guest writes the EXIT register. */
  exit: (code: number) => void;
  msi: MsiSender;
  pioBase?: number;
  mmioBase?: number;
  name?: string;
}

interface State {
  pioScratch: number;          // u32
  mmioScratch: Uint8Array;     // 8 bytes, little endian
  lastVector: number;
}

export class TestDevice implements ChipsetDevice, PortIoIntercept, MmioIntercept, StateUnit {
  // Fixed configuration
  readonly debugName: string;
  readonly pioBase: number;
  readonly mmioBase: number;
  readonly #pioRegions: readonly IoRegion[];
  readonly #mmioRegions: readonly IoRegion[];

  // Runtime glue
  readonly #exit: (code: number) => void;
  readonly #msi: MsiSender;
  doorbells = 0;

  // Volatile state
  #s: State = { pioScratch: 0, mmioScratch: new Uint8Array(8), lastVector: 0 };

  constructor(opts: TestDeviceOptions) {
    this.pioBase = opts.pioBase ?? TESTDEV_PIO_BASE;
    this.mmioBase = opts.mmioBase ?? TESTDEV_MMIO_BASE;
    if (!Number.isInteger(this.pioBase) || this.pioBase < 0 || this.pioBase > 0xfff8) throw new RangeError(`bad test device port ${this.pioBase}`);
    if (!Number.isSafeInteger(this.mmioBase) || this.mmioBase < 0 || this.mmioBase % TESTDEV_MMIO_SIZE !== 0) {
      throw new RangeError(`bad test device MMIO base ${this.mmioBase}`);
    }
    this.debugName = opts.name ?? 'testdev';
    this.#pioRegions = [{ name: 'testdev-pio', first: this.pioBase, last: this.pioBase + 7 }];
    this.#mmioRegions = [{ name: 'testdev-mmio', first: this.mmioBase, last: this.mmioBase + TESTDEV_MMIO_SIZE - 1 }];
    this.#exit = opts.exit;
    this.#msi = opts.msi;
  }

  supportsPio(): PortIoIntercept { return this; }
  supportsMmio(): MmioIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#pioRegions; }
  mmioRegions(): readonly IoRegion[] { return this.#mmioRegions; }

  // ---------------------------------------------------------------- port I/O

  ioRead(port: number, size: PioSize): number {
    const off = port - this.pioBase;
    if (off + size <= 4) {
      return size === 4 ? this.#s.pioScratch : (this.#s.pioScratch >>> (8 * off)) & (size === 1 ? 0xff : 0xffff);
    }
    if (off < 4) return IO_READ_UNALIGNED_ACCESS;    // straddles SCRATCH and the next register
    switch (off) {
      case TESTDEV_PIO_DOORBELL:
        return size === 1 ? this.#s.lastVector : IO_READ_INVALID_ACCESS_SIZE;
      case TESTDEV_PIO_ID:
        return size === 1 ? TESTDEV_PIO_ID_VALUE : IO_READ_INVALID_ACCESS_SIZE;
      default:
        return IO_READ_INVALID_REGISTER;               // EXIT is write-only; +5 reserved
    }
  }

  ioWrite(port: number, size: PioSize, value: number): IoResult {
    const off = port - this.pioBase;
    if (off + size <= 4) {
      const shift = 8 * off;
      const mask = size === 4 ? 0xffffffff : ((size === 1 ? 0xff : 0xffff) << shift) >>> 0;
      this.#s.pioScratch = ((this.#s.pioScratch & ~mask) | ((value << shift) & mask)) >>> 0;
      return 'ok';
    }
    if (off < 4) return 'UnalignedAccess';
    switch (off) {
      case TESTDEV_PIO_EXIT:
        this.#exit((value & (size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff)) >>> 0);
        return 'ok';
      case TESTDEV_PIO_DOORBELL: {
        if (size !== 1) return 'InvalidAccessSize';
        const vector = value & 0xff;
        if (vector < 16) return 'InvalidRegister';
        this.#s.lastVector = vector;
        this.doorbells++;
        this.#msi(MSI_ADDRESS_APIC0, vector);
        return 'ok';
      }
      default:
        return 'InvalidRegister';   // +5 reserved, +7 ID is read-only
    }
  }

  // ---------------------------------------------------------------- MMIO

  #checkMmio(gpa: number, len: number): IoResult {
    if (len !== 1 && len !== 2 && len !== 4 && len !== 8) return 'InvalidAccessSize';
    if ((gpa - this.mmioBase) % len !== 0) return 'UnalignedAccess';
    return 'ok';
  }

  mmioRead(gpa: number, data: Uint8Array): IoResult {
    const len = data.length;
    const chk = this.#checkMmio(gpa, len);
    if (chk !== 'ok') return chk;
    const off = gpa - this.mmioBase;
    if (off >= TESTDEV_MMIO_SCRATCH && off < TESTDEV_MMIO_SCRATCH + 8) {
      const at = off - TESTDEV_MMIO_SCRATCH;
      for (let i = 0; i < len; i++) data[i] = this.#s.mmioScratch[at + i]!;
      return 'ok';
    }
    if (off >= TESTDEV_MMIO_ID && off < TESTDEV_MMIO_ID + 8) {
      for (let i = 0; i < len; i++) {
        const byteIndex = off + i;
        data[i] = byteIndex < 4 ? (TESTDEV_MMIO_ID_VALUE >>> (8 * byteIndex)) & 0xff : 0;
      }
      return 'ok';
    }
    return 'InvalidRegister';
  }

  mmioWrite(gpa: number, data: Uint8Array): IoResult {
    const len = data.length;
    const chk = this.#checkMmio(gpa, len);
    if (chk !== 'ok') return chk;
    const off = gpa - this.mmioBase;
    if (off >= TESTDEV_MMIO_SCRATCH && off < TESTDEV_MMIO_SCRATCH + 8) {
      this.#s.mmioScratch.set(data, off - TESTDEV_MMIO_SCRATCH);
      return 'ok';
    }
    return 'InvalidRegister';
  }

  // ---------------------------------------------------------------- state unit

  reset(): void {
    this.#s = { pioScratch: 0, mmioScratch: new Uint8Array(8), lastVector: 0 };
  }

  save(): SavedState {
    const s = this.#s;
    const fields = { pioScratch: s.pioScratch, mmioScratch: Array.from(s.mmioScratch), lastVector: s.lastVector } satisfies Record<keyof State, unknown>;
    return { schema: TESTDEV_SCHEMA, version: TESTDEV_VERSION, ...fields };
  }

  restore(saved: unknown): void {
    const r = openSaved(saved, TESTDEV_SCHEMA, TESTDEV_VERSION);
    const pioScratch = r.int('pioScratch', 0, 0xffffffff);
    const mmioScratch = r.bytes('mmioScratch', 8);
    const lastVector = r.int('lastVector', 0, 0xff);
    r.done();
    if (mmioScratch.length !== 8) throw new SavedStateError(TESTDEV_SCHEMA, 'mmioScratch must hold 8 bytes');
    if (lastVector !== 0 && lastVector < 16) throw new SavedStateError(TESTDEV_SCHEMA, `lastVector ${lastVector} is not a valid vector`);
    this.#s = { pioScratch, mmioScratch, lastVector };
  }
}
