// PVH loader: placements, start_info / memmap / modlist encodings read back independently,
// the entry state, and the user-reachable failures (command line, initrd size, segments outside
// RAM, overlaps) as TshvError before anything is written.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TshvError } from '../../base/errors.js';
import { GuestMemory, MemoryBlock, gpa } from '../../guestmem/guestmem.js';
import type { KernelImage, KernelSegment } from '../kernel-file.js';
import { FLAT_LAYOUT, GDT_SELECTORS, SEG_ATTR } from '../flat.js';
import {
  COMMAND_LINE_SIZE, E820, PVH_LAYOUT, XEN_HVM_START_MAGIC_VALUE, buildE820, encodeCmdline, loadLinuxPvh, pcRamLayout, placeInitrd,
  type E820Entry, type RamRange,
} from './pvh.js';

const MIB = 0x100000;

function memory(bytes: number): { mem: GuestMemory; ram: RamRange[] } {
  const mem = new GuestMemory();
  const ram = pcRamLayout(bytes);
  for (const r of ram) mem.map(gpa(r.start), new MemoryBlock(r.size, `ram@${r.start}`), true);
  return { mem, ram };
}

function segment(paddr: number, data: Uint8Array, memSize: number): KernelSegment {
  return { paddr, vaddr: 0xffffffff80000000n + BigInt(paddr), fileOffset: 0, fileSize: data.length, memSize, flags: 5, data };
}

function fakeKernel(segments: KernelSegment[], pvhEntry: number | undefined = segments[0]?.paddr): KernelImage {
  let physStart = Infinity;
  let physEnd = 0;
  for (const s of segments) {
    physStart = Math.min(physStart, s.paddr);
    physEnd = Math.max(physEnd, s.paddr + s.memSize);
  }
  return { fileName: 'fake-vmlinux', segments, physStart, physEnd, ...(pvhEntry !== undefined ? { pvhEntry } : {}) };
}

const text = new Uint8Array(0x3000).fill(0x90);
const kernel = fakeKernel([segment(16 * MIB, text, 0x3000), segment(16 * MIB + 0x4000, Uint8Array.of(1, 2, 3, 4), 0x2000)]);

function readE820(mem: GuestMemory, at: number, n: number): E820Entry[] {
  const out: E820Entry[] = [];
  for (let i = 0; i < n; i++) {
    const b = at + i * 24;
    out.push({ addr: Number(mem.readU64(b)), size: Number(mem.readU64(b + 8)), type: mem.readU32(b + 16) as E820Entry['type'] });
  }
  return out;
}

