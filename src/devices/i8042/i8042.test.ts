import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { I8042, I8042_SCHEMA, KEYBOARD_QUEUE_BYTES, CONTROLLER_QUEUE_BYTES, type ResetAction } from './i8042.js';
import { SystemControlPortA } from './port92.js';
import { SavedStateError } from '../../vid/savedstate.js';
import { RecordingIrq } from '../../vid/testing.js';

function mk(resetAction?: ResetAction) {
  const irq = new RecordingIrq();
  const power = { resets: 0, offs: 0, reset() { this.resets++; }, powerOff() { this.offs++; } };
  const k = new I8042({ irq, power, ...(resetAction !== undefined ? { resetAction } : {}) });
  const status = (): number => k.ioRead(0x64, 1);
  const data = (): number => k.ioRead(0x60, 1);
  const cmd = (v: number): void => { assert.equal(k.ioWrite(0x64, 1, v), 'ok'); };
  const put = (v: number): void => { assert.equal(k.ioWrite(0x60, 1, v), 'ok'); };
  /** Read bytes while OBF is set (as Linux i8042_flush does). */
  const drain = (): number[] => { const o: number[] = []; while (status() & 1) o.push(data()); return o; };
  return { k, irq, power, status, data, cmd, put, drain };
}

test('status_powerOn_noDataKeyboardUnlocked', () => {
  const { status } = mk();
  assert.equal(status() & 0x01, 0);
  assert.equal(status() & 0x02, 0, 'input buffer never full');
  assert.equal(status() & 0x10, 0x10);
});

test('selfTest_0xAA_replies0x55_andSetsSystemFlag', () => {
  const { cmd, drain, status } = mk();
  cmd(0x60);                                   // a command waiting for data is cancelled by the next command
  cmd(0xaa);
  assert.equal(status() & 0x08, 0x08, 'last write was a command');
  assert.deepEqual(drain(), [0x55]);
  assert.equal(status() & 0x04, 0x04);
});

test('interfaceTest_0xAB_replies0x00', () => {
  const { cmd, drain } = mk();
  cmd(0xab);
  assert.deepEqual(drain(), [0x00]);
});

test('commandByte_readWrite_0x20_0x60', () => {
  const { k, cmd, put, drain, status } = mk();
  cmd(0x20);
  assert.deepEqual(drain(), [0x45]);
  cmd(0x60);
  put(0x65);
  assert.equal(status() & 0x08, 0, 'last write was data');
  assert.equal(k.commandByte, 0x65);
  cmd(0x20);
  assert.deepEqual(drain(), [0x65]);
  cmd(0x7f); put(0x12);                        // controller RAM byte 31
  cmd(0x3f);
  assert.deepEqual(drain(), [0x12]);
});

test('disableEnable_keyboardAndAux_updateCommandByte', () => {
  const { k, cmd } = mk();
  cmd(0xad); assert.equal(k.commandByte & 0x10, 0x10);
  cmd(0xae); assert.equal(k.commandByte & 0x10, 0);
  cmd(0xa7); assert.equal(k.commandByte & 0x20, 0x20);
  cmd(0xa8); assert.equal(k.commandByte & 0x20, 0);
});

test('keyboard_reset0xFF_repliesAckBat_andIdentify0xF2', () => {
  const { put, drain, cmd } = mk();
  put(0xff);
  assert.deepEqual(drain(), [0xfa, 0xaa]);
  put(0xf2);
  assert.deepEqual(drain(), [0xfa, 0xab, 0x41], 'translated ID with CTR.XLATE');
  cmd(0x60); put(0x05);                        // translation off
  put(0xf2);
  assert.deepEqual(drain(), [0xfa, 0xab, 0x83]);
});

test('keyboard_commandsWithParameters_andUnknownNak', () => {
  const { put, drain } = mk();
  put(0xed); put(0x07);
  assert.deepEqual(drain(), [0xfa, 0xfa]);
  put(0xf3); put(0x20);
  assert.deepEqual(drain(), [0xfa, 0xfa]);
  put(0xf0); put(0x00);
  assert.deepEqual(drain(), [0xfa, 0xfa, 0x41]);
  put(0xf0); put(0x09);
  assert.deepEqual(drain(), [0xfa, 0xfe]);
  put(0xee);
  assert.deepEqual(drain(), [0xee]);
  put(0xf5); put(0xf4);
  assert.deepEqual(drain(), [0xfa, 0xfa]);
  put(0x12);
  assert.deepEqual(drain(), [0xfe], 'unknown keyboard command: NAK');
});

