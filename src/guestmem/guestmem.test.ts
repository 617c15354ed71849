import test from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory, GuestMemoryError, MemoryBlock, gpa, PAGE_SIZE } from './guestmem.js';

function mem(): GuestMemory {
  const m = new GuestMemory();
  m.map(gpa(0), new MemoryBlock(4 * PAGE_SIZE, 'ram'), true);
  m.map(gpa(0x10000), new MemoryBlock(PAGE_SIZE, 'rom'), false);
  return m;
}

test('gpa_rejectsNegativeFractionalAndHuge', () => {
  for (const v of [-1, 0.5, 2 ** 52, Number.NaN, Infinity]) assert.throws(() => gpa(v));
  assert.equal(gpa(0x1000), 0x1000);
});

test('memoryBlock_rejectsNonPageSizes', () => {
  assert.throws(() => new MemoryBlock(100, 'x'), /multiple of 4096/);
  assert.throws(() => new MemoryBlock(0, 'x'));
});

test('readWrite_roundTripsAllWidths_littleEndian', () => {
  const m = mem();
  m.writeU8(1, 0xab);
  m.writeU16(2, 0xbeef);
  m.writeU32(4, 0xdeadbeef);
  m.writeU64(8, 0x0123456789abcdefn);
  assert.equal(m.readU8(1), 0xab);
  assert.equal(m.readU16(2), 0xbeef);
  assert.equal(m.readU32(4), 0xdeadbeef);
  assert.equal(m.readU64(8), 0x0123456789abcdefn);
  assert.deepEqual([...m.read(4, 4)], [0xef, 0xbe, 0xad, 0xde]);
});

test('read_returnsCopy_notLiveView', () => {
  const m = mem();
  m.writeU8(0, 1);
  const copy = m.read(0, 4);
  m.writeU8(0, 2);
  assert.equal(copy[0], 1);
});

test('access_crossingRegionEnd_isOutOfRangeOrUnmapped', () => {
  const m = mem();
  assert.throws(() => m.readU32(4 * PAGE_SIZE - 2), (e: unknown) => e instanceof GuestMemoryError && e.kind === 'Unmapped');
  assert.throws(() => m.read(0x8000, 1), (e: unknown) => e instanceof GuestMemoryError && e.kind === 'Unmapped');
  assert.throws(() => m.read(-1, 1), (e: unknown) => e instanceof GuestMemoryError && e.kind === 'OutOfRange');
  assert.throws(() => m.read(0, -1), (e: unknown) => e instanceof GuestMemoryError && e.kind === 'OutOfRange');
  assert.throws(() => m.read(2 ** 53, 1), (e: unknown) => e instanceof GuestMemoryError && e.kind === 'OutOfRange');
});

test('rom_rejectsGuestWrites_acceptsHostWrites', () => {
  const m = mem();
  assert.throws(() => m.writeU8(0x10000, 1), (e: unknown) => e instanceof GuestMemoryError && e.kind === 'ReadOnly');
  m.write(0x10000, new Uint8Array([7, 8]), { host: true });
  assert.equal(m.readU16(0x10000), 0x0807);
});

test('map_rejectsOverlap', () => {
  const m = mem();
  assert.throws(() => m.map(gpa(0x3000), new MemoryBlock(PAGE_SIZE * 2, 'x'), true), /overlaps/);
});

test('property_anyAccess_eitherSucceedsInsideOneRegionOrThrowsGuestMemoryError', () => {
  const m = mem();
  fc.assert(fc.property(fc.integer({ min: -10, max: 0x20000 }), fc.integer({ min: -2, max: 0x5000 }), (at, len) => {
    try {
      const r = m.read(at, len);
      assert.equal(r.length, len);
      assert.ok(m.isMapped(at, len));
    } catch (e) {
      assert.ok(e instanceof GuestMemoryError, String(e));
    }
  }));
});

test('alignTo_movesContentsOnlyOnceExposed', () => {
  const fresh = new MemoryBlock(PAGE_SIZE, 'fresh');
  fresh.alignTo(16);
  assert.equal(fresh.bytes.byteOffset, 16);
  const used = new MemoryBlock(PAGE_SIZE, 'used');
  used.bytes[0] = 0xaa;
  used.bytes[PAGE_SIZE - 1] = 0xbb;
  used.alignTo(100);
  assert.equal(used.bytes.byteOffset, 100);
  assert.equal(used.bytes[0], 0xaa);
  assert.equal(used.bytes[PAGE_SIZE - 1], 0xbb);
  assert.throws(() => used.alignTo(PAGE_SIZE));
});
