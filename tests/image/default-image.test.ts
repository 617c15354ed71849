/**
 * Heavy tier: really builds the default guest image from Debian's packages (network + apt), then
 * checks the artifacts, the cache, and (when QEMU is installed) that /init honours the
 * tshv.exec contract on a real boot.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TshvError } from '../../src/base/errors.js';
import { parseVmlinux, validateInitrd } from '../../src/loader/kernel-file.js';
import { buildDefaultImage, HV_MODULES, resolveKernelAndInitrd, type DefaultImage } from '../../src/image/build.js';
import { readCpio } from '../../src/image/cpio.js';
import { encodeExecParam } from '../../src/image/init.js';
import { parseModinfo } from '../../src/image/modules.js';

function aptUsable(): string | false {
  const r = spawnSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8' });
  if (r.error) return 'apt-cache is not installed (not a Debian-family host)';
  if (r.status !== 0 || !/Depends:\s*linux-image-/.test(r.stdout)) return 'apt-cache does not know linux-image-amd64 (run apt-get update)';
  return false;
}
const skip = aptUsable();
const NO_TOOLS = { aptGet: '/nonexistent/apt-get', aptCache: '/nonexistent/apt-cache', dpkgDeb: '/nonexistent/dpkg-deb' };

describe('default image (real build)', { skip }, () => {
  let cache = '';
  let cold: DefaultImage;
  let coldMs = 0;
  const phases = new Set<string>();

  before(async () => {
    cache = mkdtempSync(join(tmpdir(), 'tshv-image-cache-'));
    const t0 = performance.now();
    cold = await buildDefaultImage({ cacheDir: cache, onProgress: (p, done, total) => { phases.add(p); assert.ok(done <= total, `${p} ${done}/${total}`); } });
    coldMs = performance.now() - t0;
  });
  after(() => { rmSync(cache, { recursive: true, force: true }); });

  it('coldBuild_producesVmlinuxWithPvhNote', () => {
    assert.equal(cold.fromCache, false);
    for (const p of ['resolve', 'download', 'unpack', 'vmlinux', 'initramfs', 'write']) assert.ok(phases.has(p), `phase ${p}`);
    const k = parseVmlinux(new Uint8Array(readFileSync(cold.kernelPath)), cold.kernelPath);
    assert.ok(k.pvhEntry !== undefined && k.pvhEntry > 0);
    assert.equal(k.pvhEntry, cold.manifest.pvhEntry);
    assert.ok(k.segments.length >= 2);
    assert.match(cold.kernelRelease, /^\d+\.\d+\.\d+-\d+-amd64$/);
    assert.match(cold.manifest.packages.kernel.name, /^linux-image-/);
    assert.ok(cold.cmdline.includes('console=ttyS0'));
  });

  it('coldBuild_initramfsHoldsBusyboxInitAndModulesWithDependencies', () => {
    const bytes = new Uint8Array(readFileSync(cold.initrdPath));
    assert.equal(validateInitrd(bytes, cold.initrdPath).format, 'cpio-newc');
    const entries = readCpio(bytes, cold.initrdPath);
    const byName = new Map(entries.map((e) => [e.name, e]));
    const init = byName.get('init');
    assert.ok(init?.kind === 'file' && init.mode === 0o755);
    const script = new TextDecoder().decode(init.data);
    const bb = byName.get('bin/busybox');
    assert.ok(bb?.kind === 'file' && bb.data.length > 500_000 && bb.mode === 0o755);
    assert.deepEqual(byName.get('dev/console'), { kind: 'chardev', name: 'dev/console', mode: 0o600, major: 5, minor: 1 });
    assert.deepEqual(byName.get('dev/ttyS0'), { kind: 'chardev', name: 'dev/ttyS0', mode: 0o660, major: 4, minor: 64 });
    const loaded = cold.manifest.modules.map((m) => m.name);
    for (const m of HV_MODULES) assert.ok(loaded.includes(m) || cold.manifest.builtin.includes(m), `module ${m}`);
    const prefix = `lib/modules/${cold.kernelRelease}/`;
    for (const [i, m] of cold.manifest.modules.entries()) {
      const f = byName.get(prefix + m.relPath);
      assert.ok(f?.kind === 'file', `${m.relPath} in the archive`);
      const info = parseModinfo(f.data, m.relPath);
      assert.equal(info.name, m.name);
      for (const d of info.depends) {
        const at = loaded.indexOf(d);
        assert.ok(at >= 0 && at < i, `${d} is loaded before ${m.name}`);
      }
      assert.ok(script.includes(`${m.name}:${m.relPath}`), `/init loads ${m.name}`);
    }
    assert.ok(byName.has(prefix + 'modules.dep'));
  });

  it('warmBuild_reusesCacheWithoutApt', async () => {
    const t0 = performance.now();
    const warm = await buildDefaultImage({ cacheDir: cache, tools: NO_TOOLS });
    const warmMs = performance.now() - t0;
    assert.equal(warm.fromCache, true);
    assert.equal(warm.kernelPath, cold.kernelPath);
    assert.ok(warmMs * 5 < coldMs, `warm ${warmMs} ms should be much faster than cold ${coldMs} ms`);
    console.log(`default image: cold build ${(coldMs / 1000).toFixed(2)} s, warm (verified cache) ${(warmMs / 1000).toFixed(2)} s`);
  });

  it('corruptCache_isRebuilt_andMissingAptIsAClearError', async () => {
    const saved = join(cache, 'initrd.saved');
    copyFileSync(cold.initrdPath, saved);
    const b = readFileSync(cold.initrdPath);
    b[200] = (b[200] ?? 0) ^ 0xff;
    writeFileSync(cold.initrdPath, b);
    // With apt unavailable the rebuild the corruption forces must fail clearly...
    await assert.rejects(buildDefaultImage({ cacheDir: cache, tools: NO_TOOLS }),
      (e: unknown) => e instanceof TshvError && e.code === 'ETOOL' && /apt-cache not found/.test(e.message));
    // ...and with apt it rebuilds.
    const again = await buildDefaultImage({ cacheDir: cache });
    assert.equal(again.fromCache, false);
    assert.deepEqual(readFileSync(again.initrdPath), readFileSync(saved));
  });

  it('resolveKernelAndInitrd_defaultAndUserFiles', async () => {
    const d = await resolveKernelAndInitrd({ cacheDir: cache, tools: NO_TOOLS });
    assert.equal(d.kernelSource, 'default');
    assert.ok(d.kernel.pvhEntry !== undefined);
    const u = await resolveKernelAndInitrd({ kernel: cold.kernelPath, initrd: cold.initrdPath, tools: NO_TOOLS });
    assert.equal(u.kernelSource, 'user');
    assert.equal(u.initrdInfo.format, 'cpio-newc');
    const trunc = join(cache, 'vmlinux.trunc');
    writeFileSync(trunc, readFileSync(cold.kernelPath).subarray(0, 1_000_000));
    await assert.rejects(resolveKernelAndInitrd({ kernel: trunc, initrd: cold.initrdPath }),
      (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE' && e.message.includes(trunc));
    const truncI = join(cache, 'initrd.trunc');
    writeFileSync(truncI, readFileSync(cold.initrdPath).subarray(0, 100_000));
    await assert.rejects(resolveKernelAndInitrd({ kernel: cold.kernelPath, initrd: truncI }),
      (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE' && e.message.includes(truncI));
    await assert.rejects(resolveKernelAndInitrd({ kernel: join(cache, 'nope'), initrd: cold.initrdPath }),
      (e: unknown) => e instanceof TshvError && e.code === 'EINVAL' && /not found/.test(e.message));
  });

  const qemu = spawnSync('qemu-system-x86_64', ['--version']).error ? 'qemu-system-x86_64 is not installed' : false;
  it('qemuBoot_execContract_printsExitStatus', { skip: qemu, timeout: 180_000 }, () => {
    const out = execFileSync('qemu-system-x86_64', [
      '-accel', 'tcg', '-M', 'pc', '-m', '256', '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio',
      '-kernel', cold.kernelPath, '-initrd', cold.initrdPath,
      '-append', `${cold.cmdline} ${encodeExecParam('echo tshv-says-$((6*7)); exit 3')}`,
    ], { timeout: 170_000, maxBuffer: 64 << 20 }).toString('latin1');
    assert.match(out, /TSHV-READY kernel=\S+ modules=\d+\/\d+/);
    assert.match(out, /tshv-says-42/);
    assert.match(out, /^TSHV-EXIT=3\r?$/m);
  });
});
