/**
 * `tshv image build` and `tshv image info`: the default guest image from the command line.
 *
 *   tshv image build [--force] [--cache-dir DIR] [--json]
 *   tshv image info  [--cache-dir DIR] [--json]
 *
 * `build` makes (or verifies and reuses) the default image, see build.ts; `info` describes the
 * cached one without building. Progress goes to stderr: a cli-progress bar when stderr is a
 * terminal, otherwise one plain line per phase (logs and CI stay readable). Errors are thrown as
 * TshvError and turned into exit codes by src/cli/main.ts.
 */
import { readFile } from 'node:fs/promises';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { TshvError } from '../base/errors.js';
import { buildDefaultImage, defaultCacheDir, findCachedImage, type DefaultImage, type ProgressFn } from './build.js';
import { readCpio } from './cpio.js';

const PHASE_TEXT: Record<string, string> = {
  verify: 'verifying cached image',
  resolve: 'resolving the stock kernel package',
  download: 'downloading packages (apt-get download)',
  unpack: 'unpacking the kernel package',
  'unpack-again': 'unpacking remaining modules',
  'unpack-busybox': 'unpacking busybox',
  vmlinux: 'extracting vmlinux from the bzImage',
  initramfs: 'writing the initramfs',
  write: 'writing the cache',
};

/** A progress reporter for stderr: a bar on a TTY, phase lines otherwise. */
export function makeProgress(stream: NodeJS.WriteStream = process.stderr): { onProgress: ProgressFn; stop: () => void } {
  let phase = '';
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar({
      stream,
      format: '{phase} [{bar}] {percentage}%',
      hideCursor: true,
      clearOnComplete: true,
    }, cliProgress.Presets.shades_classic);
    let started = false;
    return {
      onProgress: (p, done, total) => {
        const text = PHASE_TEXT[p] ?? p;
        if (!started) { bar.start(total, done, { phase: text }); started = true; }
        if (p !== phase) { phase = p; bar.setTotal(total); }
        bar.update(done, { phase: text.padEnd(40) });
      },
      stop: () => { if (started) bar.stop(); },
    };
  }
  return {
    onProgress: (p) => {
      if (p === phase) return;
      phase = p;
      stream.write(`tshv image: ${PHASE_TEXT[p] ?? p}\n`);
    },
    stop: () => undefined,
  };
}

function summary(img: DefaultImage): string {
  const m = img.manifest;
  return [
    `kernel:   ${m.packages.kernel.name} ${m.packages.kernel.version} (release ${img.kernelRelease})`,
    `busybox:  ${m.packages.busybox.name} ${m.packages.busybox.version}`,
    `vmlinux:  ${img.kernelPath} (${m.artifacts.vmlinux.size} bytes, sha256 ${m.artifacts.vmlinux.sha256})`,
    `initrd:   ${img.initrdPath} (${m.artifacts.initrd.size} bytes, sha256 ${m.artifacts.initrd.sha256})`,
    `entry:    PVH ${m.pvhEntry !== undefined ? '0x' + m.pvhEntry.toString(16) : 'none'}, 64-bit ${m.entry64 !== undefined ? '0x' + m.entry64.toString(16) : 'none'}`,
    `modules:  ${m.modules.map((x) => x.name).join(' ')}${m.builtin.length ? ` (built in: ${m.builtin.join(' ')})` : ''}`,
    `cmdline:  ${img.cmdline}`,
  ].join('\n') + '\n';
}

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('the default guest image (Debian kernel + busybox initramfs)');

  image.command('build')
    .description('build the default guest image from Debian packages (reuses a verified cached one)')
    .option('--force', 'rebuild even if a valid cached image exists')
    .option('--cache-dir <dir>', `image cache directory (default ${defaultCacheDir()})`)
    .option('--json', 'print the result as JSON')
    .action(async (o: { force?: boolean; cacheDir?: string; json?: boolean }) => {
      const progress = makeProgress();
      const t0 = performance.now();
      let img: DefaultImage;
      try {
        img = await buildDefaultImage({
          ...(o.cacheDir !== undefined ? { cacheDir: o.cacheDir } : {}),
          force: o.force === true,
          onProgress: progress.onProgress,
        });
      } finally {
        progress.stop();
      }
      const seconds = (performance.now() - t0) / 1000;
      if (o.json === true) {
        process.stdout.write(JSON.stringify({ ...img, seconds }, null, 2) + '\n');
      } else {
        process.stdout.write(`${img.fromCache ? 'reused cached image' : 'built image'} in ${img.dir} (${seconds.toFixed(1)} s)\n${summary(img)}`);
      }
    });

  image.command('info')
    .description('describe the cached default guest image (does not build)')
    .option('--cache-dir <dir>', `image cache directory (default ${defaultCacheDir()})`)
    .option('--json', 'print the result as JSON')
    .action(async (o: { cacheDir?: string; json?: boolean }) => {
      const dir = o.cacheDir ?? defaultCacheDir();
      const img = await findCachedImage(dir);
      if (img === undefined) throw new TshvError('ESTATE', `no valid default image in ${dir}; run \`tshv image build\``);
      const entries = readCpio(new Uint8Array(await readFile(img.initrdPath)), img.initrdPath);
      if (o.json === true) {
        process.stdout.write(JSON.stringify({ ...img, initrdEntries: entries.map((e) => e.name) }, null, 2) + '\n');
      } else {
        process.stdout.write(`image in ${img.dir}\n${summary(img)}initramfs: ${entries.length} entries\n`);
      }
    });
}
