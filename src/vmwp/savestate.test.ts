/**
 * saveVm / restoreVm / inspectSaveFile and Vm.pause on an in-memory fake backend (no
 * /dev/kvm): the round trip of every VP's state, every device's state and every memory block,
 * atomic writing, refusal of damaged or mismatched files with the VM left as it was, and
 * rollback when the processor or a device refuses a state that passed the checksums.
 * The same on a real processor, with a running guest: tests/vmwp/saverestore.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TshvError } from '../base/errors.js';
import { GuestMemory, type Gpa, type MemoryBlock } from '../guestmem/guestmem.js';
import type { Backend, ExitHandler, Partition, PartitionConfig, VirtualProcessor, VpStopReason } from '../hv/backends/backend.js';
import { LAPIC_STATE_SIZE, XSAVE_AREA_SIZE, zeroSegment, type VpState } from '../hv/backends/state.js';
import { Vm, MIB } from './vm.js';
import { canonicalJson, inspectSaveFile, restoreVm, saveVm } from './savestate.js';
import { bytesSource, encodeSaveFile, encodeJson, scanSaveFile } from './savefile.js';

// ---- A fake backend: VP state in memory, run() parks until requestStop(). ----

function cloneState(s: VpState): VpState {
  return structuredClone(s);
}

function initialState(index: number): VpState {
  const seg = zeroSegment();
  return {
    regs: {
      rax: 0n, rbx: 0n, rcx: 0n, rdx: 0x600n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
      r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0xfff0n, rflags: 2n,
    },
    sregs: {
      cs: { ...seg, selector: 0xf000, base: 0xffff0000n }, ds: seg, es: seg, fs: seg, gs: seg, ss: seg, tr: seg, ldt: seg,
      gdt: { base: 0n, limit: 0xffff }, idt: { base: 0n, limit: 0xffff },
      cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n,
    },
    xsave: new Uint8Array(XSAVE_AREA_SIZE), xcr0: 1n, msrs: new Map([[0x10, BigInt(index)]]),
    lapic: new Uint8Array(LAPIC_STATE_SIZE),
    events: { exception: null, interrupt: null, nmiPending: false, nmiMasked: false, interruptShadow: false },
    halted: false,
  };
}

class FakeVp implements VirtualProcessor {
  state: VpState;
  refuseSet = false;
  #stop: ((r: VpStopReason) => void) | undefined;
  constructor(readonly index: number) { this.state = initialState(index); }
  run(): Promise<VpStopReason> { return new Promise((r) => { this.#stop = r; }); }
  requestStop(): void { const s = this.#stop; this.#stop = undefined; s?.({ kind: 'stopped' }); }
  getState(): Promise<VpState> {
    if (this.#stop !== undefined) return Promise.reject(new TshvError('ESTATE', 'running'));
    return Promise.resolve(cloneState(this.state));
  }
  setState(s: VpState): Promise<void> {
    if (this.refuseSet) return Promise.reject(new TshvError('EBACKEND', 'KVM_SET_SREGS: invalid argument'));
    this.state = cloneState(s);
    return Promise.resolve();
  }
}

class FakePartition implements Partition {
  readonly backend = 'emu' as const;
  readonly memory = new GuestMemory();
  readonly vps: FakeVp[];
  readonly hypercallCode = Uint8Array.of(0x0f, 0x01, 0xc1);
  constructor(cfg: PartitionConfig) { this.vps = Array.from({ length: cfg.vpCount }, (_, i) => new FakeVp(i)); }
  mapMemory(at: Gpa, block: MemoryBlock, writable: boolean) {
    const r = this.memory.map(at, block, writable);
    return { dispose: () => this.memory.unmap(r) };
  }
  setExitHandler(_h: ExitHandler): void { /* no exits */ }
  setIrqLine(): void { /* none */ }
  signalMsi(): void { /* none */ }
  dispose(): void { /* nothing */ }
}

let lastPartition: FakePartition | undefined;
const fakeBackend: Backend = {
  kind: 'emu',
  supportedCpuid: () => [],
  createPartition: (cfg) => { lastPartition = new FakePartition(cfg); return Promise.resolve(lastPartition); },
};

