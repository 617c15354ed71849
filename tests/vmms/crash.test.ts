/**
 * Supervision: a worker killed with SIGKILL marks only its own VM Crashed (with the reason),
 * while a second VM keeps running; a restarted service reconnects to live workers (the running
 * VM keeps counting, its console scrollback intact) and marks VMs whose worker died while no
 * service was watching Crashed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { VmInfo } from '../../src/defs/api.js';
import { TestHome, alive, checkConsecutive, counterGuest, kvmSkipReason, parseCounts } from './helpers.js';

const skip = kvmSkipReason();

describe('worker supervision', { skip, timeout: 60000 }, () => {
  const h = new TestHome('crash');
  before(async () => { counterGuest(); await h.startService(); });
  after(() => h.cleanup());

  test('sigkillOfOneWorker_crashesOnlyThatVm_andServiceRestartReconnects', async () => {
    await h.ok('POST', '/v1/vms', h.newCounterBody('victim'));
    await h.ok('POST', '/v1/vms', h.newCounterBody('bystander'));
    const victim = await h.ok<VmInfo>('POST', '/v1/vms/victim/start', {});
    const bystander = await h.ok<VmInfo>('POST', '/v1/vms/bystander/start', {});
    await h.waitForCount('victim', 5);
    await h.waitForCount('bystander', 5);

    process.kill(victim.workerPid!, 'SIGKILL');
    const crashed = await h.waitForState('victim', 'Crashed');
    assert.match(crashed.status, /SIGKILL/);
    assert.equal(crashed.workerPid, null);

    const b = await h.vm('bystander');
    assert.equal(b.state, 'Running');
    assert.equal(b.workerPid, bystander.workerPid);
    const n = parseCounts(await h.transcript('bystander')).length;
    await h.waitForCount('bystander', n + 10);

    // Restart the service: the bystander's worker is found again, still running.
    await h.stopService();
    assert.ok(alive(bystander.workerPid!), 'workers outlive the service');
    await h.startService();
    const again = await h.vm('bystander');
    assert.equal(again.state, 'Running');
    assert.equal(again.workerPid, bystander.workerPid);
    assert.equal((await h.vm('victim')).state, 'Crashed');
    const m = parseCounts(await h.transcript('bystander'));
    const counts = await h.waitForCount('bystander', (m[m.length - 1] ?? 0) + 10);
    assert.equal(checkConsecutive(counts), undefined, 'the scrollback survives the service restart');

    // A worker that dies while no service watches is found dead: Crashed.
    await h.stopService();
    process.kill(bystander.workerPid!, 'SIGKILL');
    for (let i = 0; i < 100 && alive(bystander.workerPid!); i++) await new Promise((r) => setTimeout(r, 20));
    await h.startService();
    const dead = await h.vm('bystander');
    assert.equal(dead.state, 'Crashed');
    assert.match(dead.status, /gone|no worker/);

    // A crashed VM can be started again.
    const restarted = await h.ok<VmInfo>('POST', '/v1/vms/victim/start', {});
    assert.equal(restarted.state, 'Running');
    await h.ok('POST', '/v1/vms/victim/stop', { turnOff: true });
  });
});
