/**
 * The memory blocks of one partition: the VID owns them, the composition root maps them.
 *
 * A small registry: RAM and ROM blocks are allocated here under unique names, so the worker
 * can list them (statistics, save/restore of RAM, LiveKd) and total them. Mapping a block into
 * the partition's address space (`Partition.mapMemory`) stays with the composition root.
 */
import { TshvError } from '../base/errors.js';
import { MemoryBlock, PAGE_SIZE } from '../guestmem/guestmem.js';
import { RomRegion } from './rom.js';

export type MemoryBlockKind = 'ram' | 'rom';

export interface MemoryBlockEntry {
  readonly name: string;
  readonly kind: MemoryBlockKind;
  readonly block: MemoryBlock;
}

export class MemoryBlocks {
  readonly #entries = new Map<string, MemoryBlockEntry>();

  #add(name: string, kind: MemoryBlockKind, sizeBytes: number): MemoryBlock {
    if (name.length === 0) throw new TshvError('EINVAL', 'memory block name must not be empty');
    if (this.#entries.has(name)) throw new TshvError('EINVAL', `memory block ${name} already exists`);
    const block = new MemoryBlock(sizeBytes, name);
    this.#entries.set(name, { name, kind, block });
    return block;
  }

  /** A RAM block of `sizeBytes` (a positive multiple of the page size). */
  allocateRam(name: string, sizeBytes: number): MemoryBlock {
    return this.#add(name, 'ram', sizeBytes);
  }

  /** A ROM region at `gpa` holding `contents` (rounded up to whole pages, tail 0xFF after load()). */
  allocateRom(name: string, gpa: number, contents: Uint8Array): RomRegion {
    const size = Math.max(PAGE_SIZE, Math.ceil(contents.length / PAGE_SIZE) * PAGE_SIZE);
    if (contents.length === 0) throw new TshvError('EINVAL', `ROM ${name} is empty`);
    if (this.#entries.has(name)) throw new TshvError('EINVAL', `memory block ${name} already exists`);
    const block = new MemoryBlock(size, name);
    const rom = new RomRegion(name, gpa, block, contents);   // validates before we record it
    this.#entries.set(name, { name, kind: 'rom', block });
    return rom;
  }

  get(name: string): MemoryBlockEntry | undefined { return this.#entries.get(name); }

  /** All blocks in allocation order. */
  list(): readonly MemoryBlockEntry[] { return [...this.#entries.values()]; }

  /** Total bytes, optionally of one kind. */
  totalBytes(kind?: MemoryBlockKind): number {
    let n = 0;
    for (const e of this.#entries.values()) if (kind === undefined || e.kind === kind) n += e.block.size;
    return n;
  }
}
