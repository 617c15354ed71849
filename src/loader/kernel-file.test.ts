import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { identifyKernelFile, parseVmlinux, validateInitrd, XEN_ELFNOTE_PHYS32_ENTRY } from './kernel-file.js';

interface Seg { type: number; offset: number; paddr: number; vaddr: bigint; filesz: number; memsz: number }

/** A minimal vmlinux-shaped ELF64: header, program headers, two PT_LOADs and a Xen PVH note. */
function makeVmlinux(opts: { pvhDescSize?: 4 | 8 | 6; pvh?: number; entry?: bigint; segs?: Seg[]; noteName?: string } = {}): Uint8Array {
  const noteName = opts.noteName ?? 'Xen';
  const nameBytes = new TextEncoder().encode(noteName + '\0');
  const nameSz = nameBytes.length;
  const descSz = opts.pvhDescSize ?? 8;
  const noteLen = 12 + Math.ceil(nameSz / 4) * 4 + Math.ceil(descSz / 4) * 4;
  const size = 0x3000;
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  const segs: Seg[] = opts.segs ?? [
    { type: 1, offset: 0x1000, paddr: 0x1000000, vaddr: 0xffffffff81000000n, filesz: 0x800, memsz: 0x2000 },
    { type: 1, offset: 0x1800, paddr: 0x1002000, vaddr: 0xffffffff81002000n, filesz: 0x800, memsz: 0x800 },
    { type: 4, offset: 0x2000, paddr: 0x1000100, vaddr: 0xffffffff81000100n, filesz: noteLen, memsz: noteLen },
  ];
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  dv.setUint16(0x10, 2, true);
  dv.setUint16(0x12, 62, true);
  dv.setUint32(0x14, 1, true);
  dv.setBigUint64(0x18, opts.entry ?? 0x1000000n, true);
  dv.setBigUint64(0x20, 64n, true);
  dv.setUint16(0x34, 64, true);
  dv.setUint16(0x36, 56, true);
  dv.setUint16(0x38, segs.length, true);
  segs.forEach((s, i) => {
    const p = 64 + i * 56;
    dv.setUint32(p, s.type, true);
    dv.setUint32(p + 4, 5, true);
    dv.setBigUint64(p + 8, BigInt(s.offset), true);
    dv.setBigUint64(p + 16, s.vaddr, true);
    dv.setBigUint64(p + 24, BigInt(s.paddr), true);
    dv.setBigUint64(p + 32, BigInt(s.filesz), true);
    dv.setBigUint64(p + 40, BigInt(s.memsz), true);
  });
  // The note, at 0x2000.
  const n = 0x2000;
  dv.setUint32(n, nameSz, true);
  dv.setUint32(n + 4, descSz, true);
  dv.setUint32(n + 8, XEN_ELFNOTE_PHYS32_ENTRY, true);
  b.set(nameBytes, n + 12);
  const d = n + 12 + Math.ceil(nameSz / 4) * 4;
  if (descSz === 8) dv.setBigUint64(d, BigInt(opts.pvh ?? 0x1000850), true);
  else dv.setUint32(d, opts.pvh ?? 0x1000850, true);
  for (let i = 0x1000; i < 0x2000; i++) b[i] = i & 0xff;
  return b;
}

