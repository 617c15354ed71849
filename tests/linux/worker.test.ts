/**
 * Heavy tier: a VM whose boot kind is 'linux' starts in the VM worker through bootLinux (the
 * same path as `tshv run`): the worker's serial events carry the kernel's banner and the
 * command line with the emu hints, then turnOff stops it. Skipped when the default image cannot
 * be built here.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { errorMessage } from '../../src/base/errors.js';
import type { VmConfig } from '../../src/defs/api.js';
import type { FromWorker } from '../../src/defs/ipc.js';
import { resolveKernelAndInitrd } from '../../src/image/build.js';
import { WorkerHost } from '../../src/vmwp/worker-host.js';

let skip: string | false = false;
try {
  await resolveKernelAndInitrd();
} catch (e) {
  skip = `the default image cannot be built or read here: ${errorMessage(e)}`;
}

describe('worker: Linux boot kind', { skip, timeout: 90_000 }, () => {
  it('start_bootsKernel_serialShowsBannerAndHints', async () => {
    let serial = '';
    let seen: () => void = () => undefined;
    const banner = new Promise<void>((res) => { seen = res; });
    const emit = (m: FromWorker): void => {
      if (m.type !== 'serial') return;
      serial += Buffer.from(m.data, 'base64').toString('latin1');
      if (/Command line: [^\n]*\n/.test(serial)) seen();
    };
    const host = new WorkerHost(randomUUID(), emit, () => undefined);
    const config: VmConfig = {
      id: randomUUID(), name: 'linux-boot', memoryBytes: 256 * 1024 * 1024, cpus: 1, backend: 'emu',
      boot: { kind: 'linux' }, createdAt: new Date().toISOString(),
    };
    try {
      await host.start(config);
      assert.equal(host.phase, 'running');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`no kernel command line on COM1 in 60 s; got ${serial.length} bytes, last: ${JSON.stringify(serial.slice(-300))}`)), 60_000); });
      await Promise.race([banner, late]).finally(() => clearTimeout(timer));
      assert.match(serial, /Linux version \d+\.\d+\.\d+/);
      const line = /Command line: (.*)/.exec(serial)?.[1] ?? '';
      assert.match(line, /tsc_early_khz=1000000 tsc=reliable lpj=4000000/);
      assert.match(line, /panic=-1/);
      assert.doesNotMatch(line, /tshv\.exec/);
    } finally {
      await host.turnOff();
      host.dispose();
    }
    assert.equal(host.phase, 'empty');
  });
});
