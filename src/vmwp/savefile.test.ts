import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { LAPIC_STATE_SIZE, XSAVE_AREA_SIZE, type SegmentRegister, type VpState } from '../hv/backends/state.js';
import {
  HEADER_BYTES, MAX_VP_MSRS, SAVE_FORMAT_VERSION, SAVE_PAGE_SIZE, SaveFileWriter, TRAILER_BYTES, VP_FIXED_BYTES,
  bytesSource, checkMemoryBitmap, decodeHeader, decodeJson, decodeMemoryHeaderFixed, decodeVpState, encodeHeader,
  encodeJson, encodeMemoryHeader, encodeSaveFile, encodeVpState, memorySectionBytes, parseMachineInfo, presentPages,
  scanSaveFile, sectionKind, type MachineInfo,
} from './savefile.js';

const FILE = 'test.tshvsave';

function isImageError(e: unknown): boolean {
  return e instanceof TshvError && e.code === 'EIMAGE' && e.message.startsWith(`save file ${FILE}: `);
}

async function scan(b: Uint8Array) {
  return scanSaveFile(bytesSource(b), { file: FILE });
}

async function refused(b: Uint8Array, what: string): Promise<string> {
  try {
    await scan(b);
  } catch (e) {
    assert.ok(isImageError(e), `${what}: expected a clean EIMAGE TshvError, got ${String(e)}`);
    return (e as Error).message;
  }
  assert.fail(`${what}: accepted`);
}

function seg(selector: number, base: bigint, limit: number, attributes: number): SegmentRegister {
  return { selector, base, limit, attributes };
}

function sampleVpState(): VpState {
  const xsave = new Uint8Array(XSAVE_AREA_SIZE);
  for (let i = 0; i < xsave.length; i++) xsave[i] = (i * 7) & 0xff;
  const lapic = new Uint8Array(LAPIC_STATE_SIZE);
  for (let i = 0; i < lapic.length; i++) lapic[i] = (i * 13 + 1) & 0xff;
  return {
    regs: {
      rax: 1n, rbx: 2n, rcx: 3n, rdx: 4n, rsi: 5n, rdi: 6n, rsp: 0x10000n, rbp: 8n,
      r8: 9n, r9: 10n, r10: 11n, r11: 12n, r12: 13n, r13: 14n, r14: 15n, r15: 0xffffffffffffffffn,
      rip: 0x100000n, rflags: 0x202n,
    },
    sregs: {
      cs: seg(0x18, 0n, 0xffffffff, 0xa09b), ds: seg(0x10, 0n, 0xffffffff, 0xc093), es: seg(0x10, 0n, 0xffffffff, 0xc093),
      fs: seg(0, 0x7fff0000n, 0xffff, 0x10000), gs: seg(0, 0n, 0xffff, 0x10000), ss: seg(0x10, 0n, 0xffffffff, 0xc093),
      tr: seg(0x20, 0x1100n, 0x67, 0x8b), ldt: seg(0, 0n, 0xffff, 0x10082),
      gdt: { base: 0x1000n, limit: 0x2f }, idt: { base: 0n, limit: 0 },
      cr0: 0x80000011n, cr2: 0xdeadbeefn, cr3: 0x2000n, cr4: 0x20n, cr8: 3n, efer: 0x500n, apicBase: 0xfee00900n,
    },
    xsave, xcr0: 7n,
    msrs: new Map([[0x10, 123456789n], [0xc0000102, 42n], [0x174, 0n]]),
    lapic,
    events: { exception: { vector: 14, errorCode: 2 }, interrupt: { vector: 0x40 }, nmiPending: true, nmiMasked: false, interruptShadow: true },
    halted: false,
  };
}

const MACHINE: MachineInfo = {
  vpCount: 1, memoryBytes: 4 * SAVE_PAGE_SIZE, backend: 'kvm', createdAt: '2026-01-01T00:00:00.000Z',
  blocks: [{ name: 'ram-low', kind: 'ram', bytes: 4 * SAVE_PAGE_SIZE }], devices: ['com1'],
};

