import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { IoDispatcher } from './dispatch.js';
import { MemoryBlocks } from './memory.js';
import { CaptureLogger, RecordingDevice } from './testing.js';
import type { IoResult, MmioIntercept } from './device.js';

function mk(burst = 10): { d: IoDispatcher; log: CaptureLogger; clock: { t: number } } {
  const log = new CaptureLogger();
  const clock = { t: 1_000_000 };
  const d = new IoDispatcher({ logger: log, burst, periodMs: 1000, now: () => clock.t });
  return { d, log, clock };
}

test('pioRead_unmapped_returnsAllOnesOfAccessSize', () => {
  const { d } = mk();
  assert.equal(d.pioRead(0, 0x200, 1), 0xff);
  assert.equal(d.pioRead(0, 0x200, 2), 0xffff);
  assert.equal(d.pioRead(0, 0x200, 4), 0xffffffff);
  assert.equal(d.stats().bus.unmappedPioReads, 3);
});

test('pioWrite_unmapped_isDroppedAndCounted', () => {
  const { d } = mk();
  d.pioWrite(0, 0x80, 1, 0x12);
  d.pioWrite(0, 0x80, 4, 0x12345678);
  assert.equal(d.stats().bus.unmappedPioWrites, 2);
});

test('mmio_unmapped_readsAllOnesForEveryLength_writesDropped', () => {
  const { d } = mk();
  for (let len = 1; len <= 8; len++) {
    const data = new Uint8Array(len);
    d.mmioRead(0, 0xd0000000, data);
    assert.deepEqual(Array.from(data), new Array<number>(len).fill(0xff));
  }
  d.mmioWrite(0, 0xd0000000, new Uint8Array(8));
  const s = d.stats().bus;
  assert.equal(s.unmappedMmioReads, 8);
  assert.equal(s.unmappedMmioWrites, 1);
  assert.equal(s.splitAccesses, 0);
});

test('pio_mappedDevice_receivesAccessesAndCountersIncrement', () => {
  const { d } = mk();
  const dev = new RecordingDevice('dev', [{ name: 'r', first: 0x3f8, last: 0x3ff }], [], () => 0x1234_5678);
  d.register(dev);
  assert.equal(d.pioRead(0, 0x3f8, 1), 0x78);   // masked to the access size by the bus
  assert.equal(d.pioRead(0, 0x3fc, 4), 0x12345678);
  d.pioWrite(0, 0x3f9, 2, 0xabcdef);
  assert.deepEqual(dev.log.at(-1), { kind: 'ioWrite', addr: 0x3f9, size: 2, value: 0xcdef });
  assert.deepEqual(d.stats().devices['dev'], { pioReads: 2, pioWrites: 1, mmioReads: 0, mmioWrites: 0, errors: 0 });
});

test('pio_deviceError_readsAllOnesAndCountsError', () => {
  const { d, log } = mk();
  const dev = new RecordingDevice('dev', [{ name: 'r', first: 0x60, last: 0x60 }]);
  d.register(dev);
  for (const err of ['InvalidRegister', 'InvalidAccessSize', 'UnalignedAccess'] as const) {
    dev.fail = err;
    assert.equal(d.pioRead(0, 0x60, 1), 0xff);
    d.pioWrite(0, 0x60, 1, 1);
  }
  assert.equal(d.stats().devices['dev']!.errors, 6);
  assert.ok(log.lines.some((l) => l.includes('InvalidAccessSize') && l.includes('dev')));
});

test('mmio_deviceError_fillsAllOnes', () => {
  const { d } = mk();
  const dev = new RecordingDevice('m', [], [{ name: 'w', first: 0x1000, last: 0x1fff }]);
  d.register(dev);
  dev.fail = 'InvalidRegister';
  const data = new Uint8Array(4);
  d.mmioRead(0, 0x1000, data);
  assert.deepEqual(Array.from(data), [0xff, 0xff, 0xff, 0xff]);
  assert.equal(d.stats().devices['m']!.errors, 1);
});

