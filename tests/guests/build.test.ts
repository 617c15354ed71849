import test from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { TshvError } from '../../src/base/errors.js';
import {
  buildGuests, checkToolchain, fillTranscript, guestsDir, loadManifest, parseElfFacts, parseManifest, readExpectedTranscript,
  testRomImage,
} from './build.js';

const minimal = {
  name: 'g', mode: 'long64', sources: ['g.c'], loadGpa: '0x100000', memoryMiB: 16, exit: { kind: 'poweroff' },
};
const manifestOf = (g: Record<string, unknown>): string => JSON.stringify({ guests: [g] });

test('parseManifest_minimalGuest_fillsDefaults', () => {
  const [g] = parseManifest(manifestOf(minimal));
  assert.deepEqual(g, {
    name: 'g', description: '', mode: 'long64', sources: ['g.c'], loadGpa: 0x100000, memoryBytes: 16 * 1024 * 1024,
    rom: null, msrScratch: false, requires: [], exit: { kind: 'poweroff' }, timeoutMs: 30000,
  });
});

test('parseManifest_requires_knownFeaturesOnly', () => {
  const [g] = parseManifest(manifestOf({ ...minimal, requires: ['sse2', 'fxsr'] }));
  assert.deepEqual(g?.requires, ['sse2', 'fxsr']);
  assert.throws(() => parseManifest(manifestOf({ ...minimal, requires: ['avx512'] })), /requires\[0\]/);
  assert.throws(() => parseManifest(manifestOf({ ...minimal, requires: 'sse' })), /requires/);
});

test('parseManifest_testExitCodeAndRom_parsed', () => {
  const [g] = parseManifest(manifestOf({ ...minimal, exit: { kind: 'testExit', code: '0x64' }, rom: { gpa: '0xffff0000', size: 65536 }, msrScratch: true }));
  assert.deepEqual(g?.exit, { kind: 'testExit', code: 0x64 });
  assert.deepEqual(g?.rom, { gpa: 0xffff0000, size: 65536 });
  assert.equal(g?.msrScratch, true);
});

test('parseManifest_malformed_givesClearErrors', () => {
  const bad: [string, RegExp][] = [
    ['not json', /not JSON/],
    ['[]', /expected \{ "guests"/],
    ['{"guests":[]}', /1\.\.64 guests/],
    [manifestOf({ ...minimal, name: '../evil' }), /name: bad value/],
    [manifestOf({ ...minimal, name: '__proto__' }), /name: bad value/],
    [manifestOf({ ...minimal, mode: 'vm86' }), /unknown mode/],
    [manifestOf({ ...minimal, sources: ['../../etc/passwd.c'] }), /sources\[0\]: bad value/],
    [manifestOf({ ...minimal, sources: ['x.o'] }), /sources\[0\]/],
    [manifestOf({ ...minimal, sources: [] }), /1\.\.16 file names/],
    [manifestOf({ ...minimal, loadGpa: '0x1_0000' }), /loadGpa/],
    [manifestOf({ ...minimal, loadGpa: -1 }), /out of range/],
    [manifestOf({ ...minimal, loadGpa: 1.5 }), /out of range/],
    [manifestOf({ ...minimal, memoryMiB: 1 }), /at least 2 MiB/],
    [manifestOf({ ...minimal, exit: { kind: 'explode' } }), /unknown exit kind/],
    [manifestOf({ ...minimal, exit: { kind: 'testExit' } }), /code/],
    [manifestOf({ ...minimal, rom: { gpa: '0xffff0001', size: 4096 } }), /whole pages/],
    [manifestOf({ ...minimal, msrScratch: 'yes' }), /boolean/],
    [JSON.stringify({ guests: [minimal, minimal] }), /duplicate name/],
  ];
  for (const [text, re] of bad) {
    assert.throws(() => parseManifest(text), (e: unknown) => e instanceof TshvError && e.code === 'EINVAL' && re.test(e.message), text);
  }
});

test('parseManifest_property_arbitraryJsonNeverCrashesWithOtherErrors', () => {
  fc.assert(fc.property(fc.jsonValue(), (v) => {
    try {
      parseManifest(JSON.stringify({ guests: [v] }));
    } catch (e) {
      assert.ok(e instanceof TshvError, String(e));
    }
  }), { numRuns: 300 });
});

function elf64(entry: bigint, vaddr: bigint, filesz: bigint): Uint8Array {
  const b = new Uint8Array(64 + 56);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  dv.setBigUint64(24, entry, true);
  dv.setBigUint64(32, 64n, true);        // e_phoff
  dv.setUint16(54, 56, true);            // e_phentsize
  dv.setUint16(56, 1, true);             // e_phnum
  dv.setUint32(64, 1, true);             // PT_LOAD
  dv.setBigUint64(64 + 16, vaddr, true);
  dv.setBigUint64(64 + 32, filesz, true);
  return b;
}

test('parseElfFacts_elf64_entryAndBase', () => {
  assert.deepEqual(parseElfFacts(elf64(0x100010n, 0x100000n, 0x20n)), { class: 64, entry: 0x100010, imageBase: 0x100000 });
});

test('parseElfFacts_malformed_throwsEimage', () => {
  const cases: Uint8Array[] = [
    new Uint8Array(10),
    new Uint8Array(64),
    elf64(0n, 0n, 0n),                                   // no PT_LOAD with bytes
    elf64(1n << 60n, 0x100000n, 1n),                     // entry beyond a safe integer
    (() => { const b = elf64(0n, 0n, 1n); new DataView(b.buffer).setUint16(56, 100, true); return b; })(),
    (() => { const b = elf64(0n, 0n, 1n); b[4] = 3; return b; })(),
    (() => { const b = elf64(0n, 0n, 1n); b[5] = 2; return b; })(),
  ];
  for (const c of cases) assert.throws(() => parseElfFacts(c), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE');
});

test('parseElfFacts_property_randomBytesNeverCrashOtherwise', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, magic) => {
    const b = Uint8Array.from(bytes);
    if (magic && b.length >= 6) b.set([0x7f, 0x45, 0x4c, 0x46, 1 + (b[4]! & 1), 1]);
    try {
      parseElfFacts(b);
    } catch (e) {
      assert.ok(e instanceof TshvError && e.code === 'EIMAGE', String(e));
    }
  }), { numRuns: 500 });
});

