/**
 * Partition-wide state of the emulated processors: the physical memory map as the processors
 * see it (PhysMem) and the cache of decoded blocks (CodeCache).
 *
 * DEVNOTE: both are shared by all VPs of a partition (they run on one thread, ADR 0002/0007).
 * Decoded blocks depend only on the physical bytes and the code size, so one cache serves
 * every VP; each VP keeps its own TLB. PhysMem is rebuilt from GuestMemory.regions() whenever
 * the map changes, and then every TLB and the block cache are flushed.
 */
import type { GuestMemory } from '../../../guestmem/guestmem.js';
import { STRIDE } from './ops.js';
import type { BlockFn, RegionMember } from './jit.js';

export const PAGE_SHIFT = 12;

/** The physical memory map: parallel arrays, one entry per RAM/ROM region, sorted by start. */
export class PhysMem {
  start: number[] = [];
  end: number[] = [];
  writable: boolean[] = [];
  u8: Uint8Array[] = [];
  dv: DataView[] = [];
  /** One byte per 4 KiB page: 1 when the page holds decoded code. */
  code: Uint8Array[] = [];

  constructor(private readonly mem: GuestMemory) { this.rebuild(); }

  rebuild(): void {
    this.start = []; this.end = []; this.writable = []; this.u8 = []; this.dv = []; this.code = [];
    for (const r of this.mem.regions()) {
      const bytes = r.block.bytes;
      this.start.push(r.start);
      this.end.push(r.end);
      this.writable.push(r.writable);
      this.u8.push(bytes);
      this.dv.push(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      this.code.push(new Uint8Array(Math.ceil((r.end - r.start) / 4096)));
    }
  }

  /** Index of the region holding physical address `pa`, or -1. */
  find(pa: number): number {
    const s = this.start, e = this.end;
    for (let i = 0; i < s.length; i++) if (pa >= s[i]! && pa < e[i]!) return i;
    return -1;
  }
}

/** Maximum instructions per block. */
export const MAX_BLOCK_INSNS = 64;
// A kernel boot decodes ~750k blocks; with 2^18 records and 2^16 blocks the cache was flushed
// (everything decoded and compiled again) 20 times. The pool is zero-filled lazily by the OS,
// so the 64 MiB is only resident as far as it is used.
const POOL_INSNS = 1 << 20;
const MAX_BLOCKS = 1 << 18;
const TABLE_BITS = 18;
/** Region limits (jit.ts compileRegion): V8 stops optimizing functions past about 60 KB of bytecode. */
const MAX_REGION_BLOCKS = 16;
const MAX_REGION_INSNS = 200;
/** Regions compiled per page: each new one starts cold in V8 (interpreted until it is optimized again). */
const MAX_REGIONS_PER_PAGE = 3;
/** Stores into a code page that hit no block before the whole page is dropped (invalidateBytes). */
const PAGE_MISS_LIMIT = 64;

/**
 * Decoded blocks: an instruction pool (fixed-stride records, ops.ts), block descriptors, a
 * chained hash table keyed by (physical address, code size) and per-page block lists for
 * invalidation. When the pool or the descriptors run out, everything is flushed.
 * (A direct-mapped table lost blocks to collisions: a kernel's hot code spans megabytes, and
 * an evicted block was decoded again with its execution count back at zero, so it was
 * interpreted again and might never reach JIT_THRESHOLD.)
 */
export class CodeCache {
  readonly pool = new Int32Array(POOL_INSNS * STRIDE);
  poolUsed = 0;
  blocks = 0;
  readonly blkFirst = new Int32Array(MAX_BLOCKS);
  readonly blkCount = new Int32Array(MAX_BLOCKS);
  readonly blkBytes = new Int32Array(MAX_BLOCKS);
  readonly blkKey = new Float64Array(MAX_BLOCKS);
  readonly blkNext = new Int32Array(MAX_BLOCKS);
  /** Second physical page of a block whose last instruction crosses a page boundary, else -1. */
  readonly blkPage2 = new Float64Array(MAX_BLOCKS);
  readonly blkNext2 = new Int32Array(MAX_BLOCKS);
  readonly blkValid = new Uint8Array(MAX_BLOCKS);
  /** Execution counts: a block is compiled (jit.ts) when its count reaches JIT_THRESHOLD. */
  readonly blkExec = new Int32Array(MAX_BLOCKS);
  /** Compiled form of a block (jit.ts), or undefined. */
  readonly blkFn: (BlockFn | undefined)[] = new Array<BlockFn | undefined>(MAX_BLOCKS).fill(undefined);
  genCounter = 0;
  /** Hash table heads and per-block chain links (newest block first; invalid ones unlinked by lookup). */
  readonly tHead = new Int32Array(1 << TABLE_BITS).fill(-1);
  readonly blkChain = new Int32Array(MAX_BLOCKS);
  readonly pageHead = new Map<number, number>();
  /** Regions compiled per code page since it was last invalidated (bounded by MAX_REGIONS_PER_PAGE). */
  readonly regionsMade = new Map<number, number>();
  /** Stores into a code page that dropped no block, per page since it last dropped one (invalidateBytes). */
  readonly pageMisses = new Map<number, number>();
  // Statistics
  readonly stats = { flushes: 0, invalidations: 0, blocksDecoded: 0, compiled: 0, regions: 0, compileMs: 0 };
  /** Called when a page first gets decoded code: VPs drop fast write mappings of it. */
  onNewCodePage: (pa: number) => void = () => undefined;
  /**
   * Called when the blocks of a page stop being valid (blkValid 0; block ids are not reused
   * until a flush): every VP moves its code generation on (cpu.ts codeGen, which compiled
   * regions check before going from member to member). The jump cache checks blkValid itself.
   */
  onInvalidate: () => void = () => undefined;
  /** Called when the cache is flushed (block ids start again at 0): every VP empties its jump cache. */
  onFlush: () => void = () => undefined;

