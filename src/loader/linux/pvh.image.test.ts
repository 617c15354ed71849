// Loads the real default image (Debian's stock 6.1 vmlinux and the busybox initramfs, built by
// `npx tshv image build`) into a 256 MiB guest and checks what the kernel will read. Skipped
// with a reason when the image is not cached. The cache lookup repeats src/image's rule
// ($XDG_CACHE_HOME or ~/.cache, tshv/images/current.json) because the loader layer may not
// import src/image.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { GuestMemory, MemoryBlock, gpa } from '../../guestmem/guestmem.js';
import { parseVmlinux, validateInitrd } from '../kernel-file.js';
import { E820, XEN_HVM_START_MAGIC_VALUE, loadLinuxPvh, pcRamLayout } from './pvh.js';

function cachedImage(): { vmlinux: string; initrd: string } | string {
  const xdg = process.env['XDG_CACHE_HOME'];
  const root = join(xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'tshv', 'images');
  try {
    const cur = JSON.parse(readFileSync(join(root, 'current.json'), 'utf8')) as { dir?: unknown };
    if (typeof cur.dir !== 'string' || cur.dir.includes('/') || cur.dir.startsWith('.')) return 'current.json names no image directory';
    const dir = join(root, cur.dir);
    const vmlinux = join(dir, 'vmlinux');
    const initrd = join(dir, 'initrd.cpio');
    if (!existsSync(vmlinux) || !existsSync(initrd)) return `${dir} lacks vmlinux or initrd.cpio`;
    return { vmlinux, initrd };
  } catch {
    return `no default image cached under ${root} (run: npx tshv image build)`;
  }
}

const MIB = 0x100000;

describe('PVH loader with the real default image', () => {
  it('debianVmlinux_256MiB_startInfoMemmapAndState', (t) => {
    const img = cachedImage();
    if (typeof img === 'string') {
      t.skip(img);
      return;
    }
    const kernel = parseVmlinux(new Uint8Array(readFileSync(img.vmlinux)), img.vmlinux);
    const initrd = new Uint8Array(readFileSync(img.initrd));
    validateInitrd(initrd, img.initrd);
    assert.ok(kernel.pvhEntry !== undefined, 'stock kernel has a PVH note');
    const mem = new GuestMemory();
    const ram = pcRamLayout(256 * MIB);
    mem.map(gpa(0), new MemoryBlock(256 * MIB, 'ram'), true);
    const cmdline = 'console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 rdinit=/init panic=-1';
    const r = loadLinuxPvh(mem, { kernel, initrd, cmdline, ram, vpCount: 1 });

    // start_info as the kernel's xen_prepare_pvh reads it
    const si = r.startInfoPaddr;
    assert.equal(mem.readU32(si), XEN_HVM_START_MAGIC_VALUE);
    assert.equal(mem.readU32(si + 4), 1);
    assert.equal(mem.readU32(si + 12), 1);
    const mod = Number(mem.readU64(si + 16));
    const initrdAt = Number(mem.readU64(mod));
    assert.equal(Number(mem.readU64(mod + 8)), initrd.length);
    assert.ok(initrdAt >= kernel.physEnd, 'initrd above the kernel');
    assert.ok(initrdAt + initrd.length <= 256 * MIB, 'initrd inside RAM');
    assert.equal(initrdAt % 4096, 0);
    assert.deepEqual(mem.read(initrdAt, 16), initrd.subarray(0, 16));
    const cmdAt = Number(mem.readU64(si + 24));
    assert.equal(Buffer.from(mem.read(cmdAt, cmdline.length + 1)).toString('latin1'), cmdline + '\0');
    const rsdp = Number(mem.readU64(si + 32));
    assert.equal(Buffer.from(mem.read(rsdp, 8)).toString('latin1'), 'RSD PTR ');

    // e820: the kernel's segments and the initrd are RAM; the ACPI tables are ACPI
    const memmap = Number(mem.readU64(si + 40));
    const n = mem.readU32(si + 48);
    assert.equal(n, r.e820.length);
    const typeAt = (a: number): number | undefined => {
      for (let i = 0; i < n; i++) {
        const b = memmap + i * 24;
        const start = Number(mem.readU64(b));
        if (a >= start && a < start + Number(mem.readU64(b + 8))) return mem.readU32(b + 16);
      }
      return undefined;
    };
    for (const s of kernel.segments) {
      assert.equal(typeAt(s.paddr), E820.RAM);
      assert.equal(typeAt(s.paddr + s.memSize - 1), E820.RAM);
      assert.deepEqual(mem.read(s.paddr, Math.min(64, s.fileSize)), s.data.subarray(0, Math.min(64, s.fileSize)));
    }
    assert.equal(typeAt(initrdAt), E820.RAM);
    for (const tb of r.acpi.tables.values()) assert.equal(typeAt(tb.paddr), E820.ACPI);
    assert.equal(typeAt(0xfec00000), undefined, 'IOAPIC is not RAM');
    assert.equal(typeAt(256 * MIB), undefined);

    // entry state
    assert.equal(r.state.regs.rip, BigInt(kernel.pvhEntry));
    assert.equal(r.state.regs.rbx, BigInt(si));
    assert.equal(r.state.sregs.cr0 & 0x80000001n, 1n);
    t.diagnostic(`kernel ${kernel.physStart.toString(16)}-${kernel.physEnd.toString(16)}, PVH entry ${kernel.pvhEntry.toString(16)}, ` +
      `initrd at ${initrdAt.toString(16)} (${initrd.length} bytes), e820 ${n} entries`);
  });
});
