import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  DELMOD, IOAPIC_EOI, IOAPIC_PINS, IOAPICARB, IOAPICID, IOAPICVER, IOREDTBL, IOREGSEL, IOWIN, Ioapic, IoapicStateError,
  REDIR_DESTMOD, REDIR_INTPOL, REDIR_MASK, REDIR_REMOTE_IRR, REDIR_TRIGGER, msiAddress, msiData, parseIoapicState,
} from './ioapic.js';
import { Lapic, LAPIC_EOI, LAPIC_IRR, LAPIC_SVR, LAPIC_TMR } from './lapic.js';

/** One message: [destination, destMode, deliveryMode, vector, level, trigger]. */
type Msg = [number, number, number, number, number, number];

function make(opts: { id?: number; activeLowPins?: number } = {}): { io: Ioapic; msgs: Msg[] } {
  const msgs: Msg[] = [];
  const io = new Ioapic((d, dm, mode, v, level, trig) => { msgs.push([d, dm, mode, v, level, trig]); }, opts);
  return { io, msgs };
}

/** Through the MMIO window, as Linux does (io_apic_read / io_apic_write). */
function rd(io: Ioapic, index: number): number { io.write(IOREGSEL, 4, index); return io.read(IOWIN, 4); }
function wr(io: Ioapic, index: number, v: number): void { io.write(IOREGSEL, 4, index); io.write(IOWIN, 4, v); }
/** Program entry n: high dword first, then low (Linux __ioapic_write_entry). */
function program(io: Ioapic, n: number, lo: number, dest = 0): void { wr(io, IOREDTBL + 2 * n + 1, dest << 24); wr(io, IOREDTBL + 2 * n, lo); }

const LEVEL = REDIR_TRIGGER;

describe('emu IOAPIC registers', () => {
  it('reset values: version 0x20 with 24 entries, ID and ARB from the option, entries masked', () => {
    const { io } = make({ id: 3 });
    assert.equal(rd(io, IOAPICVER), 0x00170020);
    assert.equal(rd(io, IOAPICID), 0x03000000);
    assert.equal(rd(io, IOAPICARB), 0x03000000);
    for (let n = 0; n < IOAPIC_PINS; n++) {
      assert.equal(rd(io, IOREDTBL + 2 * n), REDIR_MASK);
      assert.equal(rd(io, IOREDTBL + 2 * n + 1), 0);
    }
    assert.throws(() => make({ id: 16 }), /I\/O APIC id/);
    assert.throws(() => make({ activeLowPins: 1 << 24 }), /activeLowPins/);
  });

  it('IOREGSEL latches bits 7:0 for byte, word and dword writes; bits 31:8 read 0', () => {
    const { io } = make();
    io.write(IOREGSEL, 4, 0x12345601);
    assert.equal(io.read(IOREGSEL, 4), 0x01);
    assert.equal(io.read(IOWIN, 4), 0x00170020);
    io.write(IOREGSEL, 1, 0x10);
    assert.equal(io.read(IOREGSEL, 1), 0x10);
    assert.equal(io.read(IOREGSEL + 1, 1), 0);
    io.write(IOREGSEL, 2, 0xff02);
    assert.equal(io.read(IOREGSEL, 2), 0x02);
    io.write(IOREGSEL + 1, 1, 0x05);  // reserved byte: no effect
    assert.equal(io.read(IOREGSEL, 4), 0x02);
  });

  it('IOWIN needs dwords; other offsets and sizes read 0, ignore writes and are counted', () => {
    const { io } = make();
    io.write(IOREGSEL, 4, IOAPICVER);
    assert.equal(io.read(IOWIN, 2), 0);
    assert.equal(io.read(IOWIN + 2, 2), 0);
    assert.equal(io.read(IOWIN + 1, 4), 0);   // misaligned
    assert.equal(io.read(0x20, 4), 0);
    assert.equal(io.read(0xffc, 4), 0);
    assert.equal(io.read(0x1000, 4), 0);
    assert.equal(io.read(IOWIN, 8), 0);
    assert.equal(io.stats.badAccesses, 7);
    io.write(IOREGSEL, 4, IOREDTBL);
    io.write(IOWIN, 1, 0);                  // would unmask entry 0 if honoured
    io.write(IOWIN, 8, 0);
    io.write(0x20, 4, 0);
    assert.equal(rd(io, IOREDTBL), REDIR_MASK);
    assert.equal(io.stats.badAccesses, 10);
  });

  it('mmioRead/mmioWrite take little-endian byte buffers of any length', () => {
    const { io } = make();
    io.mmioWrite(IOREGSEL, Uint8Array.of(0x01, 0, 0, 0));
    const d = new Uint8Array(4);
    io.mmioRead(IOWIN, d);
    assert.deepEqual([...d], [0x20, 0, 0x17, 0]);
    const q = new Uint8Array(8).fill(0xaa);
    io.mmioRead(IOWIN, q);
    assert.deepEqual([...q], [0, 0, 0, 0, 0, 0, 0, 0]);
    io.mmioRead(IOWIN, new Uint8Array(0));
  });

  it('read-only registers and bits keep their values; reserved registers read 0', () => {
    const { io } = make({ id: 1 });
    wr(io, IOAPICVER, 0);
    wr(io, IOAPICARB, 0x0f000000);
    assert.equal(rd(io, IOAPICVER), 0x00170020);
    assert.equal(rd(io, IOAPICARB), 0x01000000);
    wr(io, IOAPICID, 0xffffffff);            // only bits 27:24 are the ID
    assert.equal(rd(io, IOAPICID), 0x0f000000);
    assert.equal(rd(io, IOAPICARB), 0x0f000000);
    wr(io, IOREDTBL, 0xffffffff);            // masked level entry, reserved / RO bits dropped
    assert.equal(rd(io, IOREDTBL), 0x1afff);
    wr(io, IOREDTBL + 1, 0xffffffff);
    assert.equal(rd(io, IOREDTBL + 1), 0xff000000);
    for (const r of [0x03, 0x0f, 0x40, 0x41, 0xff]) { wr(io, r, 0xffffffff); assert.equal(rd(io, r), 0); }
  });
});

