/**
 * `npm run bench:cpu`: one CPU-bound freestanding guest (bench/guests/cpu-bench.c: an
 * interpreter, quicksort, a hash table, CRC-32 and REP string operations, in long mode with
 * paging) on tshv's emu backend and on QEMU TCG (`-accel tcg`), in one run.
 *
 * The guest is compiled here with the machine's gcc (the test guests' flags and runtime:
 * tests/guests/src/common/start64.S, lib.c, idt.c, link64.ld) and placed by
 * src/loader/flat.ts in long64 mode on tshv; QEMU runs the same flat image entered in the same
 * state through the boot ROM of tests/diff/qemu.ts. Both print "checksum: ..." on COM1 and end
 * by writing 0x31 to port 0xF4 (tshv's test device; QEMU's isa-debug-exit). The checksums
 * must match, or the benchmark fails.
 *
 * Times:
 *   - tshv: wall time of Vm.run() (from the first guest instruction to the test exit), the full
 *     stack (Vm, VID, serial and test device) on the emu backend.
 *   - QEMU: wall time from spawning qemu-system-x86_64 to its exit, minus the same for a guest
 *     that exits at once (QEMU's own start-up and shutdown, measured in the same run; the
 *     smaller of three runs of each).
 *   - instructions: emu's retired-instruction counter (Cpu.instret; a REP string instruction
 *     counts its iterations). QEMU offers no such count without TCG plugins, so MIPS is emu's.
 * `-- --json` prints {"tshv_s","qemu_tcg_s","ratio","tshv_mips"} (ratio = tshv_s / qemu_tcg_s);
 * `-- --rounds N` sets the guest's work (default 1500: about 1.1 s of QEMU TCG on the development host). Where QEMU or gcc is missing it says so
 * and exits 0 without figures.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, Partition } from '../src/hv/backends/backend.js';
import { createEmuBackend, type EmuPartition } from '../src/hv/backends/emu/index.js';
import { loadFlatImage } from '../src/loader/flat.js';
import { Vm } from '../src/vmwp/vm.js';
import { qemuAvailable, startQemu } from '../tests/diff/qemu.js';
import { arg } from './args.js';

const LOAD_GPA = 0x100000;
const EXIT_CODE = 0x31;

/** The repository root (this file runs from <root>/dist/bench/ or <outDir>/bench/). */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let k = 0; k < 5; k++) {
    try { readFileSync(join(d, 'tests', 'guests', 'src', 'common', 'start64.S')); return d; } catch { d = resolve(d, '..'); }
  }
  return process.cwd();
}

const CFLAGS = [
  '-ffreestanding', '-nostdlib', '-fno-builtin', '-fno-pic', '-fno-pie', '-fno-stack-protector',
  '-fno-asynchronous-unwind-tables', '-fno-unwind-tables', '-fcf-protection=none',
  '-fno-tree-loop-distribute-patterns', '-mgeneral-regs-only', '-O2', '-std=gnu11', '-m64', '-mno-red-zone',
  '-Wall', '-Wextra', '-Werror',
];