/** A small but complete save file: every section kind, 1 of 4 pages stored. */
function smallFile(): Uint8Array {
  const mem = new Uint8Array(4 * SAVE_PAGE_SIZE);
  mem.fill(0xab, 2 * SAVE_PAGE_SIZE, 2 * SAVE_PAGE_SIZE + 100);
  const { bitmap, presentCount } = presentPages(mem);
  const memPayload = new Uint8Array(memorySectionBytes(4, presentCount));
  const head = encodeMemoryHeader('ram', 4, bitmap, presentCount);
  memPayload.set(head, 0);
  memPayload.set(mem.subarray(2 * SAVE_PAGE_SIZE, 3 * SAVE_PAGE_SIZE), head.length);
  const vp = sampleVpState();
  vp.msrs = new Map([[0x10, 5n]]);
  return encodeSaveFile([
    { name: 'machine', payload: encodeJson(MACHINE) },
    { name: 'config', payload: encodeJson({ name: 'vm1', memoryMiB: 16 }) },
    { name: 'vp/0', payload: encodeVpState(vp) },
    { name: 'device/com1', payload: encodeJson({ schema: 'tshv.uart16550', version: 1, ier: 0 }) },
    { name: 'memory/ram-low', payload: memPayload },
  ]);
}

// ---- An independent encoder of the documented layout (checks the format, not the code). ----

function u32(n: number): number[] { return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff]; }
function sha(...parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}
function handMade(sections: { name: string; payload: Uint8Array }[], opts: { version?: number } = {}): Uint8Array {
  const header = Uint8Array.from([...Buffer.from('TSHVSAVE'), ...u32(opts.version ?? 1), ...u32(0)]);
  const parts: Uint8Array[] = [header];
  const fileHashParts: Uint8Array[] = [header];
  let len = header.length;
  for (const s of sections) {
    const sh = Uint8Array.from([...Buffer.from('SECT'), s.name.length & 0xff, s.name.length >> 8, 0, 0, ...u32(s.payload.length), ...u32(0), ...Buffer.from(s.name)]);
    const d = sha(sh, s.payload);
    parts.push(sh, s.payload, d);
    fileHashParts.push(sh, d);
    len += sh.length + s.payload.length + d.length;
  }
  const tf = Uint8Array.from([...Buffer.from('TSHVEND!'), ...u32(sections.length), ...u32(0), ...u32(len + 56), ...u32(0)]);
  parts.push(tf, sha(...fileHashParts, tf));
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

// ---------------------------------------------------------------------------------------------

test('header_roundTrip_andRefusals', () => {
  assert.deepEqual(decodeHeader(encodeHeader(), FILE), { formatVersion: SAVE_FORMAT_VERSION });
  const b = encodeHeader();
  b[0] = 0x58;
  assert.throws(() => decodeHeader(b, FILE), /bad magic/);
  const v = encodeHeader();
  v[8] = 2;
  assert.throws(() => decodeHeader(v, FILE), /unsupported format version 2/);
  assert.throws(() => decodeHeader(new Uint8Array(5), FILE), /truncated/);
});

test('encodeSaveFile_matchesTheDocumentedLayout', () => {
  const sections = [
    { name: 'machine', payload: encodeJson(MACHINE) },
    { name: 'config', payload: encodeJson(null) },
    { name: 'vp/0', payload: encodeVpState(sampleVpState()) },
  ];
  assert.deepEqual(encodeSaveFile(sections), handMade(sections));
});

test('scan_smallFile_returnsEverySection', async () => {
  const f = smallFile();
  const s = await scan(f);
  assert.equal(s.fileBytes, f.length);
  assert.deepEqual(s.sections.map((x) => x.name), ['machine', 'config', 'vp/0', 'device/com1', 'memory/ram-low']);
  assert.deepEqual(parseMachineInfo(decodeJson(s.sections[0]!.payload!, FILE, 'machine'), FILE), MACHINE);
  const mem = s.sections[4]!.memory!;
  assert.equal(mem.pageCount, 4);
  assert.equal(mem.presentCount, 1);
  assert.deepEqual([...mem.bitmap], [0b0100]);
});

test('scan_reportsProgressUpToTheFileSize', async () => {
  const f = smallFile();
  const seen: number[] = [];
  await scanSaveFile(bytesSource(f), { file: FILE, onProgress: (d, t) => { assert.equal(t, f.length); seen.push(d); } });
  assert.equal(seen.at(-1), f.length);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! >= seen[i - 1]!);
});

