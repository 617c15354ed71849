/**
 * `npm run bench:exits`: the cost of one port-I/O intercept through the whole tshv stack
 * (backend -> hypervisor -> winhv -> VID dispatcher -> test device and back), side by side with
 * a native C VMM doing the same loop on /dev/kvm in one thread (bench/anchors/kvm-pio-loop.c,
 * compiled with the machine's gcc when the benchmark runs).
 *
 * The guest: 16-bit real mode, N times `OUT 0xF0, AL` (the test device's scratch register),
 * then a power-off through the i8042. `-- --json` prints {"tshv_us_per_exit", "native_us_per_exit",
 * "ratio", "exits"}. `-- --exits N` sets N (default 20000).
 * Where /dev/kvm is unusable it says so and exits 0 without figures.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadFlatImage } from '../src/loader/flat.js';
import { Vm } from '../src/vmwp/vm.js';
import { probeHost } from '../src/vmwp/host.js';
import { arg } from './args.js';

const json = process.argv.includes('--json');
const n = Number(arg('--exits') ?? 20000);
if (!Number.isInteger(n) || n < 1 || n > 0x7fffffff) throw new Error('--exits must be a positive integer');

/** mov ecx, n; l: out 0xF0, al; dec ecx; jnz l; mov al, 0xFE; out 0x64, al; jmp $ */
function guest(count: number): Uint8Array {
  const code = [0x66, 0xb9, 0, 0, 0, 0, 0xe6, 0xf0, 0x66, 0x49, 0x75, 0xfa, 0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];
  const b = Uint8Array.from(code);
  new DataView(b.buffer).setUint32(2, count, true);
  return b;
}

async function tshvRun(count: number): Promise<number> {
  const vm = await Vm.create({ backend: 'kvm', memoryBytes: 16 * 1024 * 1024, vpCount: 1, resetAction: 'poweroff', testDevice: true });
  try {
    const base = await vm.getVpState(0);
    await vm.setVpState(0, loadFlatImage(vm.memory, guest(count), { mode: 'real', loadGpa: 0x10000, base }));
    const t0 = process.hrtime.bigint();
    const exit = await vm.run({ timeoutMs: 600000 });
    const t1 = process.hrtime.bigint();
    if (exit.kind !== 'poweroff') throw new Error(`guest ended with ${JSON.stringify(exit)}`);
    return Number(t1 - t0) / 1e9;
  } finally {
    vm.dispose();
  }
}

function nativeRun(count: number): number {
  const dir = mkdtempSync(join(tmpdir(), 'tshv-bench-'));
  try {
    const src = fileURLToPath(new URL('../../bench/anchors/kvm-pio-loop.c', import.meta.url));
    const exe = join(dir, 'kvm-pio-loop');
    execFileSync('gcc', ['-O2', '-o', exe, src]);
    const out = execFileSync(exe, [String(count)], { encoding: 'utf8' });
    const m = /exits=(\d+) seconds=([\d.]+)/.exec(out);
    if (!m || Number(m[1]) !== count) throw new Error(`native anchor printed ${out}`);
    return Number(m[2]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const probe = probeHost();
if (!probe.kvm.usable) {
  process.stdout.write(json ? JSON.stringify({ skipped: `kvm unusable: ${probe.kvm.reason}` }) + '\n' : `bench:exits skipped: /dev/kvm unusable (${probe.kvm.reason})\n`);
  process.exit(0);
}
await tshvRun(1000);               // warm-up: JIT, worker thread start
const tshvS = await tshvRun(n);
const nativeS = nativeRun(n);
const r = {
  exits: n,
  tshv_us_per_exit: +(tshvS / n * 1e6).toFixed(2),
  native_us_per_exit: +(nativeS / n * 1e6).toFixed(2),
  ratio: +(tshvS / nativeS).toFixed(2),
  host_kvm: probe.extension ?? 'software (no vmx/svm)',
};
if (json) process.stdout.write(JSON.stringify(r) + '\n');
else {
  process.stdout.write(`port-I/O exits: ${n} (KVM: ${r.host_kvm})\n`);
  process.stdout.write(`  tshv (kvm backend, full stack): ${r.tshv_us_per_exit} us/exit\n`);
  process.stdout.write(`  native C on /dev/kvm (anchor):   ${r.native_us_per_exit} us/exit\n`);
  process.stdout.write(`  ratio: ${r.ratio}\n`);
}
