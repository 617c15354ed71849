import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Serial16550, UART16550_SCHEMA } from './uart16550.js';
import { SavedStateError } from '../../vid/savedstate.js';
import { RecordingIrq } from '../../vid/testing.js';
import {
  IER_MSI, IER_RDI, IER_RLSI, IER_THRI, MCR_DTR, MCR_LOOP, MCR_OUT1, MCR_OUT2, MCR_RTS, UART_DLL, UART_DLM, UART_FCR,
  UART_IER, UART_IIR, UART_LCR, UART_LSR, UART_MCR, UART_MSR, UART_RBR, UART_SCR, UART_THR,
} from './spec.js';

const BASE = 0x3f8;

function mk(hostQueueBytes?: number) {
  const irq = new RecordingIrq();
  const tx: number[] = [];
  const u = new Serial16550({ base: BASE, irq, onTransmit: (b) => tx.push(b), ...(hostQueueBytes !== undefined ? { hostQueueBytes } : {}) });
  const rd = (off: number): number => u.ioRead(BASE + off, 1);
  const wr = (off: number, v: number): void => { assert.equal(u.ioWrite(BASE + off, 1, v), 'ok'); };
  return { u, irq, tx, rd, wr };
}

test('powerOn_registersHaveResetValues', () => {
  const { rd } = mk();
  assert.equal(rd(UART_IER), 0);
  assert.equal(rd(UART_IIR), 0x01);
  assert.equal(rd(UART_LCR), 0);
  assert.equal(rd(UART_MCR), 0);
  assert.equal(rd(UART_LSR), 0x60);        // THRE | TEMT
  assert.equal(rd(UART_MSR), 0xb0);        // DCD | DSR | CTS: a connected line
  assert.equal(rd(UART_SCR), 0);
});

test('ier_readsBackLowNibbleOnly_asLinuxAutoconfigChecks', () => {
  const { rd, wr } = mk();
  wr(UART_IER, 0);
  assert.equal(rd(UART_IER) & 0x0f, 0);
  wr(UART_IER, 0x0f);
  assert.equal(rd(UART_IER), 0x0f);
  wr(UART_IER, 0xff);
  assert.equal(rd(UART_IER), 0x0f, 'bits 4-7 (e.g. XScale UUE) read as 0');
});

test('loopback_linuxProbe_msrReadsDcdAndCts', () => {
  const { rd, wr } = mk();
  wr(UART_MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);   // 0x1A as in autoconfig()
  assert.equal(rd(UART_MSR) & 0xf0, 0x90);
  wr(UART_MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);
  assert.equal(rd(UART_MSR) & 0xf0, 0x60);       // DSR | RI
});

test('loopback_transmittedBytesAreReceived_notSentToHost', () => {
  const { rd, wr, tx } = mk();
  wr(UART_FCR, 0x01);
  wr(UART_MCR, MCR_LOOP);
  wr(UART_THR, 0x41);
  wr(UART_THR, 0x42);
  assert.deepEqual(tx, []);
  assert.equal(rd(UART_LSR) & 0x01, 1);
  assert.equal(rd(UART_RBR), 0x41);
  assert.equal(rd(UART_RBR), 0x42);
  assert.equal(rd(UART_LSR) & 0x01, 0);
  wr(UART_MCR, 0);
  wr(UART_THR, 0x43);
  assert.deepEqual(tx, [0x43]);
});

test('loopback_overrunWithoutFifo_setsOE', () => {
  const { u, rd, wr } = mk();
  wr(UART_MCR, MCR_LOOP);
  wr(UART_THR, 1);
  wr(UART_THR, 2);                 // holding register full: lost
  assert.equal(rd(UART_LSR), 0x60 | 0x02 | 0x01);
  assert.equal(rd(UART_LSR), 0x60 | 0x01, 'OE cleared by reading LSR');
  assert.equal(rd(UART_RBR), 1);
  assert.equal(u.counters.overruns, 1);
});

test('fcr_enableFifo_iirTopBitsIdentify16550A', () => {
  const { rd, wr } = mk();
  wr(UART_FCR, 0x01);
  assert.equal(rd(UART_IIR) >> 6, 3);
  wr(UART_FCR, 0x21);              // 16750 64-byte bit: not a 16750, bit 5 stays 0
  assert.equal(rd(UART_IIR) & 0x30, 0);
  wr(UART_LCR, 0x80);
  assert.equal(rd(UART_IIR), 0xc1, 'IIR is not banked by DLAB (EFR probe reads non-zero)');
  wr(UART_LCR, 0);
  wr(UART_FCR, 0x00);
  assert.equal(rd(UART_IIR) >> 6, 0);
});

