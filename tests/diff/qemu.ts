/**
 * Drives qemu-system-x86_64 (TCG) as the reference processor of the differential tests and of
 * bench/cpu.ts.
 *
 * Getting QEMU into the state src/loader/flat.ts hands over in `long64` mode, with nothing but
 * the command line: QEMU's `-bios` is replaced by a 64 KiB boot ROM assembled here (bootRom()),
 * and two `-device loader` blobs put the flat image at its load GPA and the loader's boot
 * structures (GDT, TSS, page tables: the bytes flat.ts writes, taken from a run of
 * loadFlatImage into scratch memory) at 0x1000-0x7FFF. From the reset vector the ROM does
 * what a loader would: LGDT, CR4.PAE, CR3, EFER.LME, CR0.PE|PG, a far jump to the 64-bit code
 * segment 0x18, data segments 0x10, every general register 0, RFLAGS 0x2, RSP 0x10000, then
 * an indirect jump to the entry. At the entry both processors hold the same architectural
 * registers (TR differs: the GDT's TSS descriptor is already busy, so the ROM cannot LTR it;
 * nothing compared here depends on TR). The ROM occupies the top 64 KiB below 4 GiB, where
 * the test guests' ROM would be: guests that read their ROM see other bytes under QEMU.
 *
 * QEMU runs with `-nodefaults -display none`, `-accel tcg`, `-M pc`, loopback-only gdbstub,
 * COM1 when asked (serial to a pipe), and isa-debug-exit at 0xF4 (a write of V ends QEMU
 * with status (V << 1) | 1, so a guest's test exit works on both). Every QEMU started here is
 * killed on dispose() and on process exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gpa, GuestMemory, MemoryBlock } from '../../src/guestmem/guestmem.js';
import { FLAT_LAYOUT, loadFlatImage } from '../../src/loader/flat.js';
import { GdbClient } from './gdb-remote.js';

export const QEMU = process.env['TSHV_QEMU'] ?? 'qemu-system-x86_64';
/**
 * The CPU model: qemu64 plus POPCNT (emu advertises it), the vendor string emu reports and no
 * hypervisor bit (emu's leaf 1 has none). No ABM/BMI, so F3 0F BC/BD stay BSF/BSR as on emu.
 */
export const QEMU_CPU = 'qemu64,+popcnt,-hypervisor,vendor=TshvEmulated';

export function qemuAvailable(): { ok: true; version: string } | { ok: false; reason: string } {
  const r = spawnSync(QEMU, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined || r.status !== 0) return { ok: false, reason: `${QEMU} is not available (${r.error?.message ?? `exit ${String(r.status)}`}): apt-get install qemu-system-x86` };
  const as = spawnSync('as', ['--version'], { encoding: 'utf8' });
  if (as.error !== undefined || as.status !== 0) return { ok: false, reason: 'GNU as (binutils) is not available' };
  return { ok: true, version: r.stdout.split('\n', 1)[0] ?? '' };
}

