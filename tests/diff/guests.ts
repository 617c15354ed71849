/**
 * Differential run of a freestanding test guest (tests/guests) on emu and QEMU TCG, compared
 * at every port-I/O instruction: the I/O checkpoints.
 *
 * Method: objdump lists every IN/OUT instruction of the guest's ELF. QEMU runs the flat image
 * (long64 guests only: qemu.ts's boot ROM enters long mode) with a gdbstub breakpoint on each;
 * at each stop the runner reads all general registers (the state before the instruction) and
 * single-steps it (after an IN it reads what the port returned). That gives QEMU's trace:
 * (RIP, port, size, direction, value, 16 GPRs) per I/O instruction. emu then runs the same image
 * on the Backend directly, with an ExitHandler that *replays* QEMU's port reads (so both
 * processors see exactly the same platform) and compares each I/O against the trace: port,
 * size, direction, the value written, and the 16 GPRs at the instruction. The first difference
 * stops the run and is reported with both register sets.
 *
 * QEMU has no tshv test device: the comparison covers the guest up to its first test-device
 * access (ports 0xF0-0xF7 other than the 0xF4 exit, which isa-debug-exit provides) or MMIO
 * access (emu's mmioRead/mmioWrite; QEMU's answers are not observable through the gdbstub),
 * or access to the hypervisor's synthetic MSRs 0x40000000-0x400001FF (RDMSR/WRMSR are
 * breakpoints too: tshv sends that range to the host, QEMU's TCG reads unknown MSRs as 0),
 * whichever comes first. The boot ROM is mapped read-only at 0xFFFF0000 on emu as well, so a
 * ROM read sees the same bytes on both.
 */
import { execFileSync } from 'node:child_process';
import { gpa, MemoryBlock } from '../../src/guestmem/guestmem.js';
import type { ExitHandler } from '../../src/hv/backends/backend.js';
import { createEmuBackend, type EmuPartition } from '../../src/hv/backends/emu/index.js';
import { loadFlatImage } from '../../src/loader/flat.js';
import type { BuiltGuest } from '../guests/build.js';
import { GdbError, leToBigint } from './gdb-remote.js';
import { bootRom, ROM_BASE, startQemu } from './qemu.js';
import { GPRS, type Gpr } from './runner.js';

export interface IoInsn { rip: number; dir: 'in' | 'out' | 'msr'; size: 1 | 2 | 4; port: number | 'dx'; text: string }

/** The IN/OUT (and RDMSR/WRMSR) instructions of an ELF, from `objdump -d -M intel`. */
export function ioInstructions(elfPath: string): Map<number, IoInsn> {
  const out = new Map<number, IoInsn>();
  const dis = execFileSync('objdump', ['-d', '-M', 'intel', '-w', elfPath], { encoding: 'utf8', maxBuffer: 64 << 20 });
  for (const line of dis.split('\n')) {
    const msr = /^\s*([0-9a-f]+):\s+0f 3[02]\s+(rdmsr|wrmsr)\s*$/.exec(line);
    if (msr !== null) { out.set(parseInt(msr[1]!, 16), { rip: parseInt(msr[1]!, 16), dir: 'msr', size: 4, port: 0, text: line.trim() }); continue; }
    const m = /^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(in|out)\s+([a-z0-9x]+),([a-z0-9x]+)\s*$/.exec(line);
    if (m === null) continue;
    const dir = m[2] as 'in' | 'out';
    const [portOp, regOp] = dir === 'in' ? [m[4]!, m[3]!] : [m[3]!, m[4]!];
    const size = regOp === 'al' ? 1 : regOp === 'ax' ? 2 : regOp === 'eax' ? 4 : 0;
    if (size === 0) continue;
    out.set(parseInt(m[1]!, 16), { rip: parseInt(m[1]!, 16), dir, size, port: portOp === 'dx' ? 'dx' : parseInt(portOp, 16), text: line.trim() });
  }
  return out;
}

export interface IoEvent { insn: IoInsn; port: number; value: number; regs: Record<Gpr, bigint> }

export interface GuestDiff {
  guest: string;
  /** I/O checkpoints QEMU produced, and how many emu matched. */
  qemuEvents: number;
  matched: number;
  /** Why the comparison ended. */
  end: string;
  mismatch: string | null;
}

