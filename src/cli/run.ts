/**
 * `tshv run`: boot a Linux VM in this process on the serial console, like
 * `qemu-system-x86_64 -nographic` (no management service involved).
 *
 *   tshv run [--kernel F] [--initrd F] [--append CMDLINE] [--memory 256M] [--cpus 2]
 *            [--exec CMD] [--timeout S]
 *
 * The kernel and initrd are the default image's (built on first use, with a progress bar)
 * unless given; a malformed file is an EIMAGE error naming it (exit 4). The command line is the
 * image's (or --append) plus what the backend and the console need (vmwp/linux.ts
 * assembleCmdline). COM1 goes to stdout. On a terminal, stdin goes to COM1 in raw mode; the
 * escape key Ctrl-] then 'x' quits (Ctrl-] Ctrl-] sends a Ctrl-]), as QEMU's Ctrl-A X.
 *
 * How the run ends:
 *   guest power-off        exit 0: ACPI S5 through the FADT's sleep control register (ADR 0012);
 *                          also a halt with interrupts off (a guest without ACPI power-off halts)
 *   guest reset            the VM boots again (a fresh partition: a reboot); with --exec the end
 *   Ctrl-] x               exit 0;  SIGINT (not on a raw terminal): exit 130
 *   triple fault           a message, exit 1;  backend error: a message, exit 7 (EBACKEND)
 *   --timeout S elapsed    a message, exit 1
 * With --exec CMD the default image's /init runs CMD (tshv.exec, src/image/init.ts), only the
 * command's output reaches stdout (the kernel log is dropped: `quiet loglevel=1`, and every
 * byte before /init's banner), and the exit status is the command's, from `TSHV-EXIT=<n>`.
 * After the marker the run waits for /init's `poweroff -f` to turn the VM off (at most
 * EXEC_POWEROFF_GRACE_MS; then it stops the VM itself), so the VM ends as the guest ends it.
 * No TSHV-EXIT before power-off, reset, a kernel panic (ended at once, not waiting for the
 * panic=-1 reset) or the timeout: a message with the last boot-log lines, exit 1. TSHV_DEBUG=1 keeps the kernel log and copies it to stderr; with --exec the
 * host's own warnings are off unless TSHV_LOG asks for them.
 */
import type { Command } from 'commander';
import { TshvError, errorMessage } from '../base/errors.js';
import { setLogLevel } from '../base/log.js';
import { resolveKernelAndInitrd } from '../image/build.js';
import { makeProgress } from '../image/cli.js';
import { assembleCmdline, bootLinux, describePlacement, ExecOutputFilter, isBackendKind, Vm, type VmExit } from '../vmwp/host.js';
import { ExitCode } from './exit-codes.js';

interface RunOptions { kernel?: string; initrd?: string; append?: string; memory: string; cpus: string; exec?: string; timeout?: string }

