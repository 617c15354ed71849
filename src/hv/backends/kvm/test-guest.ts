/**
 * Test support for the KVM backend's guest tests: assemble a tiny 16-bit guest with GNU as/ld,
 * boot it in real mode at 0x1000 on VP 0 of a fresh partition, and record its exits with a
 * mock ExitHandler. Used only by *.test.ts in this folder.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, ExitHandler, HypercallRegs, Partition, PartitionConfig, VirtualProcessor } from '../backend.js';
import { MemoryBlock, gpa } from '../../../guestmem/guestmem.js';
import type { VpState } from '../state.js';

export const CODE_BASE = 0x1000;
/** A port write here makes the mock handler stop the VP ("test done"). */
export const DONE_PORT = 0xf4;
export const HYPERCALL_PORT = 0xe9;

/** Assemble 16-bit code linked at CODE_BASE; null when binutils are missing. */
export function assemble16(source: string): Uint8Array | null {
  const dir = mkdtempSync(join(tmpdir(), 'tshv-kvm-asm-'));
  try {
    writeFileSync(join(dir, 'g.s'), `.code16\n.globl _start\n_start:\n${source}\n`);
    execFileSync('as', ['--32', '-o', join(dir, 'g.o'), join(dir, 'g.s')], { stdio: 'pipe' });
    execFileSync('ld', ['-m', 'elf_i386', `-Ttext=0x${CODE_BASE.toString(16)}`, '--oformat', 'binary', '-o', join(dir, 'g.bin'), join(dir, 'g.o')], { stdio: 'pipe' });
    return new Uint8Array(readFileSync(join(dir, 'g.bin')));
  } catch (e) {
    const err = e as { code?: string; stderr?: Buffer };
    if (err.code === 'ENOENT') return null;
    throw new Error(`assembler failed: ${err.stderr?.toString() ?? String(e)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export type Event =
  | { e: 'in'; port: number; size: number }
  | { e: 'out'; port: number; size: number; value: number }
  | { e: 'mmioRead'; gpa: number; len: number }
  | { e: 'mmioWrite'; gpa: number; data: number[] }
  | { e: 'msrRead'; msr: number }
  | { e: 'msrWrite'; msr: number; value: bigint }
  | { e: 'hypercall'; regs: HypercallRegs };

/** Records every exit; answers from the tables below; stops the VP on an OUT to DONE_PORT. */
export class MockHandler implements ExitHandler {
  readonly events: Event[] = [];
  outs: number[] = [];
  inValues = new Map<number, number[]>();
  mmioValue = 0x8877665544332211n;
  msrValues = new Map<number, bigint | null>();
  msrWriteOk = true;
  hypercallResult = 0n;
  record = true;
  outCount = 0;
  partition: Partition | null = null;
  onOut: ((port: number, value: number) => void) | null = null;

  pioRead(_vp: number, port: number, size: 1 | 2 | 4): number {
    if (this.record) this.events.push({ e: 'in', port, size });
    const q = this.inValues.get(port);
    return q !== undefined && q.length > 0 ? q.shift()! : 0xffffffff;
  }
  pioWrite(vp: number, port: number, size: 1 | 2 | 4, value: number): void {
    this.outCount++;
    if (this.record) { this.events.push({ e: 'out', port, size, value }); this.outs.push(value); }
    this.onOut?.(port, value);
    if (port === DONE_PORT) this.partition?.vps[vp]?.requestStop();
  }
  mmioRead(_vp: number, at: number, data: Uint8Array): void {
    this.events.push({ e: 'mmioRead', gpa: at, len: data.length });
    for (let i = 0; i < data.length; i++) data[i] = Number((this.mmioValue >> BigInt(8 * i)) & 0xffn);
  }
  mmioWrite(_vp: number, at: number, data: Uint8Array): void {
    this.events.push({ e: 'mmioWrite', gpa: at, data: [...data] });
  }
  msrRead(_vp: number, msr: number): bigint | null {
    this.events.push({ e: 'msrRead', msr });
    const v = this.msrValues.get(msr);
    return v === undefined ? null : v;
  }
  msrWrite(_vp: number, msr: number, value: bigint): boolean {
    this.events.push({ e: 'msrWrite', msr, value });
    return this.msrWriteOk;
  }
  hypercall(_vp: number, regs: HypercallRegs): bigint {
    this.events.push({ e: 'hypercall', regs });
    return this.hypercallResult;
  }
}

export interface TestVm {
  partition: Partition;
  vp: VirtualProcessor;
  ram: MemoryBlock;
  handler: MockHandler;
  dispose(): void;
}

export const TEST_CONFIG: PartitionConfig = {
  vpCount: 1,
  cpuid: [],
  interceptMsrs: [{ first: 0x40000000, last: 0x400001ff }],
  hypercallPort: HYPERCALL_PORT,
};

/** Real-mode flat-ish state: CS=DS=ES=SS=0 (base 0, limit 64K), IP at CODE_BASE, SP 0x8000. */
export function realModeState(s: VpState): VpState {
  const seg = (attributes: number): VpState['sregs']['cs'] => ({ selector: 0, base: 0n, limit: 0xffff, attributes });
  s.sregs.cs = seg(0x9b);
  for (const k of ['ds', 'es', 'fs', 'gs', 'ss'] as const) s.sregs[k] = seg(0x93);
  s.regs.rip = BigInt(CODE_BASE);
  s.regs.rsp = 0x8000n;
  s.regs.rflags = 2n;
  return s;
}

/** Create a 1-VP partition with 64 KiB of RAM at 0, load `code` at CODE_BASE, set real mode. */
export async function bootGuest(backend: Backend, code: Uint8Array, config: PartitionConfig = { ...TEST_CONFIG, cpuid: backend.supportedCpuid() }): Promise<TestVm> {
  const partition = await backend.createPartition(config);
  const handler = new MockHandler();
  handler.partition = partition;
  partition.setExitHandler(handler);
  const ram = new MemoryBlock(0x10000, 'ram');
  const mapping = partition.mapMemory(gpa(0), ram, true);
  partition.memory.write(CODE_BASE, code);
  const vp = partition.vps[0]!;
  await vp.setState(realModeState(await vp.getState()));
  return { partition, vp, ram, handler, dispose: () => { partition.dispose(); mapping.dispose(); } };
}
