/**
 * The decoded-block cache (memory.ts CodeCache): lookups by physical address and code size,
 * invalidation by page, flushing. Blocks must stay findable however their addresses hash: a
 * direct-mapped table lost kernel blocks to collisions (and with them their execution counts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CodeCache, PhysMem } from './memory.js';
import type { GuestMemory } from '../../../guestmem/guestmem.js';

const RAM = 64 << 20;

function cache(): CodeCache {
  const bytes = new Uint8Array(RAM);
  const mem = { regions: () => [{ start: 0, end: RAM, writable: true, block: { bytes } }] } as unknown as GuestMemory;
  return new CodeCache(new PhysMem(mem));
}

/** Commit a one-instruction block at (pa, mode). */
function add(c: CodeCache, pa: number, mode: number): number {
  c.reserve();
  return c.commit(pa, mode, 1, 1, -1);
}

describe('emu: decoded-block cache', () => {
  it('finds every one of 150,000 blocks (more than the hash table has slots), by address and code size', () => {
    const c = cache();
    const blocks: [number, number, number][] = [];
    // Addresses 16 bytes apart over ~2 MiB, and the same addresses again in another mode.
    for (let k = 0; k < 75000; k++) {
      const pa = 0x100000 + k * 16 + (k % 7);
      blocks.push([pa, 2, add(c, pa, 2)], [pa, 1, add(c, pa, 1)]);
    }
    assert.equal(c.stats.flushes, 0);
    for (const [pa, mode, b] of blocks) assert.equal(c.lookup(pa, mode), b, `block at ${pa.toString(16)} mode ${mode}`);
    assert.equal(c.lookup(0x100001, 2), -1);
    assert.equal(c.lookup(0x100000, 0), -1);
  });

  it('drops the blocks of an invalidated page only, and finds blocks decoded there again', () => {
    const c = cache();
    const a = add(c, 0x5000, 2), b = add(c, 0x5ff0, 2), d = add(c, 0x6000, 2);
    c.invalidatePage(5);
    assert.equal(c.lookup(0x5000, 2), -1);
    assert.equal(c.lookup(0x5ff0, 2), -1);
    assert.equal(c.lookup(0x6000, 2), d);
    const a2 = add(c, 0x5000, 2);
    assert.notEqual(a2, a);
    assert.equal(c.lookup(0x5000, 2), a2);
    assert.equal(c.lookup(0x5ff0, 2), -1, `old block ${b} stays dropped`);
  });

  it('finds the newest block when an address is decoded again', () => {
    const c = cache();
    const first = add(c, 0x9000, 2);
    const second = add(c, 0x9000, 2);
    assert.notEqual(first, second);
    assert.equal(c.lookup(0x9000, 2), second);
  });

  it('a flush empties it', () => {
    const c = cache();
    add(c, 0x7000, 2);
    c.flush();
    assert.equal(c.lookup(0x7000, 2), -1);
    assert.equal(add(c, 0x7000, 2), 0);
    assert.equal(c.lookup(0x7000, 2), 0);
  });
});
