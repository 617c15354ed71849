// Guest tests of the KVM backend: tiny real-mode guests assembled at test time, run on
// /dev/kvm with a mock ExitHandler. Every test skips (visibly) when /dev/kvm is not usable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { createKvmBackend, probeKvm } from './index.js';
import type { Backend } from '../backend.js';
import { MemoryBlock, gpa } from '../../../guestmem/guestmem.js';
import { CODE_BASE, DONE_PORT, HYPERCALL_PORT, TEST_CONFIG, assemble16, bootGuest, realModeState } from './test-guest.js';
import type { TestVm } from './test-guest.js';

const probe = probeKvm();
let backend: Backend | null = null;
function kvm(t: TestContext): Backend | null {
  if (!probe.usable) { t.skip(`/dev/kvm not usable: ${probe.reason}`); return null; }
  backend ??= createKvmBackend();
  return backend;
}

async function guest(t: TestContext, source: string): Promise<TestVm | null> {
  const b = kvm(t);
  if (b === null) return null;
  const code = assemble16(source);
  if (code === null) { t.skip('GNU as/ld not installed'); return null; }
  return bootGuest(b, code);
}

// Ports 0x20/0x21, 0xa0/0xa1, 0x4d0/0x4d1 belong to the in-kernel PIC and never exit.
const DONE = `mov $0, %al\n out %al, $${DONE_PORT}\n jmp .`;

test('probeKvm reports API version 12 when usable', () => {
  if (probe.usable) assert.equal(probe.apiVersion, 12);
  else assert.notEqual(probe.reason, '');
});

test('supportedCpuid returns the vendor leaf', (t) => {
  const b = kvm(t);
  if (b === null) return;
  const leaves = b.supportedCpuid();
  const l0 = leaves.find((e) => e.function === 0);
  assert.ok(l0 !== undefined && l0.eax >= 1);
  assert.ok(leaves.some((e) => e.function === 1));
});

test('pio_outAndIn_roundTripThroughHandler', async (t) => {
  const vm = await guest(t, `
    mov $0x42, %al
    out %al, $0x10
    mov $0x1234, %ax
    out %ax, $0x12
    mov $0xdeadbeef, %eax
    mov $0x300, %dx
    out %eax, %dx
    in $0x14, %al
    out %al, $0x15
    in $0x16, %ax
    out %ax, $0x17
    in %dx, %eax
    out %eax, $0x24
    ${DONE}`);
  if (vm === null) return;
  try {
    vm.handler.inValues.set(0x14, [0x5a]).set(0x16, [0xa55a]).set(0x300, [0xcafebabe]);
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    assert.deepEqual(vm.handler.events.filter((e) => e.e === 'out' || e.e === 'in'), [
      { e: 'out', port: 0x10, size: 1, value: 0x42 },
      { e: 'out', port: 0x12, size: 2, value: 0x1234 },
      { e: 'out', port: 0x300, size: 4, value: 0xdeadbeef },
      { e: 'in', port: 0x14, size: 1 },
      { e: 'out', port: 0x15, size: 1, value: 0x5a },
      { e: 'in', port: 0x16, size: 2 },
      { e: 'out', port: 0x17, size: 2, value: 0xa55a },
      { e: 'in', port: 0x300, size: 4 },
      { e: 'out', port: 0x24, size: 4, value: 0xcafebabe },
      { e: 'out', port: DONE_PORT, size: 1, value: 0 },
    ]);
  } finally { vm.dispose(); }
});

test('pio_repOutsbAndInsw_countAboveOne', async (t) => {
  const vm = await guest(t, `
    cld
    mov $src, %si
    mov $5, %cx
    mov $0x3f8, %dx
    rep outsb
    mov $0x2000, %di
    mov $3, %cx
    mov $0x110, %dx
    rep insw
    ${DONE}
  src: .ascii "hello"`);
  if (vm === null) return;
  try {
    vm.handler.inValues.set(0x110, [0x1111, 0x2222, 0x3333]);
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    const outs = vm.handler.events.filter((e) => e.e === 'out' && e.port === 0x3f8).map((e) => e.e === 'out' ? e.value : 0);
    assert.equal(String.fromCharCode(...outs), 'hello');
    assert.equal(vm.handler.events.filter((e) => e.e === 'in' && e.port === 0x110 && e.size === 2).length, 3);
    assert.deepEqual([...vm.partition.memory.read(0x2000, 6)], [0x11, 0x11, 0x22, 0x22, 0x33, 0x33]);
  } finally { vm.dispose(); }
});