test('irq1_followsObfAndCtrKbdint_oneEdgePerByte', () => {
  const { irq, put, data, cmd } = mk();
  put(0xff);                                   // two bytes queued: FA, AA
  assert.equal(irq.level, true);
  data();
  assert.equal(irq.level, true);
  data();
  assert.equal(irq.level, false);
  assert.equal(irq.edges, 2, 'the line drops between the two bytes');
  cmd(0x60); put(0x44);                        // KBDINT off
  put(0xee);
  assert.equal(irq.level, false);
});

test('keyboardDisabled_holdsKeyboardBytes_controllerRepliesStillFlow', () => {
  const { put, cmd, drain } = mk();
  cmd(0xad);
  put(0xee);
  assert.deepEqual(drain(), []);
  cmd(0x20);
  assert.deepEqual(drain(), [0x55]);           // 0x45 | KBDDIS
  cmd(0xae);
  assert.deepEqual(drain(), [0xee]);
});

test('reset_0xFE_callsPowerReset_orPowerOffWhenConfigured', () => {
  const a = mk();
  a.cmd(0xfe);
  assert.equal(a.power.resets, 1);
  assert.equal(a.power.offs, 0);
  a.cmd(0xff);                                 // pulses nothing
  assert.equal(a.power.resets, 1);
  const b = mk('poweroff');
  b.cmd(0xfe);
  assert.deepEqual([b.power.resets, b.power.offs], [0, 1]);
  assert.equal(b.k.counters.resets, 1);
});

test('outputPort_readWrite_bit0ClearResets', () => {
  const { cmd, put, drain, power, data } = mk();
  cmd(0xd0);
  assert.deepEqual(drain(), [0xcf], 'reset inactive, A20 on; OBF was clear when the port was sampled');
  put(0xee);                                   // keyboard byte in the output buffer
  cmd(0xd0);
  assert.deepEqual(drain(), [0xee, 0xdf], 'OBF (IRQ1) shows in bit 4');
  cmd(0xd1); put(0x03);
  assert.equal(power.resets, 0);
  cmd(0xd0);
  assert.equal(data() & 0x0f, 0x03);
  cmd(0xd1); put(0x02);                        // reset line asserted
  assert.equal(power.resets, 1);
});

test('unknownAndAuxCommands_ignoredGracefully', () => {
  const { k, cmd, put, drain } = mk();
  cmd(0xc7);
  cmd(0x05);
  cmd(0xd4); put(0xf2);                        // to the absent aux device: swallowed
  cmd(0xd3); put(0x5a);
  assert.deepEqual(drain(), []);
  assert.equal(k.counters.unknownCommands, 2);
  cmd(0xa9);
  assert.deepEqual(drain(), [0x02], 'aux interface test: nothing attached');
  cmd(0xd2); put(0x1c);                        // keyboard loop: appears as data
  assert.deepEqual(drain(), [0x1c]);
  assert.equal(k.ioRead(0x60, 2), -2);
  assert.equal(k.ioWrite(0x64, 4, 0xfe), 'InvalidAccessSize');
});

test('linuxControllerInit_sequence', () => {
  // The order drivers/input/serio/i8042.c uses: flush, self test, read CTR, write CTR, then atkbd.
  const { cmd, put, drain } = mk();
  drain();
  cmd(0xaa);
  assert.deepEqual(drain(), [0x55]);
  cmd(0x20);
  const ctr = drain()[0] ?? -1;
  assert.equal(ctr, 0x45);
  cmd(0x60); put((ctr & ~0x10) | 0x01);
  cmd(0x20);
  assert.deepEqual(drain(), [0x45]);
  put(0xf2);
  assert.deepEqual(drain(), [0xfa, 0xab, 0x41]);
  put(0xf5);
  assert.deepEqual(drain(), [0xfa]);
  put(0xf4);
  assert.deepEqual(drain(), [0xfa]);
});