  constructor(readonly phys: PhysMem) {}

  static key(pa: number, mode: number): number { return pa * 4 + mode; }
  static slot(pa: number, mode: number): number {
    const hi = Math.floor(pa / 4294967296) | 0;
    return Math.imul((pa >>> 0) ^ Math.imul(hi, 0x27d4eb2d) ^ mode, 0x9e3779b1) >>> (32 - TABLE_BITS);
  }

  /** The newest valid block decoded at (pa, mode), or -1. Unlinks the invalid blocks it passes. */
  lookup(pa: number, mode: number): number {
    const key = CodeCache.key(pa, mode), s = CodeCache.slot(pa, mode);
    let prev = -1, b = this.tHead[s]!;
    // Chains are acyclic: a block index is linked once per flush, at the head.
    while (b >= 0) {
      const next = this.blkChain[b]!;
      if (this.blkValid[b] !== 1) {
        if (prev < 0) this.tHead[s] = next; else this.blkChain[prev] = next;
      } else {
        if (this.blkKey[b] === key) return b;
        prev = b;
      }
      b = next;
    }
    return -1;
  }

  /** Make room for a block of up to MAX_BLOCK_INSNS + 1 instructions; returns the first pool index. */
  reserve(): number {
    if (this.poolUsed + MAX_BLOCK_INSNS + 1 > POOL_INSNS || this.blocks >= MAX_BLOCKS) this.flush();
    return this.poolUsed;
  }