test('mmio_unmappedRead_andRomWrite_reachHandler', async (t) => {
  const vm = await guest(t, `
    mov $0x2000, %ax
    mov %ax, %ds
    mov (0x10), %eax          # GPA 0x20010: unmapped -> mmioRead(4)
    out %eax, $0x30
    mov $0x3000, %ax
    mov %ax, %ds
    mov (0x8), %ebx           # GPA 0x30008: ROM, served by KVM
    out %eax, $0x31
    mov %ebx, %eax
    out %eax, $0x31
    movw $0xabcd, (0x8)       # write to ROM -> mmioWrite, ROM unchanged
    mov (0x8), %eax
    out %eax, $0x32
    ${DONE}`);
  if (vm === null) return;
  const rom = new MemoryBlock(0x1000, 'rom');
  try {
    const romMap = vm.partition.mapMemory(gpa(0x30000), rom, false);
    vm.partition.memory.write(0x30008, Uint8Array.of(1, 2, 3, 4), { host: true });
    vm.handler.mmioValue = 0x0102030455667788n;
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    const ev = vm.handler.events;
    assert.deepEqual(ev[0], { e: 'mmioRead', gpa: 0x20010, len: 4 });
    assert.deepEqual(ev[1], { e: 'out', port: 0x30, size: 4, value: 0x55667788 });
    assert.deepEqual(ev.find((e) => e.e === 'mmioWrite'), { e: 'mmioWrite', gpa: 0x30008, data: [0xcd, 0xab] });
    assert.ok(!ev.some((e) => e.e === 'mmioRead' && e.gpa >= 0x30000 && e.gpa < 0x31000), 'ROM reads must not exit');
    const last32 = ev.filter((e) => e.e === 'out' && e.port === 0x32);
    assert.deepEqual(last32, [{ e: 'out', port: 0x32, size: 4, value: 0x04030201 }]);
    assert.deepEqual(ev.filter((e) => e.e === 'out' && e.port === 0x31).map((e) => e.e === 'out' ? e.value : 0)[1], 0x04030201);
    romMap.dispose();
    assert.equal(vm.partition.memory.isMapped(0x30000), false);
  } finally { vm.dispose(); }
});

test('msr_hypervRange_exitsToHandler_andNullInjectsGP', async (t) => {
  const vm = await guest(t, `
    movw $gp_handler, (13*4)
    movw $0, (13*4+2)
    mov $0x40000000, %ecx
    rdmsr
    out %eax, $0x50
    mov %edx, %eax
    out %eax, $0x51
    mov $0x40000001, %ecx
    mov $0x11223344, %eax
    mov $0x55667788, %edx
    wrmsr
    mov $0x40000002, %ecx
    rdmsr                      # handler returns null -> #GP
    mov $0xbad, %ax
    out %ax, $0x52
    ${DONE}
  gp_handler:
    mov $0x6b0d, %ax
    out %ax, $0x53
    ${DONE}`);
  if (vm === null) return;
  try {
    vm.handler.msrValues.set(0x40000000, 0xaabbccdd12345678n);
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    const ev = vm.handler.events;
    assert.deepEqual(ev.slice(0, 3), [
      { e: 'msrRead', msr: 0x40000000 },
      { e: 'out', port: 0x50, size: 4, value: 0x12345678 },
      { e: 'out', port: 0x51, size: 4, value: 0xaabbccdd },
    ]);
    assert.deepEqual(ev[3], { e: 'msrWrite', msr: 0x40000001, value: 0x5566778811223344n });
    assert.deepEqual(ev[4], { e: 'msrRead', msr: 0x40000002 });
    assert.deepEqual(ev[5], { e: 'out', port: 0x53, size: 2, value: 0x6b0d });
  } finally { vm.dispose(); }
});

test('msr_wrmsrRejected_injectsGP', async (t) => {
  const vm = await guest(t, `
    movw $gp_handler, (13*4)
    movw $0, (13*4+2)
    mov $0x40000073, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    mov $0xbad, %ax
    out %ax, $0x52
    ${DONE}
  gp_handler:
    mov $0x6b0d, %ax
    out %ax, $0x53
    ${DONE}`);
  if (vm === null) return;
  try {
    vm.handler.msrWriteOk = false;
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    assert.deepEqual(vm.handler.events.slice(0, 2), [
      { e: 'msrWrite', msr: 0x40000073, value: 0n },
      { e: 'out', port: 0x53, size: 2, value: 0x6b0d },
    ]);
  } finally { vm.dispose(); }
});

