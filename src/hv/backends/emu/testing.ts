/**
 * Test support for the emu backend (used by *.test.ts only): assemble snippets with the system
 * GNU assembler, and build a small long-mode or real-mode machine around them.
 *
 * Layout of the long-mode test machine (identity mapped):
 *   0x500   GDT: 0x08 code64, 0x10 data, 0x1b user code64, 0x23 user data, 0x28 TSS (16 bytes)
 *   0x1000  PML4, 0x2000 PDPT, 0x3000 PD, 0x4000 PT (4 KiB pages for 0-2 MiB)
 *   PD[1]   2 MiB page at 2 MiB;  PDPT[3] 1 GiB page at 3 GiB (LAPIC and MMIO space)
 *   0x6000  IDT (256 x 16 bytes), 0x7000 TSS, stacks below 0x80000 (RSP0 0x70000, IST1 0x60000)
 *   0x100000 code (symbols from the linker), RAM 4 MiB
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gpa, MemoryBlock } from '../../../guestmem/guestmem.js';
import type { ExitHandler, HypercallRegs, VpStopReason } from '../backend.js';
import { zeroSegment, type VpState } from '../state.js';
import { createEmuBackend, type EmuPartition, type EmuVp } from './index.js';

export interface Assembled { bytes: Uint8Array; symbols: Map<string, number> }

/** Assemble and link `source` (GNU as, Intel syntax) at `base`; returns the flat binary and symbols. */
export function assemble(source: string, base: number, code: 16 | 32 | 64 = 64): Assembled {
  const dir = mkdtempSync(join(tmpdir(), 'emu-as-'));
  try {
    const s = join(dir, 't.s'), o = join(dir, 't.o'), elf = join(dir, 't.elf'), bin = join(dir, 't.bin');
    writeFileSync(s, `.intel_syntax noprefix\n.code${code}\n.text\n.globl _start\n_start:\n${source}\n`);
    execFileSync('as', ['--64', '-o', o, s]);
    execFileSync('ld', ['-m', 'elf_x86_64', '-N', '--no-warn-rwx-segments', '-Ttext', '0x' + base.toString(16), '-e', '_start', '-o', elf, o]);
    execFileSync('objcopy', ['-O', 'binary', elf, bin]);
    const symbols = new Map<string, number>();
    for (const line of execFileSync('nm', [elf], { encoding: 'utf8' }).split('\n')) {
      const m = /^([0-9a-f]+) \w (\S+)$/.exec(line.trim());
      if (m) symbols.set(m[2]!, parseInt(m[1]!, 16));
    }
    return { bytes: new Uint8Array(readFileSync(bin)), symbols };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** An ExitHandler that records everything and answers from overridable callbacks. */
export class MockExits implements ExitHandler {
  readonly pio: { port: number; size: number; value: number; write: boolean }[] = [];
  readonly mmio: { gpa: number; data: number[]; write: boolean }[] = [];
  readonly msrs: { msr: number; value: bigint | null; write: boolean }[] = [];
  readonly hypercalls: HypercallRegs[] = [];
  pioValue = 0x5a;
  mmioValue = 0x11;
  msrValue: bigint | null = 0x1234_5678_9abc_def0n;
  msrWriteOk = true;
  hypercallResult = 0x42n;
  pioRead(_vp: number, port: number, size: 1 | 2 | 4): number { this.pio.push({ port, size, value: this.pioValue, write: false }); return this.pioValue; }
  pioWrite(_vp: number, port: number, size: 1 | 2 | 4, value: number): void { this.pio.push({ port, size, value, write: true }); }
  mmioRead(_vp: number, at: number, data: Uint8Array): void { data.fill(this.mmioValue); this.mmio.push({ gpa: at, data: [...data], write: false }); }
  mmioWrite(_vp: number, at: number, data: Uint8Array): void { this.mmio.push({ gpa: at, data: [...data], write: true }); }
  msrRead(_vp: number, msr: number): bigint | null { this.msrs.push({ msr, value: this.msrValue, write: false }); return this.msrValue; }
  msrWrite(_vp: number, msr: number, value: bigint): boolean { this.msrs.push({ msr, value, write: true }); return this.msrWriteOk; }
  hypercall(_vp: number, regs: HypercallRegs): bigint { this.hypercalls.push(regs); return this.hypercallResult; }
}

export const CODE_BASE = 0x100000;
export const RAM_SIZE = 4 << 20;
export const HV_INTERCEPT = { first: 0x40000000, last: 0x400000ff };

export interface TestVm {
  partition: EmuPartition;
  vp: EmuVp;
  exits: MockExits;
  symbols: Map<string, number>;
  run(): Promise<VpStopReason>;
  state(): Promise<VpState>;
  sym(name: string): number;
}

function seg(selector: number, attributes: number, limit = 0xffffffff): VpState['sregs']['cs'] {
  return { selector, base: 0n, limit, attributes };
}

function testVm(partition: EmuPartition, vp: EmuVp, exits: MockExits, symbols: Map<string, number>): TestVm {
  return {
    partition, vp, exits, symbols,
    run: () => vp.run(),
    state: () => vp.getState(),
    sym: (name) => { const v = symbols.get(name); if (v === undefined) throw new Error(`no symbol ${name}`); return v; },
  };
}

/**
 * The compile threshold of test machines (longModeVm): lower than JIT_THRESHOLD, which is tuned
 * for a kernel boot, so that hot-versus-cold tests stay short. What is compiled does not depend on it.
 */
export const TEST_JIT_THRESHOLD = 40;

/** Build a long-mode machine with `source` at CODE_BASE; `idt` maps vectors to handler symbols (IST in high bits of the key: vector | ist << 8). */
export async function longModeVm(source: string, opts: { idt?: Map<number, string>; vpCount?: number; cpuid?: { function: number; index: number; eax: number; ebx: number; ecx: number; edx: number }[] } = {}): Promise<TestVm> {
  const backend = createEmuBackend();
  const partition = await backend.createPartition({
    vpCount: opts.vpCount ?? 1,
    cpuid: opts.cpuid ?? [...backend.supportedCpuid()],
    interceptMsrs: [HV_INTERCEPT],
    hypercallPort: 0x9e,
  }) as EmuPartition;
  const ram = new MemoryBlock(RAM_SIZE, 'ram');
  partition.mapMemory(gpa(0), ram, true);
  const exits = new MockExits();
  partition.setExitHandler(exits);
  const mem = partition.memory;
  const { bytes, symbols } = assemble(source, CODE_BASE, 64);
  mem.write(CODE_BASE, bytes);
  // GDT
  const gdt = [0n, 0x00af9b000000ffffn, 0x00cf93000000ffffn, 0x00affb000000ffffn, 0x00cff3000000ffffn];
  gdt.forEach((d, k) => mem.writeU64(0x500 + k * 8, d));
  const tss = 0x7000, tssLimit = 0x67;
  mem.writeU64(0x500 + 5 * 8, BigInt(tssLimit) | (BigInt(tss & 0xffffff) << 16n) | (0x89n << 40n) | (BigInt(tss >>> 24) << 56n));
  mem.writeU64(0x500 + 6 * 8, 0n);
  mem.writeU64(tss + 4, 0x70000n);        // RSP0
  mem.writeU64(tss + 0x24, 0x60000n);     // IST1
  // Page tables
  mem.writeU64(0x1000, 0x2000n | 7n);
  mem.writeU64(0x2000, 0x3000n | 7n);
  mem.writeU64(0x2000 + 3 * 8, 0xc0000000n | 0x83n);
  mem.writeU64(0x3000, 0x4000n | 7n);
  mem.writeU64(0x3000 + 8, 0x200000n | 0x87n);
  for (let p = 0; p < 512; p++) mem.writeU64(0x4000 + p * 8, BigInt(p * 4096) | 3n);
  for (let p = CODE_BASE / 4096; p < 512; p++) mem.writeU64(0x4000 + p * 8, BigInt(p * 4096) | 7n); // user-accessible upper half
  // IDT
  for (const [key, name] of opts.idt ?? new Map<number, string>()) {
    const vec = key & 0xff, ist = key >> 8;
    const off = symbols.get(name);
    if (off === undefined) throw new Error(`no symbol ${name}`);
    const lo = BigInt(off & 0xffff) | (0x08n << 16n) | (BigInt(ist) << 32n) | (0x8en << 40n) | (BigInt(off >>> 16) << 48n);
    mem.writeU64(0x6000 + vec * 16, lo);
    mem.writeU64(0x6000 + vec * 16 + 8, 0n);
  }
  for (const v of partition.vps) v.cpu.jitThreshold = TEST_JIT_THRESHOLD;
  const vp = partition.vps[0]!;
  const st = await vp.getState();
  const data = seg(0x10, 0xc093);
  st.regs.rip = BigInt(CODE_BASE);
  st.regs.rsp = 0x80000n;
  st.regs.rflags = 2n;
  st.sregs.cs = seg(0x08, 0xa09b);
  st.sregs.ds = data; st.sregs.es = data; st.sregs.ss = data; st.sregs.fs = data; st.sregs.gs = data;
  st.sregs.tr = { selector: 0x28, base: BigInt(tss), limit: tssLimit, attributes: 0x8b };
  st.sregs.ldt = { ...zeroSegment(), attributes: 0x10000 };
  st.sregs.gdt = { base: 0x500n, limit: 7 * 8 - 1 };
  st.sregs.idt = { base: 0x6000n, limit: 256 * 16 - 1 };
  st.sregs.cr0 = 0x80010033n;   // PG WP NE ET MP PE
  st.sregs.cr3 = 0x1000n;
  st.sregs.cr4 = 0x6a0n;        // PAE PGE OSFXSR OSXMMEXCPT
  st.sregs.efer = 0xd01n;       // SCE LME LMA NXE
  await vp.setState(st);
  return testVm(partition, vp, exits, symbols);
}

/** A real-mode machine: `source` (.code16) loaded at 0x7c00, CS=0, stack at 0x7000. */
export async function realModeVm(source: string): Promise<TestVm> {
  const backend = createEmuBackend();
  const partition = await backend.createPartition({ vpCount: 1, cpuid: [...backend.supportedCpuid()], interceptMsrs: [HV_INTERCEPT], hypercallPort: 0x9e }) as EmuPartition;
  partition.mapMemory(gpa(0), new MemoryBlock(RAM_SIZE, 'ram'), true);
  const exits = new MockExits();
  partition.setExitHandler(exits);
  const { bytes, symbols } = assemble(source, 0x7c00, 16);
  partition.memory.write(0x7c00, bytes);
  const vp = partition.vps[0]!;
  const st = await vp.getState();
  const rs = (sel: number): VpState['sregs']['cs'] => ({ selector: sel, base: BigInt(sel * 16), limit: 0xffff, attributes: 0x93 });
  st.sregs.cs = { ...rs(0), attributes: 0x9b };
  st.sregs.ds = rs(0); st.sregs.es = rs(0); st.sregs.ss = rs(0); st.sregs.fs = rs(0); st.sregs.gs = rs(0);
  st.sregs.idt = { base: 0n, limit: 0x3ff };
  st.sregs.cr0 = 0x10n;
  st.regs.rip = 0x7c00n;
  st.regs.rsp = 0x7000n;
  await vp.setState(st);
  return testVm(partition, vp, exits, symbols);
}

/** Assemble `source` into a static Linux executable, run it natively, return its stdout. */
export function runNative(source: string): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'emu-native-'));
  try {
    const s = join(dir, 't.s'), o = join(dir, 't.o'), exe = join(dir, 't');
    writeFileSync(s, `.intel_syntax noprefix\n.code64\n.text\n.globl _start\n_start:\n${source}\n`);
    execFileSync('as', ['--64', '-o', o, s]);
    execFileSync('ld', ['-m', 'elf_x86_64', '-static', '--no-warn-rwx-segments', '-o', exe, o]);
    // Debug aid: EMU_KEEP_NATIVE=/path keeps the generated source for a failing differential run.
    if (process.env['EMU_KEEP_NATIVE'] !== undefined) writeFileSync(process.env['EMU_KEEP_NATIVE'], source);
    return new Uint8Array(execFileSync(exe, [], { maxBuffer: 64 << 20 }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