test('register_overlappingPio_rejectedWithBothNames_andNothingRegistered', () => {
  const { d } = mk();
  d.register(new RecordingDevice('uart', [{ name: 'com1', first: 0x3f8, last: 0x3ff }]));
  const bad = new RecordingDevice('other', [{ name: 'ok', first: 0x100, last: 0x101 }, { name: 'clash', first: 0x3ff, last: 0x400 }]);
  assert.throws(() => d.register(bad), (e: unknown) =>
    e instanceof TshvError && e.code === 'EINVAL' && /other\/clash/.test(e.message) && /uart\/com1/.test(e.message));
  assert.equal(d.pioRead(0, 0x100, 1), 0xff, 'the non-overlapping region of the rejected device is not registered');
  assert.equal(d.stats().devices['other'], undefined);
  // the same name can then register without the clash
  d.register(new RecordingDevice('other', [{ name: 'ok', first: 0x100, last: 0x101 }]));
});

test('register_overlapWithinOneDevice_andMmioOverlap_rejected', () => {
  const { d } = mk();
  assert.throws(() => d.register(new RecordingDevice('self', [{ name: 'a', first: 0x10, last: 0x20 }, { name: 'b', first: 0x20, last: 0x21 }])), /overlaps/);
  d.register(new RecordingDevice('m1', [], [{ name: 'a', first: 0xfee00000, last: 0xfee00fff }]));
  assert.throws(() => d.register(new RecordingDevice('m2', [], [{ name: 'b', first: 0xfee00800, last: 0xfee01fff }])), /mmio region m2\/b .* overlaps m1\/a/);
  // PIO and MMIO are separate spaces: the same numbers do not clash
  d.register(new RecordingDevice('p', [{ name: 'x', first: 0x0, last: 0xff }], [{ name: 'y', first: 0x0, last: 0xff }]));
});

test('register_badRegionsAndDuplicateNames_rejected', () => {
  const { d } = mk();
  assert.throws(() => d.register(new RecordingDevice('a', [{ name: 'r', first: 5, last: 4 }])), /bad port region/);
  assert.throws(() => d.register(new RecordingDevice('b', [{ name: 'r', first: 0xffff, last: 0x10000 }])), /bad port region/);
  assert.throws(() => d.register(new RecordingDevice('c', [{ name: 'r', first: 1.5, last: 4 }])), /bad port region/);
  assert.throws(() => d.register(new RecordingDevice('d', [], [{ name: 'r', first: 2 ** 52, last: 2 ** 52 + 1 }])), /bad mmio region/);
  d.register(new RecordingDevice('e', [{ name: 'r', first: 1, last: 1 }]));
  assert.throws(() => d.register(new RecordingDevice('e', [{ name: 'r', first: 2, last: 2 }])), /already registered/);
});

test('pio_accessRunningPastRegionEnd_isSplitIntoBytes', () => {
  const { d } = mk();
  const a = new RecordingDevice('a', [{ name: 'r', first: 0x100, last: 0x101 }], [], (p) => 0xa0 | (p & 0xf));
  const b = new RecordingDevice('b', [{ name: 'r', first: 0x102, last: 0x102 }], [], () => 0xbb);
  d.register(a);
  d.register(b);
  // 4 bytes at 0x101: a(0x101), b(0x102), unmapped 0x103, unmapped 0x104
  assert.equal(d.pioRead(0, 0x101, 4), 0xffffbba1);
  assert.deepEqual(a.log, [{ kind: 'ioRead', addr: 0x101, size: 1 }]);
  assert.deepEqual(b.log, [{ kind: 'ioRead', addr: 0x102, size: 1 }]);
  d.pioWrite(0, 0x0ff, 4, 0x44332211);   // unmapped 0xff, a 0x100, a 0x101, b 0x102
  assert.deepEqual(a.log.slice(1), [
    { kind: 'ioWrite', addr: 0x100, size: 1, value: 0x22 },
    { kind: 'ioWrite', addr: 0x101, size: 1, value: 0x33 },
  ]);
  assert.deepEqual(b.log.slice(1), [{ kind: 'ioWrite', addr: 0x102, size: 1, value: 0x44 }]);
  const s = d.stats().bus;
  assert.equal(s.splitAccesses, 2);
  assert.equal(s.unmappedPioReads, 2);
  assert.equal(s.unmappedPioWrites, 1);
});

