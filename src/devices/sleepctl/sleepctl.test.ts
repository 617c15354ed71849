// SleepControl: the S5 power-off and the reset register as Linux 6.1 drives them
// (hwesleep.c acpi_hw_extended_sleep, hwxface.c acpi_reset), refused and malformed writes, and
// random traffic through the dispatcher.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TshvError } from '../../base/errors.js';
import { IoDispatcher } from '../../vid/dispatch.js';
import { CaptureLogger } from '../../vid/testing.js';
import { ACPI_X_SLEEP_ENABLE, ACPI_X_WAKE_STATUS, sleepRequest } from './spec.js';
import { SleepControl, type SleepControlOptions } from './sleepctl.js';

const PORTS = { control: 0x600, status: 0x601, reset: 0x602 };

function mk(extra: Partial<SleepControlOptions> = {}) {
  const power = { resets: 0, offs: 0, reset() { this.resets++; }, powerOff() { this.offs++; } };
  const dev = new SleepControl({ power, ports: PORTS, s5SleepType: 5, resetValue: 0x01, ...extra });
  const log = new CaptureLogger();
  const bus = new IoDispatcher({ logger: log });
  bus.register(dev);
  return { dev, power, bus, log };
}

test('sleepRequest_decodesSlpTypWhenSlpEnSet', () => {
  assert.equal(sleepRequest(0x00), -1);
  assert.equal(sleepRequest(5 << 2), -1, 'SLP_TYP without SLP_EN');
  assert.equal(sleepRequest((5 << 2) | 0x20), 5);
  assert.equal(sleepRequest(0x20), 0);
  assert.equal(sleepRequest(0xff), 7, 'reserved bits 0-1 and 6-7 ignored');
  assert.equal(sleepRequest(0x123 | 0x20), 0, 'bits above the byte: only bits 2-5 count');
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xff }), (v) => {
    const r = sleepRequest(v);
    assert.equal(r, (v & 0x20) !== 0 ? (v >> 2) & 7 : -1);
  }));
});

test('linuxPowerOffSequence_s5_powersOff', () => {
  const { dev, power, bus } = mk();
  // acpi_hw_extended_sleep(ACPI_STATE_S5): clear WAK_STS, then SLP_TYP | SLP_EN, then poll.
  bus.pioWrite(0, PORTS.status, 1, ACPI_X_WAKE_STATUS);
  assert.equal(power.offs, 0);
  bus.pioWrite(0, PORTS.control, 1, ((5 << 2) & 0x1c) | ACPI_X_SLEEP_ENABLE);
  assert.equal(power.offs, 1);
  assert.equal(dev.powerOffs, 1);
  assert.equal(power.resets, 0);
  assert.equal(bus.pioRead(0, PORTS.status, 1) & ACPI_X_WAKE_STATUS, 0, 'never woke');
});

test('sleepControl_otherTypesAndNoSlpEn_doNothing', () => {
  const { dev, power, bus } = mk();
  bus.pioWrite(0, PORTS.control, 1, 5 << 2);                 // SLP_TYP 5 but no SLP_EN
  for (const t of [0, 1, 2, 3, 4, 6, 7]) bus.pioWrite(0, PORTS.control, 1, (t << 2) | 0x20);
  assert.equal(power.offs, 0);
  assert.equal(power.resets, 0);
  assert.equal(dev.refusedSleeps, 7);
  assert.equal(bus.pioRead(0, PORTS.control, 1), 0, 'write-only register reads 0');
});

test('s5Type_isConfigurable', () => {
  const { power, bus } = mk({ s5SleepType: 0 });
  bus.pioWrite(0, PORTS.control, 1, (5 << 2) | 0x20);
  assert.equal(power.offs, 0);
  bus.pioWrite(0, PORTS.control, 1, 0x20);
  assert.equal(power.offs, 1);
});

test('resetRegister_resetValueResets_otherValuesIgnored', () => {
  const { dev, power, bus } = mk();
  for (const v of [0x00, 0x02, 0x06, 0xfe, 0xff]) bus.pioWrite(0, PORTS.reset, 1, v);
  assert.equal(power.resets, 0);
  bus.pioWrite(0, PORTS.reset, 1, 0x01);
  assert.equal(power.resets, 1);
  assert.equal(dev.resets, 1);
  bus.pioWrite(0, PORTS.reset, 1, 0x101);                    // OUT of a byte: only the low 8 bits exist
  assert.equal(power.resets, 2);
  assert.equal(power.offs, 0);
  assert.equal(bus.pioRead(0, PORTS.reset, 1), 0);
});

