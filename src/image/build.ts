/**
 * The embedded default guest image: a stock Debian kernel and a busybox initramfs, built from
 * Debian's packages without installing them, cached per user.
 *
 * Build (`buildDefaultImage`, also run on first use by `resolveKernelAndInitrd`):
 *  1. resolve: `apt-cache depends linux-image-amd64` names the current stock kernel package
 *     (e.g. linux-image-6.1.0-56-amd64); its release is the part after "linux-image-";
 *  2. download: `apt-get download <kernel package> busybox-static` into a temporary directory;
 *  3. unpack: one streaming pass over each package's data tar (src/image/deb.ts) keeps only
 *     boot/vmlinuz-<release>, the .ko files needed, modules.builtin, and bin/busybox. Debian ships
 *     no modules.dep (depmod writes it at install time), so the dependency closure of the Hyper-V
 *     guest modules comes from each .ko's .modinfo `depends=` (src/image/modules.ts);
 *  4. vmlinux: the bzImage's xz payload decompressed (src/image/bzimage.ts), then validated by the
 *     loader's own parser (it must have PT_LOAD segments and a PVH entry note);
 *  5. initramfs: tshv's newc writer (src/image/cpio.ts): busybox, /init (src/image/init.ts), the
 *     modules under /lib/modules/<release>/ with a modules.dep, static /dev nodes;
 *  6. cache: `<cacheDir>/<release>-<busybox version>/` holds vmlinux, initrd.cpio and
 *     manifest.json (sha256 and size of each artifact, source package versions, module load order,
 *     default command line). `<cacheDir>/current.json` names the directory of the last build.
 *
 * A later call reads current.json, re-hashes the artifacts against the manifest and reuses them:
 * no apt-get, no network. Anything missing or different rebuilds. DEVNOTE: the warm path does not
 * ask apt whether Debian has published a newer kernel (that would cost an apt-cache call and make
 * the image change under the user); `tshv image build --force` picks up a new kernel.
 *
 * Default cacheDir: ${XDG_CACHE_HOME:-~/.cache}/tshv/images.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { TshvError, errorMessage } from '../base/errors.js';
import { Logger } from '../base/log.js';
import { identifyKernelFile, parseVmlinux, validateInitrd, type InitrdInfo, type KernelImage } from '../loader/kernel-file.js';
import { extractVmlinux } from './bzimage.js';
import { CpioWriter } from './cpio.js';
import { aptDownload, debFields, extractFromDeb, resolveDependency, type ToolPaths } from './deb.js';
import { renderInit, type InitModule } from './init.js';
import { loadOrder, moduleNameFromPath, parseModinfo } from './modules.js';
import { xzDecompress } from './xz.js';

const log = new Logger('image');

export const KERNEL_METAPACKAGE = 'linux-image-amd64';
export const BUSYBOX_PACKAGE = 'busybox-static';
/** The Hyper-V guest drivers (the VSCs tshv's VSPs talk to), loaded by /init. */
export const HV_MODULES = ['hv_vmbus', 'hv_utils', 'hv_storvsc', 'hv_netvsc', 'hv_balloon', 'hv_sock'] as const;
/** Serial console on COM1; on panic reboot at once so the host sees it. */
export const DEFAULT_CMDLINE = 'console=ttyS0,115200 rdinit=/init panic=-1';
export const MANIFEST_SCHEMA = 'tshv-default-image/1';

export type ProgressFn = (phase: string, done: number, total: number) => void;

export interface BuildOptions {
  /** Root of the image cache; default ${XDG_CACHE_HOME:-~/.cache}/tshv/images. */
  readonly cacheDir?: string;
  /** Rebuild even if a valid cached image exists. */
  readonly force?: boolean;
  readonly onProgress?: ProgressFn;
  /** Paths of apt-get, apt-cache, dpkg-deb, xz (tests point these elsewhere). */
  readonly tools?: ToolPaths;
}

export interface Artifact { readonly file: string; readonly sha256: string; readonly size: number }

