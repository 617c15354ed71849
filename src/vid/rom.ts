/**
 * ROM emulation: a region of guest physical memory that the guest can read but not change.
 *
 * Hyper-V's VID maps ROM (firmware images, option ROMs) read-only into the partition; a guest
 * write into it does not change the bytes but arrives as a memory intercept. tshv does the
 * same: the composition root maps a RomRegion's MemoryBlock with `writable: false`
 * (`Partition.mapMemory`), and registers the region with the IoDispatcher
 * (`IoDispatcher.registerRom`). A guest write then reaches `mmioWrite` and the dispatcher
 * either drops it (counted as `romWritesDropped`, rate-limited warning) or hands it to an owning
 * device that registered for the purpose (e.g. a flash device that takes command writes).
 * Reads normally never exit (the memory is mapped); if a backend does send one, RomDevice
 * answers from the same bytes the mapping shows.
 *
 * DEVNOTE: the contents are not copied into the block at creation. A backend may re-base the
 * block's view once (`MemoryBlock.alignTo`) before any byte is written, so the composition
 * root calls `load()` after `mapMemory`.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';
import { MAX_GPA, MemoryBlock, PAGE_SIZE } from '../guestmem/guestmem.js';
import type { ChipsetDevice, IoRegion, IoResult, MmioIntercept } from './device.js';

export class RomRegion {
  /** The mapped size: the contents rounded up to whole pages. */
  readonly size: number;
  readonly #contents: Uint8Array;

  /** `contents` is copied; `block` must be at least `contents.length` bytes. */
  constructor(readonly name: string, readonly gpa: number, readonly block: MemoryBlock, contents: Uint8Array) {
    if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % PAGE_SIZE !== 0 || gpa + block.size > MAX_GPA) {
      throw new TshvError('EINVAL', `ROM ${name}: GPA ${hex(gpa)} must be page aligned and the region below 2^52`);
    }
    if (contents.length === 0 || contents.length > block.size) {
      throw new TshvError('EINVAL', `ROM ${name}: ${contents.length} bytes do not fit its ${block.size}-byte block`);
    }
    this.size = block.size;
    this.#contents = contents.slice();
  }

  /** The last GPA of the region (inclusive). */
  get last(): number { return this.gpa + this.size - 1; }

  /** The image as given (a copy). */
  get contents(): Uint8Array { return this.#contents.slice(); }

  /** Write the image into the block, padding the tail of the last page with 0xFF. */
  load(): void {
    const bytes = this.block.bytes;
    bytes.set(this.#contents, 0);
    bytes.fill(0xff, this.#contents.length);
  }
}

/** Called for a guest write into a ROM that no device owns. */
export type RomWriteSink = (rom: RomRegion, gpa: number, lenBytes: number) => void;

/** The MMIO intercept standing for a ROM region inside the dispatcher. */
export class RomDevice implements ChipsetDevice, MmioIntercept {
  readonly debugName: string;
  readonly #regions: readonly IoRegion[];

  constructor(readonly rom: RomRegion, readonly owner: MmioIntercept | undefined, private readonly dropped: RomWriteSink) {
    this.debugName = `rom:${rom.name}`;
    this.#regions = [{ name: rom.name, first: rom.gpa, last: rom.last }];
  }

  supportsMmio(): MmioIntercept { return this; }
  mmioRegions(): readonly IoRegion[] { return this.#regions; }

  mmioRead(gpa: number, data: Uint8Array): IoResult {
    const off = gpa - this.rom.gpa;
    const bytes = this.rom.block.bytes;
    for (let i = 0; i < data.length; i++) data[i] = bytes[off + i] ?? 0xff;
    return 'ok';
  }

  mmioWrite(gpa: number, data: Uint8Array): IoResult {
    if (this.owner !== undefined) return this.owner.mmioWrite(gpa, data);
    this.dropped(this.rom, gpa, data.length);
    return 'ok';
  }
}