describe('emu IOAPIC delivery', () => {
  it('edge: one message per deasserted -> asserted transition of an unmasked pin', () => {
    const { io, msgs } = make();
    program(io, 4, 0x31, 2);
    io.setIrq(4, true);
    io.setIrq(4, true);
    io.setIrq(4, false);
    assert.deepEqual(msgs, [[2, 0, DELMOD.FIXED, 0x31, 1, 0]]);
    io.setIrq(4, true);
    assert.equal(msgs.length, 2);
    assert.equal(rd(io, IOREDTBL + 8) & REDIR_REMOTE_IRR, 0);   // never set for edge
  });

  it('edge: an edge on a masked pin is lost, not delivered at unmask', () => {
    const { io, msgs } = make();
    program(io, 1, 0x40 | REDIR_MASK);
    io.setIrq(1, true);
    io.setIrq(1, false);
    io.setIrq(1, true);
    program(io, 1, 0x40);
    assert.deepEqual(msgs, []);
    assert.equal(io.stats.lostEdges, 2);
    io.setIrq(1, false);
    io.setIrq(1, true);
    assert.deepEqual(msgs, [[0, 0, 0, 0x40, 1, 0]]);
  });

  it('level: one message, Remote IRR set, EOI re-delivers while asserted', () => {
    const { io, msgs } = make();
    program(io, 10, 0x51 | LEVEL, 1);
    io.setIrq(10, true);
    assert.deepEqual(msgs, [[1, 0, 0, 0x51, 1, 1]]);
    assert.notEqual(rd(io, IOREDTBL + 20) & REDIR_REMOTE_IRR, 0);
    io.setIrq(10, true);
    io.eoi(0x52);                           // another vector: nothing
    assert.equal(msgs.length, 1);
    io.eoi(0x51);                           // still asserted: again
    assert.equal(msgs.length, 2);
    assert.notEqual(rd(io, IOREDTBL + 20) & REDIR_REMOTE_IRR, 0);
    io.setIrq(10, false);
    io.eoi(0x51);                           // deasserted: Remote IRR clears, no message
    assert.equal(msgs.length, 2);
    assert.equal(rd(io, IOREDTBL + 20) & REDIR_REMOTE_IRR, 0);
    io.setIrq(10, true);
    assert.equal(msgs.length, 3);
  });

  it('level: the EOI register (0x40) clears Remote IRR as the LAPIC broadcast does', () => {
    const { io, msgs } = make();
    program(io, 2, 0x61 | LEVEL);
    io.setIrq(2, true);
    io.setIrq(2, false);
    io.write(IOAPIC_EOI, 4, 0x61);
    assert.equal(rd(io, IOREDTBL + 4) & REDIR_REMOTE_IRR, 0);
    io.setIrq(2, true);
    assert.equal(msgs.length, 2);
  });

  it('level: switching an entry to edge clears Remote IRR, and the write preserves it otherwise', () => {
    const { io } = make();
    program(io, 3, 0x70 | LEVEL);
    io.setIrq(3, true);
    wr(io, IOREDTBL + 6, 0x70 | LEVEL | REDIR_MASK);
    assert.notEqual(rd(io, IOREDTBL + 6) & REDIR_REMOTE_IRR, 0);
    wr(io, IOREDTBL + 6, 0x70 | REDIR_MASK);
    assert.equal(rd(io, IOREDTBL + 6) & REDIR_REMOTE_IRR, 0);
  });

  it('level: masked while asserted holds nothing back but delivers at unmask if still asserted', () => {
    const { io, msgs } = make();
    program(io, 7, 0x81 | LEVEL | REDIR_MASK);
    io.setIrq(7, true);
    assert.deepEqual(msgs, []);
    program(io, 7, 0x81 | LEVEL);
    assert.deepEqual(msgs, [[0, 0, 0, 0x81, 1, 1]]);
    // masked again, EOI'd, deasserted and reasserted while masked: nothing until unmasked
    program(io, 7, 0x81 | LEVEL | REDIR_MASK);
    io.eoi(0x81);
    io.setIrq(7, false);
    program(io, 7, 0x81 | LEVEL);
    assert.equal(msgs.length, 1);
  });

  it('polarity: active low inverts the electrical level', () => {
    const { io, msgs } = make();
    program(io, 16, 0x91 | LEVEL | REDIR_INTPOL);  // line idle low = asserted when active low
    assert.equal(io.asserted(16), true);
    assert.equal(msgs.length, 1);
    io.setIrq(16, true);                            // drive high: deasserted
    io.eoi(0x91);
    assert.equal(msgs.length, 1);
    io.setIrq(16, false);
    assert.equal(msgs.length, 2);
    program(io, 5, 0x92 | REDIR_INTPOL);           // edge, active low: the falling edge counts
    io.setIrq(5, true);
    assert.equal(msgs.length, 2);
    io.setIrq(5, false);
    assert.deepEqual(msgs[2], [0, 0, 0, 0x92, 1, 0]);
  });

  it('activeLowPins: the device asserts with true; idle active-low lines are high', () => {
    const { io, msgs } = make({ activeLowPins: 1 << 16 });
    program(io, 16, 0xa1 | LEVEL | REDIR_INTPOL);
    assert.equal(io.asserted(16), false);
    assert.equal(msgs.length, 0);
    io.setIrq(16, true);
    assert.deepEqual(msgs, [[0, 0, 0, 0xa1, 1, 1]]);
    program(io, 16, 0xa1 | LEVEL);                   // guest programs it active high: inverted
    io.setIrq(16, false);
    io.eoi(0xa1);
    assert.equal(msgs.length, 2);
  });

  it('destination fields and delivery modes are sent as programmed; reserved modes are not', () => {
    const { io, msgs } = make();
    program(io, 0, 0x33 | REDIR_DESTMOD | (DELMOD.LOWEST_PRIORITY << 8), 0xf0);
    program(io, 1, 0x00 | (DELMOD.NMI << 8), 0x07);
    program(io, 2, 0x00 | (DELMOD.EXTINT << 8), 0);
    program(io, 3, 0x44 | (3 << 8));
    program(io, 4, 0x45 | (6 << 8));
    for (let n = 0; n <= 4; n++) io.setIrq(n, true);
    assert.deepEqual(msgs, [[0xf0, 1, 1, 0x33, 1, 0], [0x07, 0, 4, 0, 1, 0], [0, 0, 7, 0, 1, 0]]);
    assert.equal(io.stats.reservedModes, 2);
  });

  it('msiAddress/msiData give the MSI equivalent to an entry', () => {
    assert.equal(msiAddress(0x12, 1), 0xfee12004);
    assert.equal(msiAddress(0xff, 0), 0xfeeff000);
    assert.equal(msiData(0x41, DELMOD.LOWEST_PRIORITY, 1), 0xc141);
    assert.equal(msiData(0x30, DELMOD.FIXED, 0), 0x4030);
  });

  it('out-of-range GSIs are ignored and counted', () => {
    const { io, msgs } = make();
    for (let n = 0; n < IOAPIC_PINS; n++) program(io, n, 0x50 | LEVEL | REDIR_INTPOL);
    const before = msgs.length;
    for (const g of [-1, 24, 1.5, NaN, Infinity, 2 ** 32]) io.setIrq(g, false);
    assert.equal(msgs.length, before);
    assert.equal(io.stats.badGsis, 6);
    assert.equal(io.asserted(24), false);
  });

  it('reset masks every entry and keeps the pin levels', () => {
    const { io, msgs } = make({ id: 2 });
    wr(io, IOAPICID, 0x05000000);
    program(io, 9, 0x60 | LEVEL);
    io.setIrq(9, true);
    io.reset();
    assert.equal(rd(io, IOAPICID), 0x02000000);
    assert.equal(rd(io, IOREDTBL + 18), REDIR_MASK);
    program(io, 9, 0x60 | LEVEL);
    assert.equal(msgs.length, 2);             // the line is still asserted
  });

  it('with a real LAPIC: level interrupt, EOI broadcast for TMR vectors, re-delivery', () => {
    const lapic = new Lapic(0, () => undefined);
    lapic.write(LAPIC_SVR, 0x1ff);
    const io = new Ioapic((dest, dm, mode, vector, _level, trig) => {
      if (mode <= 1 && lapic.matches(dest, dm)) lapic.accept(vector, trig === 1);
    });
    const tmr = (v: number): boolean => ((lapic.read(LAPIC_TMR + ((v >> 5) << 4)) >>> (v & 31)) & 1) !== 0;
    const irr = (v: number): boolean => ((lapic.read(LAPIC_IRR + ((v >> 5) << 4)) >>> (v & 31)) & 1) !== 0;
    /** What the partition does on a guest EOI: the LAPIC's EOI, then the broadcast for TMR vectors. */
    const guestEoi = (v: number): void => { const level = tmr(v); lapic.write(LAPIC_EOI, 0); if (level) io.eoi(v); };
    program(io, 11, 0x41 | LEVEL, 0);
    io.setIrq(11, true);
    assert.equal(lapic.ready, 0x41);
    assert.equal(tmr(0x41), true);
    assert.equal(lapic.acknowledge(), 0x41);
    guestEoi(0x41);                              // the device still asserts: again
    assert.equal(irr(0x41), true);
    assert.equal(lapic.acknowledge(), 0x41);
    io.setIrq(11, false);                        // the handler quiets the device
    guestEoi(0x41);
    assert.equal(lapic.ready, -1);
    assert.equal(rd(io, IOREDTBL + 22) & REDIR_REMOTE_IRR, 0);
  });
});