const TESTDEV_FIRST = 0xf0, TESTDEV_LAST = 0xf7, EXIT_PORT = 0xf4;
const isTestDevice = (port: number, dir: 'in' | 'out' | 'msr'): boolean => port >= TESTDEV_FIRST && port <= TESTDEV_LAST && !(port === EXIT_PORT && dir === 'out');

/** QEMU's trace of I/O checkpoints, up to the first test-device access. */
async function qemuTrace(g: BuiltGuest, ios: Map<number, IoInsn>, maxEvents: number): Promise<{ events: IoEvent[]; end: string }> {
  const q = await startQemu({ image: g.image, loadGpa: g.spec.loadGpa, entryGpa: g.entryGpa, memoryMiB: g.spec.memoryBytes >> 20, gdb: true });
  const events: IoEvent[] = [];
  try {
    const gdb = q.gdb!;
    await gdb.readRegisterLayout();
    for (const a of ios.keys()) await gdb.setBreakpoint(BigInt(a));
    for (;;) {
      if (events.length >= maxEvents) return { events, end: `stopped after ${maxEvents} I/O checkpoints` };
      let stop;
      try { stop = await gdb.cont(5000); } catch (e) {
        if (e instanceof GdbError && /no reply/.test(e.message)) return { events, end: 'QEMU reached no further I/O instruction within 5 s' };
        throw e;
      }
      if (stop.kind !== 'signal') return { events, end: `QEMU ended (${stop.kind})` };
      const raw = await gdb.readRegistersRaw();
      const get = (n: string): bigint => { const d = gdb.reg(n); return leToBigint(raw.subarray(d.offset, d.offset + d.bits / 8)); };
      const rip = Number(get('rip'));
      const insn = ios.get(rip);
      if (insn === undefined) return { events, end: `QEMU stopped at 0x${rip.toString(16)}, not an I/O instruction` };
      const regs = {} as Record<Gpr, bigint>;
      for (const r of GPRS) regs[r] = get(r);
      if (insn.dir === 'msr') {
        // The hypervisor's synthetic range goes to the host on tshv; QEMU's TCG answers unknown
        // MSRs itself (reads 0, no #GP). The platforms differ from here on.
        const ecx = Number(regs.rcx & 0xffffffffn);
        if (ecx >= 0x40000000 && ecx <= 0x400001ff) return { events, end: `first synthetic-MSR access: ${insn.text.split('\t').pop() ?? ''} 0x${ecx.toString(16)} at 0x${rip.toString(16)}` };
        await gdb.step();
        continue;
      }
      const port = insn.port === 'dx' ? Number(regs.rdx & 0xffffn) : insn.port;
      const mask = insn.size === 4 ? 0xffffffffn : insn.size === 2 ? 0xffffn : 0xffn;
      if (isTestDevice(port, insn.dir)) return { events, end: `first test-device access: ${insn.dir} port 0x${port.toString(16)} at 0x${rip.toString(16)}` };
      const ev: IoEvent = { insn, port, value: Number(regs.rax & mask), regs };
      events.push(ev);
      if (insn.dir === 'out' && port === EXIT_PORT) return { events, end: 'test exit (port 0xF4)' };
      await gdb.step();
      if (insn.dir === 'in') {
        const after = await gdb.readRegistersRaw();
        const d = gdb.reg('rax');
        ev.value = Number(leToBigint(after.subarray(d.offset, d.offset + 8)) & mask);
      }
    }
  } finally {
    q.dispose();
  }
}

const EMU_INDEX: Record<Gpr, number> = {
  rax: 0, rcx: 1, rdx: 2, rbx: 3, rsp: 4, rbp: 5, rsi: 6, rdi: 7, r8: 8, r9: 9, r10: 10, r11: 11, r12: 12, r13: 13, r14: 14, r15: 15,
};