export function parseMemory(s: string): number {
  const m = /^(\d+)([KMG]?)i?B?$/i.exec(s.trim());
  if (!m) throw new TshvError('EINVAL', `--memory: cannot parse ${JSON.stringify(s)} (use e.g. 256M or 1G)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toUpperCase();
  const mult = unit === 'G' ? 1024 ** 3 : unit === 'K' ? 1024 : unit === 'M' || unit === '' ? 1024 ** 2 : 1;
  return n * mult;
}

/** --timeout in seconds (a positive number) to milliseconds. */
export function parseTimeout(s: string): number {
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 10 * 365 * 86400) {
    throw new TshvError('EINVAL', `--timeout: expected a positive number of seconds, got ${JSON.stringify(s)}`);
  }
  return Math.ceil(n * 1000);
}

/** The console escape key: Ctrl-] (GS, 0x1D). */
export const ESCAPE_BYTE = 0x1d;
export const ESCAPE_HINT = 'tshv: console on COM1; press Ctrl-] then x to quit';

/**
 * Console input with the escape key: Ctrl-] x quits, Ctrl-] Ctrl-] sends one Ctrl-], Ctrl-]
 * followed by anything else sends both. The escape may be split across chunks.
 */
export class ConsoleEscape {
  #escaped = false;

  /** The bytes for the guest, and whether the user asked to quit (bytes after the quit are dropped). */
  feed(bytes: Uint8Array): { forward: Uint8Array; quit: boolean } {
    const out: number[] = [];
    for (const b of bytes) {
      if (this.#escaped) {
        this.#escaped = false;
        if (b === 0x78 /* x */ || b === 0x58 /* X */) return { forward: Uint8Array.from(out), quit: true };
        out.push(ESCAPE_BYTE);
        if (b !== ESCAPE_BYTE) out.push(b);
      } else if (b === ESCAPE_BYTE) {
        this.#escaped = true;
      } else {
        out.push(b);
      }
    }
    return { forward: Uint8Array.from(out), quit: false };
  }
}

/**
 * Collects serial bytes (the UART hands them over one by one on the VP exit path) and passes
 * them on once per macrotask turn.
 */
class SerialBatcher {
  readonly #sink: (bytes: Uint8Array) => void;
  #chunks: Uint8Array[] = [];
  #timer: NodeJS.Immediate | undefined;

  constructor(sink: (bytes: Uint8Array) => void) { this.#sink = sink; }

  push(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#timer ??= setImmediate(() => this.flush());
  }

  flush(): void {
    if (this.#timer !== undefined) { clearImmediate(this.#timer); this.#timer = undefined; }
    if (this.#chunks.length === 0) return;
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#sink(all);
  }
}

type Ending = 'quit' | 'interrupt' | 'execDone' | 'panic' | undefined;

/** Exit code and message for a run that ended on its own (not --exec's marker). */
export function describeRunEnd(exit: VmExit, timeoutS: number | undefined): { code: number; message?: string } {
  switch (exit.kind) {
    case 'poweroff': return { code: ExitCode.OK };
    case 'stopped': return { code: ExitCode.OK };
    case 'reset': return { code: ExitCode.FAILURE, message: 'the guest reset the machine (with panic=-1 a kernel panic resets)' };
    case 'shutdown': return { code: ExitCode.FAILURE, message: `triple fault on virtual processor ${exit.vp}` };
    // DEVNOTE: Linux powers off through ACPI S5 (the FADT's SLEEP_CONTROL_REG and \_S5, ADR
    // 0012: "reboot: Power down", kind 'poweroff'). A guest that cannot use it (acpi=off, a
    // kernel without ACPI, a freestanding test guest) ends `poweroff` in machine_halt
    // ("reboot: System halted"): every VP halts with interrupts off, from which nothing but
    // an NMI or INIT could wake it. That is still the guest's way of turning itself off.
    case 'halted': return { code: ExitCode.OK, message: `the guest halted the machine (virtual processor ${exit.vp} halted with interrupts disabled)` };
    case 'error': return { code: ExitCode.BACKEND, message: `virtual processor ${exit.vp}: ${exit.message}` };
    case 'timeout': return { code: ExitCode.FAILURE, message: `timed out after ${timeoutS ?? 0} s` };
    case 'testExit': return { code: ExitCode.FAILURE, message: `unexpected test-device exit 0x${exit.code.toString(16)}` };
  }
}

/**
 * --exec: how long to wait, after the TSHV-EXIT marker, for the guest to power itself off
 * (/init runs `sync; poweroff -f`) before stopping the VM. On emu under load the power-off
 * path takes a few seconds at most.
 */
export const EXEC_POWEROFF_GRACE_MS = 30_000;

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('boot a Linux VM in this process with the serial console on stdin/stdout (default image, or --kernel/--initrd)')
    .option('--kernel <file>', 'vmlinux or bzImage to boot instead of the default image\'s')
    .option('--initrd <file>', 'initramfs to use instead of the default image\'s')
    .option('--append <cmdline>', 'kernel command line (replaces the image\'s; console, panic and backend parameters are added unless given)')
    .option('--memory <size>', 'guest memory', '256M')
    .option('--cpus <n>', 'virtual processors', '2')
    .option('--exec <command>', 'run COMMAND in the default image\'s /init, print only its output, exit with its status')
    .option('--timeout <seconds>', 'end the run (exit 1) after this many seconds')
    .action(async (opts: RunOptions) => {
      const memoryBytes = parseMemory(opts.memory);
      const cpus = Number(opts.cpus);
      if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new TshvError('EINVAL', `--cpus must be 1..64, got ${opts.cpus}`);
      const timeoutMs = opts.timeout !== undefined ? parseTimeout(opts.timeout) : undefined;
      const backendOpt = program.opts<{ backend?: string }>().backend;
      const backend = backendOpt !== undefined && isBackendKind(backendOpt) ? backendOpt : undefined;
      const progress = makeProgress();
      const boot = await resolveKernelAndInitrd({
        ...(opts.kernel !== undefined ? { kernel: opts.kernel } : {}),
        ...(opts.initrd !== undefined ? { initrd: opts.initrd } : {}),
        ...(opts.append !== undefined ? { cmdline: opts.append } : {}),
        onProgress: progress.onProgress,
      }).finally(() => progress.stop());
      process.exitCode = await runVm({ boot, memoryBytes, cpus, backend, exec: opts.exec, timeoutMs });
    });
}

interface RunVmOptions {
  boot: { kernelPath: string; kernel: Parameters<typeof bootLinux>[1]['kernel']; initrdPath: string; initrd: Uint8Array; cmdline: string };
  memoryBytes: number;
  cpus: number;
  backend: 'kvm' | 'emu' | undefined;
  exec: string | undefined;
  timeoutMs: number | undefined;
}

async function runVm(o: RunVmOptions): Promise<number> {
  const exec = o.exec !== undefined;
  const debug = process.env['TSHV_DEBUG'] !== undefined && process.env['TSHV_DEBUG'] !== '';
  if (exec && process.env['TSHV_LOG'] === undefined) setLogLevel('error');
  const t0 = performance.now();
  const deadline = o.timeoutMs !== undefined ? t0 + o.timeoutMs : undefined;
  const timeoutS = o.timeoutMs !== undefined ? o.timeoutMs / 1000 : undefined;
  let vm: Vm | undefined;
  let ending: Ending;
  const end = (why: Ending): void => { ending ??= why; vm?.stop(); };

  const stdout = (bytes: Uint8Array): void => { process.stdout.write(bytes); };
  const filter = exec ? new ExecOutputFilter(stdout) : undefined;
  let grace: NodeJS.Timeout | undefined;
  const batcher = new SerialBatcher((bytes) => {
    if (filter === undefined) { stdout(bytes); return; }
    const boring = filter.banner === undefined || filter.done;
    filter.push(bytes);
    // With TSHV_DEBUG the kernel log before the banner and after the marker goes to stderr.
    if (debug && (boring || filter.done)) process.stderr.write(bytes);
    if (filter.done) grace ??= setTimeout(() => end('execDone'), EXEC_POWEROFF_GRACE_MS);
    else if (filter.panic !== undefined) end('panic');
  });

  // Console input: raw terminal with the escape key, or piped bytes as they come.
  const stdin = process.stdin;
  const raw = !exec && stdin.isTTY;
  const escape = new ConsoleEscape();
  const onInput = (data: Buffer): void => {
    if (!raw) { vm?.serialInput(new Uint8Array(data)); return; }
    const r = escape.feed(new Uint8Array(data));
    if (r.forward.length > 0) vm?.serialInput(r.forward);
    if (r.quit) end('quit');
  };
  const onSigint = (): void => end('interrupt');
  if (!exec) {
    if (raw) { stdin.setRawMode(true); process.stderr.write(ESCAPE_HINT + '\n'); }
    stdin.on('data', onInput);
    stdin.resume();
  }
  process.on('SIGINT', onSigint);

  try {
    for (let boots = 0; ; boots++) {
      vm = await Vm.create({ backend: o.backend, memoryBytes: o.memoryBytes, vpCount: o.cpus, serialOut: (b) => batcher.push(b), resetAction: 'reset' });
      const cmdline = assembleCmdline({ base: o.boot.cmdline, backend: vm.backend, exec: o.exec, verbose: debug });
      const placed = await bootLinux(vm, { kernel: o.boot.kernel, initrd: o.boot.initrd, cmdline });
      if (boots === 0 && (!exec || debug)) {
        process.stderr.write(`tshv: ${o.boot.kernelPath} + ${o.boot.initrdPath}, ${o.memoryBytes / 1024 ** 2} MiB, ${o.cpus} CPUs, backend ${vm.backend}\n` +
          `tshv: ${describePlacement(placed)}\n`);
      }
      const remaining = deadline !== undefined ? Math.max(1, deadline - performance.now()) : undefined;
      let exit: VmExit = { kind: 'stopped' };
      // A quit or interrupt while no VM existed (between boots) ends the run before this one.
      if (ending === undefined) {
        try {
          exit = await vm.run(remaining !== undefined ? { timeoutMs: remaining } : {});
        } catch (e) {
          exit = { kind: 'error', vp: 0, message: errorMessage(e) };
        }
      }
      batcher.flush();
      vm.dispose();
      vm = undefined;
      if (filter?.status !== undefined) {
        if (debug) {
          process.stderr.write(exit.kind === 'poweroff' ? 'tshv: --exec: the guest powered off\n'
            : ending === 'execDone' ? `tshv: --exec: the guest did not power off within ${EXEC_POWEROFF_GRACE_MS / 1000} s of TSHV-EXIT; stopped it\n`
              : `tshv: --exec: the run ended after TSHV-EXIT: ${describeRunEnd(exit, timeoutS).message ?? exit.kind}\n`);
        }
        return filter.status;
      }
      if (ending === 'quit') { process.stderr.write('\ntshv: quit\n'); return ExitCode.OK; }
      if (ending === 'interrupt') { process.stderr.write('\ntshv: interrupted\n'); return 130; }
      if (exit.kind === 'reset' && !exec) {
        process.stderr.write('\ntshv: the guest reset the machine; rebooting\n');
        continue;
      }
      const r = describeRunEnd(exit, timeoutS);
      if (filter !== undefined) {
        const why = ending === 'panic' ? `the kernel panicked (${filter.panic ?? ''})`
          : r.message ?? (exit.kind === 'poweroff' ? 'the guest powered off' : 'the run ended');
        const tail = filter.bootTail();
        process.stderr.write(`tshv: --exec: no TSHV-EXIT line from the guest after ${((performance.now() - t0) / 1000).toFixed(1)} s: ${why}` +
          (filter.banner !== undefined ? ` (the command was running: ${filter.banner})` : ' (before /init printed TSHV-READY)') + '\n' +
          (tail.length > 0 ? `tshv: last console lines:\n${tail.map((l) => `  | ${l}`).join('\n')}\n` : ''));
        return r.code === ExitCode.OK ? ExitCode.FAILURE : r.code;
      }
      if (r.message !== undefined) process.stderr.write(`\ntshv: ${r.message}\n`);
      return r.code;
    }
  } finally {
    if (grace !== undefined) clearTimeout(grace);
    vm?.dispose();
    process.off('SIGINT', onSigint);
    if (!exec) {
      stdin.off('data', onInput);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
    }
  }
}
