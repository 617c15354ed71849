/**
 * Property tests over a whole PC-style chipset: the dispatcher with the UART, the i8042, port
 * 0x92, the test device and a ROM, hit by random port and MMIO traffic (a FuzzChipset in the
 * OpenVMM sense). Nothing may throw, every read must fit its size, and every device keeps its
 * bounds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IoDispatcher } from '../vid/dispatch.js';
import { MemoryBlocks } from '../vid/memory.js';
import { CaptureLogger, RecordingIrq } from '../vid/testing.js';
import { Serial16550 } from './uart16550/uart16550.js';
import { I8042, CONTROLLER_QUEUE_BYTES, KEYBOARD_QUEUE_BYTES } from './i8042/i8042.js';
import { SystemControlPortA } from './i8042/port92.js';
import { TestDevice, TESTDEV_MMIO_BASE } from './testdev/testdev.js';

const HOST_QUEUE = 64;
const ROM_GPA = 0xfffff000;

function chipset() {
  const power = { resets: 0, offs: 0, reset() { this.resets++; }, powerOff() { this.offs++; } };
  const msis: [bigint, number][] = [];
  const exits: number[] = [];
  const log = new CaptureLogger();
  const bus = new IoDispatcher({ logger: log, burst: 3 });
  const uart = new Serial16550({ base: 0x3f8, irq: new RecordingIrq(), onTransmit: () => {}, hostQueueBytes: HOST_QUEUE });
  const kbc = new I8042({ irq: new RecordingIrq(), power });
  const p92 = new SystemControlPortA({ power });
  const tdev = new TestDevice({ exit: (c) => exits.push(c), msi: (a, d) => msis.push([a, d]) });
  const rom = new MemoryBlocks().allocateRom('bios', ROM_GPA, Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff));
  rom.load();
  for (const d of [uart, kbc, p92, tdev]) bus.register(d);
  bus.registerRom(rom);
  return { bus, uart, kbc, p92, tdev, rom, msis, exits, power, log };
}

const port = fc.oneof(
  fc.integer({ min: 0x3f6, max: 0x401 }), fc.integer({ min: 0x5e, max: 0x66 }), fc.integer({ min: 0x90, max: 0x94 }),
  fc.integer({ min: 0xee, max: 0xf9 }), fc.integer({ min: 0, max: 0xffff }));
const gpa = fc.oneof(
  fc.integer({ min: TESTDEV_MMIO_BASE - 8, max: TESTDEV_MMIO_BASE + 0x20 }),
  fc.integer({ min: TESTDEV_MMIO_BASE + 0xff8, max: TESTDEV_MMIO_BASE + 0x1008 }),
  fc.integer({ min: ROM_GPA - 8, max: ROM_GPA + 0x10 }), fc.integer({ min: 0xfffffff8, max: 0xffffffff }),
  fc.integer({ min: 0, max: 2 ** 52 - 1 }));
const op = fc.oneof(
  fc.record({ k: fc.constant('pr' as const), port, size: fc.constantFrom(1 as const, 2 as const, 4 as const) }),
  fc.record({ k: fc.constant('pw' as const), port, size: fc.constantFrom(1 as const, 2 as const, 4 as const), v: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ k: fc.constant('mr' as const), gpa, len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ k: fc.constant('mw' as const), gpa, bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ k: fc.constant('rx' as const), bytes: fc.uint8Array({ maxLength: 80 }) }),
  fc.record({ k: fc.constant('kbd' as const), bytes: fc.uint8Array({ maxLength: 20 }) }),
);

test('property_chipset_randomTraffic_nothingThrows_invariantsHold', () => {
  fc.assert(fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
    const c = chipset();
    const romBefore = c.rom.block.bytes.slice();
    for (const o of ops) {
      switch (o.k) {
        case 'pr': {
          const v = c.bus.pioRead(0, o.port, o.size);
          assert.ok(Number.isInteger(v) && v >= 0 && v < 2 ** (8 * o.size), `read ${v} at ${o.port}/${o.size}`);
          break;
        }
        case 'pw': c.bus.pioWrite(0, o.port, o.size, o.v); break;
        case 'mr': {
          const data = new Uint8Array(o.len).fill(0x5a);
          c.bus.mmioRead(0, o.gpa, data);
          if (o.gpa >= 0x100000000 && o.gpa < 2 ** 52 - 8 && (o.gpa < TESTDEV_MMIO_BASE || o.gpa > TESTDEV_MMIO_BASE + 0x1000)) {
            assert.ok(data.every((b) => b === 0xff), 'nothing is mapped above 4 GiB');
          }
          break;
        }
        case 'mw': c.bus.mmioWrite(0, o.gpa, o.bytes); break;
        case 'rx': c.uart.receive(o.bytes); break;
        case 'kbd': c.kbc.sendScancodes(o.bytes); break;
      }
      assert.ok(c.uart.rxFifoCount <= 16, 'FIFO never exceeds 16');
      assert.ok(c.uart.hostQueueCount <= HOST_QUEUE, 'host queue bounded');
      assert.ok(c.kbc.queuedBytes.controller <= CONTROLLER_QUEUE_BYTES && c.kbc.queuedBytes.keyboard <= KEYBOARD_QUEUE_BYTES);
    }
    assert.deepEqual(c.rom.block.bytes, romBefore, 'guest writes never change ROM');
    for (const [addr, vec] of c.msis) {
      assert.equal(addr, 0xfee00000n);
      assert.ok(vec >= 16 && vec <= 255);
    }
    assert.ok(c.log.lines.length <= 3 * 3 + 3, 'warnings stay rate-limited');
    const s = c.bus.stats();
    for (const n of Object.values(s.bus)) assert.ok(Number.isInteger(n) && n >= 0);
    // Every device state survives a JSON round trip through save/restore.
    for (const d of [c.uart, c.kbc, c.p92, c.tdev]) {
      const saved = d.save();
      d.restore(JSON.parse(JSON.stringify(saved)));
      assert.deepEqual(d.save(), saved);
    }
  }), { numRuns: 300 });
});