test('pio_accessAtTopOfPortSpace_bytesAbove0xFFFFAreUnmapped', () => {
  const { d } = mk();
  const dev = new RecordingDevice('top', [{ name: 'r', first: 0xfffe, last: 0xffff }], [], () => 0x42);
  d.register(dev);
  assert.equal(d.pioRead(0, 0xffff, 4), 0xffffff42);
  assert.equal(d.pioRead(0, 0xfffe, 2), 0x42);
  const { d: empty } = mk();
  assert.equal(empty.pioRead(0, 0xffff, 4), 0xffffffff);
  assert.equal(empty.stats().bus.splitAccesses, 0);
});

test('mmio_accessStraddlingRegionEnd_isSplit', () => {
  const { d } = mk();
  const dev = new RecordingDevice('m', [], [{ name: 'w', first: 0x1000, last: 0x1003 }]);
  d.register(dev);
  const data = new Uint8Array(8);
  d.mmioRead(0, 0x1000 - 2, data);   // 2 unmapped bytes, 4 device bytes, 2 unmapped
  assert.deepEqual(Array.from(data), [0xff, 0xff, 0x00, 0x01, 0x02, 0x03, 0xff, 0xff]);
  assert.ok(dev.log.every((a) => a.size === 1));
  d.mmioWrite(0, 0x1002, Uint8Array.of(1, 2, 3, 4));
  assert.deepEqual(dev.log.slice(4).map((a) => [a.addr, a.bytes]), [[0x1002, [1]], [0x1003, [2]]]);
  assert.equal(d.stats().bus.splitAccesses, 2);
  // Fully inside: one access of the full width.
  const inside = new Uint8Array(4);
  d.mmioRead(0, 0x1000, inside);
  assert.deepEqual(dev.log.at(-1), { kind: 'mmioRead', addr: 0x1000, size: 4 });
});

test('log_floodOfUnmappedAccesses_isRateLimited', () => {
  const { d, log, clock } = mk(5);
  for (let i = 0; i < 10_000; i++) d.pioWrite(0, 0x80, 1, i & 0xff);
  assert.equal(log.lines.length, 5);
  assert.equal(d.suppressedWarnings, 10_000 - 5);
  assert.match(log.lines[0]!, /unmapped port write at 0x80 size 1/);
  assert.equal(d.stats().bus.unmappedPioWrites, 10_000);
  clock.t += 1000;   // next window: a summary line and a fresh burst (after the flood gate's stride)
  for (let i = 0; i < 256; i++) d.pioRead(0, 0x81, 1);
  assert.match(log.lines[5]!, /similar messages suppressed/);
  assert.match(log.lines[6]!, /unmapped port read at 0x81/);
  assert.equal(log.lines.length, 7 + 4, 'a fresh burst of 5 in the new window');
});

