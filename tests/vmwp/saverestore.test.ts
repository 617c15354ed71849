/**
 * Pause, save and restore of a running guest on every backend (the heavy tier).
 *
 * The guest is tests/guests/src/long64-counter.c with the test device's scratch register set to
 * 0xFFFFFFFF, so it prints "count=N" lines forever and checks before every line that its count
 * survived in XMM5, an MSR and the LAPIC TPR. A run is paused after some lines (possibly in the
 * middle of one), saved, the VM disposed, a fresh VM restored from the file and run on: the
 * serial output of all runs, concatenated as a byte stream, must be the exact count sequence
 * with no gap, no repeat and no FAIL line. Damaged files must be refused with EIMAGE and leave
 * the fresh VM and the file as they were. A 256 MiB VM is timed (figures as diagnostics).
 *
 * Skipped, with the reason, where /dev/kvm cannot run a VM.
 */
import { describe, test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { createHash, randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TshvError } from '../../src/base/errors.js';
import { loadFlatImage } from '../../src/loader/flat.js';
import { Vm, MIB } from '../../src/vmwp/vm.js';
import { inspectSaveFile, restoreVm, saveVm } from '../../src/vmwp/savestate.js';
import type { Backend } from '../../src/winhv/winhv.js';
import { buildGuests, type BuiltGuest } from '../guests/build.js';
import { backendFor } from '../guests/harness.js';

const COUNT_FOREVER = 0xffffffff;
const TESTDEV_SCRATCH_PORT = 0xf0;
const HEADER_LINE = 'long64-counter: counting\n';

/** Every backend the suite runs on; one this host cannot run is reported skipped with the reason. */
const BACKENDS = ['kvm', 'emu'] as const;
let guest: BuiltGuest | undefined;
let dir = '';

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tshv-saverestore-'));
});
after(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

function counterGuest(): BuiltGuest {
  guest ??= buildGuests({ only: ['long64-counter'] }).get('long64-counter');
  if (guest === undefined) throw new Error('long64-counter was not built');
  return guest;
}

interface Serial { bytes: number[]; lines(): number; text(): string; onByte?: ((b: number) => void) | undefined }

function serial(): Serial {
  const bytes: number[] = [];
  return {
    bytes,
    lines: () => bytes.reduce((n, b) => n + (b === 0x0a ? 1 : 0), 0),
    text: () => Buffer.from(bytes).toString('latin1'),
  };
}

function vmConfig(memoryMiB: number): { name: string; memoryMiB: number; vpCount: number; guest: string } {
  return { name: 'counter', memoryMiB, vpCount: 1, guest: 'long64-counter' };
}

/** A VM in the counter guest's platform: nothing loaded yet. */
async function createVm(backend: Backend, memoryMiB: number, out: Serial): Promise<Vm> {
  return Vm.create({
    backend, memoryBytes: memoryMiB * MIB, vpCount: 1, resetAction: 'poweroff', testDevice: true,
    serialOut: (b) => { for (const x of b) { out.bytes.push(x); out.onByte?.(x); } },
  });
}

/** Load the counter guest and make it count forever. */
async function boot(vm: Vm): Promise<void> {
  const g = counterGuest();
  const base = await vm.getVpState(0);
  const state = loadFlatImage(vm.memory, g.image, { mode: g.spec.mode, loadGpa: g.spec.loadGpa, entryGpa: g.entryGpa, base });
  await vm.setVpState(0, state);
  assert.equal(vm.testDevice!.ioWrite(TESTDEV_SCRATCH_PORT, 4, COUNT_FOREVER), 'ok');
}

/**
 * Run until the serial output holds at least `lines` newlines, then pause. With `midLine`,
 * the pause is requested from inside the port exit that writes the next '=' (the exit
 * completes, the VP stops right after it), so the VM stops with "count=" printed and the
 * number not yet: a save in the middle of a line.
 */
async function runUntil(vm: Vm, out: Serial, lines: number, opts: { maxMs?: number; midLine?: boolean } = {}): Promise<void> {
  const maxMs = opts.maxMs ?? 60000;
  if (opts.midLine === true) {
    out.onByte = (b) => {
      if (b === 0x3d && out.lines() >= lines) { out.onByte = undefined; void vm.pause(); }
    };
  }
  const run = vm.run();
  const t0 = performance.now();
  while ((opts.midLine === true || out.lines() < lines) && performance.now() - t0 < maxMs) {
    const ended = await Promise.race([run.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 5))]);
    if (ended) break;
  }
  await vm.pause();
  const exit = await run;
  assert.deepEqual(exit, { kind: 'stopped' }, `the run ended by itself: ${JSON.stringify(exit)}; output so far:\n${out.text().slice(-400)}`);
  assert.ok(out.lines() >= lines, `only ${out.lines()} lines within ${maxMs} ms`);
}

