import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDevice, TESTDEV_MMIO_BASE, TESTDEV_MMIO_ID_VALUE } from './testdev.js';
import { IoDispatcher } from '../../vid/dispatch.js';
import { SavedStateError } from '../../vid/savedstate.js';
import { CaptureLogger } from '../../vid/testing.js';

function mk() {
  const exits: number[] = [];
  const msis: [bigint, number][] = [];
  const dev = new TestDevice({ exit: (c) => exits.push(c), msi: (a, d) => msis.push([a, d]) });
  const bus = new IoDispatcher({ logger: new CaptureLogger() });
  bus.register(dev);
  return { dev, bus, exits, msis };
}

test('pioScratch_roundTripsAt8_16_32Bits', () => {
  const { bus } = mk();
  bus.pioWrite(0, 0xf0, 4, 0xdeadbeef);
  assert.equal(bus.pioRead(0, 0xf0, 4), 0xdeadbeef);
  assert.equal(bus.pioRead(0, 0xf0, 2), 0xbeef);
  assert.equal(bus.pioRead(0, 0xf2, 2), 0xdead);
  assert.equal(bus.pioRead(0, 0xf3, 1), 0xde);
  bus.pioWrite(0, 0xf1, 1, 0x12);
  assert.equal(bus.pioRead(0, 0xf0, 4), 0xdead12ef);
  bus.pioWrite(0, 0xf2, 2, 0x3456);
  assert.equal(bus.pioRead(0, 0xf0, 4), 0x345612ef);
  bus.pioWrite(0, 0xf0, 1, 0x1ff);               // only the low byte of the access
  assert.equal(bus.pioRead(0, 0xf0, 4), 0x345612ff);
});

test('pioExit_callsExitWithValue_andIsWriteOnly', () => {
  const { bus, exits } = mk();
  bus.pioWrite(0, 0xf4, 1, 0x31);
  bus.pioWrite(0, 0xf4, 4, 0x12345678);
  assert.deepEqual(exits, [0x31, 0x12345678]);
  assert.equal(bus.pioRead(0, 0xf4, 1), 0xff);
  assert.equal(bus.stats().devices['testdev']!.errors, 1);
});

test('doorbell_sendsMsiToApic0WithVector_rejectsBadVectors', () => {
  const { bus, msis, dev } = mk();
  bus.pioWrite(0, 0xf6, 1, 0x40);
  assert.deepEqual(msis, [[0xfee00000n, 0x40]]);
  assert.equal(bus.pioRead(0, 0xf6, 1), 0x40);
  bus.pioWrite(0, 0xf6, 1, 0x0f);                // not a valid vector
  bus.pioWrite(0, 0xf6, 2, 0x41);                // wrong width
  assert.equal(msis.length, 1);
  assert.equal(dev.doorbells, 1);
  assert.equal(bus.stats().devices['testdev']!.errors, 2);
});

test('pioId_andStraddlingAccesses', () => {
  const { bus, dev } = mk();
  assert.equal(bus.pioRead(0, 0xf7, 1), 0x54);
  assert.equal(dev.ioRead(0xf3, 2), -3, 'straddles SCRATCH and EXIT: UnalignedAccess');
  assert.equal(dev.ioWrite(0xf2, 4, 0), 'UnalignedAccess');
  assert.equal(dev.ioWrite(0xf7, 1, 0), 'InvalidRegister');
  assert.equal(dev.ioRead(0xf5, 1), -1);
  assert.equal(bus.pioRead(0, 0xf7, 2), 0xff54, 'split by the bus: ID, then unmapped 0xF8');
});

test('mmio_idAndScratch_roundTrips', () => {
  const { bus } = mk();
  const id = new Uint8Array(4);
  bus.mmioRead(0, TESTDEV_MMIO_BASE, id);
  assert.equal(new DataView(id.buffer).getUint32(0, true), TESTDEV_MMIO_ID_VALUE);
  assert.equal(String.fromCharCode(...id), 'TSHV');
  const w = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  bus.mmioWrite(0, TESTDEV_MMIO_BASE + 8, w);
  const r = new Uint8Array(8);
  bus.mmioRead(0, TESTDEV_MMIO_BASE + 8, r);
  assert.deepEqual(r, w);
  bus.mmioWrite(0, TESTDEV_MMIO_BASE + 12, Uint8Array.of(0xaa, 0xbb));
  const r2 = new Uint8Array(4);
  bus.mmioRead(0, TESTDEV_MMIO_BASE + 12, r2);
  assert.deepEqual(Array.from(r2), [0xaa, 0xbb, 7, 8]);
  const id8 = new Uint8Array(8);
  bus.mmioRead(0, TESTDEV_MMIO_BASE, id8);
  assert.deepEqual(Array.from(id8), [0x54, 0x53, 0x48, 0x56, 0, 0, 0, 0]);
});

test('mmio_badAccesses_yieldAllOnesAndErrors', () => {
  const { bus } = mk();
  const d = new Uint8Array(4);
  bus.mmioRead(0, TESTDEV_MMIO_BASE + 2, d);     // unaligned
  assert.deepEqual(Array.from(d), [0xff, 0xff, 0xff, 0xff]);
  const d3 = new Uint8Array(3);
  bus.mmioRead(0, TESTDEV_MMIO_BASE + 8, d3);    // size 3
  assert.deepEqual(Array.from(d3), [0xff, 0xff, 0xff]);
  bus.mmioRead(0, TESTDEV_MMIO_BASE + 0x100, d); // no register
  bus.mmioWrite(0, TESTDEV_MMIO_BASE, Uint8Array.of(1, 2, 3, 4));   // ID is read-only
  const id = new Uint8Array(4);
  bus.mmioRead(0, TESTDEV_MMIO_BASE, id);
  assert.equal(String.fromCharCode(...id), 'TSHV');
  assert.equal(bus.stats().devices['testdev']!.errors, 4);
});

test('saveRestore_testdev', () => {
  const a = mk();
  a.bus.pioWrite(0, 0xf0, 4, 0xcafef00d);
  a.bus.mmioWrite(0, TESTDEV_MMIO_BASE + 8, Uint8Array.of(9, 8, 7, 6, 5, 4, 3, 2));
  a.bus.pioWrite(0, 0xf6, 1, 0x30);
  const saved = JSON.parse(JSON.stringify(a.dev.save())) as unknown;
  const b = mk();
  b.dev.restore(saved);
  assert.equal(b.bus.pioRead(0, 0xf0, 4), 0xcafef00d);
  assert.equal(b.bus.pioRead(0, 0xf6, 1), 0x30);
  assert.deepEqual(b.dev.save(), a.dev.save());
  assert.throws(() => b.dev.restore({ ...(saved as object), mmioScratch: [1] }), SavedStateError);
  assert.throws(() => b.dev.restore({ ...(saved as object), lastVector: 3 }), SavedStateError);
  assert.throws(() => b.dev.restore({ ...(saved as object), pioScratch: 2 ** 32 }), SavedStateError);
  b.dev.reset();
  assert.equal(b.bus.pioRead(0, 0xf0, 4), 0);
});