export interface DefaultImageManifest {
  readonly schema: typeof MANIFEST_SCHEMA;
  readonly kernelRelease: string;
  readonly packages: {
    readonly kernel: { readonly name: string; readonly version: string };
    readonly busybox: { readonly name: string; readonly version: string };
  };
  readonly artifacts: { readonly vmlinux: Artifact; readonly initrd: Artifact };
  /** Modules in /init's load order (dependencies first). */
  readonly modules: readonly InitModule[];
  /** Requested modules that the kernel has built in (nothing to load). */
  readonly builtin: readonly string[];
  readonly cmdline: string;
  readonly pvhEntry?: number;
  readonly entry64?: number;
  readonly kernelVersionString?: string;
  readonly builtAt: string;
}

export interface DefaultImage {
  readonly dir: string;
  /** The vmlinux ELF (extracted from the bzImage), for the loader to enter directly. */
  readonly kernelPath: string;
  readonly initrdPath: string;
  readonly kernelRelease: string;
  readonly cmdline: string;
  readonly manifest: DefaultImageManifest;
  /** True when the cached image was verified and reused. */
  readonly fromCache: boolean;
}

export function defaultCacheDir(): string {
  const xdg = process.env['XDG_CACHE_HOME'];
  const base = xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), '.cache');
  return join(base, 'tshv', 'images');
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

const SAFE_DIR = /^[A-Za-z0-9._+-]+$/;

function isArtifact(v: unknown): v is Artifact {
  if (typeof v !== 'object' || v === null) return false;
  const a = v as Record<string, unknown>;
  return typeof a['file'] === 'string' && SAFE_DIR.test(a['file']) && typeof a['sha256'] === 'string' && typeof a['size'] === 'number';
}

/** Parse and shape-check a manifest.json (it lives in a user-writable directory). */
export function parseManifest(text: string): DefaultImageManifest | string {
  let v: unknown;
  try { v = JSON.parse(text); } catch (e) { return `manifest is not JSON (${errorMessage(e)})`; }
  if (typeof v !== 'object' || v === null) return 'manifest is not an object';
  const m = v as Record<string, unknown>;
  if (m['schema'] !== MANIFEST_SCHEMA) return `manifest schema is ${JSON.stringify(m['schema'])}, expected ${MANIFEST_SCHEMA}`;
  if (typeof m['kernelRelease'] !== 'string' || typeof m['cmdline'] !== 'string') return 'manifest lacks kernelRelease / cmdline';
  const arts = m['artifacts'] as Record<string, unknown> | undefined;
  if (!arts || !isArtifact(arts['vmlinux']) || !isArtifact(arts['initrd'])) return 'manifest artifacts are malformed';
  if (!Array.isArray(m['modules']) || typeof m['packages'] !== 'object') return 'manifest modules / packages are malformed';
  return v as DefaultImageManifest;
}

/** Verify a cached image directory; returns the image, or why it cannot be used. */
export async function verifyCachedImage(dir: string): Promise<DefaultImage | string> {
  let text: string;
  try { text = await readFile(join(dir, 'manifest.json'), 'utf8'); } catch { return 'no manifest.json'; }
  const manifest = parseManifest(text);
  if (typeof manifest === 'string') return manifest;
  for (const a of [manifest.artifacts.vmlinux, manifest.artifacts.initrd]) {
    const p = join(dir, a.file);
    try {
      const st = await stat(p);
      if (st.size !== a.size) return `${a.file}: size ${st.size}, manifest says ${a.size}`;
    } catch { return `${a.file} is missing`; }
    if (await sha256File(p) !== a.sha256) return `${a.file}: sha256 does not match the manifest`;
  }
  return {
    dir,
    kernelPath: join(dir, manifest.artifacts.vmlinux.file),
    initrdPath: join(dir, manifest.artifacts.initrd.file),
    kernelRelease: manifest.kernelRelease,
    cmdline: manifest.cmdline,
    manifest,
    fromCache: true,
  };
}

async function readCurrent(root: string): Promise<string | undefined> {
  try {
    const v = JSON.parse(await readFile(join(root, 'current.json'), 'utf8')) as unknown;
    const dir = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)['dir'] : undefined;
    return typeof dir === 'string' && SAFE_DIR.test(dir) && dir !== '.' && dir !== '..' ? dir : undefined;
  } catch {
    return undefined;
  }
}