test('fillTranscript_substitutesAndRejectsUnknownPlaceholders', () => {
  assert.equal(fillTranscript('vendor: {{cpuVendor}}\n', { cpuVendor: 'GenuineIntel' }), 'vendor: GenuineIntel\n');
  assert.throws(() => fillTranscript('{{nope}}', {}), /has no value/);
  assert.throws(() => fillTranscript('{{constructor}}', {}), /has no value/);
  assert.equal(fillTranscript('no placeholders {x}', {}), 'no placeholders {x}');
});

test('testRomImage_signatureThenIndexPattern', () => {
  const r = testRomImage(0x10000);
  assert.equal(new TextDecoder().decode(r.subarray(0, 8)), 'TSHV-ROM');
  assert.equal(r[0x10], 0x10);
  assert.equal(r[0xfff0], 0xf0);
  assert.deepEqual([...r.subarray(0x20, 0x24)], [0x20, 0x21, 0x22, 0x23]);
});

test('manifest_everyGuestHasSourcesAndAnExpectedTranscriptEndingInDone', () => {
  const dir = guestsDir();
  const specs = loadManifest(dir);
  assert.ok(specs.length >= 5);
  for (const s of specs) {
    for (const src of s.sources) assert.ok(existsSync(join(dir, 'src', src)), `${s.name}: ${src}`);
    const t = readExpectedTranscript(s.name, dir);
    assert.ok(t.endsWith('DONE\n'), `${s.name}: transcript ends in DONE`);
  }
});

test('buildGuests_buildsEveryGuestThenReusesTheCache', (t) => {
  const tools = checkToolchain();
  assert.ok(tools.ok, tools.ok ? '' : tools.reason);
  const first = buildGuests();
  const second = buildGuests();
  assert.equal(second.size, loadManifest().length);
  for (const [name, g] of second) {
    assert.equal(g.rebuilt, false, `${name} came from the cache`);
    assert.deepEqual(g.image, first.get(name)?.image);
    assert.deepEqual(new Uint8Array(readFileSync(g.binPath)), g.image);
    assert.ok(g.entryGpa >= g.spec.loadGpa && g.entryGpa < g.spec.loadGpa + g.image.length);
  }
  t.diagnostic(`built ${[...second.values()].map((g) => `${g.spec.name}=${g.image.length}B`).join(' ')}`);
});
