/**
 * Builds the freestanding test guests (tests/guests/src) with the machine's gcc, ld and
 * objcopy into build/guests/ (gitignored), when the tests run. No built binary is committed.
 *
 * The manifest (tests/guests/guests.json) lists each guest: its mode (real, prot32, long64),
 * its own sources, where it is loaded, the VM it needs and how it must end. The mode adds the
 * shared runtime: real-mode guests are a single assembly file linked at offset 0 of their
 * segment; prot32 and long64 guests get common/start32.S or start64.S (+ idt.c), lib.c and a
 * linker script that links them at their load address. Each guest is compiled to an ELF, its
 * entry and load address are checked against the manifest, and `objcopy -O binary` makes the
 * flat image that src/loader/flat.ts places in guest memory.
 *
 * Caching: a guest is rebuilt only when the SHA-256 over every file under tests/guests/src,
 * the compiler flags and the tool versions differs from the stamp next to its binary.
 *
 * Run directly (`node dist/tests/guests/build.js`) to build all guests and print where they are.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TshvError } from '../../src/base/errors.js';
import { isBootMode, type BootMode } from '../../src/loader/flat.js';

// ---------------------------------------------------------------------------------------------
// Manifest

export type ExpectedExit =
  | { kind: 'poweroff' }
  | { kind: 'testExit'; code: number }
  | { kind: 'shutdown' }
  | { kind: 'halted' };

/** CPUID leaf 1 feature bits a guest may require: [register, bit]. */
export const CPU_FEATURES = {
  fpu: ['edx', 0], fxsr: ['edx', 24], sse: ['edx', 25], sse2: ['edx', 26],
} as const;
export type CpuFeature = keyof typeof CPU_FEATURES;
export function isCpuFeature(s: string): s is CpuFeature {
  return Object.prototype.hasOwnProperty.call(CPU_FEATURES, s);
}

export interface GuestSpec {
  name: string;
  description: string;
  mode: BootMode;
  /** Guest-specific sources, relative to tests/guests/src. */
  sources: string[];
  loadGpa: number;
  memoryBytes: number;
  /** The test ROM (see testRomImage) mapped read-only here, or null. */
  rom: { gpa: number; size: number } | null;
  /** The harness implements the scratch MSR 0x400000F0 (and #GP for 0x400000F1-0x400000FF). */
  msrScratch: boolean;
  /** CPU features the guest needs (CPUID names); a backend that does not advertise one skips it. */
  requires: CpuFeature[];
  exit: ExpectedExit;
  timeoutMs: number;
}

const NAME_RE = /^[a-z0-9][a-z0-9-]{0,40}$/;
const SOURCE_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,60}\.(c|S)$/;
const MAX_GUESTS = 64;

