import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBlocks } from './memory.js';
import { PAGE_SIZE } from '../guestmem/guestmem.js';

test('memoryBlocks_allocateRamAndRom_listsAndTotals', () => {
  const m = new MemoryBlocks();
  const ram = m.allocateRam('ram0', 16 * PAGE_SIZE);
  const rom = m.allocateRom('bios', 0xfffff000, new Uint8Array(10).fill(0x90));
  assert.equal(ram.size, 16 * PAGE_SIZE);
  assert.equal(rom.size, PAGE_SIZE);
  assert.equal(rom.last, 0xffffffff);
  assert.deepEqual(m.list().map((e) => [e.name, e.kind]), [['ram0', 'ram'], ['bios', 'rom']]);
  assert.equal(m.totalBytes(), 17 * PAGE_SIZE);
  assert.equal(m.totalBytes('ram'), 16 * PAGE_SIZE);
  assert.equal(m.totalBytes('rom'), PAGE_SIZE);
  assert.equal(m.get('bios')?.block, rom.block);
  assert.equal(m.get('nope'), undefined);
});

test('memoryBlocks_duplicateOrInvalid_rejected', () => {
  const m = new MemoryBlocks();
  m.allocateRam('a', PAGE_SIZE);
  assert.throws(() => m.allocateRam('a', PAGE_SIZE), /already exists/);
  assert.throws(() => m.allocateRom('a', 0, Uint8Array.of(1)), /already exists/);
  assert.throws(() => m.allocateRam('b', 100), /not a positive multiple/);
  assert.throws(() => m.allocateRam('', PAGE_SIZE), /empty/);
  assert.throws(() => m.allocateRom('c', 0x123, Uint8Array.of(1)), /page aligned/);
  assert.throws(() => m.allocateRom('d', 0, new Uint8Array(0)), /empty/);
  assert.equal(m.get('c'), undefined, 'a rejected ROM is not recorded');
  assert.equal(m.totalBytes(), PAGE_SIZE);
});

test('romRegion_load_copiesContentsAndPadsWithFF_contentsIsACopy', () => {
  const m = new MemoryBlocks();
  const src = Uint8Array.of(1, 2, 3);
  const rom = m.allocateRom('opt', 0xc0000, src);
  src[0] = 99;                       // the caller's buffer is not aliased
  rom.load();
  assert.deepEqual(Array.from(rom.block.bytes.subarray(0, 5)), [1, 2, 3, 0xff, 0xff]);
  assert.equal(rom.block.bytes[PAGE_SIZE - 1], 0xff);
  const c = rom.contents;
  c[0] = 42;
  assert.equal(rom.contents[0], 1);
  const big = m.allocateRom('big', 0x100000, new Uint8Array(PAGE_SIZE + 1));
  assert.equal(big.size, 2 * PAGE_SIZE);
});