function tool(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error?.message ?? ''}${r.stderr}`);
}

/** Compile the benchmark guest (or, with `trivial`, a guest that exits at once). */
export function buildBenchGuest(rounds: number, trivial = false): Uint8Array {
  const root = repoRoot();
  const common = join(root, 'tests', 'guests', 'src');
  const dir = mkdtempSync(join(tmpdir(), 'bench-cpu-'));
  try {
    const srcs = [join(common, 'common', 'start64.S'), join(common, 'common', 'lib.c'), join(common, 'common', 'idt.c'), join(root, 'bench', 'guests', 'cpu-bench.c')];
    const objs: string[] = [];
    for (const [k, s] of srcs.entries()) {
      const o = join(dir, `${k}.o`);
      tool('gcc', [...CFLAGS, `-DROUNDS=${rounds}`, ...(trivial ? ['-DTRIVIAL'] : []), '-I', common, '-c', s, '-o', o]);
      objs.push(o);
    }
    const elf = join(dir, 'g.elf'), bin = join(dir, 'g.bin');
    tool('ld', ['-m', 'elf_x86_64', '-nostdlib', '-z', 'noexecstack', '--no-warn-rwx-segments', '-T', join(common, 'common', 'link64.ld'), '-o', elf, ...objs]);
    tool('objcopy', ['-O', 'binary', elf, bin]);
    return new Uint8Array(readFileSync(bin));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `cpuSeconds`: the process's CPU time over the run (a steadier figure than wall time on a shared host). */
export interface EmuResult { seconds: number; cpuSeconds: number; instructions: number; serial: string; exit: string }

export async function runOnEmu(image: Uint8Array): Promise<EmuResult> {
  const inner = createEmuBackend();
  let partition: Partition | null = null;
  // Wrap the backend only to keep hold of the partition (for the instruction counter).
  const backend: Backend = Object.create(inner, {
    createPartition: { value: async (cfg: Parameters<Backend['createPartition']>[0]) => { partition = await inner.createPartition(cfg); return partition; } },
  }) as Backend;
  const chunks: number[] = [];
  const vm = await Vm.create({
    backend, memoryBytes: 16 << 20, vpCount: 1, resetAction: 'poweroff', testDevice: true,
    serialOut: (bytes) => { for (const b of bytes) chunks.push(b); },
  });
  try {
    const base = await vm.getVpState(0);
    await vm.setVpState(0, loadFlatImage(vm.memory, image, { mode: 'long64', loadGpa: LOAD_GPA, base }));
    const t0 = performance.now(), c0 = process.cpuUsage();
    const exit = await vm.run({ timeoutMs: 600_000 });
    const seconds = (performance.now() - t0) / 1000;
    const c1 = process.cpuUsage(c0);
    const cpuSeconds = (c1.user + c1.system) / 1e6;
    const p = partition as EmuPartition | null;
    const instructions = p === null ? 0 : p.vps.reduce((s, vp) => s + vp.cpu.instret, 0);
    const ex = exit.kind === 'testExit' ? `testExit 0x${exit.code.toString(16)}` : exit.kind;
    return { seconds, cpuSeconds, instructions, serial: Buffer.from(chunks).toString('latin1'), exit: ex };
  } finally {
    vm.dispose();
  }
}

export interface QemuResult { seconds: number; serial: string; status: number | string }

export async function runOnQemu(image: Uint8Array): Promise<QemuResult> {
  const q = await startQemu({ image, loadGpa: LOAD_GPA, entryGpa: LOAD_GPA });
  const timer = setTimeout(() => q.dispose(), 600_000);
  try {
    const status = await q.exited;
    return { seconds: (performance.now() - q.spawnedAt) / 1000, serial: q.serial(), status };
  } finally {
    clearTimeout(timer);
    q.dispose();
  }
}

function checksumOf(serial: string): string | null {
  return /checksum: ([0-9a-f]{16})/.exec(serial)?.[1] ?? null;
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const rounds = Number(arg('--rounds') ?? 1500);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100000) throw new Error('--rounds must be a positive integer');
  const q = qemuAvailable();
  const gcc = spawnSync('gcc', ['--version']);
  const skip = !q.ok ? q.reason : gcc.error !== undefined || gcc.status !== 0 ? 'gcc is not available' : null;
  if (skip !== null) {
    process.stdout.write(json ? JSON.stringify({ skipped: skip }) + '\n' : `bench:cpu skipped: ${skip}\n`);
    return;
  }
  const image = buildBenchGuest(rounds);
  const trivial = buildBenchGuest(rounds, true);
  const wantStatus = (EXIT_CODE << 1) | 1;

  // QEMU: the smaller of three runs of each.
  let qemuFull = Infinity, qemuStart = Infinity, qemuSerial = '';
  for (let k = 0; k < 3; k++) {
    const t = await runOnQemu(trivial);
    if (t.status !== wantStatus) throw new Error(`qemu (trivial guest) ended with ${String(t.status)}, expected ${wantStatus}`);
    qemuStart = Math.min(qemuStart, t.seconds);
    const r = await runOnQemu(image);
    if (r.status !== wantStatus) throw new Error(`qemu ended with ${String(r.status)}, expected ${wantStatus}; serial: ${r.serial}`);
    qemuFull = Math.min(qemuFull, r.seconds);
    qemuSerial = r.serial;
  }
  const qemuS = Math.max(qemuFull - qemuStart, 1e-3);

  const emu = await runOnEmu(image);
  if (emu.exit !== `testExit 0x${EXIT_CODE.toString(16)}`) throw new Error(`emu ended with ${emu.exit}; serial: ${emu.serial}`);
  const ce = checksumOf(emu.serial), cq = checksumOf(qemuSerial);
  if (ce === null || cq === null || ce !== cq) throw new Error(`checksums differ: emu ${String(ce)} qemu ${String(cq)}`);

  const ratio = emu.seconds / qemuS;
  const mips = emu.instructions / emu.seconds / 1e6;
  if (json) {
    process.stdout.write(JSON.stringify({ tshv_s: +emu.seconds.toFixed(3), qemu_tcg_s: +qemuS.toFixed(3), ratio: +ratio.toFixed(2), tshv_mips: +mips.toFixed(1) }) + '\n');
    return;
  }
  process.stdout.write([
    `bench:cpu  guest bench/guests/cpu-bench.c, ${rounds} rounds, checksum ${ce} (same on both)`,
    `  tshv emu:  ${emu.seconds.toFixed(3)} s (${emu.cpuSeconds.toFixed(3)} s CPU), ${(emu.instructions / 1e6).toFixed(1)} M guest instructions, ${mips.toFixed(1)} MIPS`,
    `  QEMU TCG:  ${qemuS.toFixed(3)} s (${qemuFull.toFixed(3)} s process - ${qemuStart.toFixed(3)} s start-up/shutdown; ${q.ok ? q.version : ''})`,
    `  ratio tshv/QEMU: ${ratio.toFixed(2)} (target: at most 10)`,
    '',
  ].join('\n'));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => { process.stderr.write(`bench:cpu failed: ${e instanceof Error ? e.message : String(e)}\n`); process.exitCode = 1; });
}