/** Run guest `g` on QEMU, then on emu against QEMU's trace. */
export async function diffGuest(g: BuiltGuest, opts: { maxEvents?: number; timeoutMs?: number } = {}): Promise<GuestDiff> {
  const elf = g.binPath.replace(/\.bin$/, '.elf');
  const ios = ioInstructions(elf);
  const trace = await qemuTrace(g, ios, opts.maxEvents ?? 20000);
  const backend = createEmuBackend();
  const partition = await backend.createPartition({ vpCount: 1, cpuid: [...backend.supportedCpuid()], interceptMsrs: [], hypercallPort: 0x9e }) as EmuPartition;
  try {
    partition.mapMemory(gpa(0), new MemoryBlock(g.spec.memoryBytes, 'ram'), true);
    const rom = new MemoryBlock(0x10000, 'boot-rom');
    rom.bytes.set(bootRom(g.entryGpa));
    partition.mapMemory(gpa(ROM_BASE), rom, false);
    const vp = partition.vps[0]!;
    let k = 0;
    let mismatch: string | null = null;
    let end: string | null = null;
    const regsNow = (): Record<Gpr, bigint> => {
      const R = vp.cpu.R;
      const out = {} as Record<Gpr, bigint>;
      for (const r of GPRS) { const n = EMU_INDEX[r]; out[r] = (BigInt(R[2 * n + 1]! >>> 0) << 32n) | BigInt(R[2 * n]! >>> 0); }
      return out;
    };
    const check = (dir: 'in' | 'out', port: number, size: number, value: number | null): IoEvent | null => {
      if (mismatch !== null || end !== null) return null;
      const ev = trace.events[k];
      if (ev === undefined) { end = `${trace.end}; emu matched all ${k} I/O checkpoints`; vp.requestStop(); return null; }
      const regs = regsNow();
      const diffs: string[] = [];
      if (ev.insn.dir !== dir || ev.port !== port || ev.insn.size !== size) diffs.push(`I/O: qemu ${ev.insn.dir} port 0x${ev.port.toString(16)}/${ev.insn.size} emu ${dir} port 0x${port.toString(16)}/${size}`);
      if (value !== null && value !== ev.value) diffs.push(`value written: qemu 0x${ev.value.toString(16)} emu 0x${value.toString(16)}`);
      for (const r of GPRS) if (regs[r] !== ev.regs[r]) diffs.push(`${r}: qemu 0x${ev.regs[r].toString(16)} emu 0x${regs[r].toString(16)}`);
      if (diffs.length > 0) {
        mismatch = [`I/O checkpoint ${k} (QEMU at ${ev.insn.text}):`,
          `  qemu: ${GPRS.map((r) => `${r}=0x${ev.regs[r].toString(16)}`).join(' ')}`,
          `  emu:  ${GPRS.map((r) => `${r}=0x${regs[r].toString(16)}`).join(' ')}`,
          ...diffs.map((d) => `  DIFF ${d}`)].join('\n');
        vp.requestStop();
        return null;
      }
      k++;
      if (k === trace.events.length) { end = `${trace.end}; emu matched all ${k} I/O checkpoints`; vp.requestStop(); }
      return ev;
    };
    const mmio = (what: string, at: number): void => {
      if (mismatch === null && end === null) { end = `first MMIO access (${what} 0x${at.toString(16)}) after ${k} matched I/O checkpoints`; vp.requestStop(); }
    };
    const exits: ExitHandler = {
      pioRead: (_vp, port, size) => { const ev = check('in', port, size, null); return ev?.value ?? 0xffffffff; },
      pioWrite: (_vp, port, size, value) => { check('out', port, size, value); },
      mmioRead: (_vp, at, data) => { data.fill(0xff); mmio('read', at); },
      mmioWrite: (_vp, at) => { mmio('write', at); },
      msrRead: () => null,
      msrWrite: () => false,
      hypercall: () => 2n,
    };
    partition.setExitHandler(exits);
    await vp.setState(loadFlatImage(partition.memory, g.image, { mode: 'long64', loadGpa: g.spec.loadGpa, entryGpa: g.entryGpa, base: await vp.getState() }));
    const timer = setTimeout(() => { end ??= `emu timed out after ${k} matched I/O checkpoints`; vp.requestStop(); }, opts.timeoutMs ?? 20_000);
    let r;
    try { r = await vp.run(); } finally { clearTimeout(timer); }
    const finalEnd: string = end ?? (k === trace.events.length ? `${trace.end}; emu matched all ${k} I/O checkpoints (emu: ${r.kind})` : `emu stopped (${JSON.stringify(r)}) after ${k} of ${trace.events.length} I/O checkpoints`);
    return { guest: g.spec.name, qemuEvents: trace.events.length, matched: k, end: finalEnd, mismatch };
  } finally {
    partition.dispose();
  }
}