test('hypercall_viaHypercallCode_passesRcxRdxR8_andReturnsRax', async (t) => {
  const b = kvm(t);
  if (b === null) return;
  const vm = await guest(t, `.byte 0xe6, ${HYPERCALL_PORT}\n out %eax, $0x60\n out %al, $${DONE_PORT}\n jmp .`);
  if (vm === null) return;
  try {
    assert.deepEqual([...vm.partition.hypercallCode], [0xe6, HYPERCALL_PORT]);
    const s = await vm.vp.getState();
    s.regs.rcx = 0x0001000200030004n;
    s.regs.rdx = 0xfedcba9876543210n;
    s.regs.r8 = 0x8000000000000001n;
    await vm.vp.setState(s);
    vm.handler.hypercallResult = 0x0000000500000000n | 0x1234n;
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    assert.deepEqual(vm.handler.events[0], { e: 'hypercall', regs: { control: 0x0001000200030004n, input: 0xfedcba9876543210n, output: 0x8000000000000001n } });
    assert.deepEqual(vm.handler.events[1], { e: 'out', port: 0x60, size: 4, value: 0x1234 });
    const after = await vm.vp.getState();
    assert.equal(after.regs.rax, 0x0000000500000000n | 0x1234n);
  } finally { vm.dispose(); }
});

test('requestStop_spinningGuest_stopsAndRunContinues', async (t) => {
  const vm = await guest(t, 'spin: jmp spin');
  if (vm === null) return;
  try {
    for (let round = 0; round < 3; round++) {
      const p = vm.vp.run();
      await new Promise((r) => setTimeout(r, 30));
      const t0 = performance.now();
      vm.vp.requestStop();
      vm.vp.requestStop();       // idempotent
      assert.deepEqual(await p, { kind: 'stopped' });
      assert.ok(performance.now() - t0 < 500, 'stop must be prompt');
      const s = await vm.vp.getState();
      assert.equal(s.regs.rip, BigInt(CODE_BASE));
    }
    assert.equal(vm.handler.events.length, 0);
  } finally { vm.dispose(); }
});

test('requestStop_duringPioOut_stopsRightAfterTheOut', async (t) => {
  // The handler asks for a stop inside the 200th OUT: the OUT completes, nothing after it runs.
  const vm = await guest(t, `
    xor %bx, %bx
  1: mov %bx, %ax
    out %ax, $0x70
    inc %bx
    jmp 1b`);
  if (vm === null) return;
  try {
    vm.handler.record = false;
    vm.handler.onOut = () => { if (vm.handler.outCount === 200) vm.vp.requestStop(); };
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    const s = await vm.vp.getState();
    assert.equal(vm.handler.outCount, 200);
    assert.equal(Number(s.regs.rbx & 0xffffn), 199);
    assert.equal(s.regs.rip, BigInt(CODE_BASE + 6), 'stopped at the INC after the OUT');
  } finally { vm.dispose(); }
});

test('requestStop_duringPioIn_completesTheInBeforeStateIsRead', async (t) => {
  const vm = await guest(t, `
  1: in $0x71, %ax
    jmp 1b`);
  if (vm === null) return;
  try {
    let n = 0;
    const h = vm.handler;
    h.pioRead = (_vp, _port, _size) => { n++; if (n === 50) vm.vp.requestStop(); return 0x1000 + n; };
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    const s = await vm.vp.getState();
    assert.equal(n, 50);
    assert.equal(Number(s.regs.rax & 0xffffn), 0x1000 + 50, 'the value of the in-flight IN reached AX');
    assert.equal(s.regs.rip, BigInt(CODE_BASE + 2), 'stopped after the IN');
  } finally { vm.dispose(); }
});

test('state_setRipAndRax_guestSeesThem_andRoundTrips', async (t) => {
  const vm = await guest(t, `
    jmp .
  entry:
    out %eax, $0x10
    ${DONE}`);
  if (vm === null) return;
  try {
    const s = await vm.vp.getState();
    s.regs.rip = BigInt(CODE_BASE + 2);
    s.regs.rax = 0x1234abcdn;
    await vm.vp.setState(s);
    const back = await vm.vp.getState();
    assert.equal(back.regs.rip, BigInt(CODE_BASE + 2));
    assert.deepEqual(back.sregs, s.sregs);
    assert.deepEqual(back.lapic, s.lapic);
    assert.deepEqual(back.events, s.events);
    assert.equal(back.halted, s.halted);
    assert.equal(back.xcr0, s.xcr0);
    assert.deepEqual(back.xsave.subarray(0, 512), s.xsave.subarray(0, 512));
    for (const [k, v] of s.msrs) if (k !== 0x10) assert.equal(back.msrs.get(k), v, `MSR ${k.toString(16)}`);
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    assert.deepEqual(vm.handler.events[0], { e: 'out', port: 0x10, size: 4, value: 0x1234abcd });
  } finally { vm.dispose(); }
});

