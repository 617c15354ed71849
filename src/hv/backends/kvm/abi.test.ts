// Unit tests of the KVM ABI tables and codecs. No /dev/kvm needed; the header check needs gcc
// and the Linux uapi headers and skips (visibly) without them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import * as abi from './abi.js';
import { SEG_UNUSABLE } from '../state.js';
import type { GeneralRegisters, PendingEvents, SegmentRegister, SpecialRegisters } from '../state.js';
import { stopReason } from './partition.js';
import * as mb from './mailbox.js';

// Every exported constant whose name is also a C macro of <linux/kvm.h>.
const MACROS = Object.entries(abi).filter(([k, v]) => typeof v === 'number' && /^KVM_/.test(k) &&
  !/_SIZE$/.test(k) && k !== 'KVM_API_VERSION' && k !== 'KVM_RUN_SIZE') as [string, number][];

const LAYOUT: [string, number, string][] = [
  ['KVM_RUN_SIZE', abi.KVM_RUN_SIZE, 'sizeof(struct kvm_run)'],
  ['RUN_IMMEDIATE_EXIT', abi.RUN_IMMEDIATE_EXIT, 'offsetof(struct kvm_run, immediate_exit)'],
  ['RUN_EXIT_REASON', abi.RUN_EXIT_REASON, 'offsetof(struct kvm_run, exit_reason)'],
  ['RUN_IO_DIRECTION', abi.RUN_IO_DIRECTION, 'offsetof(struct kvm_run, io.direction)'],
  ['RUN_IO_SIZE', abi.RUN_IO_SIZE, 'offsetof(struct kvm_run, io.size)'],
  ['RUN_IO_PORT', abi.RUN_IO_PORT, 'offsetof(struct kvm_run, io.port)'],
  ['RUN_IO_COUNT', abi.RUN_IO_COUNT, 'offsetof(struct kvm_run, io.count)'],
  ['RUN_IO_DATA_OFFSET', abi.RUN_IO_DATA_OFFSET, 'offsetof(struct kvm_run, io.data_offset)'],
  ['RUN_MMIO_PHYS_ADDR', abi.RUN_MMIO_PHYS_ADDR, 'offsetof(struct kvm_run, mmio.phys_addr)'],
  ['RUN_MMIO_DATA', abi.RUN_MMIO_DATA, 'offsetof(struct kvm_run, mmio.data)'],
  ['RUN_MMIO_LEN', abi.RUN_MMIO_LEN, 'offsetof(struct kvm_run, mmio.len)'],
  ['RUN_MMIO_IS_WRITE', abi.RUN_MMIO_IS_WRITE, 'offsetof(struct kvm_run, mmio.is_write)'],
  ['RUN_MSR_ERROR', abi.RUN_MSR_ERROR, 'offsetof(struct kvm_run, msr.error)'],
  ['RUN_MSR_REASON', abi.RUN_MSR_REASON, 'offsetof(struct kvm_run, msr.reason)'],
  ['RUN_MSR_INDEX', abi.RUN_MSR_INDEX, 'offsetof(struct kvm_run, msr.index)'],
  ['RUN_MSR_DATA', abi.RUN_MSR_DATA, 'offsetof(struct kvm_run, msr.data)'],
  ['RUN_INTERNAL_SUBERROR', abi.RUN_INTERNAL_SUBERROR, 'offsetof(struct kvm_run, internal.suberror)'],
  ['RUN_INTERNAL_NDATA', abi.RUN_INTERNAL_NDATA, 'offsetof(struct kvm_run, internal.ndata)'],
  ['RUN_INTERNAL_DATA', abi.RUN_INTERNAL_DATA, 'offsetof(struct kvm_run, internal.data)'],
  ['RUN_FAIL_ENTRY_REASON', abi.RUN_FAIL_ENTRY_REASON, 'offsetof(struct kvm_run, fail_entry.hardware_entry_failure_reason)'],
  ['RUN_FAIL_ENTRY_CPU', abi.RUN_FAIL_ENTRY_CPU, 'offsetof(struct kvm_run, fail_entry.cpu)'],
  ['RUN_SYSTEM_EVENT_TYPE', abi.RUN_SYSTEM_EVENT_TYPE, 'offsetof(struct kvm_run, system_event.type)'],
  ['RUN_SYSTEM_EVENT_NDATA', abi.RUN_SYSTEM_EVENT_NDATA, 'offsetof(struct kvm_run, system_event.ndata)'],
  ['KVM_REGS_SIZE', abi.KVM_REGS_SIZE, 'sizeof(struct kvm_regs)'],
  ['REGS_RCX', abi.REGS_RCX, 'offsetof(struct kvm_regs, rcx)'],
  ['REGS_RDX', abi.REGS_RDX, 'offsetof(struct kvm_regs, rdx)'],
  ['REGS_R8', abi.REGS_R8, 'offsetof(struct kvm_regs, r8)'],
  ['REGS_RIP', abi.REGS_RIP, 'offsetof(struct kvm_regs, rip)'],
  ['KVM_SREGS_SIZE', abi.KVM_SREGS_SIZE, 'sizeof(struct kvm_sregs)'],
  ['SREGS_INTERRUPT_BITMAP', abi.SREGS_INTERRUPT_BITMAP, 'offsetof(struct kvm_sregs, interrupt_bitmap)'],
  ['sregs.gdt', 192, 'offsetof(struct kvm_sregs, gdt)'],
  ['sregs.idt', 208, 'offsetof(struct kvm_sregs, idt)'],
  ['sregs.cr0', 224, 'offsetof(struct kvm_sregs, cr0)'],
  ['sregs.apic_base', 272, 'offsetof(struct kvm_sregs, apic_base)'],
  ['KVM_SEGMENT_SIZE', abi.KVM_SEGMENT_SIZE, 'sizeof(struct kvm_segment)'],
  ['segment.unusable', 22, 'offsetof(struct kvm_segment, unusable)'],
  ['segment.avl', 21, 'offsetof(struct kvm_segment, avl)'],
  ['KVM_FPU_SIZE', abi.KVM_FPU_SIZE, 'sizeof(struct kvm_fpu)'],
  ['fpu.xmm', 152, 'offsetof(struct kvm_fpu, xmm)'],
  ['fpu.mxcsr', 408, 'offsetof(struct kvm_fpu, mxcsr)'],
  ['fpu.last_dp', 144, 'offsetof(struct kvm_fpu, last_dp)'],
  ['KVM_XSAVE_SIZE', abi.KVM_XSAVE_SIZE, 'sizeof(struct kvm_xsave)'],
  ['KVM_XCRS_SIZE', abi.KVM_XCRS_SIZE, 'sizeof(struct kvm_xcrs)'],
  ['KVM_LAPIC_SIZE', abi.KVM_LAPIC_SIZE, 'sizeof(struct kvm_lapic_state)'],
  ['KVM_VCPU_EVENTS_SIZE', abi.KVM_VCPU_EVENTS_SIZE, 'sizeof(struct kvm_vcpu_events)'],
  ['events.nmi.masked', 14, 'offsetof(struct kvm_vcpu_events, nmi.masked)'],
  ['events.flags', 20, 'offsetof(struct kvm_vcpu_events, flags)'],
  ['KVM_CPUID_ENTRY2_SIZE', abi.KVM_CPUID_ENTRY2_SIZE, 'sizeof(struct kvm_cpuid_entry2)'],
  ['KVM_MSR_ENTRY_SIZE', abi.KVM_MSR_ENTRY_SIZE, 'sizeof(struct kvm_msr_entry)'],
  ['KVM_USERSPACE_MEMORY_REGION_SIZE', abi.KVM_USERSPACE_MEMORY_REGION_SIZE, 'sizeof(struct kvm_userspace_memory_region)'],
  ['KVM_ENABLE_CAP_SIZE', abi.KVM_ENABLE_CAP_SIZE, 'sizeof(struct kvm_enable_cap)'],
  ['KVM_MSR_FILTER_SIZE', abi.KVM_MSR_FILTER_SIZE, 'sizeof(struct kvm_msr_filter)'],
  ['KVM_MSR_FILTER_RANGE_SIZE', abi.KVM_MSR_FILTER_RANGE_SIZE, 'sizeof(struct kvm_msr_filter_range)'],
  ['msr_filter_range.bitmap', 16, 'offsetof(struct kvm_msr_filter_range, bitmap)'],
  ['KVM_MSI_SIZE', abi.KVM_MSI_SIZE, 'sizeof(struct kvm_msi)'],
  ['KVM_IRQ_LEVEL_SIZE', abi.KVM_IRQ_LEVEL_SIZE, 'sizeof(struct kvm_irq_level)'],
];