/** Assemble GNU-as source (AT&T or with `.intel_syntax`) and link it at `base`; flat bytes and symbols. */
export function assembleFlat(source: string, base: number): { bytes: Uint8Array; symbols: Map<string, number> } {
  const dir = mkdtempSync(join(tmpdir(), 'qdiff-as-'));
  try {
    const s = join(dir, 't.s'), o = join(dir, 't.o'), elf = join(dir, 't.elf'), bin = join(dir, 't.bin');
    writeFileSync(s, source);
    const run = (tool: string, args: string[]): string => {
      const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
      if (r.error !== undefined || r.status !== 0) throw new Error(`${tool} failed: ${r.error?.message ?? ''}${r.stderr}`);
      return r.stdout;
    };
    run('as', ['--64', '-o', o, s]);
    run('ld', ['-m', 'elf_x86_64', '-N', '--no-warn-rwx-segments', '-Ttext', `0x${base.toString(16)}`, '-e', '0', '-o', elf, o]);
    run('objcopy', ['-O', 'binary', elf, bin]);
    const symbols = new Map<string, number>();
    for (const line of run('nm', [elf]).split('\n')) {
      const m = /^([0-9a-f]+) \w (\S+)$/.exec(line.trim());
      if (m) symbols.set(m[2]!, parseInt(m[1]!, 16));
    }
    return { bytes: new Uint8Array(readFileSync(bin)), symbols };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const ROM_SIZE = 0x10000;
export const ROM_BASE = 0xffff0000;

/**
 * The 64 KiB boot ROM that brings QEMU from reset to the flat loader's long64 state at `entry`,
 * with IDTR = `idt` (the loader's is limit 0).
 */
export function bootRom(entry: number, idt: { base: number; limit: number } = { base: 0, limit: 0 }): Uint8Array {
  const gdtLimit = FLAT_LAYOUT.gdtEntries * 8 - 1;
  const src = `
    .code16
    .text
start16:
    cli
    cld
    lgdtl %cs:gdtptr
    movl $0x20, %eax          /* CR4.PAE */
    movl %eax, %cr4
    movl $${FLAT_LAYOUT.pml4}, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx    /* IA32_EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl $0x80000031, %eax    /* CR0: PG NE ET PE */
    movl %eax, %cr0
    ljmpl $0x18, $(${ROM_BASE} + start64)
    .code64
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r11d, %r11d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
    xorl %r14d, %r14d
    xorl %r15d, %r15d
    lidt idtptr(%rip)
    movl $(${ROM_BASE} + flags), %esp
    popfq                     /* RFLAGS = 2, after the XORs */
    movl $${FLAT_LAYOUT.stackTop}, %esp
    jmp *entry(%rip)
    .balign 8
flags: .quad 2
entry: .quad 0x${entry.toString(16)}
idtptr: .word ${idt.limit}
    .quad ${idt.base}
gdtptr: .word ${gdtLimit}
    .long ${FLAT_LAYOUT.gdt}
    .org 0xfff0
    .code16
    ljmp $0xf000, $start16
    .org 0x10000
`;
  // popfq above runs with RSP in the ROM: reading is all it does there.
  const { bytes } = assembleFlat(src, 0);
  if (bytes.length !== ROM_SIZE) throw new Error(`boot ROM is ${bytes.length} bytes`);
  return bytes;
}

/** The loader's boot structures (GPA 0x1000 up to the stack) exactly as flat.ts writes them. */
export function bootStructures(): Uint8Array {
  const mem = new GuestMemory();
  mem.map(gpa(0), new MemoryBlock(0x200000, 'scratch'), true);
  loadFlatImage(mem, new Uint8Array([0xf4]), { mode: 'long64', loadGpa: 0x100000 });
  return mem.read(FLAT_LAYOUT.gdt, FLAT_LAYOUT.stackBottom - FLAT_LAYOUT.gdt);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

export interface QemuOptions {
  image: Uint8Array;
  loadGpa: number;
  entryGpa: number;
  memoryMiB?: number;
  /** Start stopped with a gdbstub and connect a client. */
  gdb?: boolean;
  /** Extra arguments (e.g. -icount). */
  extraArgs?: string[];
  timeoutMs?: number;
  /** IDTR at the entry (default: base 0, limit 0, as the flat loader hands over). */
  idt?: { base: number; limit: number };
}

export interface QemuRun {
  proc: ChildProcess;
  gdb: GdbClient | null;
  /** Bytes COM1 sent so far. */
  serial(): string;
  /** Resolves with the exit status (or signal name) once QEMU is gone. */
  exited: Promise<number | string>;
  /** performance.now() when the process was spawned. */
  spawnedAt: number;
  dispose(): void;
}

export async function startQemu(o: QemuOptions): Promise<QemuRun> {
  const dir = mkdtempSync(join(tmpdir(), 'qdiff-qemu-'));
  const img = join(dir, 'image.bin'), low = join(dir, 'low.bin'), rom = join(dir, 'rom.bin');
  writeFileSync(img, o.image);
  writeFileSync(low, bootStructures());
  writeFileSync(rom, bootRom(o.entryGpa, o.idt));
  const port = o.gdb === true ? await freePort() : 0;
  const args = [
    '-accel', 'tcg', '-M', 'pc', '-nodefaults', '-display', 'none', '-no-reboot', '-monitor', 'none',
    '-cpu', QEMU_CPU, '-m', String(o.memoryMiB ?? 16), '-smp', '1',
    '-bios', rom,
    '-device', `loader,file=${low},addr=0x${FLAT_LAYOUT.gdt.toString(16)},force-raw=on`,
    '-device', `loader,file=${img},addr=0x${o.loadGpa.toString(16)},force-raw=on`,
    '-serial', 'stdio',
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
    ...(o.gdb === true ? ['-S', '-gdb', `tcp:127.0.0.1:${port}`] : []),
    ...(o.extraArgs ?? []),
  ];
  const spawnedAt = performance.now();
  const proc = spawn(QEMU, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(proc);
  const out: Buffer[] = [];
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => out.push(d));
  proc.stderr?.on('data', (d: Buffer) => { if (err.length < 8192) err += d.toString('utf8'); });
  const exited = new Promise<number | string>((resolve) => {
    proc.once('exit', (code, sig) => { live.delete(proc); rmSync(dir, { recursive: true, force: true }); resolve(code ?? sig ?? 'unknown'); });
    proc.once('error', (e) => { live.delete(proc); resolve(`spawn error: ${e.message}`); });
  });
  let gdb: GdbClient | null = null;
  const dispose = (): void => { gdb?.close(); if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); };
  if (o.gdb === true) {
    const deadline = Date.now() + (o.timeoutMs ?? 10_000);
    let last: unknown = null;
    let gone = false;
    void exited.then(() => { gone = true; });
    while (gdb === null) {
      if (gone) throw new Error(`qemu exited before its gdbstub answered: ${err.trim()}`);
      if (Date.now() > deadline) { dispose(); throw new Error(`qemu gdbstub did not answer: ${String(last)} ${err.trim()}`); }
      try {
        gdb = await GdbClient.connect('127.0.0.1', port, { timeoutMs: o.timeoutMs ?? 10_000 });
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
  return {
    proc, gdb, exited, spawnedAt, dispose,
    serial: () => Buffer.concat(out).toString('latin1'),
  };
}