test('dlab_banksDivisorLatchOverRbrAndIer', () => {
  const { rd, wr, tx } = mk();
  wr(UART_IER, 0x05);
  wr(UART_LCR, 0x83);
  wr(UART_DLL, 0x01);
  wr(UART_DLM, 0x02);
  assert.equal(rd(UART_DLL), 0x01);
  assert.equal(rd(UART_DLM), 0x02);
  assert.deepEqual(tx, [], 'a DLL write is not a transmission');
  wr(UART_LCR, 0x03);
  assert.equal(rd(UART_IER), 0x05);
  assert.equal(rd(UART_LCR), 0x03);
});

test('scratch_roundTrips', () => {
  const { rd, wr } = mk();
  wr(UART_SCR, 0x5a);
  assert.equal(rd(UART_SCR), 0x5a);
});

test('thre_interrupt_raisedByEnableEdge_clearedByIirRead_rearmedByThrWrite', () => {
  const { irq, rd, wr } = mk();
  wr(UART_MCR, MCR_OUT2);
  wr(UART_IER, IER_THRI);
  assert.equal(irq.level, true);
  assert.equal(rd(UART_IIR), 0x02);
  assert.equal(irq.level, false, 'reading IIR that reports THRE clears it');
  assert.equal(rd(UART_IIR), 0x01);
  wr(UART_THR, 0x55);
  assert.equal(irq.level, true);
  assert.equal(rd(UART_IIR), 0x02);
  // Linux serial8250_do_startup THRE test: IER=THRI, read IIR, IER=0, IER=THRI, read IIR.
  wr(UART_IER, IER_THRI);
  const iir1 = rd(UART_IIR);
  wr(UART_IER, 0);
  wr(UART_IER, IER_THRI);
  const iir = rd(UART_IIR);
  assert.ok(!(((iir1 & 1) === 0) && ((iir & 1) !== 0)), 'no UART_BUG_THRE');
  assert.equal(iir & 1, 0);
});

test('iir_priorities_rlsOverRdaOverThreOverModemStatus', () => {
  const { u, rd, wr } = mk(4);
  wr(UART_FCR, 0x01);                          // FIFO, trigger 1
  wr(UART_MCR, MCR_OUT2);
  wr(UART_IER, IER_RDI | IER_THRI | IER_RLSI | IER_MSI);
  wr(UART_MCR, MCR_OUT2 | MCR_LOOP);           // modem inputs change: MSR deltas
  wr(UART_MCR, MCR_OUT2);
  u.receive(new Uint8Array(30));               // FIFO 16... here host queue 4: overflow -> OE
  assert.equal(rd(UART_IIR), 0xc6, 'receiver line status first');
  assert.equal(rd(UART_LSR) & 0x03, 0x03);     // DR | OE, and the read clears OE
  assert.equal(rd(UART_IIR), 0xc4, 'then received data');
  while (rd(UART_LSR) & 1) rd(UART_RBR);
  assert.equal(rd(UART_IIR), 0xc2, 'then THRE (and the read clears it)');
  assert.equal(rd(UART_IIR), 0xc0, 'then modem status');
  assert.notEqual(rd(UART_MSR) & 0x0f, 0);
  assert.equal(rd(UART_IIR), 0xc1, 'nothing left');
});

test('fifo_triggerLevel_rdaAtLevel_timeoutBelow', () => {
  const { u, rd, wr } = mk();
  wr(UART_FCR, 0x81);                          // trigger 8 (what Linux picks for a 16550A)
  wr(UART_IER, IER_RDI);
  u.receive(new Uint8Array([1, 2, 3]));
  assert.equal(rd(UART_IIR), 0xcc, 'character timeout below the trigger level');
  u.receive(new Uint8Array([4, 5, 6, 7, 8]));
  assert.equal(rd(UART_IIR), 0xc4, 'RDA at the trigger level');
  assert.equal(rd(UART_RBR), 1, 'reading RBR drops below the level ...');
  assert.equal(rd(UART_IIR), 0xcc, '... and RDA becomes a timeout indication');
  for (let i = 0; i < 7; i++) rd(UART_RBR);
  assert.equal(rd(UART_IIR), 0xc1);
  for (const [fcr, level] of [[0x01, 1], [0x41, 4], [0xc1, 14]] as const) {
    wr(UART_FCR, fcr | 0x02);
    u.receive(new Uint8Array(level - 1));
    assert.equal(rd(UART_IIR), level === 1 ? 0xc1 : 0xcc, `trigger ${level}`);
    u.receive(new Uint8Array(1));
    assert.equal(rd(UART_IIR), 0xc4, `trigger ${level}`);
  }
});