test('abi constants and layouts match the installed uapi headers', (t) => {
  if (!existsSync('/usr/include/linux/kvm.h')) { t.skip('no /usr/include/linux/kvm.h (apt-get install linux-libc-dev)'); return; }
  const dir = mkdtempSync(join(tmpdir(), 'tshv-kvm-abi-'));
  try {
    const lines = [
      ...MACROS.map(([k]) => `  printf("${k}=%lu\\n", (unsigned long)(${k}));`),
      ...LAYOUT.map(([k, , expr]) => `  printf("${k}=%lu\\n", (unsigned long)(${expr}));`),
    ];
    writeFileSync(join(dir, 'abi.c'), `#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void) {\n${lines.join('\n')}\n  return 0;\n}\n`);
    try {
      execFileSync('gcc', ['-o', join(dir, 'abi'), join(dir, 'abi.c')], { stdio: 'pipe' });
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') { t.skip('gcc not installed'); return; }
      throw e;
    }
    const out = new Map(execFileSync(join(dir, 'abi')).toString().trim().split('\n').map((l) => {
      const [k, v] = l.split('=');
      return [k!, Number(v)] as const;
    }));
    assert.ok(MACROS.length > 60, 'the macro list is populated');
    for (const [k, v] of MACROS) assert.equal(v, out.get(k), k);
    for (const [k, v] of LAYOUT) assert.equal(v, out.get(k), k);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const ATTR_BITS = 0xf | 0x10 | 0x60 | 0x80 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | SEG_UNUSABLE;
const segment: fc.Arbitrary<SegmentRegister> = fc.record({
  selector: fc.integer({ min: 0, max: 0xffff }),
  base: u64,
  limit: u32,
  attributes: fc.integer({ min: 0, max: 0x1ffff }).map((a) => a & ATTR_BITS),
});

test('segment_encodeDecode_roundTripsEveryAttributeBit', () => {
  fc.assert(fc.property(segment, (s) => {
    const b = new Uint8Array(abi.KVM_SEGMENT_SIZE);
    abi.encodeSegment(s, b, 0);
    assert.deepEqual(abi.decodeSegment(b, 0), s);
  }));
});

test('segment_knownEncoding_64bitCodeSegment', () => {
  const b = new Uint8Array(abi.KVM_SEGMENT_SIZE);
  abi.encodeSegment({ selector: 0x10, base: 0n, limit: 0xffffffff, attributes: 0xa09b }, b, 0);
  // type 0xb, present, dpl 0, db 0, s 1, l 1, g 1, avl 0, unusable 0
  assert.deepEqual([...b.subarray(12)], [0x10, 0, 0xb, 1, 0, 0, 1, 1, 1, 0, 0, 0]);
});

test('regs_encodeDecode_roundTrip', () => {
  const keys = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;
  fc.assert(fc.property(fc.array(u64, { minLength: 18, maxLength: 18 }), (vals) => {
    const r = Object.fromEntries(keys.map((k, i) => [k, vals[i]!])) as unknown as GeneralRegisters;
    const b = new Uint8Array(abi.KVM_REGS_SIZE);
    abi.encodeRegs(r, b);
    assert.deepEqual(abi.decodeRegs(b), r);
    assert.equal(new DataView(b.buffer).getBigUint64(abi.REGS_RIP, true), r.rip);
  }));
});

test('sregs_encodeDecode_roundTrip_andClearsInterruptBitmap', () => {
  const table = fc.record({ base: u64, limit: fc.integer({ min: 0, max: 0xffff }) });
  const sregs: fc.Arbitrary<SpecialRegisters> = fc.record({
    cs: segment, ds: segment, es: segment, fs: segment, gs: segment, ss: segment, tr: segment, ldt: segment,
    gdt: table, idt: table, cr0: u64, cr2: u64, cr3: u64, cr4: u64, cr8: u64, efer: u64, apicBase: u64,
  });
  fc.assert(fc.property(sregs, (s) => {
    const b = new Uint8Array(abi.KVM_SREGS_SIZE).fill(0xff);
    abi.encodeSregs(s, b);
    assert.deepEqual(abi.decodeSregs(b), s);
    assert.ok(b.subarray(abi.SREGS_INTERRUPT_BITMAP).every((x) => x === 0));
  }));
});

test('events_encodeDecode_roundTrip', () => {
  const events: fc.Arbitrary<PendingEvents> = fc.record({
    exception: fc.option(fc.record({ vector: fc.integer({ min: 0, max: 31 }), errorCode: fc.option(u32) })),
    interrupt: fc.option(fc.record({ vector: fc.integer({ min: 0, max: 255 }) })),
    nmiPending: fc.boolean(), nmiMasked: fc.boolean(), interruptShadow: fc.boolean(),
  });
  fc.assert(fc.property(events, (e) => {
    const b = new Uint8Array(abi.KVM_VCPU_EVENTS_SIZE);
    abi.encodeEvents(e, b);
    assert.deepEqual(abi.decodeEvents(b), e);
  }));
});

test('events_decode_arbitraryKernelBytes_neverThrows', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (bytes) => {
    const e = abi.decodeEvents(bytes);
    assert.ok(e.exception === null || (e.exception.vector >= 0 && e.exception.vector <= 255));
  }));
});

