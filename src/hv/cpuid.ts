/**
 * The CPUID table a child partition sees: what the processor backend can offer, with the
 * hypervisor range (0x40000000-0x4FFFFFFF) replaced by tshv's own leaves and the
 * "hypervisor present" bit (leaf 1 ECX[31]) set.
 *
 * FUTURE(enlightenments issue): leaves 0x40000000-0x4000000A with the "Microsoft Hv" signature
 * and the privilege masks, once the synthetic MSRs and SynIC they advertise exist. Advertising
 * them earlier would send a Linux guest down its Hyper-V init path against a hypervisor that
 * cannot answer it.
 */
import type { CpuidEntry } from './backends/backend.js';

export const TSHV_SIGNATURE = 'TshvTshvTshv';

function sigRegs(sig: string): [number, number, number] {
  const b = new TextEncoder().encode(sig.padEnd(12, ' ').slice(0, 12));
  const dv = new DataView(b.buffer);
  return [dv.getUint32(0, true), dv.getUint32(4, true), dv.getUint32(8, true)];
}

export function buildCpuidTable(supported: readonly CpuidEntry[]): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  for (const e of supported) {
    if (e.function >= 0x40000000 && e.function <= 0x4fffffff) continue;
    if (e.function === 1) out.push({ ...e, ecx: (e.ecx | 0x80000000) >>> 0 });
    else out.push({ ...e });
  }
  const [ebx, ecx, edx] = sigRegs(TSHV_SIGNATURE);
  out.push({ function: 0x40000000, index: 0, eax: 0x40000000, ebx, ecx, edx });
  out.sort((a, b) => a.function - b.function || a.index - b.index);
  return out;
}