describe('emu IOAPIC save/restore', () => {
  it('round-trips through JSON', () => {
    const { io } = make();
    wr(io, IOAPICID, 0x07000000);
    program(io, 5, 0x55 | LEVEL, 3);
    io.setIrq(5, true);
    io.setIrq(20, true);
    io.write(IOREGSEL, 4, 0x21);
    const saved = JSON.parse(JSON.stringify(io.save())) as unknown;
    const { io: io2, msgs: msgs2 } = make();
    io2.restore(saved);
    assert.deepEqual(io2.save(), io.save());
    assert.equal(msgs2.length, 0);             // restoring sends nothing
    io2.eoi(0x55);                              // the pin level came along
    assert.deepEqual(msgs2, [[3, 0, 0, 0x55, 1, 1]]);
  });

  it('rejects malformed input with IoapicStateError and changes nothing', () => {
    const { io } = make();
    program(io, 1, 0x31);
    const good = io.save();
    const before = JSON.stringify(good);
    const withRedir = (i: number, v: unknown): unknown => { const r: unknown[] = [...good.redirection]; r[i] = v; return { ...good, redirection: r }; };
    const getter = { ...good };
    Object.defineProperty(getter, 'id', { get: () => 1, enumerable: true });
    const bad: unknown[] = [
      null, 5, 'x', [], {}, { ...good, schema: 'emu.lapic' }, { ...good, version: 2 }, { ...good, extra: 1 },
      (() => { const o: Record<string, unknown> = { ...good }; delete o.lines; return o; })(),
      { ...good, id: 16 }, { ...good, id: -1 }, { ...good, id: 1.5 }, { ...good, ioregsel: 256 }, { ...good, lines: 1 << 24 },
      { ...good, redirection: 'no' }, { ...good, redirection: new Array(49).fill(0) }, { ...good, redirection: { length: 48 } },
      { ...good, redirection: new Array<number>(1_000_000) },
      withRedir(0, '0'), withRedir(0, -1), withRedir(0, 2 ** 32), withRedir(0, 0x1000), withRedir(0, 0x20000),
      withRedir(0, REDIR_REMOTE_IRR), withRedir(1, 1), withRedir(3, undefined), getter,
      JSON.parse('{"__proto__": {"id": 1}}'),
    ];
    for (const b of bad) {
      assert.throws(() => { io.restore(b); }, IoapicStateError, JSON.stringify(b)?.slice(0, 80));
      assert.equal(JSON.stringify(io.save()), before);
    }
    const sparse = new Array<unknown>(good.redirection.length);  // a hole at index 4
    good.redirection.forEach((v, i) => { if (i !== 4) sparse[i] = v; });
    assert.throws(() => parseIoapicState({ ...good, redirection: sparse }), IoapicStateError);
  });

  it('property: any JSON-ish value either restores or throws IoapicStateError', () => {
    const { io } = make();
    fc.assert(fc.property(fc.anything(), (v) => {
      try { io.restore(v); } catch (e) { assert.ok(e instanceof IoapicStateError); }
    }), { numRuns: 500 });
  });
});

