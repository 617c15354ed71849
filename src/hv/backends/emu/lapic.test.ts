import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lapic, LAPIC_EOI, LAPIC_ID, LAPIC_IRR, LAPIC_ISR, LAPIC_PPR, LAPIC_SVR, LAPIC_TPR, LAPIC_VERSION, LAPIC_ICR_HI, LAPIC_ICR_LO } from './lapic.js';

function enabled(id = 0): { lapic: Lapic; ipis: number[][] } {
  const ipis: number[][] = [];
  const lapic = new Lapic(id, (d, sh, dm, mode, v) => { ipis.push([d, sh, dm, mode, v]); });
  lapic.write(LAPIC_SVR, 0x1ff);
  return { lapic, ipis };
}

describe('emu LAPIC', () => {
  it('reset values: ID from the VP index, version, SVR disabled', () => {
    const l = new Lapic(3, () => undefined);
    assert.equal(l.read(LAPIC_ID) >>> 24, 3);
    assert.equal(l.read(LAPIC_VERSION) & 0xff, 0x14);
    assert.equal(l.softwareEnabled, false);
  });

  it('interrupts are dropped while software-disabled; illegal vectors are refused', () => {
    const l = new Lapic(0, () => undefined);
    l.accept(0x40, false);
    assert.equal(l.ready, -1);
    const { lapic } = enabled();
    lapic.accept(5, false);
    assert.equal(lapic.ready, -1);
  });

  it('delivers by priority, masks by ISR class and TPR, and EOI clears the highest ISR bit', () => {
    const { lapic } = enabled();
    lapic.accept(0x41, false);
    lapic.accept(0x82, false);
    assert.equal(lapic.ready, 0x82);
    assert.equal(lapic.acknowledge(), 0x82);
    assert.equal(lapic.read(LAPIC_ISR + 0x40) >>> 2 & 1, 1);          // ISR bit 0x82
    assert.equal(lapic.ready, -1);                                     // 0x41 is below the in-service class
    assert.equal(lapic.read(LAPIC_PPR), 0x80);
    lapic.write(LAPIC_EOI, 0);
    assert.equal(lapic.ready, 0x41);
    lapic.write(LAPIC_TPR, 0x50);
    assert.equal(lapic.ready, -1);
    lapic.write(LAPIC_TPR, 0x30);
    assert.equal(lapic.acknowledge(), 0x41);
    assert.equal(lapic.read(LAPIC_IRR + 0x20), 0);
  });

  it('ICR writes send fixed IPIs with destination and shorthand', () => {
    const { lapic, ipis } = enabled();
    lapic.write(LAPIC_ICR_HI, 2 << 24);
    lapic.write(LAPIC_ICR_LO, 0x000000f3);
    lapic.write(LAPIC_ICR_LO, 0x000c0020);   // all excluding self
    lapic.write(LAPIC_ICR_LO, 0x00008500);   // INIT level de-assert: ignored
    lapic.write(LAPIC_ICR_LO, 0x00004500);   // INIT
    lapic.write(LAPIC_ICR_LO, 0x00000699);   // STARTUP at 0x99000
    assert.deepEqual(ipis, [[2, 0, 0, 0, 0xf3], [2, 3, 0, 0, 0x20], [2, 0, 0, 5, 0], [2, 0, 0, 6, 0x99]]);
  });

  it('matches physical, broadcast and flat logical destinations', () => {
    const { lapic } = enabled(1);
    assert.ok(lapic.matches(1, 0));
    assert.ok(lapic.matches(0xff, 0));
    assert.ok(!lapic.matches(2, 0));
    lapic.write(0xd0, 0x04000000);
    assert.ok(lapic.matches(0x0c, 1));
    assert.ok(!lapic.matches(0x03, 1));
  });

  it('state round-trips through the 1 KiB register image', () => {
    const { lapic } = enabled();
    lapic.accept(0x90, true);
    const copy = new Lapic(0, () => undefined);
    copy.setState(lapic.getState());
    assert.equal(copy.ready, 0x90);
  });
});

describe('emu LAPIC timer', () => {
  it('one-shot and periodic expiry with the divide configuration, masked LVT does not deliver', () => {
    let now = 1000;
    const l = new Lapic(0, () => undefined, () => now);
    l.write(LAPIC_SVR, 0x1ff);
    l.write(0x3e0, 0x3);                 // divide by 16
    l.write(0x320, 0x30);                // one-shot, vector 0x30
    l.write(0x380, 100);                 // 1600 ns
    now += 800;
    assert.equal(l.read(0x390), 50);
    l.poll(now);
    assert.equal(l.ready, -1);
    now += 800;
    l.poll(now);
    assert.equal(l.ready, 0x30);
    assert.equal(l.deadline, Infinity);
    assert.equal(l.acknowledge(), 0x30);
    l.write(LAPIC_EOI, 0);
    l.write(0x320, 0x20031);             // periodic, vector 0x31
    l.write(0x380, 10);                  // 160 ns
    now += 160; l.poll(now);
    assert.equal(l.acknowledge(), 0x31); l.write(LAPIC_EOI, 0);
    now += 160; l.poll(now);
    assert.equal(l.ready, 0x31);
    assert.equal(l.acknowledge(), 0x31); l.write(LAPIC_EOI, 0);
    l.write(0x320, 0x10031);             // masked
    now += 160; l.poll(now);
    assert.equal(l.ready, -1);
  });

  it('TSC-deadline mode: armed by the MSR, fires once and reads 0 after; ICR ignored; a mode switch disarms', () => {
    let now = 5000;
    const l = new Lapic(0, () => undefined, () => now);
    l.write(LAPIC_SVR, 0x1ff);
    l.setTscDeadline(9000, 9000);                           // not in TSC-deadline mode: ignored
    assert.equal(l.readTscDeadline(), 0);
    assert.equal(l.deadline, Infinity);
    l.write(0x320, 0x40040);                               // TSC-deadline, vector 0x40
    l.write(0x380, 100);                                   // ignored in this mode
    assert.equal(l.read(0x380), 0);
    l.setTscDeadline(1_000_007_000, 7000);                 // TSC value and the same instant on the APIC clock
    assert.equal(l.readTscDeadline(), 1_000_007_000);
    assert.equal(l.read(0x390), 0);                        // current count reads 0 in this mode
    now = 6999; l.poll(now);
    assert.equal(l.ready, -1);
    now = 7000; l.poll(now);
    assert.equal(l.ready, 0x40);
    assert.equal(l.readTscDeadline(), 0);                  // fired: disarmed
    assert.equal(l.acknowledge(), 0x40); l.write(LAPIC_EOI, 0);
    now = 8000; l.poll(now);
    assert.equal(l.ready, -1);                              // once only
    l.setTscDeadline(1_000_009_000, 9000);
    l.setTscDeadline(0, 0);                                // 0 disarms
    now = 10000; l.poll(now);
    assert.equal(l.ready, -1);
    l.setTscDeadline(1_000_011_000, 11000);
    l.write(0x320, 0x00040);                               // back to one-shot: disarmed
    assert.equal(l.readTscDeadline(), 0);
    now = 12000; l.poll(now);
    assert.equal(l.ready, -1);
  });
});
