// ACPI tables: headers and checksums (verified by an independent byte sum), field layout, the
// platform DSDT against iasl's compilation of the same ASL, and a round trip through `iasl -d`
// when iasl (acpica-tools) is installed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TshvError } from '../../base/errors.js';
import { GuestMemory, MemoryBlock, gpa } from '../../guestmem/guestmem.js';
import { interrupt, memory32Fixed } from './resources.js';
import {
  DsdtBuilder, FADT_FLAGS, FADT_OFFSET, FADT_SIZE, IAPC_BOOT_ARCH, MPS_INTI, PLATFORM_RESET_VALUE, PLATFORM_SLEEP_PORTS, PLATFORM_SLP_TYP_S5,
  buildAcpiTables, buildFadt, buildMadt, buildRsdp, platformDsdt, sleepStateAml, writeAcpiTables,
} from './tables.js';

/** Independent of acpiChecksum: the plain 8-bit sum. */
function sum8(b: Uint8Array): number {
  return b.reduce((a, x) => (a + x) % 256, 0);
}
const sig = (b: Uint8Array, at = 0, n = 4): string => Buffer.from(b.subarray(at, at + n)).toString('latin1');
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/**
 * iasl 20200925, `iasl -tc` of the same DSDT in ASL (`Name (_S5, Package () { 0x05, Zero, Zero,
 * Zero })` at the root, then COM1 + PS2K under \_SB), bytes 36.. .
 */
const IASL_PLATFORM_DSDT_BODY =
  '085f53355f1207040a05000000' +
  '1048065f53425f5b822b434f4d31085f4849440c41d00501085f55494401085f43525311100a0d4701f803f803080822100079005b82335053324b085f4849440c41d00303085f55494400085f43525311180a15470160006000010147016400640001012202007900';

function hasIasl(): boolean {
  return spawnSync('iasl', ['-v'], { encoding: 'utf8' }).status === 0;
}

