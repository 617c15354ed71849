import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { validateInitrd } from '../loader/kernel-file.js';
import { CpioWriter, readCpio, type CpioEntry } from './cpio.js';

const te = new TextEncoder();

function isEimage(e: unknown): boolean {
  return e instanceof TshvError && e.code === 'EIMAGE';
}

describe('cpio newc', () => {
  it('writer_layout_followsNewcPaddingRules', () => {
    const a = new CpioWriter().file('abc', te.encode('hello'), 0o755).finish();
    const head = new TextDecoder().decode(a.subarray(0, 110));
    assert.equal(head.slice(0, 6), '070701');
    assert.equal(parseInt(head.slice(6 + 8, 6 + 16), 16), 0o100755); // c_mode
    assert.equal(parseInt(head.slice(6 + 6 * 8, 6 + 7 * 8), 16), 5); // c_filesize
    assert.equal(parseInt(head.slice(6 + 11 * 8, 6 + 12 * 8), 16), 4); // c_namesize includes NUL
    // 110 + 4 = 114 -> name padded to 116; data 5 -> padded to 8; next header at 124.
    assert.equal(new TextDecoder().decode(a.subarray(116, 121)), 'hello');
    assert.deepEqual([...a.subarray(121, 124)], [0, 0, 0]);
    assert.equal(new TextDecoder().decode(a.subarray(124, 130)), '070701');
    assert.equal(a.length % 4, 0);
    assert.equal(new TextDecoder().decode(a.subarray(124 + 110, 124 + 120)), 'TRAILER!!!');
  });

  it('writer_allKinds_roundTripThroughReader', () => {
    const w = new CpioWriter()
      .dir('dev', 0o755)
      .chardev('dev/console', 5, 1, 0o600)
      .chardev('dev/ttyS0', 4, 64, 0o660)
      .blockdev('dev/vda', 254, 0)
      .file('init', te.encode('#!/bin/sh\n'), 0o755)
      .symlink('bin/sh', 'busybox');
    const a = w.finish();
    const entries = readCpio(a, 'test.cpio');
    assert.deepEqual(entries.map((e) => e.kind), ['dir', 'chardev', 'chardev', 'blockdev', 'file', 'symlink']);
    assert.deepEqual(entries[2], { kind: 'chardev', name: 'dev/ttyS0', mode: 0o660, major: 4, minor: 64 });
    assert.deepEqual(entries[5], { kind: 'symlink', name: 'bin/sh', target: 'busybox' });
    const init = entries[4];
    assert.ok(init?.kind === 'file');
    assert.equal(new TextDecoder().decode(init.data), '#!/bin/sh\n');
    // The loader's validator agrees.
    assert.equal(validateInitrd(a, 'test.cpio').entries, 6);
  });

  it('writer_isDeterministic', () => {
    const mk = (): Uint8Array => new CpioWriter().dir('a').file('a/b', te.encode('x')).finish();
    assert.deepEqual(mk(), mk());
  });

  it('writer_rejectsBadNamesDuplicatesAndReuse', () => {
    assert.throws(() => new CpioWriter().file('/abs', new Uint8Array(0)), TshvError);
    assert.throws(() => new CpioWriter().file('', new Uint8Array(0)), TshvError);
    assert.throws(() => new CpioWriter().file('TRAILER!!!', new Uint8Array(0)), TshvError);
    assert.throws(() => new CpioWriter().dir('a').dir('a'), TshvError);
    assert.throws(() => new CpioWriter().file('x', new Uint8Array(0), 0o10000), TshvError);
    const w = new CpioWriter();
    w.finish();
    assert.throws(() => w.dir('late'), TshvError);
  });

  it('reader_everyTruncation_failsNamingArchive', () => {
    const a = new CpioWriter().dir('d').file('d/f', te.encode('0123456789')).symlink('l', 'd/f').finish();
    for (let cut = 0; cut < a.length - 3; cut++) {
      assert.throws(() => readCpio(a.subarray(0, cut), 'cut.cpio'), (e: unknown) => isEimage(e) && (e as Error).message.includes('cut.cpio'));
    }
  });

  it('reader_badMagicNonHexAndHugeSizes_fail', () => {
    const a = new CpioWriter().file('f', te.encode('abc')).finish();
    const bad = a.slice(); bad[5] = 0x37;
    assert.throws(() => readCpio(bad, 'm.cpio'), /bad header magic/);
    const nh = a.slice(); nh[6 + 6 * 8 + 3] = 0x67;
    assert.throws(() => readCpio(nh, 'h.cpio'), /non-hex/);
    const huge = a.slice(); huge.set(te.encode('fffffff0'), 6 + 6 * 8);
    assert.throws(() => readCpio(huge, 'z.cpio'), /truncated/);
    const hugeName = a.slice(); hugeName.set(te.encode('7fffffff'), 6 + 11 * 8);
    assert.throws(() => readCpio(hugeName, 'n.cpio'), /name size/);
  });

  it('reader_entryCap_isEnforced', () => {
    const w = new CpioWriter();
    for (let i = 0; i < 20; i++) w.dir(`d${i}`);
    assert.throws(() => readCpio(w.finish(), 'many.cpio', { maxEntries: 10 }), /more than 10/);
  });

  it('reader_randomBytes_onlyTypedErrors', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), fc.boolean(), (bytes, withMagic) => {
      const b = new Uint8Array(bytes);
      if (withMagic) b.set(te.encode('070701').subarray(0, b.length));
      try { readCpio(b, 'fuzz'); } catch (e) { assert.ok(isEimage(e), String(e)); }
    }), { numRuns: 3000 });
  });

  it('reader_mutatedArchive_onlyTypedErrors', () => {
    const a = new CpioWriter().dir('d').file('d/f', te.encode('0123456789')).chardev('c', 5, 1).finish();
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(a.length - 1), fc.nat(255)), { maxLength: 6 }), (muts) => {
      const b = a.slice();
      for (const [i, v] of muts) b[i] = v;
      try { readCpio(b, 'mut'); } catch (e) { assert.ok(isEimage(e), String(e)); }
    }), { numRuns: 3000 });
  });

  it('writeThenRead_arbitraryEntries_roundTrip', () => {
    const name = fc.stringMatching(/^[a-z0-9_.-]{1,12}(\/[a-z0-9_.-]{1,12}){0,2}$/).filter((n) => n !== 'TRAILER!!!');
    const entry: fc.Arbitrary<CpioEntry> = fc.oneof(
      fc.record({ kind: fc.constant('dir' as const), name, mode: fc.nat(0o7777) }),
      fc.record({ kind: fc.constant('file' as const), name, mode: fc.nat(0o7777), data: fc.uint8Array({ maxLength: 40 }) }),
      fc.record({ kind: fc.constant('symlink' as const), name, target: fc.stringMatching(/^[a-z/.]{1,20}$/) }),
      fc.record({ kind: fc.constantFrom('chardev' as const, 'blockdev' as const), name, mode: fc.nat(0o7777), major: fc.nat(4095), minor: fc.nat(0xfffff) }),
    );
    fc.assert(fc.property(fc.uniqueArray(entry, { selector: (e) => e.name, maxLength: 12 }), (entries) => {
      const w = new CpioWriter();
      for (const e of entries) w.add(e);
      const a = w.finish();
      assert.equal(a.length % 4, 0);
      const back = readCpio(a, 'rt');
      assert.equal(back.length, entries.length);
      back.forEach((got, i) => {
        const want = entries[i];
        if (got.kind === 'file' && want?.kind === 'file') {
          assert.deepEqual({ ...got, data: [...got.data] }, { ...want, data: [...want.data] });
        } else {
          assert.deepEqual(got, want);
        }
      });
    }), { numRuns: 500 });
  });
});