function assertEimage(fn: () => unknown, file: string, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TshvError, `expected TshvError, got ${String(e)}`);
    assert.equal(e.code, 'EIMAGE');
    assert.ok(e.message.includes(file), `message ${JSON.stringify(e.message)} should name ${file}`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe('parseVmlinux', () => {
  it('parseVmlinux_validKernel_returnsSegmentsEntryAndPvh', () => {
    const k = parseVmlinux(makeVmlinux(), 'vmlinux');
    assert.equal(k.pvhEntry, 0x1000850);
    assert.equal(k.entry64, 0x1000000);
    assert.equal(k.segments.length, 2);
    assert.equal(k.segments[0]?.paddr, 0x1000000);
    assert.equal(k.segments[0]?.memSize, 0x2000);
    assert.equal(k.segments[0]?.data.length, 0x800);
    assert.equal(k.segments[0]?.data[1], 0x01);
    assert.equal(k.physStart, 0x1000000);
    assert.equal(k.physEnd, 0x1002800);
  });

  it('parseVmlinux_fourBytePvhNote_isAccepted', () => {
    assert.equal(parseVmlinux(makeVmlinux({ pvhDescSize: 4 }), 'k').pvhEntry, 0x1000850);
  });

  it('parseVmlinux_noteFromOtherOwner_isIgnored', () => {
    assert.equal(parseVmlinux(makeVmlinux({ noteName: 'GNU' }), 'k').pvhEntry, undefined);
  });

  it('parseVmlinux_virtualEntry_isTranslatedToPhysical', () => {
    assert.equal(parseVmlinux(makeVmlinux({ entry: 0xffffffff81000200n }), 'k').entry64, 0x1000200);
  });

  it('parseVmlinux_truncatedAtEveryHeaderBoundary_failsNamingFile', () => {
    const good = makeVmlinux();
    for (const cut of [0, 1, 4, 16, 0x18, 0x20, 0x38, 63, 64, 64 + 56, 64 + 2 * 56, 64 + 3 * 56 - 1, 0x1000, 0x1800, 0x2000, 0x2010]) {
      assertEimage(() => parseVmlinux(good.subarray(0, cut), 'trunc.elf'), 'trunc.elf');
    }
  });

  it('parseVmlinux_badMagicClassMachineType_fail', () => {
    const cases: [number, number, RegExp][] = [[0, 0x7e, /bad magic/], [4, 1, /64-bit/], [5, 2, /little-endian/], [0x12, 3, /x86-64/], [0x10, 1, /executable/]];
    for (const [off, val, re] of cases) {
      const b = makeVmlinux();
      b[off] = val;
      assertEimage(() => parseVmlinux(b, 'bad.elf'), 'bad.elf', re);
    }
  });

  it('parseVmlinux_programHeadersOutOfBounds_fail', () => {
    const b = makeVmlinux();
    new DataView(b.buffer).setBigUint64(0x20, BigInt(b.length - 10), true);
    assertEimage(() => parseVmlinux(b, 'ph.elf'), 'ph.elf', /program headers/);
    const c = makeVmlinux();
    new DataView(c.buffer).setBigUint64(0x20, 0xffffffffffffff00n, true);
    assertEimage(() => parseVmlinux(c, 'ph2.elf'), 'ph2.elf', /e_phoff/);
    const d = makeVmlinux();
    new DataView(d.buffer).setUint16(0x38, 60000, true);
    assertEimage(() => parseVmlinux(d, 'ph3.elf'), 'ph3.elf', /program headers/);
  });

  it('parseVmlinux_segmentOutsideFileOrHuge_fail', () => {
    const base = { type: 1, offset: 0x1000, paddr: 0x1000000, vaddr: 0n, filesz: 0x100, memsz: 0x100 };
    assertEimage(() => parseVmlinux(makeVmlinux({ segs: [{ ...base, offset: 0x2f80 }] }), 'a'), 'a', /past the end/);
    assertEimage(() => parseVmlinux(makeVmlinux({ segs: [{ ...base, filesz: 0x200 }] }), 'a'), 'a', /exceeds p_memsz/);
    assertEimage(() => parseVmlinux(makeVmlinux({ segs: [{ ...base, memsz: 2 ** 40 }] }), 'a'), 'a', /p_memsz/);
    assertEimage(() => parseVmlinux(makeVmlinux({ segs: [{ ...base, paddr: 0xffffff80 }] }), 'a'), 'a', /4 GiB/);
    assertEimage(() => parseVmlinux(makeVmlinux({ segs: [base, { ...base, paddr: 0x1000080 }] }), 'a'), 'a', /overlaps/);
    assertEimage(() => parseVmlinux(makeVmlinux({ segs: [{ ...base, type: 4, filesz: 0x100 }] }), 'a'), 'a', /no loadable/);
  });

  it('parseVmlinux_pvhOutsideSegmentsOrBadDescriptor_fail', () => {
    assertEimage(() => parseVmlinux(makeVmlinux({ pvh: 0x5000000 }), 'p'), 'p', /PVH entry/);
    assertEimage(() => parseVmlinux(makeVmlinux({ pvhDescSize: 6 }), 'p'), 'p', /descriptor/);
  });

  it('parseVmlinux_noteRunningPastSegment_fails', () => {
    const b = makeVmlinux();
    new DataView(b.buffer).setUint32(0x2004, 0x7fffffff, true); // descsz
    assertEimage(() => parseVmlinux(b, 'note.elf'), 'note.elf', /note/);
  });

  it('parseVmlinux_noEntryAtAll_fails', () => {
    assertEimage(() => parseVmlinux(makeVmlinux({ noteName: 'GNU', entry: 0x10n }), 'ne'), 'ne', /entry/);
  });

  it('parseVmlinux_bzImage_saysExtractFirst', () => {
    const b = new Uint8Array(0x400);
    b[0x1fe] = 0x55; b[0x1ff] = 0xaa;
    b.set([0x48, 0x64, 0x72, 0x53], 0x202);
    assert.equal(identifyKernelFile(b), 'bzimage');
    assertEimage(() => parseVmlinux(b, 'bz'), 'bz', /bzImage/);
  });

  it('parseVmlinux_randomBytes_onlyEimage', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, elfHead) => {
      const b = new Uint8Array(bytes);
      if (elfHead && b.length >= 0x40) { b.set(makeVmlinux().subarray(0, 0x20), 0); }
      try { parseVmlinux(b, 'fuzz'); } catch (e) { assert.ok(e instanceof TshvError && e.code === 'EIMAGE'); }
    }), { numRuns: 2000 });
  });

  it('parseVmlinux_mutatedValidKernel_onlyEimageOrValid', () => {
    const good = makeVmlinux();
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(64 + 3 * 56 + 0x20), fc.nat(255)), { maxLength: 8 }), (muts) => {
      const b = good.slice();
      for (const [i, v] of muts) b[i < 64 + 3 * 56 ? i : 0x2000 + i - (64 + 3 * 56)] = v;
      try {
        const k = parseVmlinux(b, 'mut');
        for (const s of k.segments) assert.ok(s.fileOffset + s.fileSize <= b.length);
      } catch (e) { assert.ok(e instanceof TshvError && e.code === 'EIMAGE'); }
    }), { numRuns: 3000 });
  });
});