const ROM = { name: 'rom', gpa: 0xffff0000, bytes: new Uint8Array(5000).fill(0x5a) };

async function newVm(opts: { vpCount?: number; memoryMiB?: number; testDevice?: boolean } = {}): Promise<{ vm: Vm; p: FakePartition }> {
  const vm = await Vm.create({
    backend: fakeBackend, memoryBytes: (opts.memoryMiB ?? 4) * MIB, vpCount: opts.vpCount ?? 2,
    testDevice: opts.testDevice ?? true, roms: [ROM],
  });
  return { vm, p: lastPartition! };
}

const CONFIG = { name: 'vm1', memoryMiB: 4, vpCount: 2, nested: { b: 1, a: [1, 2] } };

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'tshv-savestate-')); });
after(() => { rmSync(dir, { recursive: true, force: true }); });

/** A VM with state everywhere: VP registers, MSRs, XSAVE, LAPIC, devices, scattered memory. */
async function busyVm(): Promise<Vm> {
  const { vm } = await newVm();
  for (let i = 0; i < 2; i++) {
    const s = await vm.getVpState(i);
    s.regs.rax = 0x1111n * BigInt(i + 1);
    s.regs.rip = 0x100000n + BigInt(i);
    s.sregs.cr3 = 0x2000n;
    s.msrs.set(0xc0000102, 0xfeedn + BigInt(i));
    s.xsave.fill(0x30 + i, 160, 416);
    s.lapic[0x80] = 0x40;
    s.events.interrupt = { vector: 0x41 };
    s.halted = i === 1;
    await vm.setVpState(i, s);
  }
  vm.memory.write(0x1000, Uint8Array.of(1, 2, 3));
  vm.memory.writeU64(0x3ff000 - 8, 0x0123456789abcdefn);
  vm.memory.fill(0x200000, 3 * 4096, 0x77);
  vm.dispatcher.pioWrite(0, 0x3ff, 1, 0xa5);      // UART SCR
  vm.testDevice!.ioWrite(0xf0, 4, 0xdeadbeef);
  return vm;
}

function blocksOf(vm: Vm): Map<string, Uint8Array> {
  return new Map(vm.blocks.list().map((e) => [e.name, e.block.bytes.slice()]));
}

async function vpStates(vm: Vm): Promise<VpState[]> {
  const out: VpState[] = [];
  for (let i = 0; i < vm.vpCount; i++) out.push(await vm.getVpState(i));
  return out;
}

test('restoreDeviceState_acceptsStatesSavedBeforeTheCmosRtcExisted', async () => {
  const { vm } = await newVm();
  vm.cmos.ioWrite(0x70, 1, 0x40); vm.cmos.ioWrite(0x71, 1, 0x5a);
  const states = new Map(vm.captureDeviceState());
  states.delete('cmos');
  vm.restoreDeviceState(states);
  vm.cmos.ioWrite(0x70, 1, 0x40);
  assert.equal(vm.cmos.ioRead(0x71, 1), 0, 'reset to its power-on state');
  states.delete('com1');
  assert.throws(() => vm.restoreDeviceState(states), /no saved state for device com1/);
});

test('saveVm_restoreVm_roundTripsEveryVpDeviceAndBlock', async () => {
  const a = await busyVm();
  const path = join(dir, 'round.tshvsave');
  const progress: number[] = [];
  const r = await saveVm(a, path, { config: CONFIG, onProgress: (d, t) => { progress.push(d); assert.ok(d <= t); } });
  assert.equal(readFileSync(path).length, r.bytes);
  assert.equal(progress.at(-1), r.bytes);
  const { vm: b } = await newVm();
  await restoreVm(b, path, { config: { ...CONFIG, nested: { a: [1, 2], b: 1 } } });   // key order does not matter
  assert.deepEqual(await vpStates(b), await vpStates(a));
  assert.deepEqual(b.captureDeviceState(), a.captureDeviceState());
  assert.deepEqual(blocksOf(b), blocksOf(a));
  assert.equal(b.dispatcher.pioRead(0, 0x3ff, 1), 0xa5);
  assert.equal(b.testDevice!.ioRead(0xf0, 4), 0xdeadbeef);
  // Zero pages are not stored: the 4 MiB of RAM holds 5 non-zero pages, the ROM 2.
  assert.ok(r.bytes < 8 * 4096 + 3 * 5568 + 8192, `file of ${r.bytes} bytes`);
});