describe('PVH loader', () => {
  it('load_writesStartInfoModlistCmdlineMemmap', () => {
    const { mem, ram } = memory(64 * MIB);
    mem.fill(16 * MIB + 0x4000, 0x2000, 0xaa);          // stale bytes where the bss goes
    const initrd = new Uint8Array(0x1234).fill(0x5a);
    const r = loadLinuxPvh(mem, { kernel, initrd, cmdline: 'console=ttyS0 quiet', ram, vpCount: 2 });
    const si = r.startInfoPaddr;
    assert.equal(mem.readU32(si), XEN_HVM_START_MAGIC_VALUE);
    assert.equal(mem.readU32(si + 4), 1);
    assert.equal(mem.readU32(si + 8), 0);
    assert.equal(mem.readU32(si + 12), 1);
    const modlist = Number(mem.readU64(si + 16));
    const cmdline = Number(mem.readU64(si + 24));
    assert.equal(Number(mem.readU64(si + 32)), r.acpi.rsdpPaddr);
    assert.equal(Buffer.from(mem.read(r.acpi.rsdpPaddr, 8)).toString('latin1'), 'RSD PTR ');
    const memmap = Number(mem.readU64(si + 40));
    const entries = mem.readU32(si + 48);
    assert.equal(mem.readU32(si + 52), 0);
    // module 0 = initrd: page-aligned, high in RAM, above the kernel.
    const initrdAt = Number(mem.readU64(modlist));
    assert.equal(Number(mem.readU64(modlist + 8)), 0x1234);
    assert.equal(initrdAt % 4096, 0);
    assert.ok(initrdAt >= kernel.physEnd && initrdAt + 0x1234 <= 64 * MIB && initrdAt + 0x1234 > 64 * MIB - 4096);
    assert.deepEqual(mem.read(initrdAt, 0x1234), initrd);
    // command line, NUL-terminated
    assert.equal(Buffer.from(mem.read(cmdline, 20)).toString('latin1'), 'console=ttyS0 quiet\0');
    // memmap
    const e820 = readE820(mem, memmap, entries);
    assert.deepEqual(e820, r.e820);
    assert.deepEqual(e820, [
      { addr: 0, size: 0xa0000, type: E820.RAM },
      { addr: 0xa0000, size: 0x40000, type: E820.RESERVED },
      { addr: 0xe0000, size: 0x1000, type: E820.ACPI },
      { addr: 0xe1000, size: 0x1f000, type: E820.RESERVED },
      { addr: 0x100000, size: 63 * MIB, type: E820.RAM },
    ]);
    // segments and zeroed bss
    assert.deepEqual(mem.read(16 * MIB, 0x3000), text);
    assert.deepEqual(mem.read(16 * MIB + 0x4000, 4), Uint8Array.of(1, 2, 3, 4));
    assert.ok(mem.read(16 * MIB + 0x4004, 0x2000 - 4).every((b) => b === 0));
    // GDT from flat.ts
    assert.equal(mem.readU32(FLAT_LAYOUT.gdt + GDT_SELECTORS.code32 + 4) & 0x00f0ff00, 0x00c09b00);
  });

  it('entryState_followsPvhAbi', () => {
    const { mem, ram } = memory(64 * MIB);
    const { state, startInfoPaddr } = loadLinuxPvh(mem, { kernel, cmdline: '', ram, vpCount: 1 });
    assert.equal(state.regs.rip, BigInt(16 * MIB));
    assert.equal(state.regs.rbx, BigInt(startInfoPaddr));
    assert.equal(state.regs.rflags, 0x2n);
    assert.equal(state.sregs.cr0 & 0x1n, 1n);
    assert.equal(state.sregs.cr0 & (1n << 31n), 0n);
    assert.equal(state.sregs.cr0 & ~0x11n, 0n, 'only PE (and the read-only ET)');
    assert.equal(state.sregs.cr4, 0n);
    assert.equal(state.sregs.efer, 0n);
    for (const s of [state.sregs.cs, state.sregs.ds, state.sregs.es, state.sregs.ss]) {
      assert.equal(s.base, 0n);
      assert.equal(s.limit, 0xffffffff);
    }
    assert.equal(state.sregs.cs.attributes, SEG_ATTR.code32);
    assert.equal(state.sregs.ds.attributes, SEG_ATTR.data);
    assert.equal(state.sregs.tr.attributes & 0xf, 0xb, 'busy TSS');
    assert.equal(state.sregs.tr.limit, 0x67);
    // no initrd: nr_modules 0, modlist 0
    assert.equal(mem.readU32(startInfoPaddr + 12), 0);
    assert.equal(mem.readU64(startInfoPaddr + 16), 0n);
  });

  it('bigGuest_e820HasHighRamAbove4GiB_andMmioHoleAbsent', () => {
    const e820 = buildE820(pcRamLayout(4 * 1024 * MIB), [{ start: 0xe0000, size: 0x400 }]);
    const last = e820[e820.length - 1]!;
    assert.deepEqual(last, { addr: 2 ** 32, size: 1024 * MIB, type: E820.RAM });
    assert.deepEqual(e820[e820.length - 2], { addr: 0x100000, size: 0xc0000000 - 0x100000, type: E820.RAM });
    for (const e of e820) assert.ok(e.addr + e.size <= 0xc0000000 || e.addr >= 2 ** 32, 'nothing in the MMIO hole');
  });

  it('e820_property_sortedNonOverlappingAndRamMatches', () => {
    fc.assert(fc.property(fc.integer({ min: 512, max: 16 * 1024 * 256 }), fc.integer({ min: 1, max: 0x1f000 }), (pages, acpiSize) => {
      const bytes = pages * 4096;
      const e820 = buildE820(pcRamLayout(bytes), [{ start: 0xe0000, size: acpiSize }]);
      let prev = 0;
      let ramBytes = 0;
      for (const e of e820) {
        if (e.addr < prev || e.size <= 0) return false;
        prev = e.addr + e.size;
        if (e.type === E820.RAM) ramBytes += e.size;
      }
      return ramBytes === bytes - 0x60000 && e820.some((e) => e.type === E820.ACPI && e.addr === 0xe0000 && e.size >= acpiSize);
    }));
  });

  it('cmdline_tooLongOrNul_rejected', () => {
    assert.equal(encodeCmdline('x'.repeat(COMMAND_LINE_SIZE - 1)).length, COMMAND_LINE_SIZE);
    assert.throws(() => encodeCmdline('x'.repeat(COMMAND_LINE_SIZE)), (e: unknown) => e instanceof TshvError && e.code === 'EINVAL' && /at most 2047/.test(e.message));
    assert.throws(() => encodeCmdline('a\0b'), TshvError);
    const { mem, ram } = memory(64 * MIB);
    assert.throws(() => loadLinuxPvh(mem, { kernel, cmdline: 'y'.repeat(5000), ram, vpCount: 1 }), TshvError);
  });

  it('initrdTooBig_rejectedBeforeWriting', () => {
    const { mem, ram } = memory(32 * MIB);
    const initrd = new Uint8Array(20 * MIB);
    assert.throws(() => loadLinuxPvh(mem, { kernel, initrd, cmdline: '', ram, vpCount: 1 }),
      (e: unknown) => e instanceof TshvError && /initrd .* does not fit/.test(e.message));
    assert.equal(mem.readU32(PVH_LAYOUT.startInfo), 0, 'nothing written');
    assert.equal(mem.readU8(16 * MIB), 0, 'kernel not written');
  });

  it('placeInitrd_respectsInitrdAddrMax', () => {
    const at = placeInitrd(pcRamLayout(3 * 1024 * MIB), 32 * MIB, 10 * MIB);
    assert.equal(at + 10 * MIB, 0x80000000);
    const small = placeInitrd(pcRamLayout(64 * MIB), 32 * MIB, 5 * MIB + 1);
    assert.equal(small % 4096, 0);
    assert.ok(small + 5 * MIB + 1 <= 64 * MIB);
    assert.throws(() => placeInitrd(pcRamLayout(64 * MIB), 32 * MIB, 0), TshvError);
  });

  it('segmentOutsideRam_rejected', () => {
    const { mem, ram } = memory(16 * MIB);
    assert.throws(() => loadLinuxPvh(mem, { kernel, cmdline: '', ram, vpCount: 1 }),
      (e: unknown) => e instanceof TshvError && /does not lie in guest RAM/.test(e.message));
  });

  it('segmentOverlappingBootArea_rejected', () => {
    const { mem, ram } = memory(32 * MIB);
    const low = fakeKernel([segment(0x7000, Uint8Array.of(1), 0x1000)]);
    assert.throws(() => loadLinuxPvh(mem, { kernel: low, cmdline: '', ram, vpCount: 1 }),
      (e: unknown) => e instanceof TshvError && /overlaps/.test(e.message));
    const inAcpi = fakeKernel([segment(0xf0000, Uint8Array.of(1), 0x1000)]);
    assert.throws(() => loadLinuxPvh(mem, { kernel: inAcpi, cmdline: '', ram, vpCount: 1 }), /overlaps/);
  });

  it('noPvhEntry_rejectedAsImageError', () => {
    const { mem, ram } = memory(32 * MIB);
    const k = { ...fakeKernel([segment(16 * MIB, text, 0x3000)]) } as { pvhEntry?: number } & KernelImage;
    delete k.pvhEntry;
    assert.throws(() => loadLinuxPvh(mem, { kernel: k, cmdline: '', ram, vpCount: 1 }), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE');
  });

  it('badRamLayout_rejected', () => {
    const { mem } = memory(32 * MIB);
    assert.throws(() => loadLinuxPvh(mem, { kernel, cmdline: '', ram: [], vpCount: 1 }), TshvError);
    assert.throws(() => loadLinuxPvh(mem, { kernel, cmdline: '', ram: [{ start: 0x1000, size: 32 * MIB }], vpCount: 1 }), TshvError);
    assert.throws(() => loadLinuxPvh(mem, { kernel, cmdline: '', ram: [{ start: 0, size: 32 * MIB + 1 }], vpCount: 1 }), TshvError);
    // RAM claimed but not mapped in GuestMemory: EGUESTMEM, not a crash
    assert.throws(() => loadLinuxPvh(mem, { kernel, cmdline: '', ram: [{ start: 0, size: 64 * MIB }], vpCount: 1, initrd: new Uint8Array(4096) }),
      (e: unknown) => e instanceof TshvError && e.code === 'EGUESTMEM');
  });

  it('cmdlineAndInitrdPlacement_property_validOrTshvError', () => {
    fc.assert(fc.property(fc.string({ maxLength: 3000 }), (c) => {
      try {
        const b = encodeCmdline(c);
        return b.length <= COMMAND_LINE_SIZE && b[b.length - 1] === 0 && b.indexOf(0) === b.length - 1;
      } catch (e) {
        return e instanceof TshvError;
      }
    }));
    fc.assert(fc.property(fc.integer({ min: 2, max: 4096 }), fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 1, max: 4096 * 4096 }),
      (ramMib, kernelEndMib, size) => {
        try {
          const at = placeInitrd(pcRamLayout(ramMib * MIB), kernelEndMib * MIB, size);
          return at % 4096 === 0 && at >= Math.max(MIB, kernelEndMib * MIB) && at + size <= Math.min(ramMib * MIB, 0xc0000000, 0x80000000);
        } catch (e) {
          return e instanceof TshvError;
        }
      }));
  });
});
