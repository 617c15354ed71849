import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { runTool, stderrTail, TarReader, type TarEntry } from './deb.js';

function hasTar(): boolean {
  try { execFileSync('tar', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

const LONG_DIR = 'lib/modules/6.1.0-56-amd64/kernel/drivers/a-directory-name-that-is-quite-long/and-then-some-more';

describe('TarReader', { skip: hasTar() ? false : 'GNU tar is not installed' }, () => {
  let dir = '';
  const archives = new Map<string, Uint8Array>();
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tshv-tar-'));
    const root = join(dir, 'root');
    mkdirSync(join(root, 'boot'), { recursive: true });
    mkdirSync(join(root, LONG_DIR), { recursive: true });
    writeFileSync(join(root, 'boot', 'vmlinuz'), Buffer.alloc(1500, 7));
    writeFileSync(join(root, LONG_DIR, 'hv_vmbus.ko'), 'module bytes');
    writeFileSync(join(root, 'empty'), '');
    for (const format of ['gnu', 'pax', 'ustar']) {
      const out = join(dir, `${format}.tar`);
      execFileSync('tar', [`--format=${format}`, '-C', root, '-cf', out, '.']);
      archives.set(format, new Uint8Array(readFileSync(out)));
    }
  });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  const read = (tar: Uint8Array, chunk: number, select = (_e: TarEntry): boolean => true): Map<string, Uint8Array> => {
    const got = new Map<string, Uint8Array>();
    const r = new TarReader('t.tar', select, (e, d) => { got.set(e.path, d); });
    for (let p = 0; p < tar.length && !r.ended; p += chunk) r.push(tar.subarray(p, p + chunk));
    if (!r.ended) r.end();
    return got;
  };

  it('tarReader_gnuPaxUstar_longNamesAndChunking', () => {
    for (const [format, tar] of archives) {
      for (const chunk of [1, 7, 512, 100000]) {
        const got = read(tar, chunk);
        assert.equal(got.get('boot/vmlinuz')?.length, 1500, `${format}/${chunk}`);
        assert.equal(new TextDecoder().decode(got.get(`${LONG_DIR}/hv_vmbus.ko`)), 'module bytes', `${format}/${chunk}`);
        assert.equal(got.get('empty')?.length, 0);
      }
    }
  });

  it('tarReader_select_keepsOnlySelectedFiles', () => {
    const tar = archives.get('gnu') ?? new Uint8Array(0);
    const got = read(tar, 4096, (e) => e.path.endsWith('.ko'));
    assert.deepEqual([...got.keys()], [`${LONG_DIR}/hv_vmbus.ko`]);
  });

  it('tarReader_truncatedOrBadChecksum_isEimage', () => {
    const tar = archives.get('ustar') ?? new Uint8Array(0);
    assert.throws(() => read(tar.subarray(0, 700), 512), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE' && /truncated/.test(e.message));
    const bad = tar.slice(); bad[10] = (bad[10] ?? 0) ^ 1;
    assert.throws(() => read(bad, 512), (e: unknown) => e instanceof TshvError && /checksum/.test(e.message));
  });

  it('tarReader_randomBytes_onlyTypedErrors', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 2048 }), (b) => {
      try { read(b, 333); } catch (e) { assert.ok(e instanceof TshvError && e.code === 'EIMAGE', String(e)); }
    }), { numRuns: 500 });
  });
});

describe('runTool', () => {
  it('runTool_missingTool_isEtoolWithHint', async () => {
    await assert.rejects(runTool('/nonexistent/apt-get', ['download', 'x']),
      (e: unknown) => e instanceof TshvError && e.code === 'ETOOL' && /apt-get not found.*--kernel and --initrd/.test(e.message));
  });

  it('runTool_failingTool_isEtoolWithStderrTail', async () => {
    await assert.rejects(runTool('sh', ['-c', 'for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i >&2; done; exit 3']),
      (e: unknown) => e instanceof TshvError && e.code === 'ETOOL' && /exit 3/.test(e.message) && /line10/.test(e.message) && !/line1\n/.test(e.message));
  });

  it('runTool_statusFd_linesAreDelivered', async () => {
    const lines: string[] = [];
    await runTool('sh', ['-c', 'echo dlstatus:1:50:x >&3; echo dlstatus:2:100:y >&3'], { onStatusLine: (l) => lines.push(l) });
    assert.deepEqual(lines, ['dlstatus:1:50:x', 'dlstatus:2:100:y']);
  });

  it('stderrTail_keepsLastLines', () => {
    assert.equal(stderrTail('a\nb\n\nc\n', 2), 'b\nc');
  });
});