  /**
   * Commit a block decoded at the reserved pool position. `page2` is the physical address of
   * the second page when the last instruction crosses a page boundary, else -1.
   */
  commit(pa: number, mode: number, count: number, bytes: number, page2: number): number {
    const b = this.blocks++;
    this.blkFirst[b] = this.poolUsed;
    this.blkCount[b] = count;
    this.blkBytes[b] = bytes;
    this.blkKey[b] = CodeCache.key(pa, mode);
    this.blkPage2[b] = page2;
    this.blkExec[b] = 0;
    this.blkFn[b] = undefined;
    this.poolUsed += count;
    this.stats.blocksDecoded++;
    this.blkValid[b] = 1;
    const s = CodeCache.slot(pa, mode);
    this.blkChain[b] = this.tHead[s]!;
    this.tHead[s] = b;
    const page = Math.floor(pa / 4096);
    this.blkNext[b] = this.#link(page, b);
    this.blkNext2[b] = page2 >= 0 ? this.#link(page2 / 4096, b) : -1;
    return b;
  }

  /** Put block b at the head of page's list (marking the page as code); returns the old head. */
  #link(page: number, b: number): number {
    const head = this.pageHead.get(page) ?? -1;
    this.pageHead.set(page, b);
    const pa = page * 4096;
    const r = this.phys.find(pa);
    if (r >= 0) {
      const pg = Math.floor((pa - this.phys.start[r]!) / 4096);
      const bits = this.phys.code[r]!;
      if (bits[pg] === 0) { bits[pg] = 1; this.onNewCodePage(pa); }
    }
    return head;
  }

  /**
   * The blocks a region for hot block `b` (64-bit code) takes in (jit.ts compileRegion): `b`
   * and the other valid, compiled 64-bit blocks of its page run at least `minRuns` times,
   * each the current block for its address, none crossing into the next page; hottest first
   * up to MAX_REGION_BLOCKS and MAX_REGION_INSNS. Empty when `b` itself cannot be a member.
   */
  regionMembers(b: number, minRuns: number): RegionMember[] {
    const key = this.blkKey[b]!;
    const pa = Math.floor(key / 4), mode = key - pa * 4;
    if (mode !== 2 || this.blkPage2[b]! >= 0 || this.blkValid[b] !== 1) return [];
    const page = Math.floor(pa / 4096);
    const made = this.regionsMade.get(page) ?? 0;
    if (made >= MAX_REGIONS_PER_PAGE) return [];
    this.regionsMade.set(page, made + 1);
    const cand: number[] = [];
    let m = this.pageHead.get(page) ?? -1;
    let guard = MAX_BLOCKS;
    while (m >= 0 && guard-- > 0) {
      const k = this.blkKey[m]!, mpa = Math.floor(k / 4);
      const next = Math.floor(mpa / 4096) === page ? this.blkNext[m]! : this.blkNext2[m]!;
      if (m !== b && this.blkValid[m] === 1 && k - mpa * 4 === 2 && Math.floor(mpa / 4096) === page && this.blkPage2[m]! < 0 &&
        this.lookup(mpa, 2) === m && this.blkFn[m] !== undefined && this.blkExec[m]! >= minRuns) cand.push(m);
      m = next;
    }
    cand.sort((x, y) => this.blkExec[y]! - this.blkExec[x]!);
    const out: RegionMember[] = [];
    let insns = 0;
    for (const x of [b, ...cand]) {
      if (out.length >= MAX_REGION_BLOCKS || insns + this.blkCount[x]! > MAX_REGION_INSNS) break;
      insns += this.blkCount[x]!;
      out.push({ blk: x, first: this.blkFirst[x]!, count: this.blkCount[x]!, pageOff: Math.floor(this.blkKey[x]! / 4) % 4096 });
    }
    return out;
  }

  /** Drop every block decoded from physical page `page` (a page number). */
  invalidatePage(page: number): void {
    this.onInvalidate();
    let b = this.pageHead.get(page) ?? -1;
    let guard = MAX_BLOCKS;
    while (b >= 0 && guard-- > 0) {
      const pa = Math.floor(this.blkKey[b]! / 4);
      const next = Math.floor(pa / 4096) === page ? this.blkNext[b]! : this.blkNext2[b]!;
      if (this.blkValid[b] === 1) {
        this.blkValid[b] = 0;
        this.blkFn[b] = undefined;
      }
      b = next;
    }
    this.#dropPage(page);
    this.stats.invalidations++;
  }