/** The cached default image, if there is a valid one (no building, no tools). */
export async function findCachedImage(cacheDir = defaultCacheDir()): Promise<DefaultImage | undefined> {
  const cur = await readCurrent(cacheDir);
  if (cur === undefined) return undefined;
  const r = await verifyCachedImage(join(cacheDir, cur));
  return typeof r === 'string' ? undefined : r;
}

/** Build (or reuse) the default image. See the module header. */
export async function buildDefaultImage(opts: BuildOptions = {}): Promise<DefaultImage> {
  const root = opts.cacheDir ?? defaultCacheDir();
  const progress: ProgressFn = opts.onProgress ?? (() => undefined);
  if (opts.force !== true) {
    const cur = await readCurrent(root);
    if (cur !== undefined) {
      progress('verify', 0, 1);
      const r = await verifyCachedImage(join(root, cur));
      progress('verify', 1, 1);
      if (typeof r !== 'string') return r;
      log.warn(`cached image ${join(root, cur)} is unusable (${r}); rebuilding`);
    }
  }
  await mkdir(root, { recursive: true });
  const work = await mkdtemp(join(root, '.build-'));
  try {
    return await buildInto(root, work, opts.tools ?? {}, progress);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

interface ModRecord {
  path: string;
  depends?: readonly string[];
  data?: Uint8Array;
  compressed: boolean;
}

async function buildInto(root: string, work: string, tools: ToolPaths, progress: ProgressFn): Promise<DefaultImage> {
  // 1. resolve
  progress('resolve', 0, 1);
  const kernelPkg = await resolveDependency(tools, KERNEL_METAPACKAGE, 'linux-image-');
  const release = kernelPkg.slice('linux-image-'.length);
  if (!SAFE_DIR.test(release)) throw new TshvError('ETOOL', `unexpected kernel package name ${kernelPkg}`);
  progress('resolve', 1, 1);

  // 2. download
  const debDir = join(work, 'debs');
  await mkdir(debDir);
  progress('download', 0, 100);
  await aptDownload(tools, [kernelPkg, BUSYBOX_PACKAGE], debDir, (pct) => progress('download', pct, 100));
  const debs = await readdir(debDir);
  const kernelDeb = debs.find((f) => f.startsWith(kernelPkg + '_') && f.endsWith('.deb'));
  const busyboxDeb = debs.find((f) => f.startsWith(BUSYBOX_PACKAGE + '_') && f.endsWith('.deb'));
  if (kernelDeb === undefined || busyboxDeb === undefined) {
    throw new TshvError('ETOOL', `apt-get download did not produce ${kernelPkg} and ${BUSYBOX_PACKAGE} packages (found: ${debs.join(', ') || 'nothing'})`);
  }
  const kernelFields = await debFields(tools, join(debDir, kernelDeb), ['Package', 'Version', 'Installed-Size']);
  const busyboxFields = await debFields(tools, join(debDir, busyboxDeb), ['Package', 'Version']);
  const kernelVersion = kernelFields.get('Version') ?? 'unknown';
  const busyboxVersion = busyboxFields.get('Version') ?? 'unknown';

  // 3. unpack the kernel package in one streaming pass
  const vmlinuzPath = `boot/vmlinuz-${release}`;
  const modPrefix = `lib/modules/${release}/`;
  const builtinPath = `${modPrefix}modules.builtin`;
  const mods = new Map<string, ModRecord>();
  const wanted = new Set<string>();
  const want = (name: string): void => {
    if (wanted.has(name)) return;
    wanted.add(name);
    for (const d of mods.get(name)?.depends ?? []) want(d);
  };
  for (const r of HV_MODULES) want(r);
  let vmlinuz: Uint8Array | undefined;
  let builtinList = '';
  const installedBytes = Number(kernelFields.get('Installed-Size') ?? '0') * 1024 || 1;
  const isModule = (p: string): boolean => p.startsWith(modPrefix + 'kernel/') && /\.ko(\.xz)?$/.test(p);
  progress('unpack', 0, installedBytes);
  await extractFromDeb(tools, join(debDir, kernelDeb),
    (e) => e.path === vmlinuzPath || e.path === builtinPath || isModule(e.path),
    (e, data) => {
      if (e.path === vmlinuzPath) { vmlinuz = data; return; }
      if (e.path === builtinPath) { builtinList = new TextDecoder().decode(data); return; }
      if (e.path.endsWith('.xz')) {
        // Compressed modules: keep the (small) compressed bytes; depends are read after the pass.
        mods.set(moduleNameFromPath(e.path), { path: e.path, data, compressed: true });
        return;
      }
      const info = parseModinfo(data, e.path);
      const rec: ModRecord = { path: e.path, depends: info.depends, compressed: false };
      mods.set(info.name, rec);
      if (wanted.has(info.name)) {
        rec.data = data;
        for (const d of info.depends) want(d);
      }
    },
    (n) => progress('unpack', Math.min(n, installedBytes), installedBytes));
  progress('unpack', installedBytes, installedBytes);
  if (vmlinuz === undefined) throw new TshvError('EIMAGE', `${kernelDeb}: has no ${vmlinuzPath}`);

  // Requested modules that are built into this kernel need no loading.
  const builtin = new Set(builtinList.split('\n').filter((l) => l.length > 0).map(moduleNameFromPath));
  const roots = HV_MODULES.filter((m) => !builtin.has(m) || mods.has(m));
  const builtinRoots = HV_MODULES.filter((m) => builtin.has(m) && !mods.has(m));

  // Compressed modules: decompress those reachable from the roots to learn their depends.
  const queue = [...roots] as string[];
  for (let guard = 0; queue.length > 0 && guard < 100_000; guard++) {
    const name = queue.shift() ?? '';
    const rec = mods.get(name);
    if (rec === undefined) continue; // loadOrder reports it
    if (rec.compressed && rec.depends === undefined && rec.data) {
      rec.data = await xzDecompress(rec.data, { what: rec.path, maxOutput: 256 << 20, ...(tools.xz !== undefined ? { xzTool: tools.xz } : {}) });
      rec.depends = parseModinfo(rec.data, rec.path).depends;
    }
    queue.push(...(rec.depends ?? []));
  }
  const order = loadOrder(roots, (n) => (builtin.has(n) && !mods.has(n) ? [] : mods.get(n)?.depends));
  const toLoad = order.filter((n) => mods.has(n));

  // Modules whose bytes went by before we knew we needed them: a second, targeted pass.
  const missing = new Set(toLoad.filter((n) => mods.get(n)?.data === undefined).map((n) => mods.get(n)?.path ?? ''));
  if (missing.size > 0) {
    progress('unpack-again', 0, missing.size);
    await extractFromDeb(tools, join(debDir, kernelDeb), (e) => missing.has(e.path), (e, data) => {
      const rec = mods.get(moduleNameFromPath(e.path));
      if (rec) rec.data = data;
    });
    progress('unpack-again', missing.size, missing.size);
  }

  // busybox
  progress('unpack-busybox', 0, 1);
  let busybox: Uint8Array | undefined;
  await extractFromDeb(tools, join(debDir, busyboxDeb), (e) => e.path === 'bin/busybox', (_e, data) => { busybox = data; });
  if (busybox === undefined || identifyKernelFile(busybox) !== 'elf') throw new TshvError('EIMAGE', `${busyboxDeb}: has no bin/busybox ELF`);
  progress('unpack-busybox', 1, 1);

  // 4. vmlinux
  progress('vmlinux', 0, 1);
  const { bz, vmlinux } = await extractVmlinux(vmlinuz, vmlinuzPath, tools.xz !== undefined ? { xzTool: tools.xz } : {});
  const kimg = parseVmlinux(vmlinux, `vmlinux-${release}`);
  if (kimg.pvhEntry === undefined) throw new TshvError('EIMAGE', `${vmlinuzPath}: the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)`);
  progress('vmlinux', 1, 1);

  // 5. initramfs
  progress('initramfs', 0, 1);
  const initModules: InitModule[] = toLoad.map((n) => {
    const rec = mods.get(n);
    if (!rec) throw new TshvError('EIMAGE', `module ${n} not found`);
    return { name: n, relPath: rec.path.slice(modPrefix.length).replace(/\.xz$/, '') };
  });
  const cpio = new CpioWriter();
  for (const d of ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'etc', 'lib', 'lib/modules', `lib/modules/${release}`]) {
    cpio.dir(d, d === 'tmp' ? 0o1777 : d === 'root' ? 0o700 : 0o755);
  }
  cpio.chardev('dev/console', 5, 1, 0o600);
  cpio.chardev('dev/ttyS0', 4, 64, 0o660);
  cpio.chardev('dev/null', 1, 3, 0o666);
  cpio.file('bin/busybox', busybox, 0o755);
  cpio.symlink('bin/sh', 'busybox');
  cpio.file('init', new TextEncoder().encode(renderInit(release, initModules)), 0o755);
  const madeDirs = new Set<string>();
  for (const m of initModules) {
    const parts = m.relPath.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = `lib/modules/${release}/${parts.slice(0, i).join('/')}`;
      if (!madeDirs.has(d)) { madeDirs.add(d); cpio.dir(d); }
    }
    const data = mods.get(m.name)?.data;
    if (!data) throw new TshvError('EIMAGE', `module ${m.name}: bytes not found in ${kernelDeb}`);
    cpio.file(`lib/modules/${release}/${m.relPath}`, data, 0o644);
  }
  const depLines = initModules.map((m) => {
    const deps = (mods.get(m.name)?.depends ?? []).flatMap((d) => initModules.filter((x) => x.name === d).map((x) => x.relPath));
    return `${m.relPath}:${deps.length ? ' ' + deps.join(' ') : ''}`;
  });
  cpio.file(`lib/modules/${release}/modules.dep`, new TextEncoder().encode(depLines.join('\n') + '\n'));
  cpio.file('etc/tshv-image', new TextEncoder().encode(`kernel=${kernelPkg} ${kernelVersion}\nbusybox=${BUSYBOX_PACKAGE} ${busyboxVersion}\n`));
  const initrd = cpio.finish();
  validateInitrd(initrd, 'initrd.cpio');
  progress('initramfs', 1, 1);

  // 6. write the cache directory, then switch current.json to it
  progress('write', 0, 1);
  const dirName = `${release}-${busyboxVersion}`.replace(/[^A-Za-z0-9._+-]/g, '_');
  const stage = join(work, 'image');
  await mkdir(stage);
  await writeFile(join(stage, 'vmlinux'), vmlinux);
  await writeFile(join(stage, 'initrd.cpio'), initrd);
  const manifest: DefaultImageManifest = {
    schema: MANIFEST_SCHEMA,
    kernelRelease: release,
    packages: { kernel: { name: kernelPkg, version: kernelVersion }, busybox: { name: BUSYBOX_PACKAGE, version: busyboxVersion } },
    artifacts: {
      vmlinux: { file: 'vmlinux', sha256: sha256(vmlinux), size: vmlinux.length },
      initrd: { file: 'initrd.cpio', sha256: sha256(initrd), size: initrd.length },
    },
    modules: initModules,
    builtin: builtinRoots,
    cmdline: DEFAULT_CMDLINE,
    pvhEntry: kimg.pvhEntry,
    ...(kimg.entry64 !== undefined ? { entry64: kimg.entry64 } : {}),
    ...(bz.versionString !== undefined ? { kernelVersionString: bz.versionString } : {}),
    builtAt: new Date().toISOString(),
  };
  await writeFile(join(stage, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  const finalDir = join(root, dirName);
  await rm(finalDir, { recursive: true, force: true });
  await rename(stage, finalDir);
  await writeFile(join(root, 'current.json.tmp'), JSON.stringify({ dir: dirName }) + '\n');
  await rename(join(root, 'current.json.tmp'), join(root, 'current.json'));
  progress('write', 1, 1);
  return {
    dir: finalDir,
    kernelPath: join(finalDir, 'vmlinux'),
    initrdPath: join(finalDir, 'initrd.cpio'),
    kernelRelease: release,
    cmdline: DEFAULT_CMDLINE,
    manifest,
    fromCache: false,
  };
}

// ---------------------------------------------------------------------------------------------
// Kernel and initrd for a boot: the user's own, or the default image.

/** Refuse to read kernel / initrd files larger than this (bounds memory). */
export const MAX_BOOT_FILE = 1 << 30;

export interface ResolvedBoot {
  readonly kernelPath: string;
  readonly kernel: KernelImage;
  /** The vmlinux bytes that `kernel`'s segments view (extracted when the file was a bzImage). */
  readonly vmlinux: Uint8Array;
  readonly initrdPath: string;
  readonly initrd: Uint8Array;
  readonly initrdInfo: InitrdInfo;
  readonly cmdline: string;
  readonly kernelSource: 'user' | 'default';
  readonly initrdSource: 'user' | 'default';
}

async function readBootFile(path: string, what: 'kernel' | 'initrd'): Promise<Uint8Array> {
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new TshvError('EINVAL', `${what} file ${path}: not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof TshvError) throw e;
    throw new TshvError('EINVAL', `${what} file ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : errorMessage(e)}`, { cause: e });
  }
  if (size > MAX_BOOT_FILE) throw new TshvError('EIMAGE', `${what} file ${path}: ${size} bytes is larger than the ${MAX_BOOT_FILE}-byte limit`);
  return new Uint8Array(await readFile(path));
}

/** Parse a kernel file: a vmlinux, or a bzImage whose vmlinux is extracted in memory. */
export async function loadKernelFile(path: string, tools: ToolPaths = {}): Promise<{ kernel: KernelImage; vmlinux: Uint8Array }> {
  const bytes = await readBootFile(path, 'kernel');
  switch (identifyKernelFile(bytes)) {
    case 'elf': return { kernel: parseVmlinux(bytes, path), vmlinux: bytes };
    case 'bzimage': {
      const { vmlinux } = await extractVmlinux(bytes, path, tools.xz !== undefined ? { xzTool: tools.xz } : {});
      return { kernel: parseVmlinux(vmlinux, `${path} (vmlinux from bzImage)`), vmlinux };
    }
    case 'unknown':
      throw new TshvError('EIMAGE', `${path}: not a kernel (neither a vmlinux ELF nor a bzImage)${bytes.length === 0 ? ': the file is empty' : ''}`);
  }
}

/** Read and validate an initrd; gzip data is test-decompressed so truncation is caught here. */
export async function loadInitrdFile(path: string): Promise<{ initrd: Uint8Array; info: InitrdInfo }> {
  const initrd = await readBootFile(path, 'initrd');
  const info = validateInitrd(initrd, path);
  if (info.format === 'gzip') {
    try {
      gunzipSync(initrd, { maxOutputLength: 2 * MAX_BOOT_FILE });
    } catch (e) {
      throw new TshvError('EIMAGE', `${path}: gzip initrd is corrupt or truncated (${errorMessage(e)})`, { cause: e });
    }
  }
  return { initrd, info };
}

export interface ResolveOptions extends Omit<BuildOptions, 'force'> {
  readonly kernel?: string;
  readonly initrd?: string;
  /** Overrides the default image's command line. */
  readonly cmdline?: string;
}

/**
 * The kernel and initrd for a boot. Each of `kernel` / `initrd` that is given is read and
 * validated (errors name the file); each that is not comes from the default image, which is
 * built on first use. DEVNOTE: a user kernel with the default initrd boots, but the default
 * initrd's modules belong to the default kernel and will not load into another one.
 */
export async function resolveKernelAndInitrd(opts: ResolveOptions = {}): Promise<ResolvedBoot> {
  let image: DefaultImage | undefined;
  const defaultImage = async (): Promise<DefaultImage> => (image ??= await buildDefaultImage(opts));
  const kernelPath = opts.kernel ?? (await defaultImage()).kernelPath;
  const { kernel, vmlinux } = await loadKernelFile(kernelPath, opts.tools ?? {});
  const initrdPath = opts.initrd ?? (await defaultImage()).initrdPath;
  const { initrd, info } = await loadInitrdFile(initrdPath);
  return {
    kernelPath,
    kernel,
    vmlinux,
    initrdPath,
    initrd,
    initrdInfo: info,
    cmdline: opts.cmdline ?? image?.cmdline ?? DEFAULT_CMDLINE,
    kernelSource: opts.kernel !== undefined ? 'user' : 'default',
    initrdSource: opts.initrd !== undefined ? 'user' : 'default',
  };
}