test('rom_guestWriteDroppedAndCounted_readsServedFromBlock_ownerGetsWrites', () => {
  const { d, log } = mk();
  const blocks = new MemoryBlocks();
  const rom = blocks.allocateRom('bios', 0xffff0000, Uint8Array.of(0xea, 0x5b, 0xe0));
  rom.load();
  d.registerRom(rom);
  d.mmioWrite(0, 0xffff0000, Uint8Array.of(0, 0, 0, 0));
  assert.equal(rom.block.bytes[0], 0xea, 'ROM bytes unchanged');
  assert.equal(d.stats().bus.romWritesDropped, 1);
  assert.ok(log.lines.some((l) => /ROM bios at 0xffff0000 size 4 dropped/.test(l)));
  const data = new Uint8Array(4);
  d.mmioRead(0, 0xffff0001, data);
  assert.deepEqual(Array.from(data), [0x5b, 0xe0, 0xff, 0xff]);

  const writes: number[] = [];
  const owner: MmioIntercept = {
    mmioRegions: () => [],
    mmioRead: (): IoResult => 'ok',
    mmioWrite: (gpa): IoResult => { writes.push(gpa); return 'ok'; },
  };
  const flash = blocks.allocateRom('flash', 0xfff00000, new Uint8Array(8192));
  d.registerRom(flash, owner);
  d.mmioWrite(0, 0xfff01000, Uint8Array.of(0x90));
  assert.deepEqual(writes, [0xfff01000]);
  assert.equal(d.stats().bus.romWritesDropped, 1);
  assert.throws(() => d.registerRom(blocks.allocateRom('clash', 0xffff0000, Uint8Array.of(1))), /overlaps/);
});

test('stats_isASnapshotCopy', () => {
  const { d } = mk();
  d.register(new RecordingDevice('x', [{ name: 'r', first: 1, last: 1 }]));
  const s = d.stats();
  s.bus.unmappedPioReads = 99;
  s.devices['x']!.pioReads = 99;
  assert.equal(d.stats().bus.unmappedPioReads, 0);
  assert.equal(d.stats().devices['x']!.pioReads, 0);
  assert.deepEqual(d.devices().map((x) => x.debugName), ['x']);
});

test('property_mmioLookup_matchesLinearReference', () => {
  // Random disjoint regions; every byte access must reach exactly the device a linear scan picks.
  fc.assert(fc.property(
    fc.uniqueArray(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 30 }),
    fc.array(fc.integer({ min: -2, max: 202 * 16 }), { maxLength: 50 }),
    (slots, probes) => {
      const { d } = mk();
      const devs = slots.map((sl, i) => new RecordingDevice(`d${i}`, [], [{ name: 'r', first: sl * 16, last: sl * 16 + 7 }]));
      for (const dev of devs) d.register(dev);
      for (const gpa of probes) {
        const before = devs.map((x) => x.log.length);
        const data = new Uint8Array(1);
        d.mmioRead(0, gpa, data);
        const owner = slots.findIndex((sl) => gpa >= sl * 16 && gpa <= sl * 16 + 7);
        devs.forEach((x, i) => assert.equal(x.log.length - before[i]!, i === owner ? 1 : 0));
        assert.equal(data[0], owner >= 0 ? gpa & 0xff : 0xff);
      }
    }));
});

test('property_randomAccesses_neverThrowAndReadValuesFitSize', () => {
  fc.assert(fc.property(
    fc.array(fc.record({
      port: fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0xfc, max: 0x108 })),
      size: fc.constantFrom(1 as const, 2 as const, 4 as const),
      value: fc.integer({ min: 0, max: 0xffffffff }),
      write: fc.boolean(),
    }), { maxLength: 200 }),
    (ops) => {
      const { d } = mk();
      const a = new RecordingDevice('a', [{ name: 'r', first: 0x100, last: 0x103 }], [], () => 0xffffffff);
      d.register(a);
      let reads = 0;
      for (const op of ops) {
        if (op.write) d.pioWrite(0, op.port, op.size, op.value);
        else {
          const v = d.pioRead(0, op.port, op.size);
          reads++;
          assert.ok(Number.isInteger(v) && v >= 0 && v <= (op.size === 4 ? 0xffffffff : op.size === 2 ? 0xffff : 0xff));
        }
      }
      // every access the device saw lies inside its region
      assert.ok(a.log.every((x) => x.addr >= 0x100 && x.addr + x.size - 1 <= 0x103));
      assert.ok(reads <= ops.length);
    }));
});
