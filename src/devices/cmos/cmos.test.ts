import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CMOS_DATA_PORT, CMOS_INDEX_PORT, CMOS_SCHEMA, CMOS_VERSION, CmosRtc, REG_A, REG_B, REG_C, REG_CENTURY, REG_D, REG_DAY,
  REG_HOURS, REG_MINUTES, REG_MONTH, REG_SECONDS, REG_WEEKDAY, REG_YEAR, B_24H, B_DM_BINARY, B_SET } from './cmos.js';
import { SavedStateError } from '../../vid/savedstate.js';

/** 2026-11-25 02:53:07 UTC, a Wednesday. */
const T0 = Date.UTC(2026, 10, 25, 2, 53, 7, 400);

function rtc(start = T0): { dev: CmosRtc; clock: { t: number } } {
  const clock = { t: start };
  return { dev: new CmosRtc({ now: () => clock.t }), clock };
}
function rd(dev: CmosRtc, reg: number): number { dev.ioWrite(CMOS_INDEX_PORT, 1, reg); return dev.ioRead(CMOS_DATA_PORT, 1); }
function wr(dev: CmosRtc, reg: number, v: number): void { dev.ioWrite(CMOS_INDEX_PORT, 1, reg); dev.ioWrite(CMOS_DATA_PORT, 1, v); }
function time(dev: CmosRtc): number[] {
  return [REG_CENTURY, REG_YEAR, REG_MONTH, REG_DAY, REG_HOURS, REG_MINUTES, REG_SECONDS, REG_WEEKDAY].map((r) => rd(dev, r));
}