/**
 * Check a transcript: the header, then count=0, count=1, ... each exactly once, in order,
 * possibly ending in the middle of the next line. Returns the number of complete count lines.
 */
function checkCounting(text: string): number {
  assert.ok(text.startsWith(HEADER_LINE), `transcript starts with ${JSON.stringify(text.slice(0, 40))}`);
  assert.ok(!text.includes('FAIL'), `a FAIL line: ${text.slice(text.indexOf('FAIL'), text.indexOf('FAIL') + 120)}`);
  let expected = '';
  let n = 0;
  const body = text.slice(HEADER_LINE.length);
  // Build the expected stream as far as the body goes and compare byte for byte.
  while (expected.length < body.length) expected += `count=${n++}\n`;
  assert.equal(body, expected.slice(0, body.length), 'the count sequence has a gap, a repeat or stray bytes');
  return body.split('\n').length - 1;
}

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function backendOrSkip(t: TestContext, avail: ReturnType<typeof backendFor>): Backend | undefined {
  if (!avail.ok) { t.skip(avail.reason); return undefined; }
  return avail.backend;
}

for (const kind of BACKENDS) {
const avail = backendFor(kind);
describe(`save and restore on ${kind}`, () => {
  test('a counting guest continues after save, dispose and restore with no gap or repeat', { timeout: 120000 }, async (t) => {
    const backend = backendOrSkip(t, avail);
    if (backend === undefined) return;
    const transcript: number[] = [];
    let vmOut = serial();
    let vm = await createVm(backend, 16, vmOut);
    await boot(vm);
    let target = 12;
    try {
      // Three generations: each pauses (anywhere, often mid-line), saves, and is replaced.
      for (let gen = 0; gen < 3; gen++) {
        await runUntil(vm, vmOut, target, { midLine: gen === 1 });
        if (gen === 1) {
          const tail = vmOut.text().slice(vmOut.text().lastIndexOf('\n') + 1);
          t.diagnostic(`generation 1 paused mid-line, after ${JSON.stringify(tail)}`);
          assert.equal(tail, 'count=', 'generation 1 stops right after the exit that asked for the pause');
        }
        transcript.push(...vmOut.bytes);
        const file = join(dir, `counter-${gen}.tshvsave`);
        const progress: [number, number][] = [];
        const r = await saveVm(vm, file, { config: vmConfig(16), onProgress: (d, tot) => progress.push([d, tot]) });
        t.diagnostic(`generation ${gen}: ${vmOut.lines()} lines, ${vmOut.bytes.length} bytes; saved ${r.bytes} bytes in ${r.ms.toFixed(1)} ms`);
        assert.equal(readFileSync(file).length, r.bytes);
        assert.deepEqual(progress.at(-1), [r.bytes, r.bytes]);
        assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith('.tmp')), [], 'no temporary file left behind');
        vm.dispose();
        vmOut = serial();
        vm = await createVm(backend, 16, vmOut);
        const rp: [number, number][] = [];
        await restoreVm(vm, file, { config: vmConfig(16), onProgress: (d, tot) => rp.push([d, tot]) });
        assert.deepEqual(rp.at(-1), [2 * r.bytes, 2 * r.bytes]);
        target = 12;
      }
      await runUntil(vm, vmOut, target);
      transcript.push(...vmOut.bytes);
    } finally {
      vm.dispose();
    }
    const lines = checkCounting(Buffer.from(transcript).toString('latin1'));
    t.diagnostic(`${lines} count lines over 4 VMs, continuous`);
    assert.ok(lines >= 40);
  });

  test('pause and resume without save continue the count with no gap', { timeout: 120000 }, async (t) => {
    const backend = backendOrSkip(t, avail);
    if (backend === undefined) return;
    const out = serial();
    const vm = await createVm(backend, 16, out);
    try {
      await boot(vm);
      for (let i = 1; i <= 6; i++) await runUntil(vm, out, 5 * i);
      await vm.pause();          // paused already: resolves at once
    } finally {
      vm.dispose();
    }
    assert.ok(checkCounting(out.text()) >= 29);
  });

  test('a truncated or bit-flipped file is refused and leaves the VM and the file untouched', { timeout: 120000 }, async (t) => {
    const backend = backendOrSkip(t, avail);
    if (backend === undefined) return;
    const out = serial();
    const vm = await createVm(backend, 16, out);
    const good = join(dir, 'good.tshvsave');
    try {
      await boot(vm);
      await runUntil(vm, out, 8);
      await saveVm(vm, good, { config: vmConfig(16) });
    } finally {
      vm.dispose();
    }
    const bytes = readFileSync(good);
    const info = await inspectSaveFile(good);
    assert.equal(info.valid, true);
    assert.equal(info.machine?.vpCount, 1);
    assert.deepEqual(info.config, vmConfig(16));
    assert.ok((info.memory?.storedPages ?? 0) > 0 && (info.memory?.zeroPages ?? 0) > 3000);

    const damaged: { name: string; data: Uint8Array; re: RegExp }[] = [
      { name: 'truncated', data: bytes.subarray(0, Math.floor(bytes.length / 2)), re: /truncated/ },
      { name: 'truncated by one byte', data: bytes.subarray(0, bytes.length - 1), re: /truncated/ },
      { name: 'empty', data: new Uint8Array(0), re: /truncated/ },
    ];
    const flipAt = (at: number, re: RegExp, name: string): void => {
      const d = Uint8Array.from(bytes);
      d[at] = d[at]! ^ 0x10;
      damaged.push({ name, data: d, re });
    };
    flipAt(bytes.length - 5000, /checksum mismatch in section memory\/ram-low/, 'bit flipped in a memory page');
    flipAt(Math.floor(bytes.length / 2), /checksum mismatch/, 'bit flipped in the middle');
    flipAt(3, /bad magic/, 'bit flipped in the magic');

    const fresh = serial();
    const vm2 = await createVm(backend, 16, fresh);
    try {
      const vpBefore = await vm2.getVpState(0);
      const devBefore = vm2.captureDeviceState();
      for (const d of damaged) {
        const path = join(dir, `bad-${d.name.replace(/ /g, '-')}.tshvsave`);
        writeFileSync(path, d.data);
        const hashBefore = sha(path);
        await assert.rejects(restoreVm(vm2, path, { config: vmConfig(16) }), (e: unknown) => {
          assert.ok(e instanceof TshvError, `${d.name}: not a TshvError: ${String(e)}`);
          assert.equal(e.code, 'EIMAGE', `${d.name}: ${e.message}`);
          assert.ok(e.message.includes(path), `${d.name}: the message names the file: ${e.message}`);
          assert.match(e.message, d.re, d.name);
          return true;
        });
        assert.equal(sha(path), hashBefore, `${d.name}: the file was changed`);
        const inspected = await inspectSaveFile(path);
        assert.equal(inspected.valid, false, d.name);
      }
      await assert.rejects(restoreVm(vm2, good, { config: vmConfig(32) }), (e: unknown) => e instanceof TshvError && e.code === 'ESTATE' && /configuration differs/.test(e.message));
      // Untouched: VP state, devices, memory of the fresh VM.
      // IA32_TSC (0x10) counts on in a stopped VP too: compare everything else.
      const vpAfter = await vm2.getVpState(0);
      vpAfter.msrs.delete(0x10);
      vpBefore.msrs.delete(0x10);
      assert.deepEqual(vpAfter, vpBefore);
      assert.deepEqual(vm2.captureDeviceState(), devBefore);
      for (const e of vm2.blocks.list()) assert.ok(e.block.bytes.every((b) => b === 0), `block ${e.name} was written`);
      // ...and still good for the intact file, continuing the count.
      await restoreVm(vm2, good, { config: vmConfig(16) });
      await runUntil(vm2, fresh, 5);
    } finally {
      vm2.dispose();
    }
    checkCounting(out.text() + fresh.text());
    const vm3 = await createVm(backend, 32, serial());
    try {
      await assert.rejects(restoreVm(vm3, good), (e: unknown) => e instanceof TshvError && e.code === 'ESTATE' && /memory/.test(e.message));
    } finally {
      vm3.dispose();
    }
  });

  test('256 MiB: save and restore times and file sizes', { timeout: 300000 }, async (t) => {
    const backend = backendOrSkip(t, avail);
    if (backend === undefined) return;
    for (const fill of ['counter only', 'all RAM random'] as const) {
      const out = serial();
      const vm = await createVm(backend, 256, out);
      const file = join(dir, 'big.tshvsave');
      let saved: { bytes: number; ms: number };
      try {
        if (fill === 'all RAM random') {
          // Everything but the loader's first MiB and the image: random, so no page is zero.
          const ram = vm.blocks.get('ram-low')!.block.bytes;
          const tmp = new Uint8Array(1 << 20);
          for (let o = 2 << 20; o < ram.length; o += tmp.length) { randomFillSync(tmp); ram.set(tmp, o); }
        }
        await boot(vm);
        await runUntil(vm, out, 6);
        saved = await saveVm(vm, file, { config: vmConfig(256) });
      } finally {
        vm.dispose();
      }
      const out2 = serial();
      const vm2 = await createVm(backend, 256, out2);
      try {
        const t0 = performance.now();
        await restoreVm(vm2, file, { config: vmConfig(256) });
        const restoreMs = performance.now() - t0;
        t.diagnostic(`256 MiB, ${fill}: save ${saved.ms.toFixed(0)} ms, file ${(saved.bytes / MIB).toFixed(2)} MiB (${saved.bytes} bytes), restore ${restoreMs.toFixed(0)} ms`);
        await runUntil(vm2, out2, 4);
      } finally {
        vm2.dispose();
        rmSync(file, { force: true });
      }
      checkCounting(out.text() + out2.text());
    }
  });
});
}
