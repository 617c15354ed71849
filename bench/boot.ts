/**
 * `npm run bench:boot`: boot Linux to /init and back to power-off on tshv's emu backend and on
 * QEMU TCG, in one run, with the same vmlinux, initramfs, command line, memory (256 MiB) and
 * number of virtual processors (`-- --cpus N`, default 1).
 *
 * The guest: the default image (Debian's 6.1 vmlinux and tshv's busybox initramfs, built on
 * first use, src/image). Its /init runs the command given as `tshv.exec=<base64>` on the kernel
 * command line (src/image/init.ts); here that command prints the guest's uptime from
 * /proc/uptime (`uptime <seconds>`), then /init prints TSHV-EXIT and powers off with
 * `poweroff -f`, which both platforms turn into the end of the VM (tshv: ACPI S5 through the
 * FADT's sleep control register, ADR 0012; QEMU microvm: its ACPI generic event device's sleep
 * control register, the same mechanism).
 *
 * tshv: through the path `tshv run` uses (Vm.create, bootLinux, Vm.run), in this process.
 * QEMU: `qemu-system-x86_64 -accel tcg -M microvm,... -m 256 -smp N -kernel <vmlinux> -initrd
 * <initrd> -append <cmdline> -nographic -no-reboot`, COM1 on its stdout (a pipe).
 *
 * Times (wall, host clock):
 *   - tshv: from Vm.create to the VM's power-off (creating the partition, loading the kernel,
 *     initrd and ACPI tables, booting, running the command, powering off). Reading the image
 *     files is done once beforehand and counted for neither.
 *   - QEMU: from spawning qemu-system-x86_64 to its exit (-no-reboot; the guest's power-off
 *     ends the process), so QEMU's own start-up is included.
 *   - uptime at /init: the guest's own /proc/uptime when the command runs (right after /init's
 *     module loading), i.e. guest time since the kernel started; the gap between it and the wall
 *     time is start-up, loading and power-off on the host side.
 * `-- --json` prints {"tshv_s","qemu_tcg_s","ratio","tshv_uptime_s","qemu_uptime_s","cpus","qemu_attempts"}
 * (ratio = tshv_s / qemu_tcg_s). Without QEMU it says so and exits 0.
 *
 * The command lines differ only in what each platform needs (vmwp/linux.ts assembleCmdline):
 *   - tshv adds emu's `tsc_early_khz=1000000 tsc=reliable lpj=4000000` (cmdlineHints('emu'): emu
 *     reports no TSC frequency in CPUID yet, its platform has no PIT or HPET to calibrate
 *     against, and its TSC counts host time, which the clocksource watchdog would otherwise
 *     compare with lagging jiffies);
 *     QEMU gets no hints (cmdlineHints('kvm') is empty): its microvm has a PIT that Linux
 *     calibrates the TSC against.
 *   - nothing else: both get the image's line, the console parameters, panic=-1, reboot=acpi, `quiet
 *     loglevel=1` and the same tshv.exec. QEMU microvm's auto-kernel-cmdline is turned off
 *     (it would append virtio-mmio device entries; there are no virtio devices here anyway).
 * QEMU's machine options (QEMU 7.2, docs/system/i386/microvm.rst): `acpi=on` (the stock kernel
 * then finds the hardware-reduced tables, its I/O APIC and the GED sleep registers it powers
 * off through), `pit=on` (the TSC calibration source; without a PIT and with TCG's CPU model
 * lacking CPUID 0x15/0x16 the kernel waits forever for jiffies), `rtc=on`, `pic=off`,
 * `isa-serial=on` (COM1), `auto-kernel-cmdline=off`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setLogLevel } from '../src/base/log.js';
import { resolveKernelAndInitrd, type ResolvedBoot } from '../src/image/build.js';
import { assembleCmdline, bootLinux, ExecOutputFilter } from '../src/vmwp/linux.js';
import { Vm } from '../src/vmwp/vm.js';
import { QEMU, qemuAvailable } from '../tests/diff/qemu.js';
import { arg } from './args.js';

/** What /init runs: the guest uptime in seconds, from the first field of /proc/uptime. */
export const UPTIME_COMMAND = 'read up idle < /proc/uptime; echo "uptime $up"';
export const MEMORY_MIB = 256;
export const QEMU_MACHINE = 'microvm,acpi=on,pit=on,pic=off,rtc=on,isa-serial=on,auto-kernel-cmdline=off';
const RUN_BUDGET_MS = 1_800_000;

