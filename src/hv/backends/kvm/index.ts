/**
 * The `kvm` processor backend: drives /dev/kvm through koffi (see ./native.ts), one worker
 * thread per virtual processor (./vcpu-thread.ts), exits relayed to the device thread through
 * SharedArrayBuffer mailboxes (./mailbox.ts, ./partition.ts).
 *
 * Hyper-V analogue: hvix64 / hvax64, the processor-specific part of the hypervisor. Only
 * hv/boot.ts may import this folder; everything above sees ../backend.ts alone.
 */
import { TshvError } from '../../../base/errors.js';
import type { Backend, BackendKind, CpuidEntry, Partition, PartitionConfig } from '../backend.js';
import * as abi from './abi.js';
import * as native from './native.js';
import { KvmPartition, type KvmHost } from './partition.js';

export { probeKvm } from './probe.js';
export type { KvmProbe } from './probe.js';

const MAX_CPUID_ENTRIES = 1024;
const MAX_MSR_INDICES = 4096;

function supportedCpuidOf(kvmFd: number): CpuidEntry[] {
  for (let n = 64; n <= MAX_CPUID_ENTRIES; n *= 2) {
    const buf = new Uint8Array(8 + n * abi.KVM_CPUID_ENTRY2_SIZE);
    new DataView(buf.buffer).setUint32(0, n, true);
    const r = native.ioctlRaw(kvmFd, abi.KVM_GET_SUPPORTED_CPUID, buf);
    if (r === -native.E2BIG) continue;
    if (r < 0) throw native.ioctlFailed(abi.KVM_GET_SUPPORTED_CPUID, -r);
    return abi.decodeCpuid2(buf).map(({ function: f, index, eax, ebx, ecx, edx }) => ({ function: f, index, eax, ebx, ecx, edx }));
  }
  throw new TshvError('EBACKEND', 'KVM_GET_SUPPORTED_CPUID failed: more than 1024 entries');
}

function msrIndexList(kvmFd: number): Set<number> {
  const buf = new Uint8Array(4 + MAX_MSR_INDICES * 4);
  const v = new DataView(buf.buffer);
  v.setUint32(0, MAX_MSR_INDICES, true);
  native.ioctl(kvmFd, abi.KVM_GET_MSR_INDEX_LIST, buf);
  const n = Math.min(v.getUint32(0, true), MAX_MSR_INDICES);
  const out = new Set<number>();
  for (let i = 0; i < n; i++) out.add(v.getUint32(4 + i * 4, true));
  return out;
}

class KvmBackend implements Backend {
  readonly kind: BackendKind = 'kvm';
  readonly #host: KvmHost;
  #cpuid: readonly CpuidEntry[] | null = null;

  constructor() {
    const fd = native.open('/dev/kvm', native.O_RDWR | native.O_CLOEXEC);
    if (fd < 0) throw new TshvError('ENOTSUP', `cannot open /dev/kvm: ${native.errnoName(native.lastErrno())}`);
    try {
      const version = native.ioctlValue(fd, abi.KVM_GET_API_VERSION, 0);
      if (version !== abi.KVM_API_VERSION) throw new TshvError('ENOTSUP', `KVM API version ${version}, need ${abi.KVM_API_VERSION}`);
      const mmapSize = native.ioctlValue(fd, abi.KVM_GET_VCPU_MMAP_SIZE, 0);
      if (mmapSize < abi.KVM_RUN_SIZE) throw new TshvError('ENOTSUP', `vcpu mmap size ${mmapSize} is too small`);
      const supported = msrIndexList(fd);
      const slots = native.ioctlValueRaw(fd, abi.KVM_CHECK_EXTENSION, abi.KVM_CAP_NR_MEMSLOTS);
      this.#host = {
        kvmFd: fd,
        mmapSize,
        stateMsrs: abi.STATE_MSRS.filter((m) => supported.has(m)),
        hasXsave: native.ioctlValueRaw(fd, abi.KVM_CHECK_EXTENSION, abi.KVM_CAP_XSAVE) > 0,
        hasXcrs: native.ioctlValueRaw(fd, abi.KVM_CHECK_EXTENSION, abi.KVM_CAP_XCRS) > 0,
        maxSlots: slots > 0 ? slots : 32,
      };
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  /** The MSRs that getState/setState transfer on this host. */
  get stateMsrs(): readonly number[] { return this.#host.stateMsrs; }

  supportedCpuid(): readonly CpuidEntry[] {
    this.#cpuid ??= supportedCpuidOf(this.#host.kvmFd);
    return this.#cpuid;
  }

  createPartition(config: PartitionConfig): Promise<Partition> {
    return KvmPartition.create(this.#host, config);
  }
}

/**
 * Open /dev/kvm and return the backend. Throws TshvError('ENOTSUP') when KVM is not usable;
 * call probeKvm() first to decide without exceptions. The /dev/kvm descriptor stays open for the
 * life of the process (it is what supportedCpuid and every new VM are asked through).
 */
export function createKvmBackend(): Backend {
  return new KvmBackend();
}