describe('devices: CMOS RTC', () => {
  it('shows host UTC in BCD, 24-hour, with no update in progress and valid time', () => {
    const { dev, clock } = rtc();
    assert.deepEqual(time(dev), [0x20, 0x26, 0x11, 0x25, 0x02, 0x53, 0x07, 4]);
    assert.equal(rd(dev, REG_A) & 0x80, 0, 'UIP');
    assert.equal(rd(dev, REG_D), 0x80, 'VRT');
    assert.equal(rd(dev, REG_C), 0);
    clock.t += 61_000;
    assert.equal(rd(dev, REG_MINUTES), 0x54);
    assert.equal(rd(dev, REG_SECONDS), 0x08);
  });

  it('binary and 12-hour formats follow register B', () => {
    const { dev, clock } = rtc(Date.UTC(2026, 0, 1, 15, 4, 5));
    wr(dev, REG_B, B_DM_BINARY | B_24H);
    assert.deepEqual(time(dev), [20, 26, 1, 1, 15, 4, 5, 5]);
    wr(dev, REG_B, B_DM_BINARY);
    assert.equal(rd(dev, REG_HOURS), 0x80 | 3, '3 PM');
    wr(dev, REG_B, 0);
    assert.equal(rd(dev, REG_HOURS), 0x80 | 0x03);
    clock.t = Date.UTC(2026, 0, 1, 0, 30, 0);
    assert.equal(rd(dev, REG_HOURS), 0x12, '12 AM');
  });

  it('the guest sets the clock with SET, and it runs on from there', () => {
    const { dev, clock } = rtc();
    wr(dev, REG_B, B_SET | B_24H);
    wr(dev, REG_CENTURY, 0x19); wr(dev, REG_YEAR, 0x99); wr(dev, REG_MONTH, 0x12); wr(dev, REG_DAY, 0x31);
    wr(dev, REG_HOURS, 0x23); wr(dev, REG_MINUTES, 0x59); wr(dev, REG_SECONDS, 0x58);
    clock.t += 5000;   // frozen while SET is on
    assert.deepEqual(time(dev).slice(0, 7), [0x19, 0x99, 0x12, 0x31, 0x23, 0x59, 0x58]);
    wr(dev, REG_B, B_24H);
    clock.t += 3000;
    assert.deepEqual(time(dev).slice(0, 7), [0x20, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01]);
    assert.equal(new Date(dev.guestTime()).getUTCFullYear(), 2000);
  });

  it('century 00 means the years 0000-0099, not 1900-1999', () => {
    const { dev } = rtc();
    wr(dev, REG_B, B_SET | B_24H);
    wr(dev, REG_CENTURY, 0x00); wr(dev, REG_YEAR, 0x50);
    wr(dev, REG_B, B_24H);
    assert.equal(new Date(dev.guestTime()).getUTCFullYear(), 50);
    assert.deepEqual([rd(dev, REG_CENTURY), rd(dev, REG_YEAR)], [0x00, 0x50]);
  });

  it('does not take a time before year 0000 (month 0 of year 0)', () => {
    const { dev } = rtc();
    wr(dev, REG_B, B_SET | B_24H);
    wr(dev, REG_CENTURY, 0x00); wr(dev, REG_YEAR, 0x00); wr(dev, REG_MONTH, 0x00);
    wr(dev, REG_B, B_24H);
    assert.equal(new Date(dev.guestTime()).getUTCFullYear(), 2026, 'the clock keeps the time it had');
    for (const r of [REG_CENTURY, REG_YEAR, REG_MONTH, REG_DAY]) assert.ok(rd(dev, r) >= 0);
  });

  it('a write to one field without SET moves the clock at once', () => {
    const { dev } = rtc();
    wr(dev, REG_HOURS, 0x10);
    assert.deepEqual(time(dev).slice(0, 7), [0x20, 0x26, 0x11, 0x25, 0x10, 0x53, 0x07]);
  });

  it('keeps CMOS RAM, leaves C and D read-only, and rejects wide accesses', () => {
    const { dev } = rtc();
    wr(dev, 0x40, 0xa5);
    assert.equal(rd(dev, 0x40), 0xa5);
    wr(dev, REG_D, 0); wr(dev, REG_C, 0xff);
    assert.equal(rd(dev, REG_D), 0x80);
    assert.equal(rd(dev, REG_C), 0);
    assert.equal(dev.ioWrite(CMOS_DATA_PORT, 2, 0), 'InvalidAccessSize');
    dev.ioWrite(CMOS_INDEX_PORT, 1, 0x80 | 0x40);
    assert.equal(dev.ioRead(CMOS_INDEX_PORT, 1), 0xc0, 'NMI mask bit recorded');
    assert.equal(rd(dev, 0x40), 0xa5);
  });

  it('garbage from the guest never throws and keeps the clock within bounds', () => {
    const { dev } = rtc();
    let x = 12345;
    const next = (): number => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x >>> 8; };
    for (let k = 0; k < 20000; k++) {
      const port = next() & 1 ? CMOS_DATA_PORT : CMOS_INDEX_PORT;
      if (next() & 1) dev.ioWrite(port, 1, next() & 0xff);
      else { const v = dev.ioRead(port, 1); assert.ok(Number.isInteger(v) && v >= 0 && v <= 0xff, `read ${v}`); }
    }
    assert.ok(Number.isFinite(dev.guestTime()));
    assert.ok(Math.abs(dev.guestTime() - T0) <= 10_000 * 366 * 86_400_000);
  });

  it('saves and restores index, RAM and the clock offset; a reset keeps the clock', () => {
    const { dev, clock } = rtc();
    wr(dev, REG_YEAR, 0x30);
    wr(dev, 0x50, 7);
    dev.ioWrite(CMOS_INDEX_PORT, 1, 0x50);
    const saved = dev.save();
    const { dev: other } = rtc(clock.t);
    other.restore(JSON.parse(JSON.stringify(saved)));
    assert.equal(other.ioRead(CMOS_DATA_PORT, 1), 7);
    assert.equal(rd(other, REG_YEAR), 0x30);
    other.reset();
    assert.equal(rd(other, 0x50), 0);
    assert.equal(rd(other, REG_YEAR), 0x30, 'the clock runs on across a reset');
  });

  it('rejects malformed saved state and keeps its own', () => {
    const { dev } = rtc();
    wr(dev, 0x60, 9);
    const good = dev.save() as Record<string, unknown>;
    const bad: unknown[] = [
      null, 'x', { ...good, schema: 'tshv.other' }, { ...good, version: CMOS_VERSION + 1 }, { ...good, index: 0x80 },
      { ...good, ram: new Array(129).fill(0) }, { ...good, ram: [256] }, { ...good, offsetMs: 1e300 }, { ...good, offsetMs: 1.5 },
      { ...good, nmiMasked: 1 }, { ...good, extra: 1 }, { schema: CMOS_SCHEMA, version: CMOS_VERSION },
    ];
    for (const b of bad) assert.throws(() => dev.restore(b), SavedStateError, JSON.stringify(b)?.slice(0, 80));
    assert.equal(rd(dev, 0x60), 9);
  });
});