test('state_msrsAndXsave_roundTripValues', async (t) => {
  const vm = await guest(t, 'jmp .');
  if (vm === null) return;
  try {
    const s = await vm.vp.getState();
    if (s.msrs.has(0xc0000082)) s.msrs.set(0xc0000082, 0xffffffff81000000n);
    if (s.msrs.has(0x174)) s.msrs.set(0x174, 0x10n);
    s.xsave[160] = 0x5a;                   // XMM0 byte 0
    s.xsave[512] = (s.xsave[512] ?? 0) | 2;                    // XSTATE_BV: SSE
    await vm.vp.setState(s);
    const back = await vm.vp.getState();
    if (s.msrs.has(0xc0000082)) assert.equal(back.msrs.get(0xc0000082), 0xffffffff81000000n);
    if (s.msrs.has(0x174)) assert.equal(back.msrs.get(0x174), 0x10n);
    assert.equal(back.xsave[160], 0x5a);
  } finally { vm.dispose(); }
});

test('shutdown_tripleFault_reportsShutdown', async (t) => {
  // DEVNOTE: KVM on these (emulating) hosts takes ~10 s to report this triple fault; a plain C
  // program driving /dev/kvm sees the same delay, so it is the kernel's, not ours.
  const vm = await guest(t, `
    lidt zero_idt
    ud2
  zero_idt: .word 0
    .long 0`);
  if (vm === null) return;
  try {
    assert.deepEqual(await vm.vp.run(), { kind: 'shutdown' });
  } finally { vm.dispose(); }
});

test('handlerThrows_vpStopsWithError', async (t) => {
  const vm = await guest(t, 'out %al, $0x99\n jmp .');
  if (vm === null) return;
  try {
    vm.handler.onOut = () => { throw new Error('device exploded'); };
    const r = await vm.vp.run();
    assert.equal(r.kind, 'error');
    assert.match(r.kind === 'error' ? r.message : '', /device exploded/);
  } finally { vm.dispose(); }
});

test('msi_toLapic_deliversVectorToRealModeGuest', async (t) => {
  // FS is set to base 0xFEE00000 through setState (real mode with a big segment base).
  const vm = await guest(t, `
    movw $isr, (0x40*4)
    movw $0, (0x40*4+2)
    mov %fs:0xf0, %eax
    or $0x1ff, %eax          # SVR: APIC software enable, spurious vector 0xff
    mov %eax, %fs:0xf0
    mov $1, %al
    out %al, $0x80           # ready
    sti
  1: hlt
    jmp 1b
  isr:
    mov $0x77, %al
    out %al, $0x81
    ${DONE}`);
  if (vm === null) return;
  try {
    const s = await vm.vp.getState();
    s.sregs.fs = { ...s.sregs.fs, base: 0xfee00000n };
    await vm.vp.setState(s);
    vm.handler.onOut = (port) => { if (port === 0x80) setTimeout(() => { vm.partition.signalMsi(0xfee00000n, 0x40); }, 20); };
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    assert.ok(vm.handler.events.some((e) => e.e === 'out' && e.port === 0x81 && e.value === 0x77), JSON.stringify(vm.handler.events));
  } finally { vm.dispose(); }
});

test('perf_pioExitRoundTrip', async (t) => {
  const N = 20000;
  const vm = await guest(t, `
    mov $${N}, %ecx
  1: out %al, $0x80
    loop 1b
    ${DONE}`);
  if (vm === null) return;
  try {
    vm.handler.record = false;
    const t0 = performance.now();
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    const us = ((performance.now() - t0) * 1000) / N;
    assert.equal(vm.handler.outCount, N + 1);
    t.diagnostic(`PIO exit round trip: ${us.toFixed(2)} us/exit over ${N} exits`);
  } finally { vm.dispose(); }
});