test('fpu_toXsaveAndBack_preservesX87AndSse', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: abi.KVM_FPU_SIZE, maxLength: abi.KVM_FPU_SIZE }), (fpu) => {
    fpu[133] = 0; fpu.fill(0, 412, 416);                 // padding bytes
    const xsave = abi.fpuToXsave(fpu);
    assert.equal(xsave.length, 4096);
    const back = new Uint8Array(abi.KVM_FPU_SIZE);
    abi.xsaveToFpu(xsave, back);
    assert.deepEqual(back, fpu);
  }));
});

test('xcrs_encodeDecode_xcr0', () => {
  const b = new Uint8Array(abi.KVM_XCRS_SIZE);
  abi.encodeXcr0(0x207n, b);
  assert.equal(abi.decodeXcr0(b), 0x207n);
  const bogus = new Uint8Array(abi.KVM_XCRS_SIZE);
  new DataView(bogus.buffer).setUint32(0, 0xffffffff, true);   // nr_xcrs out of range: bounded
  assert.equal(abi.decodeXcr0(bogus), 0n);
});

test('msrs_encodeDecode_roundTrip', () => {
  const b = abi.encodeMsrs([[0xc0000082, 0xffffffff81000000n], [0x10, 5n]]);
  assert.deepEqual(abi.decodeMsrs(b, 2), new Map([[0xc0000082, 0xffffffff81000000n], [0x10, 5n]]));
  assert.throws(() => abi.decodeMsrs(b, 3), RangeError);
});

