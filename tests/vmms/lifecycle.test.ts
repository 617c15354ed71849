/**
 * The VM lifecycle through the management plane, on the kvm backend with the long64-counter
 * guest (counting forever): new, start, pause, resume, save (the worker stays), start
 * (restores), stop, remove, with the list showing each state, and the guest's count
 * continuing across pause and save/restore with no gap and no repeat. Once against the API
 * directly, once through the CLI (`list --json` after every step).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import type { VmInfo, VmList } from '../../src/defs/api.js';
import { TestHome, alive, backendSkipReason, checkConsecutive, counterGuest, kvmSkipReason, parseCounts, sleep } from './helpers.js';

const skip = kvmSkipReason();

for (const backend of ['kvm', 'emu'] as const) {
describe(`VM lifecycle over the API on ${backend}`, { skip: backendSkipReason(backend), timeout: 60000 }, () => {
  const h = new TestHome(`life-api-${backend}`);
  before(async () => { counterGuest(); await h.startService(); });
  after(() => h.cleanup());

  test('new_start_pause_resume_save_restore_stop_remove', async () => {
    const created = await h.api('POST', '/v1/vms', h.newCounterBody('life', { backend }));
    assert.equal(created.status, 201, created.text);
    const id = (created.body as VmInfo).id;
    assert.equal((await h.list()).map((v) => `${v.name}:${v.state}`).join(), 'life:Off');

    let v = await h.ok<VmInfo>('POST', '/v1/vms/life/start', {});
    assert.equal(v.state, 'Running');
    const pid = v.workerPid;
    assert.ok(pid !== null && alive(pid));
    assert.equal((await h.list())[0]?.state, 'Running');
    await h.waitForCount('life', 20);

    v = await h.ok<VmInfo>('POST', `/v1/vms/${id.slice(0, 8)}/pause`, {});   // by GUID prefix
    assert.equal(v.state, 'Paused');
    const pausedAt = parseCounts(await h.transcript('life')).length;
    await sleep(300);
    assert.equal(parseCounts(await h.transcript('life')).length, pausedAt, 'a paused guest must not count');
    assert.equal((await h.list())[0]?.state, 'Paused');

    v = await h.ok<VmInfo>('POST', `/v1/vms/${id}/resume`, {});              // by GUID
    assert.equal(v.state, 'Running');
    await h.waitForCount('life', pausedAt + 20);

    v = await h.ok<VmInfo>('POST', '/v1/vms/life/save', {});
    assert.equal(v.state, 'Saved');
    assert.equal(v.hasSavedState, true);
    assert.equal(v.workerPid, pid, 'the worker stays while the VM is Saved');
    assert.ok(alive(pid), 'the worker process is alive while Saved');
    assert.ok(existsSync(`${h.paths.vmsDir}/${id}/saved.vmstate`));
    assert.equal((await h.list())[0]?.state, 'Saved');
    const savedCounts = parseCounts(await h.transcript('life'));
    await sleep(200);
    assert.equal(parseCounts(await h.transcript('life')).length, savedCounts.length);

    v = await h.ok<VmInfo>('POST', '/v1/vms/life/start', {});                // restores
    assert.equal(v.state, 'Running');
    assert.equal(v.hasSavedState, false);
    const last = savedCounts[savedCounts.length - 1] ?? 0;
    const counts = await h.waitForCount('life', last + 30);
    assert.equal(checkConsecutive(counts), undefined);
    assert.ok(!(await h.transcript('life')).includes('FAIL'), 'the guest found its state intact after restore');

    v = await h.ok<VmInfo>('POST', '/v1/vms/life/stop', { turnOff: true });
    assert.equal(v.state, 'Off');
    assert.equal(v.workerPid, null);
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(20);
    assert.ok(!alive(pid), 'the worker exits when the VM is off');
    assert.equal((await h.list())[0]?.state, 'Off');

    const del = await h.api('DELETE', '/v1/vms/life');
    assert.equal(del.status, 204);
    assert.deepEqual(await h.list(), []);
    assert.ok(!existsSync(`${h.paths.vmsDir}/${id}`));
  });

  test('gracefulStop_withoutShutdownService_turnsOffAfterTheTimeout', async () => {
    await h.ok('POST', '/v1/vms', h.newCounterBody('graceful', { backend }));
    await h.ok('POST', '/v1/vms/graceful/start', {});
    const t0 = performance.now();
    const v = await h.ok<VmInfo>('POST', '/v1/vms/graceful/stop', { timeoutMs: 300 });
    assert.ok(performance.now() - t0 >= 290);
    assert.equal(v.state, 'Off');
    assert.match(v.status, /graceful shutdown needs/);
    await h.ok('DELETE', '/v1/vms/graceful');
  });

  test('guestThatExits_goesOffByItself_andItsWorkerExits', async () => {
    await h.ok('POST', '/v1/vms', h.newCounterBody('finite', { scratch: 0, backend }));   // 16 lines, then test exit 0x66
    const v = await h.ok<VmInfo>('POST', '/v1/vms/finite/start', {});
    // A fast guest (emu) can power off before the start reply: start then already answers Off.
    assert.ok(v.state === 'Running' || v.state === 'Off', v.state);
    const off = await h.waitForState('finite', 'Off');
    assert.match(off.status, /exited with code 0x66/);
    assert.equal(off.workerPid, null);
    if (v.workerPid !== null) {
      for (let i = 0; i < 100 && alive(v.workerPid); i++) await sleep(20);
      assert.ok(!alive(v.workerPid));
    }
    assert.equal(checkConsecutive(parseCounts(await h.transcript('finite'))), undefined);
    assert.equal(parseCounts(await h.transcript('finite')).length, 16);
  });
});
}

describe('serial console', { skip, timeout: 60000 }, () => {
  const h = new TestHome('console');
  before(async () => { counterGuest(); await h.startService(); });
  after(() => h.cleanup());

  test('console_streamsSerialOutput_takesInput_andDetachesOnCtrlRightBracket', async () => {
    await h.ok('POST', '/v1/vms', h.newCounterBody('con'));
    await h.ok('POST', '/v1/vms/con/start', {});
    const child = spawn(process.execPath, ['--input-type=module', '-e',
      `const m = await import(${JSON.stringify(new URL('../../src/cli/main.js', import.meta.url).href)}); process.exitCode = await m.runCli([process.argv[0], 'tshv', ...process.argv.slice(1)]);`,
      '--', 'console', 'con'], { env: h.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
    for (let i = 0; i < 200 && parseCounts(out).length < 50; i++) await sleep(50);
    const counts = parseCounts(out);
    assert.ok(counts.length >= 50, `the console streams the guest's output (got ${counts.length} lines; ${err})`);
    assert.equal(checkConsecutive(counts), undefined, 'the stream starts with the scrollback and has no gap');
    child.stdin.write('hello');                    // reaches the UART (the counter does not read it)
    await sleep(200);
    child.stdin.write(Buffer.from([0x1d]));        // Ctrl-]
    assert.equal(await exited, 0, err);
    assert.match(err, /detached/);
    assert.equal((await h.vm('con')).state, 'Running', 'detaching leaves the VM running');
    const input = await h.api('POST', '/v1/vms/con/console/input', { data: Buffer.from('x').toString('base64') });
    assert.equal(input.status, 204);
    await h.ok('POST', '/v1/vms/con/stop', { turnOff: true });
  });
});

describe('VM lifecycle through the CLI', { skip, timeout: 60000 }, () => {
  const h = new TestHome('life-cli');
  before(() => { counterGuest(); });
  after(() => h.cleanup());

  const state = async (): Promise<string> => {
    const r = await h.cli(['list', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const l = JSON.parse(r.stdout) as VmList;
    return l.vms.map((v) => `${v.name}:${v.state}`).join();
  };
  const run = async (args: string[], code = 0): Promise<string> => {
    const r = await h.cli(args);
    assert.equal(r.code, code, `tshv ${args.join(' ')}: ${r.stderr}`);
    return r.stdout + r.stderr;
  };

  test('cli_lifecycle_startsTheServiceOnDemand_andListShowsEachState', async () => {
    const g = counterGuest();
    await run(['service', 'status'], 9);
    await run(['--backend', 'kvm', 'new', 'cli-vm', '--memory', '16M', '--cpus', '1', '--flat', g.binPath, '--mode', 'long64',
      '--load-gpa', `0x${g.spec.loadGpa.toString(16)}`, '--entry-gpa', `0x${g.entryGpa.toString(16)}`, '--scratch', '0xffffffff']);
    assert.equal(await state(), 'cli-vm:Off');
    await run(['start', 'cli-vm']);
    assert.equal(await state(), 'cli-vm:Running');
    await h.waitForCount('cli-vm', 10);
    await run(['pause', 'cli-vm']);
    assert.equal(await state(), 'cli-vm:Paused');
    await run(['start', 'cli-vm'], 6);                  // 409: invalid transition -> exit 6
    await run(['resume', 'cli-vm']);
    assert.equal(await state(), 'cli-vm:Running');
    await run(['save', 'cli-vm']);
    assert.equal(await state(), 'cli-vm:Saved');
    const pid = (JSON.parse((await h.cli(['show', 'cli-vm', '--json'])).stdout) as VmInfo).workerPid;
    assert.ok(pid !== null && alive(pid), 'worker alive while Saved');
    const before = parseCounts(await h.transcript('cli-vm'));
    await run(['start', 'cli-vm']);
    assert.equal(await state(), 'cli-vm:Running');
    const counts = await h.waitForCount('cli-vm', (before[before.length - 1] ?? 0) + 20);
    assert.equal(checkConsecutive(counts), undefined);
    const table = await run(['list']);
    assert.match(table, /Name.*State.*CPU Usage.*Memory.*Uptime.*Status/s);
    assert.match(table, /cli-vm.*Running/);
    await run(['stop', 'cli-vm', '--turn-off']);
    assert.equal(await state(), 'cli-vm:Off');
    await run(['remove', 'nope'], 8);                   // 404 -> exit 8
    await run(['remove', 'cli-vm']);
    assert.equal(await state(), '');
    await run(['service', 'stop']);
    await run(['service', 'status'], 9);
  });
});
