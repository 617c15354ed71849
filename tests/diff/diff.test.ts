/**
 * Differential tests against QEMU TCG (runner.ts explains the method): generated single
 * instructions covering the integer ISA emu implements, with a fixed seed, compared
 * architecturally; a negative control that proves a difference is caught; QEMU's register
 * layout as its target description states it. Skipped with the reason when qemu-system-x86_64
 * or binutils is missing.
 *
 * TSHV_DIFF_PER_FORM=N sets the cases per generator and operand size (default 40, about 5700
 * cases); TSHV_DIFF_SEED the seed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TEST_JIT_THRESHOLD } from '../../src/hv/backends/emu/testing.js';
import { qemuAvailable, startQemu } from './qemu.js';
import {
  buildProgram, compareSnapshots, EmuMachine, formatMismatch, generateCases, GENERATOR_NAMES, runDifferential,
} from './runner.js';

const avail = qemuAvailable();
const skip = avail.ok ? false : avail.reason;
const PER_FORM = Number(process.env['TSHV_DIFF_PER_FORM'] ?? 40);
const SEED = Number(process.env['TSHV_DIFF_SEED'] ?? 0x7e57);

describe('differential: emu vs QEMU TCG', { skip }, () => {
  it('QEMU 7.2 gdbstub register layout (from its target description)', async () => {
    const q = await startQemu({ image: new Uint8Array([0xf4]), loadGpa: 0x100000, entryGpa: 0x100000, gdb: true });
    try {
      const layout = await q.gdb!.readRegisterLayout();
      const names = layout.map((r) => r.name);
      assert.deepEqual(names.slice(0, 24), ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
        'rip', 'eflags', 'cs', 'ss', 'ds', 'es', 'fs', 'gs']);
      assert.deepEqual(names.slice(24, 33), ['fs_base', 'gs_base', 'k_gs_base', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer']);
      // The ROM brought QEMU to the flat loader's long64 state.
      await q.gdb!.setBreakpoint(0x100000n);
      await q.gdb!.cont();
      const r = await q.gdb!.readRegisters();
      assert.equal(r.get('rip'), 0x100000n);
      assert.equal(r.get('rsp'), 0x10000n);
      assert.equal(r.get('eflags'), 2n);
      assert.equal(r.get('cs'), 0x18n);
      assert.equal(r.get('cr0'), 0x80000031n);
      assert.equal(r.get('cr3'), 0x2000n);
      assert.equal(r.get('cr4'), 0x20n);
      assert.equal(r.get('efer'), 0x500n);
    } finally {
      q.dispose();
    }
  });

  it('negative control: a difference in the input state is reported', async () => {
    const cases = generateCases(1, 1).filter((c) => c.asm.startsWith('adc ') || c.asm.startsWith('add ')).slice(0, 1);
    assert.equal(cases.length, 1);
    const c = cases[0]!;
    c.asm = 'adc rax, rbx';
    const prog = buildProgram([c]);
    const emu = await EmuMachine.create(prog.image);
    try {
      const win = new Uint8Array(1024);
      const a = await emu.runCase(c.regs, c.rflags & ~1n, prog.start[0]!, win);
      const b = await emu.runCase(c.regs, c.rflags | 1n, prog.start[0]!, win);
      const r = compareSnapshots(c, a, b);
      assert.ok(r.diffs.some((d) => d.startsWith('rax:')), r.diffs.join('\n'));
      const text = formatMismatch({ index: 0, case: c, bytes: prog.image.slice(0, 3), diffs: r.diffs, qemu: a, emu: b });
      assert.match(text, /adc\s+rax,\s*rbx/);   // objdump's reading of the bytes
      assert.match(text, /DIFF rax/);
    } finally {
      emu.dispose();
    }
  });

  it(`generated single instructions (${GENERATOR_NAMES.length} families x 4 sizes x ${PER_FORM}, seed ${SEED}) agree`, async () => {
    const cases = generateCases(SEED, PER_FORM);
    const lines: string[] = [];
    const r = await runDifferential(cases, { log: (s) => { if (lines.length < 40) lines.push(s); } });
    process.stdout.write(`# differential: ${r.cases} cases in ${(r.ms / 1000).toFixed(1)} s, ${r.mismatches.length} mismatches, ` +
      `${r.undefinedOnly} differ only in SDM-undefined flags or registers\n`);
    assert.equal(r.mismatches.length, 0, `${r.mismatches.length} mismatches:\n${lines.join('\n')}`);
  });

  it('... and again with the blocks hot and compiled by emu\'s JIT (jit.ts)', async () => {
    const cases = generateCases(SEED ^ 0x5a5a, 8);
    const lines: string[] = [];
    const r = await runDifferential(cases, { emuRuns: TEST_JIT_THRESHOLD + 3, log: (s) => { if (lines.length < 40) lines.push(s); } });
    process.stdout.write(`# differential (JIT): ${r.cases} cases in ${(r.ms / 1000).toFixed(1)} s, ${r.emuCompiledBlocks} blocks compiled, ${r.mismatches.length} mismatches\n`);
    assert.ok(r.emuCompiledBlocks >= r.cases / 2, `only ${r.emuCompiledBlocks} blocks were compiled for ${r.cases} cases`);
    assert.equal(r.mismatches.length, 0, `${r.mismatches.length} mismatches:\n${lines.join('\n')}`);
  });
});
