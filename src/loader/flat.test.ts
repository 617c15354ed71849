import test from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory, MemoryBlock, gpa } from '../guestmem/guestmem.js';
import {
  APIC_BASE_MSR_VALUE, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, FLAT_LAYOUT, GDT_SELECTORS, PTE_PCD, PTE_PS, SEG_ATTR,
  bootRegisters, buildGdt, encodeDescriptor, initialState, isBootMode, loadFlatImage, pdEntry, resetLapicPage,
} from './flat.js';

type SegmentRegister = ReturnType<typeof initialState>['sregs']['cs'];

const MIB = 0x100000;

function ram(bytes = 16 * MIB): GuestMemory {
  const m = new GuestMemory();
  m.map(gpa(0), new MemoryBlock(bytes, 'ram'), true);
  return m;
}

/** Decode one 8-byte descriptor into (base, byte limit, VMX-layout attributes). */
function decodeDescriptor(lo: number, hi: number): { base: number; limit: number; attributes: number } {
  const base = ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) >>> 0;
  const raw = (lo & 0xffff) | (hi & 0xf0000);
  const attributes = ((hi >>> 8) & 0xff) | ((hi >>> 8) & 0xf000);
  const g = (attributes & 0x8000) !== 0;
  return { base, limit: g ? raw * 4096 + 4095 : raw, attributes };
}

/** The descriptor the GDT in guest memory holds for a selector must be what the VP has loaded. */
function assertSegmentMatchesGdt(m: GuestMemory, s: SegmentRegister): void {
  const at = FLAT_LAYOUT.gdt + (s.selector & ~7);
  const d = decodeDescriptor(m.readU32(at), m.readU32(at + 4));
  assert.equal(BigInt(d.base), s.base, `base of selector ${s.selector}`);
  assert.equal(d.limit >>> 0, s.limit, `limit of selector ${s.selector}`);
  assert.equal(d.attributes, s.attributes, `attributes of selector ${s.selector}`);
}

/** A 4-level walk of the loader's tables (2 MiB leaves only), as the processor would do it. */
function translate(m: GuestMemory, cr3: number, va: number): { pa: number; pde: number } | null {
  const pml4e = Number(m.readU64(cr3 + Math.floor(va / 2 ** 39) % 512 * 8));
  if ((pml4e & 1) === 0) return null;
  const pdpte = Number(m.readU64((pml4e & ~0xfff) + Math.floor(va / 2 ** 30) % 512 * 8));
  if ((pdpte & 1) === 0 || (pdpte & PTE_PS) !== 0) return null;
  const pde = Number(m.readU64((pdpte & ~0xfff) + Math.floor(va / 2 ** 21) % 512 * 8));
  if ((pde & 1) === 0 || (pde & PTE_PS) === 0) return null;
  return { pa: ((pde & 0xffe00000) >>> 0) + (va % 2 ** 21), pde };
}

test('encodeDescriptor_flatCode32_isTheClassicValue', () => {
  assert.deepEqual(encodeDescriptor(0, 0xffffffff, SEG_ATTR.code32), [0x0000ffff, 0x00cf9b00]);
  assert.deepEqual(encodeDescriptor(0, 0xffffffff, SEG_ATTR.code64), [0x0000ffff, 0x00af9b00]);
  assert.deepEqual(encodeDescriptor(0, 0xffffffff, SEG_ATTR.data), [0x0000ffff, 0x00cf9300]);
});

test('encodeDescriptor_byteGranularLimitTooBig_throws', () => {
  assert.throws(() => encodeDescriptor(0, 0x100000, 0x93), /does not fit/);
});

test('encodeDescriptor_decodesBack_property', () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xfffff }), fc.integer({ min: 0, max: 0xff }),
    fc.integer({ min: 0, max: 7 }),
    (base, raw, access, flags) => {
      const attributes = access | (flags << 12);   // AVL, L, D/B; G off: byte-granular
      const [lo, hi] = encodeDescriptor(base, raw, attributes);
      assert.deepEqual(decodeDescriptor(lo, hi), { base, limit: raw, attributes });
    }));
});