test('inspectSaveFile_reportsHeaderMachineConfigAndValidity', async () => {
  const vm = await busyVm();
  const path = join(dir, 'inspect.tshvsave');
  await saveVm(vm, path, { config: CONFIG });
  const info = await inspectSaveFile(path);
  assert.equal(info.valid, true);
  assert.equal(info.formatVersion, 1);
  assert.equal(info.machine?.vpCount, 2);
  assert.equal(info.machine?.memoryBytes, 4 * MIB);
  assert.deepEqual(info.machine?.devices, ['com1', 'i8042', 'port92', 'cmos', 'testdev']);
  assert.deepEqual(info.config, CONFIG);
  assert.deepEqual(info.memory, { totalBytes: 4 * MIB + 8192, storedPages: 7, zeroPages: 1024 + 2 - 7 });
  assert.deepEqual(info.sections.map((s) => s.name), [
    'machine', 'config', 'vp/0', 'vp/1', 'device/com1', 'device/i8042', 'device/port92', 'device/cmos', 'device/testdev', 'memory/ram-low', 'memory/rom',
  ]);
  const bytes = readFileSync(path);
  bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 4;
  const bad = join(dir, 'inspect-bad.tshvsave');
  writeFileSync(bad, bytes);
  const badInfo = await inspectSaveFile(bad);
  assert.equal(badInfo.valid, false);
  assert.equal(badInfo.formatVersion, 1);
  assert.match(badInfo.error ?? '', /checksum mismatch/);
  await assert.rejects(inspectSaveFile(join(dir, 'missing.tshvsave')), (e: unknown) => e instanceof TshvError && e.code === 'EINVAL');
});

test('pause_stopsEveryVp_runResolvesStopped_andRunResumes', async () => {
  const { vm } = await newVm();
  await vm.pause();                                   // not running: resolves at once
  const run = vm.run();
  assert.equal(vm.running, true);
  await assert.rejects(saveVm(vm, join(dir, 'x.tshvsave'), { config: null }), (e: unknown) => e instanceof TshvError && e.code === 'ESTATE');
  await assert.rejects(restoreVm(vm, join(dir, 'x.tshvsave')), (e: unknown) => e instanceof TshvError && e.code === 'ESTATE');
  assert.throws(() => vm.captureDeviceState(), /paused/);
  await vm.pause();
  assert.equal(vm.running, false);
  assert.deepEqual(await run, { kind: 'stopped' });
  const again = vm.run();
  await vm.pause();
  assert.deepEqual(await again, { kind: 'stopped' });
});

test('saveVm_isAtomic_existingFileUntouchedOnFailure_noTempLeft', async () => {
  const vm = await busyVm();
  const path = join(dir, 'atomic.tshvsave');
  writeFileSync(path, 'old contents');
  await assert.rejects(saveVm(vm, path, { config: { big: 1n } }));          // BigInt: not JSON
  assert.equal(readFileSync(path, 'utf8'), 'old contents');
  await assert.rejects(saveVm(vm, join(dir, 'no-such-dir', 'x.tshvsave'), { config: null }), (e: unknown) => e instanceof TshvError && e.code === 'EINVAL');
  await saveVm(vm, path, { config: CONFIG });
  assert.equal((await inspectSaveFile(path)).valid, true);
  assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith('.tmp')), []);
});

/** Re-encode a valid file with one section's payload replaced (checksums stay valid). */
async function withSection(path: string, name: string, payload: (old: Uint8Array) => Uint8Array): Promise<Uint8Array> {
  const bytes = new Uint8Array(readFileSync(path));
  const s = await scanSaveFile(bytesSource(bytes), { file: path });
  return encodeSaveFile(s.sections.map((x) => {
    const old = bytes.slice(x.payloadOffset, x.payloadOffset + x.payloadBytes);
    return { name: x.name, payload: x.name === name ? payload(old) : old };
  }));
}