test('resetRegister_resetActionPoweroff_powersOff', () => {
  const { power, bus } = mk({ resetAction: 'poweroff' });
  bus.pioWrite(0, PORTS.reset, 1, 0x01);
  assert.equal(power.resets, 0);
  assert.equal(power.offs, 1);
});

test('wideAccesses_deviceRefuses_busSplitsIntoBytes', () => {
  const { dev, power, bus } = mk();
  // The device itself takes only byte accesses.
  assert.equal(dev.ioWrite(PORTS.control, 2, (5 << 2) | 0x20), 'InvalidAccessSize');
  assert.equal(dev.ioWrite(PORTS.reset, 4, 1), 'InvalidAccessSize');
  assert.ok(dev.ioRead(PORTS.status, 2) < 0);
  assert.ok(dev.ioRead(PORTS.control, 4) < 0);
  assert.equal(power.offs + power.resets, 0);
  // Each register is a one-port region, so the bus splits a wider OUT into byte cycles, as an
  // LPC bus does for byte-wide registers: only the byte that lands on a register counts.
  bus.pioWrite(0, PORTS.control, 2, 0x3400);                 // 0x600 <- 0x00, 0x601 <- 0x34
  assert.equal(power.offs, 0);
  bus.pioWrite(0, PORTS.control - 1, 2, 0x3400);             // 0x5ff <- 0x00 (unmapped), 0x600 <- 0x34
  assert.equal(power.offs, 1);
  bus.pioWrite(0, PORTS.control, 4, 0x00010000);             // reset register <- 0x01
  assert.equal(power.resets, 1);
  assert.equal(bus.pioRead(0, PORTS.control, 4), 0xff000000, 'three zero registers and an unmapped 0x603');
});

test('constructor_rejectsBadConfiguration', () => {
  const power = { reset() {}, powerOff() {} };
  const ok = { power, ports: PORTS, s5SleepType: 5, resetValue: 1 };
  assert.throws(() => new SleepControl({ ...ok, ports: { control: 0x600, status: 0x600, reset: 0x602 } }), TshvError);
  assert.throws(() => new SleepControl({ ...ok, ports: { control: 0x10000, status: 0x601, reset: 0x602 } }), TshvError);
  assert.throws(() => new SleepControl({ ...ok, s5SleepType: 8 }), TshvError);
  assert.throws(() => new SleepControl({ ...ok, resetValue: 256 }), TshvError);
  assert.throws(() => new SleepControl({ ...ok, resetValue: 1.5 }), TshvError);
});

test('property_randomTraffic_onlyExactRequestsAct', () => {
  const access = fc.record({
    port: fc.integer({ min: 0x5fc, max: 0x605 }),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const),
    value: fc.integer({ min: 0, max: 0xffffffff }),
    read: fc.boolean(),
  });
  fc.assert(fc.property(fc.array(access, { maxLength: 200 }), (ops) => {
    const { dev, power, bus } = mk();
    let offs = 0;
    let resets = 0;
    for (const o of ops) {
      if (o.read) {
        const v = bus.pioRead(0, o.port, o.size);
        assert.ok(Number.isInteger(v) && v >= 0 && v < 2 ** (8 * o.size));
        continue;
      }
      // Model: every register is a one-port region, so the access reaches the device as byte
      // writes, byte i of the value at port + i.
      for (let i = 0; i < o.size; i++) {
        const b = Math.floor(o.value / 2 ** (8 * i)) & 0xff;
        if (o.port + i === PORTS.control && sleepRequest(b) === 5) offs++;
        if (o.port + i === PORTS.reset && b === 1) resets++;
      }
      bus.pioWrite(0, o.port, o.size, o.value);
      assert.equal(dev.powerOffs, offs);
      assert.equal(dev.resets, resets);
    }
    assert.equal(power.offs, offs);
    assert.equal(power.resets, resets);
  }));
});