test('queues_areBounded', () => {
  const { k, cmd, put } = mk();
  for (let i = 0; i < 50; i++) cmd(0x20);
  for (let i = 0; i < 50; i++) put(0xf2);
  const q = k.queuedBytes;
  assert.ok(q.controller <= CONTROLLER_QUEUE_BYTES);
  assert.ok(q.keyboard <= KEYBOARD_QUEUE_BYTES);
  assert.ok(k.counters.keyboardDropped > 0);
  k.sendScancodes(new Uint8Array(100));
  assert.ok(k.queuedBytes.keyboard <= KEYBOARD_QUEUE_BYTES);
});

test('saveRestore_roundTrip_andMalformedRejected', () => {
  const a = mk();
  a.cmd(0xad);
  a.put(0xff);
  a.cmd(0x60);                                 // waiting for its data byte
  const saved = a.k.save();
  assert.equal(saved.schema, I8042_SCHEMA);
  const b = mk();
  b.k.restore(JSON.parse(JSON.stringify(saved)));
  assert.deepEqual(b.k.save(), saved);
  b.put(0x45);
  assert.equal(b.k.commandByte, 0x45, 'the pending command survived');
  const before = b.k.save();
  for (const bad of [
    undefined, { ...saved, ram: [1, 2] }, { ...saved, pendingCommand: 0xaa }, { ...saved, kbdPendingCommand: 0xff },
    { ...saved, kbdScancodeSet: 4 }, { ...saved, ctrlQueue: new Array<number>(9).fill(0) },
    { ...saved, kbdQueue: new Array<number>(17).fill(0) }, { ...saved, outputPort: 0x10 }, { ...saved, obFull: 'yes' },
  ]) {
    assert.throws(() => b.k.restore(bad), SavedStateError);
    assert.deepEqual(b.k.save(), before);
  }
});

test('property_randomTraffic_neverThrows_boundsHold_saveRoundTrips', () => {
  fc.assert(fc.property(
    fc.array(fc.record({ port: fc.constantFrom(0x60, 0x64), write: fc.boolean(), v: fc.integer({ min: 0, max: 255 }) }), { maxLength: 300 }),
    fc.anything(),
    (ops, junk) => {
      const { k } = mk();
      for (const o of ops) {
        if (o.write) k.ioWrite(o.port, 1, o.v);
        else assert.ok(k.ioRead(o.port, 1) <= 0xff);
        assert.ok(k.queuedBytes.controller <= CONTROLLER_QUEUE_BYTES && k.queuedBytes.keyboard <= KEYBOARD_QUEUE_BYTES);
      }
      const saved = k.save();
      const c = mk();
      c.k.restore(JSON.parse(JSON.stringify(saved)));
      assert.deepEqual(c.k.save(), saved);
      try { c.k.restore(junk); } catch (e) { assert.ok(e instanceof SavedStateError); }
    }));
});

test('port92_fastReset_onRisingBit0_a20Recorded', () => {
  const power = { resets: 0, offs: 0, reset() { this.resets++; }, powerOff() { this.offs++; } };
  const p = new SystemControlPortA({ power });
  assert.equal(p.ioRead(0x92, 1), 0x02);
  p.ioWrite(0x92, 1, 0x00);
  assert.equal(p.a20Enabled, false);
  p.ioWrite(0x92, 1, 0x03);
  assert.equal(power.resets, 1);
  p.ioWrite(0x92, 1, 0x03);                    // still set: no new edge
  assert.equal(power.resets, 1);
  assert.equal(p.ioWrite(0x92, 2, 0), 'InvalidAccessSize');
  const off = new SystemControlPortA({ power, resetAction: 'poweroff' });
  off.ioWrite(0x92, 1, 1);
  assert.equal(power.offs, 1);
  const q = new SystemControlPortA({ power });
  q.restore(JSON.parse(JSON.stringify(p.save())));
  assert.equal(q.ioRead(0x92, 1), 0x03);
  assert.throws(() => q.restore({ schema: 'tshv.port92', version: 1, value: 256 }), SavedStateError);
});