/** A hand-made newc archive (the writer lives in src/image, which the loader may not import). */
function newc(entries: [string, Uint8Array][]): Uint8Array {
  const parts: number[] = [];
  const push = (s: string | Uint8Array): void => { for (const c of typeof s === 'string' ? new TextEncoder().encode(s) : s) parts.push(c); };
  const pad = (): void => { while (parts.length % 4) parts.push(0); };
  const all: [string, Uint8Array][] = [...entries, ['TRAILER!!!', new Uint8Array(0)]];
  all.forEach(([name, data], i) => {
    const f = [i + 1, 0o100644, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    push('070701' + f.map((x) => x.toString(16).padStart(8, '0')).join(''));
    push(name); parts.push(0); pad();
    push(data); pad();
  });
  return new Uint8Array(parts);
}

describe('validateInitrd', () => {
  const archive = newc([['init', new TextEncoder().encode('#!/bin/sh\n')], ['bin/busybox', new Uint8Array(123)]]);

  it('validateInitrd_newcArchive_countsEntries', () => {
    const info = validateInitrd(archive, 'initrd.cpio');
    assert.equal(info.format, 'cpio-newc');
    assert.equal(info.entries, 2);
    assert.equal(info.sizeBytes, archive.length);
  });

  it('validateInitrd_everyTruncation_failsNamingFile', () => {
    for (let cut = 0; cut < archive.length - 3; cut++) {
      assertEimage(() => validateInitrd(archive.subarray(0, cut), 'cut.cpio'), 'cut.cpio');
    }
  });

  it('validateInitrd_compressedMagics_areRecognised', () => {
    const gz = new Uint8Array(40); gz.set([0x1f, 0x8b, 8]);
    assert.equal(validateInitrd(gz, 'a.gz').format, 'gzip');
    const xz = new Uint8Array(40); xz.set([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]); xz.set([0x59, 0x5a, 0, 0, 0, 0], 34);
    assert.equal(validateInitrd(xz, 'a.xz').format, 'xz');
    const zst = new Uint8Array(20); zst.set([0x28, 0xb5, 0x2f, 0xfd]);
    assert.equal(validateInitrd(zst, 'a.zst').format, 'zstd');
  });

  it('validateInitrd_emptyUnknownOrTruncatedCompressed_fail', () => {
    assertEimage(() => validateInitrd(new Uint8Array(0), 'e.img'), 'e.img', /empty/);
    assertEimage(() => validateInitrd(new TextEncoder().encode('hello world'), 'u.img'), 'u.img', /unknown format/);
    assertEimage(() => validateInitrd(new Uint8Array([0x1f, 0x8b, 8, 0]), 'g.img'), 'g.img', /truncated/);
    const xz = new Uint8Array(40); xz.set([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]);
    assertEimage(() => validateInitrd(xz, 'x.img'), 'x.img', /truncated/);
    assertEimage(() => validateInitrd(new TextEncoder().encode('070707' + '0'.repeat(100)), 'o.img'), 'o.img', /odc/);
  });

  it('validateInitrd_corruptHeaderFields_fail', () => {
    const b = archive.slice();
    b[6 + 6 * 8] = 0x5a; // 'Z' in c_filesize
    assertEimage(() => validateInitrd(b, 'c.cpio'), 'c.cpio', /non-hex/);
    const c = archive.slice();
    c.set(new TextEncoder().encode('ffffff00'), 6 + 6 * 8);
    assertEimage(() => validateInitrd(c, 'd.cpio'), 'd.cpio', /truncated/);
  });

  it('validateInitrd_randomBytes_onlyEimage', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (bytes, cpioHead) => {
      const b = new Uint8Array(bytes);
      if (cpioHead) b.set(new TextEncoder().encode('070701').subarray(0, b.length));
      try { validateInitrd(b, 'fuzz'); } catch (e) { assert.ok(e instanceof TshvError && e.code === 'EIMAGE'); }
    }), { numRuns: 3000 });
  });
});