function fail(where: string, what: string): never {
  throw new TshvError('EINVAL', `guests.json: ${where}: ${what}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A non-negative integer, or a string "0x..." / decimal, up to `max`. */
function num(where: string, v: unknown, max: number): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && /^(0x[0-9a-fA-F]{1,13}|[0-9]{1,15})$/.test(v)) n = Number(v);
  else fail(where, `expected a number or a "0x..." string, got ${JSON.stringify(v)}`);
  if (!Number.isSafeInteger(n) || n < 0 || n > max) fail(where, `${String(v)} is out of range 0..${max}`);
  return n;
}

function str(where: string, v: unknown, re?: RegExp): string {
  if (typeof v !== 'string' || (re !== undefined && !re.test(v))) fail(where, `bad value ${JSON.stringify(v)}`);
  return v;
}

function parseExit(where: string, v: unknown): ExpectedExit {
  if (!isRecord(v)) fail(where, 'expected an object');
  const kind = v['kind'];
  switch (kind) {
    case 'poweroff': case 'shutdown': case 'halted':
      return { kind };
    case 'testExit':
      return { kind, code: num(`${where}.code`, v['code'], 0xffffffff) };
    default:
      return fail(`${where}.kind`, `unknown exit kind ${JSON.stringify(kind)}`);
  }
}

/** Parse and validate the manifest text. Pure; every malformed input gives a clear TshvError. */
export function parseManifest(text: string): GuestSpec[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    fail('top level', `not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isRecord(doc) || !Array.isArray(doc['guests'])) fail('top level', 'expected { "guests": [...] }');
  const list: unknown[] = doc['guests'];
  if (list.length === 0 || list.length > MAX_GUESTS) fail('guests', `expected 1..${MAX_GUESTS} guests`);
  const out: GuestSpec[] = [];
  const names = new Set<string>();
  list.forEach((g, i) => {
    const at = `guests[${i}]`;
    if (!isRecord(g)) fail(at, 'expected an object');
    const name = str(`${at}.name`, g['name'], NAME_RE);
    if (names.has(name)) fail(at, `duplicate name ${name}`);
    names.add(name);
    const mode = str(`${at}.mode`, g['mode']);
    if (!isBootMode(mode)) fail(`${at}.mode`, `unknown mode ${mode}`);
    const sources = g['sources'];
    if (!Array.isArray(sources) || sources.length === 0 || sources.length > 16) fail(`${at}.sources`, 'expected 1..16 file names');
    const rom = g['rom'];
    let romSpec: GuestSpec['rom'] = null;
    if (rom !== undefined && rom !== null) {
      if (!isRecord(rom)) fail(`${at}.rom`, 'expected an object or null');
      romSpec = { gpa: num(`${at}.rom.gpa`, rom['gpa'], 0xffffffff), size: num(`${at}.rom.size`, rom['size'], 0x1000000) };
      if (romSpec.size === 0 || romSpec.size % 4096 !== 0 || romSpec.gpa % 4096 !== 0) fail(`${at}.rom`, 'gpa and size must be whole pages');
    }
    const msrScratch = g['msrScratch'] ?? false;
    if (typeof msrScratch !== 'boolean') fail(`${at}.msrScratch`, 'expected a boolean');
    const requiresRaw = g['requires'] ?? [];
    if (!Array.isArray(requiresRaw) || requiresRaw.length > 8) fail(`${at}.requires`, 'expected an array of at most 8 feature names');
    const requires = (requiresRaw as unknown[]).map((f, j) => {
      if (typeof f !== 'string' || !isCpuFeature(f)) fail(`${at}.requires[${j}]`, `expected one of ${Object.keys(CPU_FEATURES).join(', ')}`);
      return f;
    });
    const memoryMiB = num(`${at}.memoryMiB`, g['memoryMiB'], 1024);
    if (memoryMiB < 2) fail(`${at}.memoryMiB`, 'at least 2 MiB');
    out.push({
      name,
      description: str(`${at}.description`, g['description'] ?? ''),
      mode,
      sources: sources.map((s, j) => str(`${at}.sources[${j}]`, s, SOURCE_RE)),
      loadGpa: num(`${at}.loadGpa`, g['loadGpa'], 0xffffffff),
      memoryBytes: memoryMiB * 1024 * 1024,
      rom: romSpec,
      msrScratch,
      requires,
      exit: parseExit(`${at}.exit`, g['exit']),
      timeoutMs: num(`${at}.timeoutMs`, g['timeoutMs'] ?? 30000, 600000),
    });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// The test ROM and the expected transcripts

export const TEST_ROM_SIGNATURE = 'TSHV-ROM';

/** The test ROM's contents: "TSHV-ROM" at offset 0, then byte i = i & 0xFF. */
export function testRomImage(size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = i & 0xff;
  b.set(new TextEncoder().encode(TEST_ROM_SIGNATURE), 0);
  return b;
}

/**
 * Fill `{{key}}` placeholders of an expected transcript. A placeholder without a value is an
 * error (a test must never compare against a half-filled transcript).
 */
export function fillTranscript(template: string, vars: Readonly<Record<string, string>>): string {
  return template.replace(/\{\{([A-Za-z0-9_]+)\}\}/g, (_m, key: string) => {
    const v = Object.prototype.hasOwnProperty.call(vars, key) ? vars[key] : undefined;
    if (v === undefined) throw new TshvError('EINVAL', `expected transcript uses {{${key}}}, which has no value`);
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// ELF facts the build checks (bounded parse of the linker's output)

export interface ElfFacts {
  class: 32 | 64;
  entry: number;
  /** Lowest p_vaddr of a PT_LOAD segment with file bytes: where objcopy's image starts. */
  imageBase: number;
}

const PT_LOAD = 1;

/** Entry and image base of a little-endian x86 ELF executable. Pure and bounded. */
export function parseElfFacts(b: Uint8Array): ElfFacts {
  const bad = (what: string): never => { throw new TshvError('EIMAGE', `guest ELF: ${what}`); };
  if (b.length < 52 || b[0] !== 0x7f || b[1] !== 0x45 || b[2] !== 0x4c || b[3] !== 0x46) bad('no ELF magic');
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const cls = b[4] === 1 ? 32 : b[4] === 2 ? 64 : bad(`bad class ${String(b[4])}`);
  if (b[5] !== 1) bad('not little-endian');
  const is64 = cls === 64;
  if (is64 && b.length < 64) bad('truncated header');
  const u = (off: number, wide: boolean): number => {
    if (!wide) return dv.getUint32(off, true);
    const v = dv.getBigUint64(off, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) bad(`value at ${off} too large`);
    return Number(v);
  };
  const entry = u(24, is64);
  const phoff = u(is64 ? 32 : 28, is64);
  const phentsize = dv.getUint16(is64 ? 54 : 42, true);
  const phnum = dv.getUint16(is64 ? 56 : 44, true);
  if (phnum === 0 || phnum > 64) bad(`${phnum} program headers`);
  if (phentsize < (is64 ? 56 : 32)) bad(`program header size ${phentsize}`);
  if (phoff + phnum * phentsize > b.length) bad('program headers past the end');
  let imageBase = Infinity;
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    if (dv.getUint32(p, true) !== PT_LOAD) continue;
    const vaddr = is64 ? u(p + 16, true) : dv.getUint32(p + 8, true);
    const filesz = is64 ? u(p + 32, true) : dv.getUint32(p + 16, true);
    if (filesz > 0 && vaddr < imageBase) imageBase = vaddr;
  }
  if (imageBase === Infinity) bad('no loadable segment with contents');
  return { class: cls, entry, imageBase };
}

// ---------------------------------------------------------------------------------------------
// Paths and tools

/** tests/guests in the source tree: found from this module, else from the working directory. */
export function guestsDir(): string {
  const candidates: string[] = [];
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    candidates.push(join(d, 'tests', 'guests'), d);
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  candidates.push(join(process.cwd(), 'tests', 'guests'));
  for (const c of candidates) if (existsSync(join(c, 'guests.json')) && existsSync(join(c, 'src'))) return c;
  throw new TshvError('EINVAL', 'cannot find tests/guests/guests.json (run from the repository root)');
}

export function loadManifest(dir = guestsDir()): GuestSpec[] {
  return parseManifest(readFileSync(join(dir, 'guests.json'), 'utf8'));
}

export function readExpectedTranscript(name: string, dir = guestsDir()): string {
  return readFileSync(join(dir, 'expected', `${name}.txt`), 'utf8');
}

const TOOLS = ['gcc', 'ld', 'objcopy'] as const;

/** Whether gcc, ld and objcopy run; the reason when not. */
export function checkToolchain(): { ok: true; versions: string } | { ok: false; reason: string } {
  const versions: string[] = [];
  for (const tool of TOOLS) {
    const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    if (r.error !== undefined || r.status !== 0) {
      return { ok: false, reason: `${tool} is not available (${r.error?.message ?? `exit ${String(r.status)}`}); the test guests need gcc and binutils: apt-get install gcc binutils` };
    }
    versions.push(r.stdout.split('\n', 1)[0] ?? '');
  }
  return { ok: true, versions: versions.join('\n') };
}

const CFLAGS_COMMON = [
  '-ffreestanding', '-nostdlib', '-fno-builtin', '-fno-pic', '-fno-pie', '-fno-stack-protector',
  '-fno-asynchronous-unwind-tables', '-fno-unwind-tables', '-fcf-protection=none',
  '-fno-tree-loop-distribute-patterns', '-mgeneral-regs-only', '-O2', '-std=gnu11',
  '-Wall', '-Wextra', '-Werror',
];

interface ModeRecipe {
  cflags: string[];
  ldEmulation: string;
  script: string;
  runtime: string[];
}

const RECIPES: Record<BootMode, ModeRecipe> = {
  real: { cflags: ['-m32'], ldEmulation: 'elf_i386', script: 'common/real.ld', runtime: [] },
  prot32: { cflags: ['-m32', '-march=i686'], ldEmulation: 'elf_i386', script: 'common/link32.ld', runtime: ['common/start32.S', 'common/lib.c'] },
  long64: { cflags: ['-m64', '-mno-red-zone'], ldEmulation: 'elf_x86_64', script: 'common/link64.ld', runtime: ['common/start64.S', 'common/lib.c', 'common/idt.c'] },
};

function run(tool: string, args: string[], cwd: string): void {
  const r = spawnSync(tool, args, { cwd, encoding: 'utf8' });
  if (r.error !== undefined) throw new TshvError('ETOOL', `${tool} could not run: ${r.error.message}`);
  if (r.status !== 0) throw new TshvError('ETOOL', `${tool} ${args.join(' ')} failed (exit ${String(r.status)}):\n${r.stderr}${r.stdout}`);
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p); else out.push(p);
    }
  };
  walk(dir);
  return out;
}

export interface BuiltGuest {
  spec: GuestSpec;
  binPath: string;
  image: Uint8Array;
  /** GPA of the first instruction: loadGpa + (ELF entry - image base). */
  entryGpa: number;
  /** False when the cached build was reused. */
  rebuilt: boolean;
}

export interface BuildOptions {
  /** Where to put the binaries; default <repo>/build/guests. */
  outDir?: string;
  force?: boolean;
  only?: readonly string[];
}

/**
 * Build every guest of the manifest (or `only` those named). Synchronous (the tools run one
 * after another; a full rebuild takes about a second). Throws TshvError ETOOL with the tool's
 * output when a tool is missing or fails, EIMAGE when the ELF does not match the manifest.
 */
export function buildGuests(opts: BuildOptions = {}): Map<string, BuiltGuest> {
  const dir = guestsDir();
  const srcDir = join(dir, 'src');
  const outDir = opts.outDir ?? resolve(dir, '..', '..', 'build', 'guests');
  const tools = checkToolchain();
  if (!tools.ok) throw new TshvError('ETOOL', tools.reason);
  const specs = loadManifest(dir).filter((s) => opts.only === undefined || opts.only.includes(s.name));
  mkdirSync(outDir, { recursive: true });

  const h = createHash('sha256');
  h.update(tools.versions);
  h.update(JSON.stringify({ CFLAGS_COMMON, RECIPES }));
  for (const f of listFiles(srcDir)) {
    h.update(relative(srcDir, f));
    h.update(readFileSync(f));
  }
  const treeHash = h.digest('hex');

  const out = new Map<string, BuiltGuest>();
  for (const spec of specs) {
    const recipe = RECIPES[spec.mode];
    const stampHash = createHash('sha256').update(treeHash).update(JSON.stringify(spec)).digest('hex');
    const base = join(outDir, spec.name);
    const binPath = `${base}.bin`;
    const elfPath = `${base}.elf`;
    const stampPath = `${base}.stamp`;
    let rebuilt = false;
    const fresh = !opts.force && existsSync(binPath) && existsSync(elfPath) && existsSync(stampPath)
      && readFileSync(stampPath, 'utf8') === stampHash;
    if (!fresh) {
      // Build in a private directory and rename into place (stamp last), so that two test
      // processes building at once never see each other's half-written files.
      const tmp = mkdtempSync(join(outDir, `.${spec.name}-`));
      try {
        const objs: string[] = [];
        for (const src of [...recipe.runtime, ...spec.sources]) {
          const path = join(srcDir, src);
          if (!existsSync(path)) throw new TshvError('EINVAL', `guest ${spec.name}: source ${src} does not exist`);
          const obj = join(tmp, `${src.replace(/[/.]/g, '_')}.o`);
          run('gcc', [...CFLAGS_COMMON, ...recipe.cflags, '-I', srcDir, '-c', path, '-o', obj], srcDir);
          objs.push(obj);
        }
        const tmpElf = join(tmp, 'guest.elf');
        const tmpBin = join(tmp, 'guest.bin');
        run('ld', ['-m', recipe.ldEmulation, '-nostdlib', '-z', 'noexecstack', '--no-warn-rwx-segments',
          '-T', join(srcDir, recipe.script), '-o', tmpElf, ...objs], srcDir);
        run('objcopy', ['-O', 'binary', tmpElf, tmpBin], srcDir);
        writeFileSync(join(tmp, 'stamp'), stampHash);
        renameSync(tmpElf, elfPath);
        renameSync(tmpBin, binPath);
        renameSync(join(tmp, 'stamp'), stampPath);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
      rebuilt = true;
    }
    const elf = parseElfFacts(new Uint8Array(readFileSync(elfPath)));
    // Real-mode code is linked at offset 0 of its segment; the others at their load address.
    const expectedBase = spec.mode === 'real' ? 0 : spec.loadGpa;
    if (elf.imageBase !== expectedBase) {
      throw new TshvError('EIMAGE', `guest ${spec.name}: linked at 0x${elf.imageBase.toString(16)}, manifest says 0x${expectedBase.toString(16)}`);
    }
    const image = new Uint8Array(readFileSync(binPath));
    const entryGpa = spec.loadGpa + (elf.entry - elf.imageBase);
    if (elf.entry < elf.imageBase || entryGpa >= spec.loadGpa + image.length) {
      throw new TshvError('EIMAGE', `guest ${spec.name}: entry 0x${elf.entry.toString(16)} is outside the image`);
    }
    out.set(spec.name, { spec, binPath, image, entryGpa, rebuilt });
  }
  return out;
}

// Command line: build everything and say where it went.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const force = process.argv.includes('--force');
  for (const g of buildGuests({ force }).values()) {
    console.log(`${g.spec.name.padEnd(16)} ${g.spec.mode.padEnd(7)} ${String(g.image.length).padStart(6)} bytes  entry 0x${g.entryGpa.toString(16)}  ${g.binPath}${g.rebuilt ? '' : ' (cached)'}`);
  }
}