describe('emu IOAPIC property', () => {
  type Action =
    | { k: 'w'; off: number; size: number; v: number }
    | { k: 'r'; off: number; size: number }
    | { k: 'reg'; index: number; v: number }
    | { k: 'irq'; gsi: number; level: boolean }
    | { k: 'eoi'; v: number };
  const offset = fc.oneof(fc.constantFrom(IOREGSEL, IOWIN, IOAPIC_EOI, 1, 2, 0x11, 0x14, 0x20), fc.integer({ min: -4, max: 0x1004 }));
  const size = fc.constantFrom(1, 2, 4, 8, 0, 3);
  const u32 = fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0, REDIR_MASK, LEVEL, LEVEL | REDIR_INTPOL, 0x1ffff));
  const action: fc.Arbitrary<Action> = fc.oneof(
    fc.record({ k: fc.constant('w' as const), off: offset, size, v: u32 }),
    fc.record({ k: fc.constant('r' as const), off: offset, size }),
    fc.record({ k: fc.constant('reg' as const), index: fc.integer({ min: 0, max: 0x45 }), v: u32 }),
    fc.record({ k: fc.constant('irq' as const), gsi: fc.integer({ min: -2, max: 26 }), level: fc.boolean() }),
    fc.record({ k: fc.constant('eoi' as const), v: fc.integer({ min: 0, max: 0x1ff }) }),
  );

  it('random MMIO and pin activity never throws and never sends from a masked entry', () => {
    fc.assert(fc.property(fc.array(action, { maxLength: 200 }), (actions) => {
      const box: { io?: Ioapic } = {};
      let sent = 0;
      const deliver = (dest: number, dm: number, mode: number, vector: number, level: number, trig: number): void => {
        sent++;
        assert.equal(level, 1);
        assert.ok(mode !== 3 && mode !== 6);
        // Some unmasked entry must hold exactly these fields (read without disturbing IOREGSEL).
        let found = false;
        for (let n = 0; n < IOAPIC_PINS && !found; n++) {
          const lo = box.io!.readRegister(IOREDTBL + 2 * n), hi = box.io!.readRegister(IOREDTBL + 2 * n + 1);
          found = (lo & REDIR_MASK) === 0 && (lo & 0xff) === vector && ((lo >>> 8) & 7) === mode && ((lo >>> 11) & 1) === dm &&
            ((lo >>> 15) & 1) === trig && hi >>> 24 === dest && box.io!.asserted(n);
        }
        assert.ok(found, 'message from no unmasked, asserted entry');
      };
      const io = new Ioapic(deliver);
      box.io = io;
      for (const a of actions) {
        const allMasked = (() => { for (let n = 0; n < IOAPIC_PINS; n++) if ((io.readRegister(IOREDTBL + 2 * n) & REDIR_MASK) === 0) return false; return true; })();
        const before = sent;
        switch (a.k) {
          case 'w': io.write(a.off, a.size, a.v); break;
          case 'r': { const v = io.read(a.off, a.size); assert.ok(Number.isInteger(v) && v >= 0 && v <= 0xffffffff); break; }
          case 'reg': io.write(IOREGSEL, 4, a.index); io.write(IOWIN, 4, a.v); break;
          case 'irq': io.setIrq(a.gsi, a.level); break;
          case 'eoi': io.eoi(a.v); break;
        }
        // Only an IOWIN write can unmask; anything else with all entries masked sends nothing.
        if (allMasked && a.k !== 'reg' && !(a.k === 'w' && a.off === IOWIN)) assert.equal(sent, before);
        // Remote IRR is only ever set on level-triggered entries.
        for (let n = 0; n < IOAPIC_PINS; n++) {
          const lo = io.readRegister(IOREDTBL + 2 * n);
          if ((lo & REDIR_REMOTE_IRR) !== 0) assert.notEqual(lo & REDIR_TRIGGER, 0);
        }
      }
      parseIoapicState(JSON.parse(JSON.stringify(io.save())));  // its own state always validates
    }), { numRuns: 300 });
  });
});