test('fifo_holds16_restWaitsInHostQueue_deliveredInOrder', () => {
  const { u, rd, wr } = mk();
  wr(UART_FCR, 0x01);
  const input = Uint8Array.from({ length: 20 }, (_, i) => i + 1);
  u.receive(input);
  assert.equal(u.rxFifoCount, 16);
  assert.equal(u.hostQueueCount, 4);
  const got: number[] = [];
  while (rd(UART_LSR) & 1) got.push(rd(UART_RBR));
  assert.deepEqual(got, Array.from(input));
  assert.equal(u.counters.received, 20);
  assert.equal(rd(UART_RBR), 20, 'empty FIFO: RBR repeats the last byte');
});

test('fifoDisabled_holdingRegisterOfOneByte', () => {
  const { u, rd } = mk();
  u.receive(Uint8Array.of(7, 8, 9));
  assert.equal(u.rxFifoCount, 1);
  assert.equal(u.hostQueueCount, 2);
  assert.equal(rd(UART_IIR), 0x01);
  assert.deepEqual([rd(UART_RBR), rd(UART_RBR), rd(UART_RBR)], [7, 8, 9]);
});

test('fcr_clearRcvr_emptiesFifo_andModeChangeClears', () => {
  const { u, rd, wr } = mk();
  wr(UART_FCR, 0x01);
  u.receive(Uint8Array.of(1, 2, 3));
  wr(UART_FCR, 0x03);
  assert.equal(u.rxFifoCount, 0);
  assert.equal(rd(UART_LSR) & 1, 0);
  u.receive(Uint8Array.of(1, 2, 3));
  wr(UART_FCR, 0x00);                          // disabling FIFOs resets them
  assert.equal(u.rxFifoCount, 0);
  wr(UART_FCR, 0x02);                          // bit 0 clear: other bits not programmed
  assert.equal(rd(UART_IIR) >> 6, 0);
});

test('hostQueue_isBounded_overflowCountedAndSetsOE', () => {
  const { u, rd, wr } = mk(8);
  wr(UART_FCR, 0x01);
  u.receive(new Uint8Array(100));
  assert.equal(u.rxFifoCount, 16);
  assert.equal(u.hostQueueCount, 8);
  assert.equal(u.counters.hostDropped, 100 - 24);
  assert.equal(rd(UART_LSR) & 0x02, 0x02);
});

test('hostQueueOfZero_bytesStillReachTheFifo', () => {
  const { u, rd, wr } = mk(0);
  wr(UART_FCR, 0x01);
  u.receive(new Uint8Array(20));
  assert.equal(u.rxFifoCount, 16);
  assert.equal(u.counters.hostDropped, 4);
  assert.equal(rd(UART_LSR) & 0x03, 0x03);
});

test('out2_gatesIrqLine_andLoopbackForcesItLow', () => {
  const { u, irq, wr } = mk();
  wr(UART_IER, IER_RDI);
  u.receive(Uint8Array.of(1));
  assert.equal(irq.level, false, 'OUT2 clear: no IRQ');
  wr(UART_MCR, MCR_OUT2);
  assert.equal(irq.level, true);
  wr(UART_MCR, MCR_OUT2 | MCR_LOOP);
  assert.equal(irq.level, false, 'loopback: IRQ output inactive');
  wr(UART_MCR, MCR_OUT2);
  assert.equal(irq.level, true);
  assert.equal(u.irqLevel, true);
  const n = irq.levels.length;
  wr(UART_SCR, 1);
  assert.equal(irq.levels.length, n, 'the line is driven only on a change');
});

test('loopback_hostInputHeldUntilLoopbackEnds', () => {
  const { u, rd, wr } = mk();
  wr(UART_FCR, 0x01);
  wr(UART_MCR, MCR_LOOP);
  u.receive(Uint8Array.of(0x61));
  assert.equal(rd(UART_LSR) & 1, 0);
  wr(UART_MCR, 0);
  assert.equal(rd(UART_RBR), 0x61);
});

test('msr_deltaBits_fromLoopbackModemOutputs_teriOnTrailingEdge', () => {
  const { rd, wr } = mk();
  wr(UART_MCR, MCR_LOOP);                      // inputs drop from CTS|DSR|DCD to none
  assert.equal(rd(UART_MSR), 0x0b);            // DCTS | DDSR | DDCD
  assert.equal(rd(UART_MSR), 0x00, 'deltas clear on read');
  wr(UART_MCR, MCR_LOOP | MCR_OUT1);
  assert.equal(rd(UART_MSR), 0x40, 'RI rising: no TERI');
  wr(UART_MCR, MCR_LOOP);
  assert.equal(rd(UART_MSR), 0x04, 'RI falling: TERI');
});

test('wideAccess_rejectedWithInvalidAccessSize', () => {
  const { u } = mk();
  assert.equal(u.ioRead(BASE, 2), -2);
  assert.equal(u.ioWrite(BASE, 4, 0), 'InvalidAccessSize');
  assert.deepEqual(u.pioRegions(), [{ name: 'uart16550', first: 0x3f8, last: 0x3ff }]);
});