describe('ACPI tables', () => {
  it('rsdp_v2_bothChecksumsAndFields', () => {
    const r = buildRsdp(0x12345670);
    assert.equal(r.length, 36);
    assert.equal(sig(r, 0, 8), 'RSD PTR ');
    assert.equal(sum8(r.subarray(0, 20)), 0);
    assert.equal(sum8(r), 0);
    assert.equal(r[15], 2);
    assert.equal(dv(r).getUint32(20, true), 36);
    assert.equal(dv(r).getBigUint64(24, true), 0x12345670n);
  });

  it('buildAcpiTables_everyTableChecksummedAndLinked', () => {
    const at = 0xe0000;
    const { bytes, layout } = buildAcpiTables(at, { vpCount: 2 });
    const table = (s: string): Uint8Array => {
      const t = layout.tables.get(s);
      assert.ok(t, s);
      return bytes.subarray(t.paddr - at, t.paddr - at + t.size);
    };
    assert.equal(layout.rsdpPaddr, at);
    assert.deepEqual(layout.ranges, [{ start: at, size: bytes.length }]);
    for (const s of ['XSDT', 'FACP', 'APIC', 'DSDT']) {
      const t = table(s);
      assert.equal(sig(t), s);
      assert.equal(dv(t).getUint32(4, true), t.length, `${s} length`);
      assert.equal(sum8(t), 0, `${s} checksum`);
      assert.equal(sig(t, 10, 6), 'TSHV  ');
      assert.equal(t.byteOffset % 16, 0);
    }
    const rsdp = table('RSDP');
    assert.equal(Number(dv(rsdp).getBigUint64(24, true)), layout.tables.get('XSDT')!.paddr);
    const xsdt = table('XSDT');
    const entries = [Number(dv(xsdt).getBigUint64(36, true)), Number(dv(xsdt).getBigUint64(44, true))];
    assert.deepEqual(entries, [layout.tables.get('FACP')!.paddr, layout.tables.get('APIC')!.paddr]);
    const fadt = table('FACP');
    const dsdtAt = layout.tables.get('DSDT')!.paddr;
    assert.equal(dv(fadt).getUint32(40, true), dsdtAt);
    assert.equal(Number(dv(fadt).getBigUint64(140, true)), dsdtAt);
  });

  it('fadt_hwReducedLayout', () => {
    const f = buildFadt({ dsdtPaddr: 0xe1000 });
    assert.equal(f.length, FADT_SIZE);
    assert.equal(f[8], 6);
    assert.equal(sum8(f), 0);
    const flags = dv(f).getUint32(112, true);
    assert.ok((flags & FADT_FLAGS.HW_REDUCED_ACPI) !== 0);
    assert.equal(dv(f).getUint16(46, true), 0, 'SCI_INT');
    assert.equal(dv(f).getUint32(48, true), 0, 'SMI_CMD');
    assert.equal(dv(f).getUint32(56, true), 0, 'PM1a_EVT_BLK');
    assert.equal(dv(f).getUint32(76, true), 0, 'PM_TMR_BLK');
    const boot = dv(f).getUint16(109, true);
    assert.equal(boot, IAPC_BOOT_ARCH.I8042 | IAPC_BOOT_ARCH.VGA_NOT_PRESENT | IAPC_BOOT_ARCH.CMOS_RTC_NOT_PRESENT);
    const noKbd = buildFadt({ dsdtPaddr: 0xe1000, i8042: false, cmosRtc: true });
    assert.equal(dv(noKbd).getUint16(109, true), IAPC_BOOT_ARCH.VGA_NOT_PRESENT);
    assert.throws(() => buildFadt({ dsdtPaddr: 0 }), TshvError);
    assert.throws(() => buildFadt({ dsdtPaddr: 2 ** 32 }), TshvError);
  });

  it('fadt_sleepAndResetRegisters_byteWideIoGas', () => {
    const f = buildFadt({ dsdtPaddr: 0xe1000 });
    assert.equal(sum8(f), 0);
    /** Space ID, bit width, bit offset, access size, address (ACPI 6.5 Table 5.1). */
    const gas = (at: number): [number, number, number, number, bigint] => [f[at]!, f[at + 1]!, f[at + 2]!, f[at + 3]!, dv(f).getBigUint64(at + 4, true)];
    // Offsets written out independently of FADT_OFFSET (ACPI 6.5 Table 5.9).
    assert.deepEqual(gas(244), [1, 8, 0, 1, 0x600n], 'SLEEP_CONTROL_REG: SystemIO, 8 bits, byte access, port 0x600');
    assert.deepEqual(gas(256), [1, 8, 0, 1, 0x601n], 'SLEEP_STATUS_REG');
    assert.deepEqual(gas(116), [1, 8, 0, 1, 0x602n], 'RESET_REG');
    assert.equal(f[128], 0x01, 'RESET_VALUE');
    assert.deepEqual([FADT_OFFSET.SLEEP_CONTROL_REG, FADT_OFFSET.SLEEP_STATUS_REG, FADT_OFFSET.RESET_REG, FADT_OFFSET.RESET_VALUE], [244, 256, 116, 128]);
    assert.deepEqual(PLATFORM_SLEEP_PORTS, { control: 0x600, status: 0x601, reset: 0x602 });
    assert.equal(PLATFORM_RESET_VALUE, 1);
    const flags = dv(f).getUint32(112, true);
    assert.equal(flags & (1 << 10), 1 << 10, 'RESET_REG_SUP (bit 10)');
    assert.equal(flags & (1 << 20), 1 << 20, 'HW_REDUCED_ACPI (bit 20)');
    assert.equal(dv(f).getUint32(268, true), 0x56485354, 'Hypervisor Vendor Identity "TSHV" stays at 268');
    // Other ports, and none at all.
    const g = buildFadt({ dsdtPaddr: 0xe1000, sleepPorts: { control: 0x1234, status: 0x1236 }, reset: { port: 0xcf9, value: 0x06 } });
    assert.equal(dv(g).getBigUint64(248, true), 0x1234n);
    assert.equal(dv(g).getBigUint64(260, true), 0x1236n);
    assert.equal(dv(g).getBigUint64(120, true), 0xcf9n);
    assert.equal(g[128], 0x06);
    const none = buildFadt({ dsdtPaddr: 0xe1000, sleepPorts: null, reset: null });
    assert.ok(none.subarray(244, 268).every((b) => b === 0), 'no sleep registers');
    assert.ok(none.subarray(116, 129).every((b) => b === 0), 'no reset register');
    assert.equal(dv(none).getUint32(112, true) & FADT_FLAGS.RESET_REG_SUP, 0);
    // Malformed options.
    assert.throws(() => buildFadt({ dsdtPaddr: 0xe1000, sleepPorts: { control: 0, status: 0x601 } }), TshvError);
    assert.throws(() => buildFadt({ dsdtPaddr: 0xe1000, sleepPorts: { control: 0x10000, status: 0x601 } }), TshvError);
    assert.throws(() => buildFadt({ dsdtPaddr: 0xe1000, reset: { port: 0x602, value: 0x100 } }), TshvError);
    assert.throws(() => buildFadt({ dsdtPaddr: 0xe1000, reset: { port: -1, value: 1 } }), TshvError);
  });

  it('dsdt_s5Package_matchesIasl_andValidates', () => {
    // Name (_S5, Package () { 0x05, Zero, Zero, Zero }) at the root: NameOp "_S5_" PackageOp
    // PkgLength 7, NumElements 4, BytePrefix 5, ZeroOp x3 (iasl 20200925 -tc).
    assert.equal(Buffer.from(sleepStateAml(5, 5)).toString('hex'), '085f53355f1207040a05000000');
    assert.equal(Buffer.from(sleepStateAml(5, 0)).toString('hex'), '085f53355f120604000000' + '00');
    assert.equal(PLATFORM_SLP_TYP_S5, 5);
    assert.throws(() => sleepStateAml(6, 5), TshvError);
    assert.throws(() => sleepStateAml(5, 8), TshvError);
    assert.throws(() => sleepStateAml(-1, 0), TshvError);
    assert.throws(() => new DsdtBuilder().addSleepState(5, 5).addSleepState(5, 1), TshvError);
    // States come first and in order, whatever the order they were added in.
    const aml = new DsdtBuilder().addSleepState(5, 7).addSleepState(0, 0).aml();
    const hex = Buffer.from(aml).toString('hex');
    assert.ok(hex.startsWith('085f53305f' + '120604000000' + '00' + '085f53355f1207040a07000000'), hex);
  });

  it('madt_oneLapicPerVp_ioapic_overrides', () => {
    const m = buildMadt({ vpCount: 4, overrides: [{ source: 9, gsi: 9, flags: MPS_INTI.LEVEL | MPS_INTI.ACTIVE_HIGH }] });
    assert.equal(sum8(m), 0);
    assert.equal(dv(m).getUint32(36, true), 0xfee00000);
    assert.equal(dv(m).getUint32(40, true), 0, 'no PCAT_COMPAT: there is no 8259');
    const seen: { type: number; bytes: Uint8Array }[] = [];
    for (let p = 44; p < m.length;) {
      const len = m[p + 1]!;
      assert.ok(len >= 2 && p + len <= m.length);
      seen.push({ type: m[p]!, bytes: m.subarray(p, p + len) });
      p += len;
    }
    const lapics = seen.filter((e) => e.type === 0);
    assert.deepEqual(lapics.map((e) => [e.bytes[2], e.bytes[3], dv(e.bytes).getUint32(4, true)]), [[0, 0, 1], [1, 1, 1], [2, 2, 1], [3, 3, 1]]);
    const ioapics = seen.filter((e) => e.type === 1);
    assert.equal(ioapics.length, 1);
    assert.equal(dv(ioapics[0]!.bytes).getUint32(4, true), 0xfec00000);
    assert.equal(dv(ioapics[0]!.bytes).getUint32(8, true), 0);
    const isos = seen.filter((e) => e.type === 2).map((e) => [e.bytes[3], dv(e.bytes).getUint32(4, true), dv(e.bytes).getUint16(8, true)]);
    assert.deepEqual(isos, [[0, 2, 0], [9, 9, 0xd]]);
    assert.equal(seen.filter((e) => e.type === 4).length, 1);
    assert.throws(() => buildMadt({ vpCount: 0 }), TshvError);
    assert.throws(() => buildMadt({ vpCount: 256 }), TshvError);
    assert.throws(() => buildMadt({ vpCount: 1, overrides: [{ source: 16, gsi: 2, flags: 0 }] }), TshvError);
  });

  it('platformDsdt_matchesIaslCompilation', () => {
    const d = platformDsdt().build();
    assert.equal(sig(d), 'DSDT');
    assert.equal(d[8], 2);
    assert.equal(sum8(d), 0);
    assert.equal(Buffer.from(d.subarray(36)).toString('hex'), IASL_PLATFORM_DSDT_BODY);
  });

  it('dsdt_addDevice_isOneCall_andRejectsDuplicates', () => {
    const b = platformDsdt();
    const before = b.build().length;
    b.addDevice({ name: 'VMBS', hid: 'VMBUS', cid: 'VMBus', uid: 0, sta: 0x0f,
      resources: [memory32Fixed(0xfe0000000 % 2 ** 32, 0x1000), interrupt({ gsis: [5] })] });
    const after = b.build();
    assert.ok(after.length > before);
    assert.ok(Buffer.from(after).includes(Buffer.from('VMBUS\0', 'latin1')));
    assert.equal(sum8(after), 0);
    assert.throws(() => b.addDevice({ name: 'COM1', hid: 'PNP0501' }), TshvError);
    assert.throws(() => b.addDevice({ name: 'BAD.NAME', hid: 'PNP0501' }), TshvError);
    assert.throws(() => b.addDevice({ name: 'X', hid: 'caf\u00e9' }), TshvError);
  });

  it('writeAcpiTables_writesIntoGuestMemory_andChecksBounds', () => {
    const mem = new GuestMemory();
    mem.map(gpa(0), new MemoryBlock(0x100000, 'ram'), true);
    const layout = writeAcpiTables(mem, 0xe0000, { vpCount: 1, maxBytes: 0x20000 });
    assert.equal(sig(mem.read(0xe0000, 8), 0, 8), 'RSD PTR ');
    const dsdt = layout.tables.get('DSDT')!;
    assert.equal(sum8(mem.read(dsdt.paddr, dsdt.size)), 0);
    assert.throws(() => writeAcpiTables(mem, 0xe0000, { vpCount: 1, maxBytes: 64 }), TshvError);
    assert.throws(() => writeAcpiTables(mem, 0xfff00, { vpCount: 1 }), TshvError);   // runs past RAM
    assert.throws(() => writeAcpiTables(mem, 0xe0008, { vpCount: 1 }), TshvError);   // not 16-aligned
  });

  it('iaslDisassembly_findsDevicesAndAcceptsTables', (t) => {
    if (!hasIasl()) {
      t.skip('iasl not installed (apt-get install acpica-tools)');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'tshv-acpi-'));
    try {
      const { bytes, layout } = buildAcpiTables(0xe0000, { vpCount: 2 });
      const dsdtBuilder = platformDsdt().addDevice({ name: 'VMBS', hid: 'VMBUS', cid: 'VMBus', uid: 0 });
      writeFileSync(join(dir, 'dsdt.dat'), dsdtBuilder.build());
      for (const s of ['FACP', 'APIC']) {
        const tb = layout.tables.get(s)!;
        writeFileSync(join(dir, `${s.toLowerCase()}.dat`), bytes.subarray(tb.paddr - 0xe0000, tb.paddr - 0xe0000 + tb.size));
      }
      for (const f of ['dsdt', 'facp', 'apic']) {
        const r = spawnSync('iasl', ['-d', `${f}.dat`], { cwd: dir, encoding: 'utf8' });
        assert.equal(r.status, 0, `iasl -d ${f}: ${r.stdout}${r.stderr}`);
      }
      const dsl = readFileSync(join(dir, 'dsdt.dsl'), 'utf8');
      assert.match(dsl, /Device \(COM1\)/);
      assert.match(dsl, /EisaId \("PNP0501"\)/);
      assert.match(dsl, /Device \(PS2K\)/);
      assert.match(dsl, /EisaId \("PNP0303"\)/);
      assert.match(dsl, /IO \(Decode16,\s*0x03F8,[^\n]*\n\s*0x03F8,[^\n]*\n\s*0x08,[^\n]*\n\s*0x08,/);
      assert.match(dsl, /IRQNoFlags \(\)\s*\{4\}/);
      assert.match(dsl, /Name \(_S5, Package \(0x04\)[^{]*\{\s*0x05,\s*Zero,\s*Zero,\s*Zero\s*\}\)/);
      assert.match(dsl, /Device \(VMBS\)/);
      assert.match(dsl, /"VMBUS"/);
      const facp = readFileSync(join(dir, 'facp.dsl'), 'utf8');
      assert.match(facp, /Hardware Reduced \(V5\) : 1/);
      assert.match(facp, /Reset Register Supported \(V2\) : 1/);
      assert.match(facp, /Sleep Control Register : \[Generic Address Structure\]\n.*Space ID : 01 \[SystemIO\]\n.*Bit Width : 08\n.*\n.*Byte Access:8\]\n.*Address : 0000000000000600/);
      assert.match(facp, /Sleep Status Register : \[Generic Address Structure\]\n(.*\n){4}.*Address : 0000000000000601/);
      assert.match(facp, /Reset Register : \[Generic Address Structure\]\n(.*\n){4}.*Address : 0000000000000602/);
      assert.match(facp, /Value to cause reset : 01/);
      assert.doesNotMatch(facp, /Invalid|Error/i);
      const apic = readFileSync(join(dir, 'apic.dsl'), 'utf8');
      assert.equal((apic.match(/Subtable Type : 00 \[Processor Local APIC\]/g) ?? []).length, 2);
      assert.match(apic, /Subtable Type : 01 \[I\/O APIC\]/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
