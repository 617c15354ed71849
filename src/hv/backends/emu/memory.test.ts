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

  it('a store drops only the blocks whose bytes it overlaps, incl. one crossing in from the page before', () => {
    const c = cache();
    const isCode = (page: number): boolean => c.phys.code[0]![page] !== 0;
    const blk = (pa: number, bytes: number, page2 = -1): number => { c.reserve(); return c.commit(pa, 2, 1, bytes, page2); };
    const a = blk(0x5100, 0x10), b = blk(0x5200, 0x20), x = blk(0x4ff8, 0x10, 0x5000), other = blk(0x6000, 4);
    assert.equal(c.lookup(0x5200, 2), b);
    assert.equal(c.invalidateBytes(0x5110, 4), false);          // just past a's end
    assert.equal(c.invalidateBytes(0x51fc, 4), false);          // just before b
    assert.equal(c.invalidateBytes(0x521f, 1), true);           // b's last byte
    assert.deepEqual([c.lookup(0x5100, 2), c.lookup(0x5200, 2), c.lookup(0x4ff8, 2)], [a, -1, x]);
    assert.equal(c.invalidateBytes(0x5007, 1), true);           // x's last byte, on its second page
    assert.equal(c.lookup(0x4ff8, 2), -1);
    assert.ok(isCode(5));
    assert.equal(c.invalidateBytes(0x510f, 1), true);           // a: the page holds no block now
    assert.equal(c.lookup(0x5100, 2), -1);
    assert.ok(!isCode(5));
    assert.equal(c.lookup(0x6000, 2), other);
    // A block decoded there again is found, and a store overlapping it drops it.
    const a2 = blk(0x5100, 0x10);
    assert.equal(c.lookup(0x5100, 2), a2);
    assert.equal(c.invalidateBytes(0x5100, 8), true);
    assert.equal(c.lookup(0x5100, 2), -1);
  });

  it('stores that keep missing the blocks of a code page drop the whole page (data sharing a page with code)', () => {
    const c = cache();
    c.reserve();
    const a = c.commit(0x8000, 2, 1, 0x10, -1);
    for (let k = 0; k < 63; k++) assert.equal(c.invalidateBytes(0x8800 + k, 1), false);
    assert.equal(c.lookup(0x8000, 2), a);
    assert.ok(c.phys.code[0]![8] !== 0);
    c.invalidateBytes(0x8900, 1);
    assert.equal(c.lookup(0x8000, 2), -1);
    assert.equal(c.phys.code[0]![8], 0);
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