test('cpuid2_encodeDecode_andPerVpApicId', () => {
  const leaves = [
    { function: 1, index: 0, eax: 0x800f12, ebx: 0xff000800, ecx: 1, edx: 2 },
    { function: 0xb, index: 1, eax: 0, ebx: 0, ecx: 0x201, edx: 0 },
    { function: 7, index: 0, eax: 0, ebx: 0x209, ecx: 0, edx: 0 },
  ];
  const vp3 = abi.cpuidForVp(leaves, 3);
  assert.equal(vp3[0]!.ebx, 0x03000800);
  assert.equal(vp3[1]!.edx, 3);
  assert.equal(leaves[0]!.ebx, 0xff000800, 'input table not modified');
  const decoded = abi.decodeCpuid2(abi.encodeCpuid2(vp3, abi.cpuidFlagsFor));
  assert.deepEqual(decoded.map(({ flags: _flags, ...e }) => e), vp3);
  assert.deepEqual(decoded.map((e) => e.flags), [0, 1, 1]);
  const truncated = abi.encodeCpuid2(vp3, abi.cpuidFlagsFor).subarray(0, 50);
  assert.throws(() => abi.decodeCpuid2(truncated), RangeError);
});

test('msrFilterChunks_splitsLargeRanges_andRejectsMalformed', () => {
  assert.deepEqual(abi.msrFilterChunks([{ first: 0x40000000, last: 0x400001ff }]), [{ base: 0x40000000, nmsrs: 0x200 }]);
  assert.deepEqual(abi.msrFilterChunks([{ first: 0, last: 0x3000 }]), [{ base: 0, nmsrs: 0x3000 }, { base: 0x3000, nmsrs: 1 }]);
  assert.throws(() => abi.msrFilterChunks([{ first: 5, last: 4 }]), RangeError);
  assert.throws(() => abi.msrFilterChunks([{ first: -1, last: 4 }]), RangeError);
  assert.throws(() => abi.msrFilterChunks([{ first: 0, last: 2 ** 32 }]), RangeError);
  assert.throws(() => abi.msrFilterChunks([{ first: 0, last: 0x3000 * 17 }]), RangeError);
  fc.assert(fc.property(fc.array(fc.record({ first: u32, len: fc.integer({ min: 1, max: 0x4000 }) }), { maxLength: 4 }), (rs) => {
    const ranges = rs.map(({ first, len }) => ({ first, last: Math.min(0xffffffff, first + len - 1) }));
    const chunks = abi.msrFilterChunks(ranges);
    const covered = chunks.reduce((n, c) => n + c.nmsrs, 0);
    assert.equal(covered, ranges.reduce((n, r) => n + r.last - r.first + 1, 0));
    assert.ok(chunks.every((c) => c.nmsrs >= 1 && c.nmsrs <= abi.KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8));
  }));
});

