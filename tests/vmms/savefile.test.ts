/**
 * A damaged save file (truncated, or one bit flipped) is refused with a clear error when the
 * VM is started, and the VM stays Saved with its file and worker; the intact file then
 * restores, and the guest's count continues with no gap or repeat.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import type { ErrorBody, VmInfo } from '../../src/defs/api.js';
import { saveFilePath } from '../../src/defs/paths.js';
import { TestHome, checkConsecutive, counterGuest, kvmSkipReason, parseCounts } from './helpers.js';

const skip = kvmSkipReason();

describe('damaged save files', { skip, timeout: 60000 }, () => {
  const h = new TestHome('savefile');
  before(async () => { counterGuest(); await h.startService(); });
  after(() => h.cleanup());

  test('truncatedOrBitFlippedSaveFile_isRefused_andTheVmStaysSaved', async () => {
    const vm = await h.ok<VmInfo>('POST', '/v1/vms', h.newCounterBody('damaged'));
    await h.ok('POST', '/v1/vms/damaged/start', {});
    await h.waitForCount('damaged', 10);
    const saved = await h.ok<VmInfo>('POST', '/v1/vms/damaged/save', {});
    assert.equal(saved.state, 'Saved');
    const path = saveFilePath(h.paths, vm.id);
    const good = readFileSync(path);
    const before = parseCounts(await h.transcript('damaged'));

    const damaged: [string, Buffer][] = [
      ['truncated', good.subarray(0, Math.floor(good.length * 0.6))],
      ['bit-flipped', (() => { const b = Buffer.from(good); b[Math.floor(b.length / 2)]! ^= 0x10; return b; })()],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [what, bytes] of damaged) {
      writeFileSync(path, bytes);
      const r = await h.api('POST', '/v1/vms/damaged/start', {});
      assert.equal(r.status, 422, `${what}: ${r.text}`);
      const err = (r.body as ErrorBody).error;
      assert.equal(err.code, 'EIMAGE', what);
      assert.match(err.message, /save file/, what);
      const v = await h.vm('damaged');
      assert.equal(v.state, 'Saved', what);
      assert.equal(v.hasSavedState, true, what);
      assert.equal(v.workerPid, saved.workerPid, `${what}: the worker stays`);
      assert.match(v.status, /restore refused/, what);
    }
    const cli = await h.cli(['start', 'damaged']);
    assert.equal(cli.code, 4, 'the CLI exits with the image error code');
    assert.match(cli.stderr, /save file/);

    writeFileSync(path, good);
    const v = await h.ok<VmInfo>('POST', '/v1/vms/damaged/start', {});
    assert.equal(v.state, 'Running');
    const counts = await h.waitForCount('damaged', (before[before.length - 1] ?? 0) + 20);
    assert.equal(checkConsecutive(counts), undefined);
    await h.ok('POST', '/v1/vms/damaged/stop', { turnOff: true });
  });
});