test('buildGdt_hasNullFirstAndBusyTssWithZeroUpperHalf', () => {
  const g = buildGdt();
  assert.equal(g.length, FLAT_LAYOUT.gdtEntries * 8);
  assert.deepEqual([...g.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  const dv = new DataView(g.buffer);
  const tss = decodeDescriptor(dv.getUint32(GDT_SELECTORS.tss, true), dv.getUint32(GDT_SELECTORS.tss + 4, true));
  assert.deepEqual(tss, { base: FLAT_LAYOUT.tss, limit: FLAT_LAYOUT.tssLimit, attributes: SEG_ATTR.tssBusy });
  assert.equal(dv.getUint32(GDT_SELECTORS.tss + 8, true), 0);
  assert.equal(dv.getUint32(GDT_SELECTORS.tss + 12, true), 0);
});

test('bootRegisters_real_csIpAddsUpToEntry_dataSegmentsEqualCs', () => {
  const { regs, sregs } = bootRegisters('real', 0x12345);
  assert.equal(sregs.cs.selector, 0x1000);
  assert.equal(sregs.cs.base, 0x10000n);
  assert.equal(regs.rip, 0x2345n);
  assert.equal(sregs.cs.attributes, SEG_ATTR.realCode);
  for (const s of [sregs.ds, sregs.es, sregs.fs, sregs.gs]) {
    assert.equal(s.selector, 0x1000);
    assert.equal(s.base, 0x10000n);
    assert.equal(s.limit, 0xffff);
    assert.equal(s.attributes, SEG_ATTR.realData);
  }
  assert.equal(sregs.ss.base + regs.rsp, BigInt(FLAT_LAYOUT.stackTop));
  assert.equal(sregs.cr0 & CR0_PE, 0n);
  assert.deepEqual(sregs.idt, { base: 0n, limit: 0x3ff });
  assert.equal(regs.rflags, 2n);
});

test('bootRegisters_real_entryAtOrAbove1MiB_throws', () => {
  assert.throws(() => bootRegisters('real', 0x100000), /below 1 MiB/);
  assert.throws(() => bootRegisters('real', -1), /bad entry/);
});

test('bootRegisters_real_property_baseIsSelectorTimes16AndIpFits', () => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xfffff }), (entry) => {
    const { regs, sregs } = bootRegisters('real', entry);
    assert.equal(sregs.cs.base, BigInt(sregs.cs.selector * 16));
    assert.ok(regs.rip <= 0xffffn);
    assert.equal(sregs.cs.base + regs.rip, BigInt(entry));
  }));
});

test('bootRegisters_prot32_flatSegmentsPeNoPaging', () => {
  const { regs, sregs } = bootRegisters('prot32', 0x100000);
  assert.equal(regs.rip, 0x100000n);
  assert.equal(regs.rsp, BigInt(FLAT_LAYOUT.stackTop));
  assert.equal(sregs.cs.selector, GDT_SELECTORS.code32);
  assert.equal(sregs.cs.attributes, SEG_ATTR.code32);
  assert.equal(sregs.ss.selector, GDT_SELECTORS.data);
  assert.equal(sregs.cr0 & CR0_PE, CR0_PE);
  assert.equal(sregs.cr0 & CR0_PG, 0n);
  assert.equal(sregs.efer, 0n);
  assert.equal(sregs.cr4 & CR4_PAE, 0n);
  assert.throws(() => bootRegisters('prot32', 0x100000000), /above 4 GiB/);
});