test('setIrqLine_picIrq3_deliversToRealModeGuest', async (t) => {
  // KVM resets the BSP's LVT0 to ExtINT, so the in-kernel 8259 reaches the CPU directly.
  const vm = await guest(t, `
    movw $isr, (0x23*4)
    movw $0, (0x23*4+2)
    mov $0x11, %al
    out %al, $0x20           # ICW1: edge, cascade, ICW4 needed
    mov $0x20, %al
    out %al, $0x21           # ICW2: vector base 0x20
    mov $0x04, %al
    out %al, $0x21           # ICW3
    mov $0x01, %al
    out %al, $0x21           # ICW4: 8086 mode
    mov $0xf7, %al
    out %al, $0x21           # OCW1: unmask IRQ3 only
    mov $1, %al
    out %al, $0x80           # ready
    sti
  1: hlt
    jmp 1b
  isr:
    mov $0x33, %al
    out %al, $0x81
    ${DONE}`);
  if (vm === null) return;
  try {
    vm.handler.onOut = (port) => {
      if (port === 0x80) setTimeout(() => { vm.partition.setIrqLine(3, true); vm.partition.setIrqLine(3, false); }, 20);
    };
    assert.deepEqual(await vm.vp.run(), { kind: 'stopped' });
    assert.ok(vm.handler.events.some((e) => e.e === 'out' && e.port === 0x81 && e.value === 0x33), JSON.stringify(vm.handler.events));
    assert.ok(!vm.handler.events.some((e) => e.e === 'out' && (e.port === 0x20 || e.port === 0x21)), 'PIC ports are in-kernel');
  } finally { vm.dispose(); }
});

test('twoVps_runConcurrently_exitsCarryTheirVpIndex', async (t) => {
  const b = kvm(t);
  if (b === null) return;
  const code = assemble16(`
    mov $100, %cx
  1: out %ax, $0x10
    loop 1b
    out %al, $${DONE_PORT}
    jmp .`);
  if (code === null) { t.skip('GNU as/ld not installed'); return; }
  const partition = await b.createPartition({ ...TEST_CONFIG, vpCount: 2, cpuid: b.supportedCpuid() });
  const ram = new MemoryBlock(0x10000, 'ram');
  try {
    partition.mapMemory(gpa(0), ram, true);
    partition.memory.write(CODE_BASE, code);
    const seen: number[][] = [[], []];
    partition.setExitHandler({
      pioRead: () => 0,
      pioWrite: (vp, port, _size, value) => {
        if (port === 0x10) seen[vp]!.push(value);
        if (port === DONE_PORT) partition.vps[vp]!.requestStop();
      },
      mmioRead: () => undefined, mmioWrite: () => undefined,
      msrRead: () => null, msrWrite: () => false, hypercall: () => 0n,
    });
    for (const vp of partition.vps) {
      const s = realModeState(await vp.getState());
      s.regs.rax = BigInt(0xa0 + vp.index);
      s.halted = false;           // the AP waits for INIT/SIPI until made runnable
      await vp.setState(s);
    }
    const results = await Promise.all(partition.vps.map((vp) => vp.run()));
    assert.deepEqual(results, [{ kind: 'stopped' }, { kind: 'stopped' }]);
    assert.deepEqual(seen[0], new Array<number>(100).fill(0xa0));
    assert.deepEqual(seen[1], new Array<number>(100).fill(0xa1));
  } finally { partition.dispose(); }
});

test('dispose_whileRunning_resolvesRunAndRejectsLaterCalls', async (t) => {
  const vm = await guest(t, 'spin: jmp spin');
  if (vm === null) return;
  const p = vm.vp.run();
  await new Promise((r) => setTimeout(r, 20));
  vm.dispose();
  assert.deepEqual(await p, { kind: 'stopped' });
  await assert.rejects(vm.vp.getState(), /disposed/);
  assert.throws(() => vm.partition.mapMemory(gpa(0x20000), new MemoryBlock(0x1000, 'late'), true), /disposed/);
  vm.dispose();       // idempotent
});

test('createPartition_rejectsBadConfig', async (t) => {
  const b = kvm(t);
  if (b === null) return;
  await assert.rejects(b.createPartition({ ...TEST_CONFIG, hypercallPort: 0x100 }), /8-bit port/);
  await assert.rejects(b.createPartition({ ...TEST_CONFIG, vpCount: 0 }), /vpCount/);
  await assert.rejects(b.createPartition({ ...TEST_CONFIG, interceptMsrs: [{ first: 10, last: 1 }] }), /bad MSR range/);
});

test('mapMemory_overlapOrUnaligned_rejected', async (t) => {
  const vm = await guest(t, 'jmp .');
  if (vm === null) return;
  try {
    assert.throws(() => vm.partition.mapMemory(gpa(0x8000), new MemoryBlock(0x1000, 'overlap'), true), /overlaps/);
    assert.throws(() => vm.partition.mapMemory(gpa(0x20800), new MemoryBlock(0x1000, 'odd'), true), /not page aligned/);
  } finally { vm.dispose(); }
});