test('vpState_roundTrip_sample', () => {
  const s = sampleVpState();
  const d = decodeVpState(encodeVpState(s), FILE, 'vp/0');
  assert.deepEqual(d, s);
});

const u64Arb = fc.bigUintN(64);
const segArb = fc.record({
  selector: fc.integer({ min: 0, max: 0xffff }),
  base: u64Arb,
  limit: fc.integer({ min: 0, max: 0xffffffff }),
  attributes: fc.integer({ min: 0, max: 0x1ffff }).map((a) => a & 0x1f0ff),
});
const tableArb = fc.record({ base: u64Arb, limit: fc.integer({ min: 0, max: 0xffff }) });
const vpArb: fc.Arbitrary<VpState> = fc.record({
  regs: fc.record({
    rax: u64Arb, rbx: u64Arb, rcx: u64Arb, rdx: u64Arb, rsi: u64Arb, rdi: u64Arb, rsp: u64Arb, rbp: u64Arb,
    r8: u64Arb, r9: u64Arb, r10: u64Arb, r11: u64Arb, r12: u64Arb, r13: u64Arb, r14: u64Arb, r15: u64Arb, rip: u64Arb, rflags: u64Arb,
  }),
  sregs: fc.record({
    cs: segArb, ds: segArb, es: segArb, fs: segArb, gs: segArb, ss: segArb, tr: segArb, ldt: segArb,
    gdt: tableArb, idt: tableArb,
    cr0: u64Arb, cr2: u64Arb, cr3: u64Arb, cr4: u64Arb, cr8: u64Arb, efer: u64Arb, apicBase: u64Arb,
  }),
  xsave: fc.uint8Array({ minLength: XSAVE_AREA_SIZE, maxLength: XSAVE_AREA_SIZE }),
  xcr0: u64Arb,
  msrs: fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), u64Arb), { maxLength: 40 })
    .map((es) => new Map([...new Map(es)].sort((a, b) => a[0] - b[0]))),
  lapic: fc.uint8Array({ minLength: LAPIC_STATE_SIZE, maxLength: LAPIC_STATE_SIZE }),
  events: fc.record({
    exception: fc.option(fc.record({ vector: fc.integer({ min: 0, max: 31 }), errorCode: fc.option(fc.integer({ min: 0, max: 0xffffffff })) })),
    interrupt: fc.option(fc.record({ vector: fc.integer({ min: 0, max: 255 }) })),
    nmiPending: fc.boolean(), nmiMasked: fc.boolean(), interruptShadow: fc.boolean(),
  }),
  halted: fc.boolean(),
});

test('vpState_roundTrip_property', () => {
  fc.assert(fc.property(vpArb, (s) => {
    assert.deepEqual(decodeVpState(encodeVpState(s), FILE, 'vp/0'), s);
  }), { numRuns: 200 });
});