test('msrFilter_encodesRangesPointingAtBitmap', () => {
  const b = abi.encodeMsrFilter([{ base: 0x40000000, nmsrs: 0x200 }], 0x7f0000001000);
  const v = new DataView(b.buffer);
  assert.equal(b.length, abi.KVM_MSR_FILTER_SIZE);
  assert.equal(v.getUint32(8, true), abi.KVM_MSR_FILTER_READ | abi.KVM_MSR_FILTER_WRITE);
  assert.equal(v.getUint32(12, true), 0x200);
  assert.equal(v.getUint32(16, true), 0x40000000);
  assert.equal(v.getBigUint64(24, true), 0x7f0000001000n);
  assert.equal(v.getUint32(8 + 24, true), 0, 'unused ranges are empty');
});

test('msi_splitsAddress', () => {
  const b = new Uint8Array(abi.KVM_MSI_SIZE);
  abi.encodeMsi(0x1_fee01000n, 0x4041, b);
  const v = new DataView(b.buffer);
  assert.deepEqual([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true)], [0xfee01000, 1, 0x4041, 0]);
});

test('stopReason_mapsEveryMailboxCode', () => {
  const box = new Int32Array(mb.MB_SLOTS);
  const at = (a: number, b = 0, c = 0): ReturnType<typeof stopReason> => { box[mb.MB_A] = a; box[mb.MB_B] = b; box[mb.MB_C] = c; return stopReason(box, 0); };
  assert.deepEqual(at(mb.STOP_REQUESTED), { kind: 'stopped' });
  assert.deepEqual(at(mb.STOP_SHUTDOWN), { kind: 'shutdown' });
  assert.deepEqual(at(mb.STOP_HALTED), { kind: 'halted' });
  assert.deepEqual(at(mb.STOP_SYSTEM_EVENT, 2), { kind: 'shutdown' });
  assert.equal(at(mb.STOP_SYSTEM_EVENT, 9).kind, 'error');
  const ie = at(mb.STOP_INTERNAL_ERROR, 1, 0);
  assert.match(ie.kind === 'error' ? ie.message : '', /suberror 1 \(emulation failure\)/);
  const fe = at(mb.STOP_FAIL_ENTRY, 0x80000021 | 0, 0);
  assert.match(fe.kind === 'error' ? fe.message : '', /hardware reason 0x80000021/);
  const re = at(mb.STOP_RUN_ERRNO, 14, abi.KVM_RUN);
  assert.match(re.kind === 'error' ? re.message : '', /KVM_RUN failed: EFAULT/);
  assert.equal(at(12345).kind, 'error');
});
