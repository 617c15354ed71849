/**
 * Runs one built test guest in a fresh VM and reports what it printed and how the run ended.
 *
 * The VM is the test platform of tests/guests/README.md: RAM from GPA 0, COM1, the i8042 with
 * reset configured as power-off, the test device (ports 0xF0-0xF7, MMIO 0xFEB00000), the test
 * ROM when the manifest asks for it, and, for `msrScratch` guests, an MSR intercept handler on
 * 0x400000F0-0x400000FF that implements a scratch register at 0x400000F0 and answers #GP for
 * the rest. The image is placed by src/loader/flat.ts in the guest's mode.
 */
import type { BackendKind, Backend } from '../../src/winhv/winhv.js';
import { createBackend } from '../../src/winhv/winhv.js';
import { errorMessage } from '../../src/base/errors.js';
import { loadFlatImage } from '../../src/loader/flat.js';
import { Vm, type VmExit } from '../../src/vmwp/vm.js';
import { testRomImage, type BuiltGuest, type ExpectedExit } from './build.js';

export const MSR_SCRATCH = 0x400000f0;
export const MSR_SCRATCH_RANGE_LAST = 0x400000ff;

export interface GuestRun {
  transcript: string;
  exit: VmExit;
  wallMs: number;
}

/**
 * A backend of this kind if this host can run one, else why not. Never throws: the suite turns
 * `ok: false` into a skipped test with the reason.
 */
export function backendFor(kind: BackendKind): { ok: true; backend: Backend } | { ok: false; reason: string } {
  try {
    return { ok: true, backend: createBackend(kind) };
  } catch (e) {
    return { ok: false, reason: `backend ${kind} unavailable: ${errorMessage(e)}` };
  }
}

/** The CPU vendor string (CPUID leaf 0: EBX, EDX, ECX) a guest of this backend sees. */
export function cpuVendorOf(backend: Backend): string {
  const leaf0 = backend.supportedCpuid().find((e) => e.function === 0 && e.index === 0);
  if (leaf0 === undefined) return '(no leaf 0)';
  const b = new Uint8Array(12);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, leaf0.ebx, true);
  dv.setUint32(4, leaf0.edx, true);
  dv.setUint32(8, leaf0.ecx, true);
  return new TextDecoder('latin1').decode(b);
}

/** An exit in the comparable shape of the manifest (kind, and code for testExit). */
export function comparableExit(exit: VmExit): ExpectedExit | { kind: string; detail?: string } {
  switch (exit.kind) {
    case 'testExit': return { kind: 'testExit', code: exit.code };
    case 'poweroff': case 'shutdown': case 'halted': return { kind: exit.kind };
    case 'error': return { kind: 'error', detail: exit.message };
    case 'reset': case 'timeout': case 'stopped': return { kind: exit.kind };
  }
}

export async function runGuest(backend: Backend, guest: BuiltGuest, opts: { timeoutMs?: number } = {}): Promise<GuestRun> {
  const { spec } = guest;
  const chunks: number[] = [];
  const vm = await Vm.create({
    backend,
    memoryBytes: spec.memoryBytes,
    vpCount: 1,
    serialOut: (bytes) => { for (const b of bytes) chunks.push(b); },
    resetAction: 'poweroff',
    testDevice: true,
    roms: spec.rom === null ? [] : [{ name: 'test-rom', gpa: spec.rom.gpa, bytes: testRomImage(spec.rom.size) }],
  });
  try {
    if (spec.msrScratch) {
      let scratch = 0n;
      vm.installMsrIntercept(MSR_SCRATCH, MSR_SCRATCH_RANGE_LAST, {
        read: (_vp, msr) => (msr === MSR_SCRATCH ? scratch : null),
        write: (_vp, msr, value) => {
          if (msr !== MSR_SCRATCH) return false;
          scratch = value;
          return true;
        },
      });
    }
    const base = await vm.getVpState(0);
    const state = loadFlatImage(vm.memory, guest.image, { mode: spec.mode, loadGpa: spec.loadGpa, entryGpa: guest.entryGpa, base });
    await vm.setVpState(0, state);
    const t0 = performance.now();
    const exit = await vm.run({ timeoutMs: opts.timeoutMs ?? spec.timeoutMs });
    const wallMs = performance.now() - t0;
    return { transcript: new TextDecoder('latin1').decode(Uint8Array.from(chunks)), exit, wallMs };
  } finally {
    vm.dispose();
  }
}