test('bootRegisters_long64_longModeControlBitsAndLCode', () => {
  const { sregs } = bootRegisters('long64', 0x100000);
  assert.equal(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
  assert.equal(sregs.cr4 & CR4_PAE, CR4_PAE);
  assert.equal(sregs.efer, EFER_LME | EFER_LMA);
  assert.equal(sregs.cr3, BigInt(FLAT_LAYOUT.pml4));
  assert.equal(sregs.cs.selector, GDT_SELECTORS.code64);
  assert.equal(sregs.cs.attributes & 0x2000, 0x2000, 'CS.L');
  assert.equal(sregs.cs.attributes & 0x4000, 0, 'CS.D must be 0 with L');
  assert.equal(sregs.tr.attributes & 0xf, 0xb, 'busy 64-bit TSS');
  assert.equal(sregs.apicBase, APIC_BASE_MSR_VALUE);
});

test('initialState_defaults_lapicAtResetAndXsaveInit', () => {
  const s = initialState('long64', 0x100000);
  const lapic = new DataView(s.lapic.buffer);
  assert.equal(s.lapic.length, 1024);
  assert.equal(lapic.getUint32(0xf0, true), 0xff, 'SVR: software-disabled, vector 0xFF');
  assert.equal(lapic.getUint32(0x350, true), 0x10000, 'LINT0 masked');
  assert.equal(lapic.getUint32(0xe0, true), 0xffffffff);
  assert.equal(s.xsave.length, 4096);
  assert.equal(new DataView(s.xsave.buffer).getUint16(0, true), 0x037f);
  assert.equal(s.xcr0, 1n);
  assert.equal(s.halted, false);
  assert.equal(s.events.exception, null);
});

test('initialState_withBase_keepsNonRegisterStateAsCopies', () => {
  const base = initialState('real', 0x10000);
  base.lapic[0x80] = 0x42;
  base.msrs.set(0x277, 0x0007040600070406n);
  const s = initialState('long64', 0x100000, base);
  assert.equal(s.lapic[0x80], 0x42);
  assert.equal(s.msrs.get(0x277), 0x0007040600070406n);
  s.lapic[0x80] = 0;
  assert.equal(base.lapic[0x80], 0x42, 'a copy, not the same array');
  assert.equal(s.sregs.efer, EFER_LME | EFER_LMA);
});

test('resetLapicPage_putsApicIdInTopByte', () => {
  assert.equal(new DataView(resetLapicPage(3).buffer).getUint32(0x20, true), 3 << 24);
});

test('loadFlatImage_long64_writesImageGdtAndIdentityTables', () => {
  const m = ram();
  const image = Uint8Array.from([0xf4, 0xeb, 0xfd]);
  const s = loadFlatImage(m, image, { mode: 'long64', loadGpa: 0x100000 });
  assert.deepEqual([...m.read(0x100000, 3)], [0xf4, 0xeb, 0xfd]);
  for (const r of [s.sregs.cs, s.sregs.ds, s.sregs.ss, s.sregs.tr]) assertSegmentMatchesGdt(m, r);
  assert.equal(s.sregs.gdt.base, BigInt(FLAT_LAYOUT.gdt));
  const cr3 = Number(s.sregs.cr3);
  for (const va of [0, 0x1234, 0x100000, 0x1fffff, 0x200000, 0xfeb00004, 0xfee000f0, 0xffffffff, 0x7fffffff, 0xbfffffff]) {
    const t = translate(m, cr3, va);
    assert.ok(t !== null, `va ${va.toString(16)} is mapped`);
    assert.equal(t.pa, va, `identity at ${va.toString(16)}`);
  }
  assert.equal(translate(m, cr3, 0x100000000), null, 'nothing above 4 GiB');
  assert.equal(translate(m, cr3, 0xfee00000)!.pde & PTE_PCD, PTE_PCD, 'MMIO GiB uncached');
  assert.equal(translate(m, cr3, 0x100000)!.pde & PTE_PCD, 0, 'RAM cached');
});

test('loadFlatImage_prot32_writesGdtButNoPageTables', () => {
  const m = ram();
  m.fill(FLAT_LAYOUT.pml4, 8, 0xcc);
  const s = loadFlatImage(m, new Uint8Array([0x90, 0xf4]), { mode: 'prot32', loadGpa: 0x100000, entryGpa: 0x100001 });
  assert.equal(s.regs.rip, 0x100001n);
  for (const r of [s.sregs.cs, s.sregs.ds, s.sregs.es, s.sregs.ss, s.sregs.tr]) assertSegmentMatchesGdt(m, r);
  assert.equal(m.readU8(FLAT_LAYOUT.pml4), 0xcc, 'page tables untouched');
});

test('loadFlatImage_real_writesOnlyTheImage', () => {
  const m = ram();
  m.fill(FLAT_LAYOUT.gdt, 8, 0xcc);
  const s = loadFlatImage(m, new Uint8Array([0xf4]), { mode: 'real', loadGpa: 0x10000 });
  assert.equal(s.sregs.cs.base + s.regs.rip, 0x10000n);
  assert.equal(m.readU8(FLAT_LAYOUT.gdt), 0xcc);
  assert.equal(m.readU8(0x10000), 0xf4);
});

test('loadFlatImage_badLayouts_throwBeforeWriting', () => {
  const m = ram();
  const img = new Uint8Array([1, 2, 3, 4]);
  assert.throws(() => loadFlatImage(m, img, { mode: 'long64', loadGpa: 0x8000 }), /below/);
  assert.throws(() => loadFlatImage(m, new Uint8Array(0), { mode: 'long64', loadGpa: 0x100000 }), /empty/);
  assert.throws(() => loadFlatImage(m, img, { mode: 'long64', loadGpa: 0x100000, entryGpa: 0x100004 }), /outside the image/);
  assert.throws(() => loadFlatImage(m, img, { mode: 'long64', loadGpa: 0x100000, entryGpa: 0xfffff }), /outside the image/);
  assert.throws(() => loadFlatImage(m, img, { mode: 'real', loadGpa: 0x100000 }), /below 1 MiB/);
  assert.throws(() => loadFlatImage(m, img, { mode: 'long64', loadGpa: 16 * MIB - 2 }), /does not lie in one writable RAM region/);
  assert.equal(m.readU32(0x100000), 0, 'nothing written by the failed loads');
  assert.equal(m.readU32(FLAT_LAYOUT.gdt + 8), 0, 'no GDT written by the failed loads');
});

test('loadFlatImage_structuresNotInRam_throws', () => {
  const m = new GuestMemory();
  m.map(gpa(0x100000), new MemoryBlock(MIB, 'high'), true);
  assert.throws(() => loadFlatImage(m, new Uint8Array([0xf4]), { mode: 'long64', loadGpa: 0x100000 }), /boot structures/);
  const rom = new GuestMemory();
  rom.map(gpa(0), new MemoryBlock(0x10000, 'low'), true);
  rom.map(gpa(0x10000), new MemoryBlock(0x10000, 'rom'), false);
  assert.throws(() => loadFlatImage(rom, new Uint8Array([0xf4]), { mode: 'real', loadGpa: 0x10000 }), /image/);
});

test('loadFlatImage_property_imageBytesLandAtLoadGpa', () => {
  fc.assert(fc.property(
    fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.integer({ min: 0x10000, max: 0x8ffff }), fc.constantFrom('real', 'prot32', 'long64'),
    (bytes, load, mode) => {
      if (!isBootMode(mode)) return;
      const m = ram(MIB);
      const s = loadFlatImage(m, bytes, { mode, loadGpa: load });
      assert.deepEqual(m.read(load, bytes.length), bytes);
      const linear = mode === 'real' ? s.sregs.cs.base + s.regs.rip : s.regs.rip;
      assert.equal(linear, BigInt(load));
    }), { numRuns: 50 });
});

test('pdEntry_isTwoMiBIdentityLeaf', () => {
  assert.equal(pdEntry(0, 0), 0x83);
  assert.equal(pdEntry(0, 1), 0x200083);
  assert.equal(pdEntry(3, 511) >>> 0, (0xffe00000 | 0x83 | 0x18) >>> 0);
});
