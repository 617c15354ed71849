/**
 * `tshv run`: boot a VM from the default image (or --kernel / --initrd) on the serial console.
 *
 * Today this resolves and validates the kernel and initrd (building the default image on first
 * use, with errors that name a malformed file) and creates the processor backend. Booting Linux
 * itself needs the Linux loader, ACPI and the platform devices of issue #4 (and, on hosts without
 * VT-x / AMD-V, the emu processor of issue #3); until then the command stops with a clear
 * ENOTSUP error after the checks, never pretending to boot.
 */
import type { Command } from 'commander';
import { TshvError } from '../base/errors.js';
import { resolveKernelAndInitrd } from '../image/build.js';
import { makeProgress } from '../image/cli.js';
import { createBackend, isBackendKind } from '../vmwp/host.js';

interface RunOptions { kernel?: string; initrd?: string; append?: string; memory: string; cpus: string }

export function parseMemory(s: string): number {
  const m = /^(\d+)([KMG]?)i?B?$/i.exec(s.trim());
  if (!m) throw new TshvError('EINVAL', `--memory: cannot parse ${JSON.stringify(s)} (use e.g. 256M or 1G)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toUpperCase();
  const mult = unit === 'G' ? 1024 ** 3 : unit === 'K' ? 1024 : unit === 'M' || unit === '' ? 1024 ** 2 : 1;
  return n * mult;
}

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('boot a VM with the default image (or --kernel/--initrd) on the serial console')
    .option('--kernel <file>', 'vmlinux or bzImage to boot instead of the default image\'s')
    .option('--initrd <file>', 'initramfs to use instead of the default image\'s')
    .option('--append <cmdline>', 'kernel command line')
    .option('--memory <size>', 'guest memory', '256M')
    .option('--cpus <n>', 'virtual processors', '2')
    .action(async (opts: RunOptions) => {
      const memoryBytes = parseMemory(opts.memory);
      const cpus = Number(opts.cpus);
      if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new TshvError('EINVAL', `--cpus must be 1..64, got ${opts.cpus}`);
      const progress = makeProgress();
      const boot = await resolveKernelAndInitrd({
        ...(opts.kernel !== undefined ? { kernel: opts.kernel } : {}),
        ...(opts.initrd !== undefined ? { initrd: opts.initrd } : {}),
        ...(opts.append !== undefined ? { cmdline: opts.append } : {}),
        onProgress: progress.onProgress,
      }).finally(() => progress.stop());
      const backendOpt = program.opts<{ backend?: string }>().backend;
      const backend = createBackend(backendOpt !== undefined && isBackendKind(backendOpt) ? backendOpt : undefined);
      process.stderr.write(`tshv: kernel ${boot.kernelPath} (${boot.kernel.segments.length} segments), initrd ${boot.initrdPath} (${boot.initrd.length} bytes, ${boot.initrdInfo.format}), ${memoryBytes / 1024 ** 2} MiB, ${cpus} CPUs, backend ${backend.kind}\n`);
      throw new TshvError('ENOTSUP', 'booting a Linux guest needs the Linux loader, ACPI tables and interrupt controllers of issue #4; not implemented yet');
    });
}
