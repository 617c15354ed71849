import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { parseVmlinux } from '../loader/kernel-file.js';
import { extractVmlinux, parseBzImage } from './bzimage.js';
import { xzDecompress, xzDecompressWasm, xzFilterChain, XZ_FILTER_LZMA2 } from './xz.js';

function hasXz(): boolean {
  try { execFileSync('xz', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}
const skipXz = hasXz() ? false : 'the xz tool is not installed';

/** A one-segment ELF64 x86-64 executable of `size` bytes with x86-ish code (so BCJ has work). */
function tinyVmlinux(size = 0x4000): Uint8Array {
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  dv.setUint16(0x10, 2, true); dv.setUint16(0x12, 62, true); dv.setUint32(0x14, 1, true);
  dv.setBigUint64(0x18, 0x1000000n, true); dv.setBigUint64(0x20, 64n, true);
  dv.setUint16(0x34, 64, true); dv.setUint16(0x36, 56, true); dv.setUint16(0x38, 1, true);
  dv.setUint32(64, 1, true); dv.setUint32(68, 5, true);
  dv.setBigUint64(72, 0x1000n, true); dv.setBigUint64(80, 0xffffffff81000000n, true);
  dv.setBigUint64(88, 0x1000000n, true); dv.setBigUint64(96, BigInt(size - 0x1000), true); dv.setBigUint64(104, BigInt(size - 0x1000), true);
  for (let i = 0x1000; i + 5 <= size; i += 5) { b[i] = 0xe8; dv.setInt32(i + 1, (i * 7919) % 100000 - 50000, true); } // call rel32
  return b;
}

function xzCompress(data: Uint8Array, args: string[]): Uint8Array {
  return new Uint8Array(execFileSync('xz', ['-c', '--format=xz', '--check=crc32', ...args], { input: data }));
}

/** A bzImage-shaped file: 1 setup sector + boot sector, protocol 2.15, payload + size trailer. */
function makeBzImage(payload: Uint8Array, uncompressedSize: number): Uint8Array {
  const setupSects = 1;
  const pm = (setupSects + 1) * 512;
  const payloadOffset = 0x40;
  const b = new Uint8Array(pm + payloadOffset + payload.length + 4 + 16);
  const dv = new DataView(b.buffer);
  b[0x1f1] = setupSects;
  dv.setUint16(0x1fe, 0xaa55, true);
  b.set([0x48, 0x64, 0x72, 0x53], 0x202);
  dv.setUint16(0x206, 0x020f, true);
  dv.setUint16(0x20e, 0x300 - 0x200, true);
  b.set(new TextEncoder().encode('6.1.0-test (tshv@test) #1 SMP\0'), 0x300);
  b[0x211] = 0x01;
  dv.setUint32(0x230, 0x200000, true);
  dv.setUint16(0x236, 0x7f, true);
  dv.setUint32(0x248, payloadOffset, true);
  dv.setUint32(0x24c, payload.length + 4, true);
  dv.setBigUint64(0x258, 0x1000000n, true);
  dv.setUint32(0x260, uncompressedSize + 0x100000, true);
  b.set(payload, pm + payloadOffset);
  dv.setUint32(pm + payloadOffset + payload.length, uncompressedSize, true);
  return b;
}

function isEimageNaming(file: string, re?: RegExp) {
  return (e: unknown): boolean => e instanceof TshvError && e.code === 'EIMAGE' && e.message.includes(file) && (re === undefined || re.test(e.message));
}

describe('bzImage', () => {
  it('parseBzImage_header_fieldsAndPayloadLocated', () => {
    const bz = parseBzImage(makeBzImage(new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0, 1, 2, 3, 4]), 1234), 'bz');
    assert.equal(bz.header.version, 0x020f);
    assert.equal(bz.header.setup_sects, 1);
    assert.equal(bz.header.kernel_alignment, 0x200000);
    assert.equal(bz.header.xloadflags, 0x7f);
    assert.equal(bz.header.pref_address, 0x1000000n);
    assert.equal(bz.protectedModeOffset, 1024);
    assert.equal(bz.payloadOffset, 1024 + 0x40);
    assert.equal(bz.payloadLength, 10);
    assert.equal(bz.compression, 'xz');
    assert.equal(bz.uncompressedSize, 1234);
    assert.equal(bz.versionString, '6.1.0-test (tshv@test) #1 SMP');
  });

  it('parseBzImage_truncatedAtEveryHeaderBoundary_failsNamingFile', () => {
    const good = makeBzImage(new Uint8Array(64).fill(0xfd), 1000);
    for (const cut of [0, 0x1f1, 0x1fe, 0x202, 0x205, 0x206, 0x208, 0x248, 0x250, 0x260, 0x263, 1023, 1024, 1024 + 0x40, good.length - 20]) {
      assert.throws(() => parseBzImage(good.subarray(0, cut), 'trunc.bz'), isEimageNaming('trunc.bz'));
    }
  });

  it('parseBzImage_oldProtocolBadSizeTrailerBadPayloadLength_fail', () => {
    const old = makeBzImage(new Uint8Array(16), 100);
    new DataView(old.buffer).setUint16(0x206, 0x0204, true);
    assert.throws(() => parseBzImage(old, 'old.bz'), isEimageNaming('old.bz', /older than 2\.08/));
    assert.throws(() => parseBzImage(makeBzImage(new Uint8Array(16), 0), 'z.bz'), isEimageNaming('z.bz', /size trailer/));
    assert.throws(() => parseBzImage(makeBzImage(new Uint8Array(16), 0x7fffffff), 'h.bz'), isEimageNaming('h.bz', /size trailer/));
    const pl = makeBzImage(new Uint8Array(16), 100);
    new DataView(pl.buffer).setUint32(0x24c, 0xfffffff0, true);
    assert.throws(() => parseBzImage(pl, 'pl.bz'), isEimageNaming('pl.bz', /past the end/));
    const ss = makeBzImage(new Uint8Array(16), 100);
    ss[0x1f1] = 200;
    assert.throws(() => parseBzImage(ss, 'ss.bz'), isEimageNaming('ss.bz', /setup/));
  });

  it('parseBzImage_randomHeaderMutations_onlyEimage', () => {
    const good = makeBzImage(new Uint8Array(32), 100);
    fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0x1f1, max: 0x268 }), fc.nat(255)), { maxLength: 8 }), (muts) => {
      const b = good.slice();
      for (const [i, v] of muts) b[i] = v;
      try {
        const bz = parseBzImage(b, 'm.bz');
        assert.ok(bz.payloadOffset + bz.payloadLength + 4 <= b.length);
      } catch (e) { assert.ok(e instanceof TshvError && e.code === 'EIMAGE', String(e)); }
    }), { numRuns: 3000 });
  });

  it('extractVmlinux_gzipPayload_namesTheCompression', async () => {
    const gz = gzipSync(tinyVmlinux());
    await assert.rejects(extractVmlinux(makeBzImage(gz, 0x4000), 'gz.bz'), isEimageNaming('gz.bz', /gzip-compressed/));
    await assert.rejects(extractVmlinux(makeBzImage(new Uint8Array(32), 0x4000), 'u.bz'), isEimageNaming('u.bz', /not recognised/));
  });

  it('extractVmlinux_xzWithX86Bcj_givesTheElf', { skip: skipXz }, async () => {
    const elf = tinyVmlinux();
    const payload = xzCompress(elf, ['--x86', '--lzma2=dict=1MiB']);
    assert.deepEqual(xzFilterChain(payload, 'p'), [0x04, XZ_FILTER_LZMA2]);
    const { bz, vmlinux } = await extractVmlinux(makeBzImage(payload, elf.length), 'k.bz');
    assert.equal(bz.compression, 'xz');
    assert.deepEqual(vmlinux, elf);
    assert.equal(parseVmlinux(vmlinux, 'k').entry64, 0x1000000);
  });

  it('extractVmlinux_sizeTrailerMismatch_fails', { skip: skipXz }, async () => {
    const elf = tinyVmlinux();
    const payload = xzCompress(elf, ['--x86', '--lzma2=dict=1MiB']);
    await assert.rejects(extractVmlinux(makeBzImage(payload, elf.length + 1), 'sz.bz'), isEimageNaming('sz.bz', /size trailer/));
    await assert.rejects(extractVmlinux(makeBzImage(payload, 100), 'big.bz'), isEimageNaming('big.bz', /more than 100/));
  });

  it('extractVmlinux_corruptXzPayload_failsNamingFile', { skip: skipXz }, async () => {
    const elf = tinyVmlinux();
    const payload = xzCompress(elf, ['--x86', '--lzma2=dict=1MiB']);
    const bad = payload.slice();
    for (let i = 40; i < bad.length - 20; i += 3) bad[i] = (bad[i] ?? 0) ^ 0x5a;
    await assert.rejects(extractVmlinux(makeBzImage(bad, elf.length), 'bad.bz'), isEimageNaming('bad.bz', /corrupt or truncated/));
    await assert.rejects(extractVmlinux(makeBzImage(payload.subarray(0, payload.length >> 1), elf.length), 'half.bz'), isEimageNaming('half.bz'));
  });

  it('xzDecompress_missingTool_isEtool', { skip: skipXz }, async () => {
    const payload = xzCompress(tinyVmlinux(), ['--x86', '--lzma2=dict=1MiB']);
    await assert.rejects(xzDecompress(payload, { what: 'p', maxOutput: 1 << 20, xzTool: '/nonexistent/xz' }),
      (e: unknown) => e instanceof TshvError && e.code === 'ETOOL' && /xz-utils/.test(e.message));
  });

  it('xzDecompress_plainLzma2_usesWasmDecoder', { skip: skipXz }, async () => {
    const data = new TextEncoder().encode('tshv '.repeat(5000));
    const xz = xzCompress(data, ['--lzma2=dict=1MiB']);
    assert.deepEqual(xzFilterChain(xz, 'p'), [XZ_FILTER_LZMA2]);
    // The xz tool is pointed nowhere: success proves the WASM path.
    assert.deepEqual(await xzDecompress(xz, { what: 'p', maxOutput: 1 << 20, xzTool: '/nonexistent/xz' }), data);
    await assert.rejects(xzDecompressWasm(xz, { what: 'cap', maxOutput: 100 }), isEimageNaming('cap', /more than 100/));
    const bad = xz.slice(); bad[bad.length >> 1] = (bad[bad.length >> 1] ?? 0) ^ 0xff;
    await assert.rejects(xzDecompressWasm(bad, { what: 'badwasm', maxOutput: 1 << 20 }), isEimageNaming('badwasm'));
  });
});