async function expectUntouched(vm: Vm, run: () => Promise<void>, check: (e: TshvError) => void): Promise<void> {
  const vps = await vpStates(vm);
  const devices = vm.captureDeviceState();
  const blocks = blocksOf(vm);
  await assert.rejects(run(), (e: unknown) => {
    assert.ok(e instanceof TshvError, String(e));
    check(e);
    return true;
  });
  assert.deepEqual(await vpStates(vm), vps);
  assert.deepEqual(vm.captureDeviceState(), devices);
  assert.deepEqual(blocksOf(vm), blocks);
}

test('restoreVm_refusesMismatchedOrDamagedFiles_vmUntouched', async () => {
  const src = await busyVm();
  const good = join(dir, 'good.tshvsave');
  await saveVm(src, good, { config: CONFIG });
  const goodBytes = readFileSync(good);
  const put = (name: string, b: Uint8Array): string => { const p = join(dir, name); writeFileSync(p, b); return p; };

  const { vm } = await newVm();
  await expectUntouched(vm, () => restoreVm(vm, good, { config: { ...CONFIG, name: 'other' } }), (e) => {
    assert.equal(e.code, 'ESTATE');
    assert.match(e.message, /configuration differs/);
  });
  const trunc = put('trunc.tshvsave', goodBytes.subarray(0, goodBytes.length - 100));
  await expectUntouched(vm, () => restoreVm(vm, trunc), (e) => { assert.equal(e.code, 'EIMAGE'); assert.match(e.message, /truncated/); });
  const flipped = Uint8Array.from(goodBytes);
  flipped[goodBytes.length - 3000] = flipped[goodBytes.length - 3000]! ^ 1;
  const flip = put('flip.tshvsave', flipped);
  await expectUntouched(vm, () => restoreVm(vm, flip), (e) => { assert.equal(e.code, 'EIMAGE'); assert.match(e.message, /checksum mismatch in section memory\/rom/); });
  // Valid checksums, but a device state its device refuses.
  const badDev = put('baddev.tshvsave', await withSection(good, 'device/com1', (old) => {
    const o = JSON.parse(new TextDecoder().decode(old)) as Record<string, unknown>;
    return encodeJson({ ...o, lcr: 999 });
  }));
  await expectUntouched(vm, () => restoreVm(vm, badDev), (e) => { assert.equal(e.code, 'EIMAGE'); assert.match(e.message, /device state refused.*uart16550/); });
  // Valid checksums, an undecodable VP state.
  const badVp = put('badvp.tshvsave', await withSection(good, 'vp/1', (old) => old.subarray(0, 100)));
  await expectUntouched(vm, () => restoreVm(vm, badVp), (e) => { assert.equal(e.code, 'EIMAGE'); assert.match(e.message, /section vp\/1/); });
  // A machine with a different shape.
  const { vm: one } = await newVm({ vpCount: 1 });
  await expectUntouched(one, () => restoreVm(one, good), (e) => { assert.equal(e.code, 'ESTATE'); assert.match(e.message, /virtual processors/); });
  const { vm: noTest } = await newVm({ testDevice: false });
  await expectUntouched(noTest, () => restoreVm(noTest, good), (e) => { assert.equal(e.code, 'ESTATE'); assert.match(e.message, /devices/); });
  // The VM is still good for the intact file.
  await restoreVm(vm, good, { config: CONFIG });
  assert.deepEqual(blocksOf(vm), blocksOf(src));
});

test('restoreVm_processorRefusesState_rollsBackVpsDevicesAndMemory', async () => {
  const src = await busyVm();
  const path = join(dir, 'rollback.tshvsave');
  await saveVm(src, path, { config: CONFIG });
  const { vm, p } = await newVm();
  const ram = vm.blocks.get('ram-low')!.block.bytes;
  p.vps[1]!.refuseSet = true;
  await expectUntouched(vm, () => restoreVm(vm, path), (e) => {
    assert.equal(e.code, 'EIMAGE');
    assert.match(e.message, /vp\/1: the processor refused the state/);
  });
  assert.ok(ram.every((b) => b === 0));
});

test('canonicalJson_ignoresKeyOrder', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 1, x: 2 }], c: null } }), canonicalJson({ a: { c: null, d: [1, { x: 2, y: 1 }] }, b: 1 }));
  assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: 2 }));
  assert.equal(canonicalJson(undefined), 'null');
});
