/**
 * Backend selection at start-up, as Hyper-V picks hvix64 (Intel VT-x) or hvax64 (AMD-V) by
 * querying the processor.
 *
 * tshv reads the host CPU's vendor and its VMX / SVM feature bits as the host kernel reports
 * them (/proc/cpuinfo: `vendor_id`, `flags`), and asks the KVM backend whether /dev/kvm can
 * really create a VM. Intel + vmx + KVM gives `kvm` (VT-x); AMD + svm + KVM gives `kvm` (AMD-V);
 * anything else gives `emu`, the processor written in TypeScript. A /dev/kvm without VMX/SVM in
 * the host flags is KVM emulating instructions in software (these build machines): usable for
 * small test guests when asked for by name, but never picked automatically.
 *
 * The decision is a pure function of the facts (`chooseBackend`) so it is unit-tested for every
 * case; `probeHost` gathers the facts.
 */
import { readFileSync } from 'node:fs';
import { TshvError } from '../base/errors.js';
import type { Backend, BackendKind } from './backends/backend.js';
import { probeKvm, type KvmProbe } from './backends/kvm/probe.js';
import { createKvmBackend } from './backends/kvm/index.js';
import { createEmuBackend } from './backends/emu/index.js';

export interface HostCpu {
  vendor: string;             // e.g. GenuineIntel, AuthenticAMD, or 'unknown'
  vmx: boolean;
  svm: boolean;
  modelName: string;
}

export interface ProbeResult {
  backend: BackendKind;
  /** 'vmx' or 'svm' when the kvm backend drives hardware virtualization. */
  extension: 'vmx' | 'svm' | null;
  vendor: string;
  reason: string;
  host: HostCpu;
  kvm: KvmProbe;
}

/** Parse the first processor's entry of /proc/cpuinfo. Pure and bounded: looks at most at the first 64 KiB. */
export function parseCpuinfo(text: string): HostCpu {
  const head = text.slice(0, 65536);
  const firstCpu = head.split(/\n\s*\n/, 1)[0] ?? '';
  let vendor = 'unknown';
  let modelName = 'unknown';
  let flags: string[] = [];
  for (const line of firstCpu.split('\n')) {
    const m = /^([^:]+?)\s*:\s*(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!;
    const value = m[2]!.trim();
    if (key === 'vendor_id') vendor = value || 'unknown';
    else if (key === 'model name') modelName = value || 'unknown';
    else if (key === 'flags') flags = value.split(/\s+/);
  }
  return { vendor, modelName, vmx: flags.includes('vmx'), svm: flags.includes('svm') };
}

/** The selection rule. Pure. */
export function chooseBackend(host: HostCpu, kvm: KvmProbe): Pick<ProbeResult, 'backend' | 'extension' | 'reason'> {
  const intel = host.vendor === 'GenuineIntel';
  const amd = host.vendor === 'AuthenticAMD' || host.vendor === 'HygonGenuine';
  if (intel && host.vmx) {
    if (kvm.usable) return { backend: 'kvm', extension: 'vmx', reason: 'Intel processor with VT-x (vmx) and a usable /dev/kvm' };
    return { backend: 'emu', extension: null, reason: `Intel processor with VT-x, but KVM is not usable: ${kvm.reason}` };
  }
  if (amd && host.svm) {
    if (kvm.usable) return { backend: 'kvm', extension: 'svm', reason: 'AMD processor with AMD-V (svm) and a usable /dev/kvm' };
    return { backend: 'emu', extension: null, reason: `AMD processor with AMD-V, but KVM is not usable: ${kvm.reason}` };
  }
  const what = intel ? 'Intel processor without VT-x (no vmx flag)'
    : amd ? 'AMD processor without AMD-V (no svm flag)'
    : `${host.vendor} processor without VT-x or AMD-V`;
  const kvmNote = kvm.usable
    ? '; /dev/kvm works but, without vmx/svm on the host, KVM only emulates instructions (too slow and incomplete for a stock kernel)'
    : `; KVM: ${kvm.reason}`;
  return { backend: 'emu', extension: null, reason: what + kvmNote };
}

export function probeHost(cpuinfoPath = '/proc/cpuinfo'): ProbeResult {
  let text = '';
  try {
    text = readFileSync(cpuinfoPath, 'utf8');
  } catch {
    // no /proc (not Linux): vendor unknown, no extensions
  }
  const host = parseCpuinfo(text);
  const kvm = probeKvm();
  return { ...chooseBackend(host, kvm), vendor: host.vendor, host, kvm };
}

export const BACKEND_KINDS: readonly BackendKind[] = ['kvm', 'emu'];

export function isBackendKind(s: string): s is BackendKind {
  return (BACKEND_KINDS as readonly string[]).includes(s);
}

/**
 * Create the backend: the one asked for (`--backend`), or the probed one. Errors are clear
 * TshvErrors, never crashes.
 */
export function createBackend(kind?: BackendKind): Backend {
  const chosen = kind ?? probeHost().backend;
  switch (chosen) {
    case 'kvm': {
      const kvm = probeKvm();
      if (!kvm.usable) throw new TshvError('ENOTSUP', `the kvm backend is not usable here: ${kvm.reason}`);
      return createKvmBackend();
    }
    case 'emu':
      return createEmuBackend();
  }
}