export interface BootResult {
  /** Wall seconds from the start (Vm.create / spawn) to power-off. */
  seconds: number;
  /** Wall seconds to /init's banner (TSHV-READY). */
  readySeconds: number | undefined;
  /** The guest's /proc/uptime when the command ran. */
  uptime: number | undefined;
  /** How the run ended (tshv: the VmExit kind; QEMU: exit status). */
  end: string;
  status: number | undefined;
  tail: readonly string[];
}

/** Feed serial bytes to an ExecOutputFilter; record the banner time and the command's output. */
function watcher(t0: number): { push: (b: Uint8Array) => void; filter: ExecOutputFilter; output: () => string; readyAt: () => number | undefined } {
  let out = '';
  let readyAt: number | undefined;
  const filter = new ExecOutputFilter((b) => { if (out.length < 4096) out += Buffer.from(b).toString('latin1'); });
  return {
    filter,
    push: (b) => {
      filter.push(b);
      if (readyAt === undefined && filter.banner !== undefined) readyAt = (performance.now() - t0) / 1000;
    },
    output: () => out,
    readyAt: () => readyAt,
  };
}

function parseUptime(output: string): number | undefined {
  const m = /uptime (\d+(?:\.\d+)?)/.exec(output);
  return m !== null ? Number(m[1]) : undefined;
}

export async function bootOnEmu(boot: ResolvedBoot, cpus: number): Promise<BootResult> {
  const cmdline = assembleCmdline({ base: boot.cmdline, backend: 'emu', exec: UPTIME_COMMAND });
  const t0 = performance.now();
  const w = watcher(t0);
  const vm = await Vm.create({ backend: 'emu', memoryBytes: MEMORY_MIB * 1024 * 1024, vpCount: cpus, resetAction: 'poweroff', serialOut: w.push });
  try {
    await bootLinux(vm, { kernel: boot.kernel, initrd: boot.initrd, cmdline });
    const exit = await vm.run({ timeoutMs: RUN_BUDGET_MS });
    const seconds = (performance.now() - t0) / 1000;
    return { seconds, readySeconds: w.readyAt(), uptime: parseUptime(w.output()), end: exit.kind, status: w.filter.status, tail: w.filter.bootTail() };
  } finally {
    vm.dispose();
  }
}

/**
 * One QEMU boot, killed after `budgetMs` (then `end` is 'stuck'). The vmlinux and initrd are
 * files in `dir`.
 */
async function qemuOnce(args: readonly string[], budgetMs: number): Promise<BootResult> {
  const t0 = performance.now();
  const w = watcher(t0);
  const proc = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stdout.on('data', (d: Buffer) => w.push(new Uint8Array(d)));
  proc.stderr.on('data', (d: Buffer) => { if (err.length < 4096) err += d.toString('utf8'); });
  let stuck = false;
  const timer = setTimeout(() => { stuck = true; proc.kill('SIGKILL'); }, budgetMs);
  const code = await new Promise<number | string>((res) => {
    proc.once('exit', (c, sig) => res(c ?? sig ?? 'unknown'));
    proc.once('error', (e) => res(`spawn error: ${e.message}`));
  });
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  const end = stuck ? 'stuck' : code === 0 ? 'exit 0' : `exit ${String(code)}${err.trim() !== '' ? `: ${err.trim()}` : ''}`;
  return { seconds, readySeconds: w.readyAt(), uptime: parseUptime(w.output()), end, status: w.filter.status, tail: w.filter.bootTail() };
}

/**
 * QEMU attempts: a boot that has not powered off after QEMU_ATTEMPT_MS is stuck and retried.
 * DEVNOTE: with no CPUID TSC frequency under TCG and no HPET or PM timer on microvm, Linux
 * calibrates the TSC against the PIT (arch/x86/kernel/tsc.c pit_calibrate_tsc); when the host
 * preempts QEMU's vCPU thread inside a calibration window (this 2-core host runs other jobs),
 * the kernel prints "tsc: Unable to calibrate against PIT ... Marking TSC unstable" and then
 * waits forever for jiffies. Measured 2026-11-24 while other jobs ran: 5 of 21 boots stuck that way, each retry
 * independent. A boot that calibrates takes ~2.5 s, so 30 s is ample.
 */
