/**
 * Linux kernel modules (.ko): the .modinfo section, and load order from the `depends=` lists.
 *
 * A .ko is an ELF64 relocatable object. Its ".modinfo" section is a sequence of NUL-terminated
 * "key=value" strings (include/linux/moduleparam.h, MODULE_INFO; scripts/mod/modpost.c adds
 * "depends=a,b" and "name=..."; kmod's libkmod-elf.c reads it the same way). Debian's kernel
 * package ships the .ko files but not modules.dep (depmod writes that at install time), so tshv
 * computes the dependency closure itself from `depends=`.
 *
 * Module names compare with '-' and '_' folded together, as kmod does (modname_normalize).
 *
 * `parseModinfo` is pure and bounded (section headers checked against the file, at most
 * MAX_SECTIONS of them); failures are TshvError('EIMAGE') naming the file. `loadOrder` walks the
 * dependency graph depth-first with an explicit "visiting" set, so a cycle (which depmod would
 * also refuse) is reported instead of recursing forever.
 */
import { TshvError } from '../base/errors.js';

export interface Modinfo {
  /** Normalised module name ('-' -> '_'). */
  readonly name: string;
  /** Normalised names from depends=, in order, without empties. */
  readonly depends: readonly string[];
  readonly vermagic?: string;
  /** Every key=value pair, in order (keys may repeat, e.g. alias=). */
  readonly fields: readonly (readonly [string, string])[];
}

const SHT_NOBITS = 8;
const MAX_SECTIONS = 65_280; // SHN_LORESERVE
const MAX_MODINFO = 1 << 20;

export function normalizeModuleName(n: string): string {
  return n.replace(/-/g, '_');
}

/** Module name from a file name: "hv-foo.ko" / "hv_foo.ko.xz" -> "hv_foo". */
export function moduleNameFromPath(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return normalizeModuleName(base.replace(/\.ko(\.(xz|zst|gz))?$/, ''));
}

/** Parse the .modinfo section of a .ko. Pure, bounded; throws EIMAGE naming `fileName`. */
export function parseModinfo(bytes: Uint8Array, fileName: string): Modinfo {
  const fail = (what: string): never => { throw new TshvError('EIMAGE', `${fileName}: ${what}`); };
  if (bytes.length < 64) fail(`truncated ELF header (${bytes.length} bytes)`);
  if (!(bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46)) fail('not an ELF file (bad magic)');
  if (bytes[4] !== 2 || bytes[5] !== 1) fail('not a little-endian ELF64 module');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shoffBig = dv.getBigUint64(0x28, true);
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  if (shentsize !== 64) fail(`e_shentsize ${shentsize} (expected 64)`);
  if (shnum === 0 || shnum > MAX_SECTIONS) fail(`e_shnum ${shnum} out of range`);
  if (shoffBig > BigInt(bytes.length)) fail('section headers lie past the end of the file');
  const shoff = Number(shoffBig);
  if (shoff + shnum * 64 > bytes.length) fail('section headers run past the end of the file');
  if (shstrndx >= shnum) fail(`e_shstrndx ${shstrndx} out of range`);

  const section = (i: number): { name: number; type: number; offset: number; size: number } => {
    const at = shoff + i * 64;
    const off = dv.getBigUint64(at + 0x18, true);
    const size = dv.getBigUint64(at + 0x20, true);
    const type = dv.getUint32(at + 4, true);
    if (type !== SHT_NOBITS && (off > BigInt(bytes.length) || size > BigInt(bytes.length) || off + size > BigInt(bytes.length))) {
      fail(`section ${i} runs past the end of the file`);
    }
    return { name: dv.getUint32(at, true), type, offset: Number(off), size: type === SHT_NOBITS ? 0 : Number(size) };
  };
  const strtab = section(shstrndx);
  const nameAt = (off: number): string => {
    if (off >= strtab.size) return fail(`section name offset ${off} outside the section name table`);
    let e = strtab.offset + off;
    const end = strtab.offset + strtab.size;
    const start = e;
    while (e < end && bytes[e] !== 0) e++;
    return String.fromCharCode(...bytes.subarray(start, Math.min(e, start + 64)));
  };
  let modinfo: { offset: number; size: number } | undefined;
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (nameAt(s.name) === '.modinfo') { modinfo = s; break; }
  }
  if (modinfo === undefined) return fail('no .modinfo section (not a kernel module?)');
  if (modinfo.size > MAX_MODINFO) fail(`.modinfo is ${modinfo.size} bytes (limit ${MAX_MODINFO})`);
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes.subarray(modinfo.offset, modinfo.offset + modinfo.size));
  const fields: [string, string][] = [];
  for (const s of text.split('\0')) {
    if (s.length === 0) continue;
    const eq = s.indexOf('=');
    if (eq <= 0) continue;
    fields.push([s.slice(0, eq), s.slice(eq + 1)]);
  }
  const get = (k: string): string | undefined => fields.find(([key]) => key === k)?.[1];
  const rawName = get('name') ?? moduleNameFromPath(fileName);
  const dependsRaw = get('depends') ?? '';
  const vermagic = get('vermagic');
  return {
    name: normalizeModuleName(rawName),
    depends: dependsRaw.split(',').map((d) => normalizeModuleName(d.trim())).filter((d) => d.length > 0),
    ...(vermagic !== undefined ? { vermagic } : {}),
    fields,
  };
}

/**
 * The modules to load for `roots`, dependencies first, each once. `depsOf` returns the direct
 * dependencies of a module, or undefined if the module is unknown (an error naming it and the
 * module that needs it). A dependency cycle is an error naming the cycle.
 */
export function loadOrder(roots: readonly string[], depsOf: (name: string) => readonly string[] | undefined): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visiting: string[] = [];
  const visit = (name: string, neededBy: string | undefined): void => {
    if (done.has(name)) return;
    const cycleAt = visiting.indexOf(name);
    if (cycleAt >= 0) {
      throw new TshvError('EIMAGE', `module dependency cycle: ${[...visiting.slice(cycleAt), name].join(' -> ')}`);
    }
    const deps = depsOf(name);
    if (deps === undefined) {
      throw new TshvError('EIMAGE', neededBy === undefined ? `module ${name} not found` : `module ${name} (needed by ${neededBy}) not found`);
    }
    visiting.push(name);
    for (const d of deps) visit(d, name);
    visiting.pop();
    done.add(name);
    order.push(name);
  };
  for (const r of roots) visit(normalizeModuleName(r), undefined);
  return order;
}