test('saveRestore_roundTripsAllState', () => {
  const a = mk();
  a.wr(UART_FCR, 0x81);
  a.wr(UART_LCR, 0x83); a.wr(UART_DLL, 3); a.wr(UART_DLM, 0); a.wr(UART_LCR, 0x03);
  a.wr(UART_IER, IER_RDI | IER_THRI);
  a.wr(UART_MCR, MCR_OUT2 | MCR_DTR | MCR_RTS);
  a.wr(UART_SCR, 0x77);
  a.u.receive(Uint8Array.from({ length: 40 }, (_, i) => i));
  a.rd(UART_RBR);
  const saved = a.u.save();
  assert.equal(saved.schema, UART16550_SCHEMA);
  const json = JSON.parse(JSON.stringify(saved)) as unknown;
  const b = mk();
  b.u.restore(json);
  assert.deepEqual(b.u.save(), saved);
  assert.equal(b.irq.level, a.irq.level, 'the IRQ line is driven after restore');
  const drain = (x: ReturnType<typeof mk>): number[] => { const o: number[] = []; while (x.rd(UART_LSR) & 1) o.push(x.rd(UART_RBR)); return o; };
  assert.deepEqual(drain(b), drain(a));
});

test('restore_malformed_throwsAndLeavesStateUnchanged', () => {
  const { u, wr } = mk(16);
  wr(UART_SCR, 0x42);
  const before = u.save();
  const good = { ...before };
  const bad: unknown[] = [
    null, 42, [], {}, { ...good, schema: 'tshv.other' }, { ...good, version: 2 },
    { ...good, ier: 0x10 }, { ...good, mcr: 0x20 }, { ...good, fcr: 0x06 }, { ...good, lcr: 256 },
    { ...good, lsrErrors: 0x01 }, { ...good, thrPending: 1 }, { ...good, rx: [1, 2] /* FIFO off: at most 1 */ },
    { ...good, fcr: 1, rx: new Array<number>(17).fill(0) }, { ...good, host: new Array<number>(17).fill(0) },
    { ...good, rx: [300] }, { ...good, extra: 1 }, { ...good, scr: -1 }, { ...good, dll: 1.5 },
  ];
  for (const b of bad) {
    assert.throws(() => u.restore(b), SavedStateError, JSON.stringify(b));
    assert.deepEqual(u.save(), before);
  }
});

test('property_restore_arbitraryInput_neverCorruptsDevice', () => {
  const { u, rd, wr } = mk(32);
  const base = u.save();
  const fieldValue = fc.oneof(fc.integer({ min: -2, max: 300 }), fc.boolean(), fc.array(fc.integer({ min: -1, max: 256 }), { maxLength: 40 }), fc.string(), fc.constant(null));
  fc.assert(fc.property(
    fc.oneof(fc.anything(), fc.dictionary(fc.constantFrom(...Object.keys(base)), fieldValue).map((patch) => ({ ...base, ...patch }))),
    (input) => {
      try {
        u.restore(input);
      } catch (e) {
        assert.ok(e instanceof SavedStateError, String(e));
      }
      // Whatever happened, the device keeps working within its bounds.
      wr(UART_FCR, 0x01);
      u.receive(new Uint8Array(50));
      assert.ok(u.rxFifoCount <= 16 && u.hostQueueCount <= 32);
      for (let i = 0; i < 60; i++) rd(UART_RBR);
      rd(UART_IIR); rd(UART_LSR); rd(UART_MSR);
    }));
});

test('property_randomRegisterTraffic_fifoAndQueueStayBounded', () => {
  fc.assert(fc.property(
    fc.array(fc.oneof(
      fc.record({ op: fc.constant('r' as const), off: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ op: fc.constant('w' as const), off: fc.integer({ min: 0, max: 7 }), v: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ op: fc.constant('rx' as const), n: fc.integer({ min: 0, max: 40 }) }),
    ), { maxLength: 300 }),
    (ops) => {
      const { u, irq, rd, wr } = mk(64);
      for (const o of ops) {
        if (o.op === 'r') {
          const v = rd(o.off);
          assert.ok(v >= 0 && v <= 0xff);
        } else if (o.op === 'w') wr(o.off, o.v);
        else u.receive(new Uint8Array(o.n));
        assert.ok(u.rxFifoCount <= 16);
        assert.ok(u.hostQueueCount <= 64);
        // IRQ invariant: the line is never high unless OUT2 is set and loopback is off.
        const mcr = u.save()['mcr'] as number;
        if ((mcr & (MCR_OUT2 | MCR_LOOP)) !== MCR_OUT2) assert.equal(irq.level, false);
      }
      const saved = u.save();
      const copy = mk(64);
      copy.u.restore(JSON.parse(JSON.stringify(saved)));
      assert.deepEqual(copy.u.save(), saved);
    }));
});