test('vpState_malformed_refused', () => {
  const good = encodeVpState(sampleVpState());
  const bad = (mut: (b: Uint8Array, v: DataView) => void, re: RegExp): void => {
    const b = good.slice();
    mut(b, new DataView(b.buffer));
    assert.throws(() => decodeVpState(b, FILE, 'vp/0'), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE' && re.test(e.message));
  };
  bad((_b, v) => v.setUint32(440, MAX_VP_MSRS + 1, true), /MSRs, at most/);
  bad((_b, v) => v.setUint32(440, 2, true), /does not match 2 MSRs/);
  bad((b) => b.set(b.subarray(VP_FIXED_BYTES, VP_FIXED_BYTES + 4), VP_FIXED_BYTES + 16), /appears twice/);
  bad((_b, v) => v.setUint8(432, 0x80), /unknown event flags/);
  bad((_b, v) => v.setUint8(433, 40), /exception vector 40/);
  bad((_b, v) => v.setUint32(144 + 16, 0x100, true), /reserved attribute bits/);
  bad((_b, v) => v.setUint16(144 + 14, 1, true), /reserved bytes/);
  assert.throws(() => decodeVpState(good.subarray(0, 100), FILE, 'vp/0'), /at least/);
});

test('json_sections_refuseBadBytes', () => {
  assert.deepEqual(decodeJson(encodeJson({ a: [1, 'x'] }), FILE, 'config'), { a: [1, 'x'] });
  assert.throws(() => decodeJson(Uint8Array.of(0xff, 0xfe), FILE, 'config'), /not UTF-8/);
  assert.throws(() => decodeJson(new TextEncoder().encode('{"a":'), FILE, 'config'), /not JSON/);
  assert.throws(() => encodeJson('x'.repeat(2 << 20)), /exceeds/);
});

test('machineInfo_refusesUnknownOrBadFields', () => {
  const m = (patch: object): unknown => ({ ...MACHINE, ...patch });
  for (const bad of [m({ vpCount: 0 }), m({ extra: 1 }), m({ blocks: [{ name: '../x', kind: 'ram', bytes: 4096 }] }),
    m({ blocks: [{ name: 'a', kind: 'ram', bytes: 100 }] }), m({ devices: ['A B'] }), [], null]) {
    assert.throws(() => parseMachineInfo(bad, FILE), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE');
  }
});

test('memory_presentPages_andHeaderChecks', () => {
  const mem = new Uint8Array(10 * SAVE_PAGE_SIZE);
  mem[0] = 1;
  mem[9 * SAVE_PAGE_SIZE + 4095] = 2;
  const { bitmap, presentCount } = presentPages(mem);
  assert.equal(presentCount, 2);
  assert.deepEqual([...bitmap], [0b1, 0b10]);
  const h = encodeMemoryHeader('rom', 10, bitmap, 2);
  const len = memorySectionBytes(10, 2);
  assert.deepEqual(decodeMemoryHeaderFixed(h, len, FILE, 'memory/x'), { kind: 'rom', pageCount: 10, presentCount: 2 });
  assert.throws(() => decodeMemoryHeaderFixed(h, len + 1, FILE, 'memory/x'), /does not match/);
  checkMemoryBitmap(bitmap, 10, 2, FILE, 'memory/x');
  assert.throws(() => checkMemoryBitmap(Uint8Array.of(1, 0b110), 10, 3, FILE, 'memory/x'), /bits past the last page/);
  assert.throws(() => checkMemoryBitmap(bitmap, 10, 3, FILE, 'memory/x'), /header says 3/);
});

test('sectionKind_namesValidated', () => {
  assert.equal(sectionKind('vp/12'), 'vp');
  assert.equal(sectionKind('device/com1'), 'device');
  assert.equal(sectionKind('memory/ram-low'), 'memory');
  for (const n of ['vp/01', 'vp/x', 'VP/0', 'device/', 'memory//a', 'other', '', 'a'.repeat(65), '__proto__']) {
    assert.equal(sectionKind(n), undefined, n);
  }
});

test('writer_refusesMisuse', () => {
  const w = new SaveFileWriter();
  w.header();
  w.beginSection('machine', 3);
  w.payload(Uint8Array.of(1, 2));
  assert.throws(() => w.endSection(), /declared/);
  assert.throws(() => w.payload(Uint8Array.of(1, 2)), /more than the declared/);
});

test('scan_refusesStructuralProblems', async () => {
  const machine = { name: 'machine', payload: encodeJson(MACHINE) };
  const config = { name: 'config', payload: encodeJson(null) };
  assert.match(await refused(handMade([config, machine]), 'order'), /first section is config/);
  assert.match(await refused(handMade([machine, config, config]), 'duplicate'), /duplicate section config/);
  assert.match(await refused(handMade([machine, config, { name: 'bogus', payload: new Uint8Array(1) }]), 'unknown'), /unknown section name/);
  assert.match(await refused(handMade([machine, config], { version: 9 }), 'version'), /unsupported format version 9/);
  assert.match(await refused(handMade([]), 'empty'), /missing the machine and config/);
  const f = smallFile();
  assert.match(await refused(Uint8Array.from([...f, 0]), 'trailing'), /truncated|unexpected bytes|trailer/);
  const g = f.slice();
  g[HEADER_BYTES + 100] = (g[HEADER_BYTES + 100]! ^ 1);
  assert.match(await refused(g, 'flip'), /checksum mismatch in section machine/);
  const t = f.slice();
  t[t.length - 1] = (t[t.length - 1]! ^ 0x80);
  assert.match(await refused(t, 'flip trailer'), /whole-file checksum mismatch/);
  assert.match(await refused(f.subarray(0, f.length - TRAILER_BYTES), 'no trailer'), /truncated/);
});

test('scan_everyTruncation_refused', async () => {
  const f = smallFile();
  for (let n = 0; n < f.length; n++) await refused(f.subarray(0, n), `truncated to ${n}`);
});

/** A tiny file (no VP section, no stored page) whose every bit can be flipped quickly. */
function tinyFile(): Uint8Array {
  const mem = encodeMemoryHeader('ram', 12, new Uint8Array(2), 0);
  return encodeSaveFile([
    { name: 'machine', payload: encodeJson({ ...MACHINE, blocks: [{ name: 'ram-low', kind: 'ram', bytes: 12 * SAVE_PAGE_SIZE }] }) },
    { name: 'config', payload: encodeJson({ name: 'vm1' }) },
    { name: 'device/com1', payload: encodeJson({ schema: 'tshv.uart16550', version: 1 }) },
    { name: 'memory/ram-low', payload: mem },
  ]);
}

async function flipBits(f: Uint8Array, bytes: Iterable<number>): Promise<number> {
  const b = f.slice();
  let n = 0;
  for (const i of bytes) {
    for (let bit = 0; bit < 8; bit++) {
      b[i] = f[i]! ^ (1 << bit);
      await refused(b, `bit ${bit} of byte ${i} flipped`);
      n++;
    }
    b[i] = f[i]!;
  }
  return n;
}

test('scan_everySingleBitFlip_refused', async () => {
  const f = tinyFile();
  await scan(f);
  assert.equal(await flipBits(f, f.keys()), f.length * 8);
});

test('scan_bitFlipsAcrossEveryRegionOfAFullFile_refused', async () => {
  // Every byte outside the bulk data (XSAVE, LAPIC page, stored pages), and every 17th inside it.
  const f = smallFile();
  const s = await scan(f);
  const bulk: [number, number][] = [];
  const vp = s.sections.find((x) => x.name === 'vp/0')!;
  bulk.push([vp.payloadOffset + 448, vp.payloadOffset + VP_FIXED_BYTES]);
  const mem = s.sections.find((x) => x.name === 'memory/ram-low')!;
  bulk.push([mem.payloadOffset + mem.memory!.headerBytes, mem.payloadOffset + mem.payloadBytes]);
  const inBulk = (i: number): boolean => bulk.some(([a, b]) => i >= a && i < b);
  const picks = [...f.keys()].filter((i) => !inBulk(i) || i % 17 === 0);
  await flipBits(f, picks);
});

test('scan_fuzz_randomBytes_alwaysCleanError', async () => {
  await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (b) => { await refused(b, 'random'); }), { numRuns: 500 });
  const magic = encodeHeader();
  await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (b) => {
    await refused(Uint8Array.from([...magic, ...b]), 'random after a valid header');
  }), { numRuns: 500 });
});

test('scan_fuzz_mutationsOfAValidFile_alwaysCleanError', async () => {
  const f = smallFile();
  await fc.assert(fc.asyncProperty(
    fc.array(fc.tuple(fc.nat(f.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }),
    fc.nat(f.length),
    async (edits, cut) => {
      const b = f.slice(0, Math.max(cut, HEADER_BYTES + 1));
      for (const [at, x] of edits) if (at < b.length) b[at] = b[at]! ^ x;
      if (b.length === f.length && b.every((x, i) => x === f[i])) return;
      await refused(b, 'mutated');
    }), { numRuns: 500 });
});