export const QEMU_ATTEMPTS = 5;
export const QEMU_ATTEMPT_MS = 30_000;

export async function bootOnQemu(boot: ResolvedBoot, cpus: number): Promise<BootResult & { cmdline: string; attempts: number }> {
  const cmdline = assembleCmdline({ base: boot.cmdline, backend: 'kvm', exec: UPTIME_COMMAND });
  const dir = mkdtempSync(join(tmpdir(), 'bench-boot-'));
  try {
    const vmlinux = join(dir, 'vmlinux'), initrd = join(dir, 'initrd');
    writeFileSync(vmlinux, boot.vmlinux);
    writeFileSync(initrd, boot.initrd);
    const args = [
      '-accel', 'tcg', '-M', QEMU_MACHINE, '-m', String(MEMORY_MIB), '-smp', String(cpus),
      '-kernel', vmlinux, '-initrd', initrd, '-append', cmdline, '-nographic', '-no-reboot',
    ];
    let r: BootResult | undefined;
    let attempts = 0;
    while (attempts < QEMU_ATTEMPTS) {
      attempts++;
      r = await qemuOnce(args, QEMU_ATTEMPT_MS);
      if (r.end !== 'stuck') break;
    }
    return { ...r!, cmdline, attempts };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function check(name: string, r: BootResult, okEnd: (end: string) => boolean): void {
  if (r.status === 0 && r.uptime !== undefined && okEnd(r.end)) return;
  throw new Error(`${name}: the guest did not run the command and power off (end: ${r.end}, status ${String(r.status)}, uptime ${String(r.uptime)}); ` +
    `last console lines:\n${r.tail.map((l) => `  | ${l}`).join('\n')}`);
}

const f = (n: number | undefined, d = 2): string => (n === undefined ? '-' : n.toFixed(d));

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const cpus = Number(arg('--cpus') ?? 1);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new Error('--cpus must be 1..64');
  const q = qemuAvailable();
  if (!q.ok) {
    process.stdout.write(json ? JSON.stringify({ skipped: q.reason }) + '\n' : `bench:boot skipped: ${q.reason}\n`);
    return;
  }
  setLogLevel('error');
  const boot = await resolveKernelAndInitrd();

  const qemu = await bootOnQemu(boot, cpus);
  check('QEMU', qemu, (e) => e === 'exit 0');
  const emu = await bootOnEmu(boot, cpus);
  check('tshv emu', emu, (e) => e === 'poweroff');

  const ratio = emu.seconds / qemu.seconds;
  if (json) {
    process.stdout.write(JSON.stringify({
      tshv_s: +emu.seconds.toFixed(3), qemu_tcg_s: +qemu.seconds.toFixed(3), ratio: +ratio.toFixed(2),
      tshv_uptime_s: emu.uptime, qemu_uptime_s: qemu.uptime, cpus, qemu_attempts: qemu.attempts,
    }) + '\n');
    return;
  }
  process.stdout.write([
    `bench:boot  ${boot.kernelPath} + ${boot.initrdPath}, ${MEMORY_MIB} MiB, ${cpus} CPU${cpus > 1 ? 's' : ''}; /init runs: ${UPTIME_COMMAND}`,
    `  tshv emu:  ${f(emu.seconds)} s to power-off (/init banner at ${f(emu.readySeconds)} s), guest uptime at /init ${f(emu.uptime)} s`,
    `  QEMU TCG:  ${f(qemu.seconds)} s to power-off (/init banner at ${f(qemu.readySeconds)} s), guest uptime at /init ${f(qemu.uptime)} s  (${q.version}, -M ${QEMU_MACHINE}` +
      `${qemu.attempts > 1 ? `; ${qemu.attempts - 1} earlier attempt(s) stuck in TSC calibration, retried` : ''})`,
    `  ratio tshv/QEMU: ${ratio.toFixed(2)} (target: at most 10)`,
    '',
  ].join('\n'));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => { process.stderr.write(`bench:boot failed: ${e instanceof Error ? e.message : String(e)}\n`); process.exitCode = 1; });
}