describe('I/O APIC wired into the emu partition', () => {
  it('partition_setIrqLine_levelInterrupt_reachesLapic_andRefiresAfterEoi', async () => {
    const { createEmuBackend } = await import('./index.js');
    const backend = createEmuBackend();
    const p = await backend.createPartition({ vpCount: 1, cpuid: backend.supportedCpuid(), interceptMsrs: [], hypercallPort: 0x9e });
    try {
      const lapic = (p as unknown as { vps: { cpu: { lapic: Lapic } }[] }).vps[0]!.cpu.lapic;
      lapic.write(LAPIC_SVR, 0x1ff);                     // software-enable the LAPIC
      const mmioWrite32 = (off: number, v: number) => {
        const d = new Uint8Array(4);
        new DataView(d.buffer).setUint32(0, v >>> 0, true);
        p.setExitHandler({
          pioRead: () => 0, pioWrite: () => undefined,
          mmioRead: () => assert.fail('the I/O APIC window must not reach the parent'),
          mmioWrite: () => assert.fail('the I/O APIC window must not reach the parent'),
          msrRead: () => null, msrWrite: () => false, hypercall: () => 0n,
        });
        // The guest's path: the CPU hands non-RAM accesses to the partition's exit handler.
        (p as unknown as { exits: { mmioWrite(vp: number, gpa: number, d: Uint8Array): void } }).exits.mmioWrite(0, 0xfec00000 + off, d);
      };
      mmioWrite32(0x00, 0x10 + 2 * 4);                   // IOREGSEL = redirection entry 4, low
      mmioWrite32(0x10, 0x41 | (1 << 15));               // vector 0x41, level, unmasked, dest 0
      p.setIrqLine(4, true);
      const irr = (v: number) => (lapic.read(LAPIC_IRR + ((v >> 5) << 4)) >>> (v & 31)) & 1;
      assert.equal(irr(0x41), 1, 'delivered to the LAPIC IRR');
      assert.equal((lapic.read(LAPIC_TMR + ((0x41 >> 5) << 4)) >>> (0x41 & 31)) & 1, 1, 'level-triggered');
      // The processor takes it and EOIs while the line is still asserted: it fires again.
      lapic.acknowledge();
      assert.equal(irr(0x41), 0);
      lapic.write(LAPIC_EOI, 0);
      assert.equal(irr(0x41), 1, 'level line still asserted -> re-delivered after EOI');
      lapic.acknowledge();
      p.setIrqLine(4, false);
      lapic.write(LAPIC_EOI, 0);
      assert.equal(irr(0x41), 0, 'deasserted line is not re-delivered');
    } finally {
      p.dispose();
    }
  });
});