  /**
   * A guest store of `len` bytes at physical `pa` (not crossing a page) into a page holding
   * decoded code: drop only the blocks whose bytes it overlaps (as QEMU does), so that code
   * patching its own page (Linux applying alternatives, jump labels, static calls: ~1,000
   * pages at boot, among them the pages of the patching code) keeps the rest of the page's
   * blocks, compiled ones included. The page stays code (stores to it keep taking this path)
   * while blocks remain; after PAGE_MISS_LIMIT stores that hit no block the whole page is
   * dropped instead, so data sharing a page with code is not held on the slow path. Returns
   * true if any block was dropped.
   */
  invalidateBytes(pa: number, len: number): boolean {
    const page = Math.floor(pa / 4096), base = page * 4096;
    // A region (jit.ts) holds copies of all its members: drop the whole page.
    if (this.regionsMade.has(page)) { this.invalidatePage(page); return true; }
    const lo = pa - base, hi = lo + len;
    let prev = -1, prevOnFirst = false, b = this.pageHead.get(page) ?? -1, any = false, live = 0;
    let guard = MAX_BLOCKS;
    while (b >= 0 && guard-- > 0) {
      const bpa = Math.floor(this.blkKey[b]! / 4);
      const onFirst = bpa - (bpa % 4096) === base;
      const next = onFirst ? this.blkNext[b]! : this.blkNext2[b]!;
      let keep = this.blkValid[b] === 1;
      if (keep) {
        // The block's bytes in this page: from its start on its first page; from offset 0 to
        // where it ends on its second.
        const st = onFirst ? bpa - base : 0;
        const en = onFirst ? st + this.blkBytes[b]! : (bpa % 4096) + this.blkBytes[b]! - 4096;
        if (st < hi && lo < en) { this.blkValid[b] = 0; this.blkFn[b] = undefined; keep = false; any = true; }
      }
      if (keep) { live++; prev = b; prevOnFirst = onFirst; }
      else if (prev < 0) { if (next >= 0) this.pageHead.set(page, next); else this.pageHead.delete(page); }
      else if (prevOnFirst) this.blkNext[prev] = next;
      else this.blkNext2[prev] = next;
      b = next;
    }
    if (any) { this.onInvalidate(); this.stats.invalidations++; this.pageMisses.delete(page); }
    else {
      const m = (this.pageMisses.get(page) ?? 0) + 1;
      this.pageMisses.set(page, m);
      if (m >= PAGE_MISS_LIMIT) { this.invalidatePage(page); return false; }
    }
    if (live === 0) this.#dropPage(page);
    return any;
  }

  /** The page holds no valid blocks any more: forget its list and its code mark. */
  #dropPage(page: number): void {
    this.pageHead.delete(page);
    this.regionsMade.delete(page);
    this.pageMisses.delete(page);
    const r = this.phys.find(page * 4096);
    if (r >= 0) this.phys.code[r]![Math.floor((page * 4096 - this.phys.start[r]!) / 4096)] = 0;
  }

  /** Invalidate all code in [pa, pa+len) (host-side writes); true if any block was dropped. */
  invalidateRange(pa: number, len: number): boolean {
    if (len <= 0) return false;
    const first = Math.floor(pa / 4096), last = Math.floor((pa + len - 1) / 4096);
    let any = false;
    for (let p = first; p <= last; p++) if (this.pageHead.has(p)) { this.invalidatePage(p); any = true; }
    return any;
  }

  flush(): void {
    this.onFlush();
    this.poolUsed = 0;
    this.blocks = 0;
    this.tHead.fill(-1);
    this.pageHead.clear();
    this.regionsMade.clear();
    this.pageMisses.clear();
    for (const c of this.phys.code) c.fill(0);
    this.stats.flushes++;
  }
}
