/**
 * probeKvm: can this process use /dev/kvm? Opens it, checks the API version and creates (and
 * closes) a VM. Never throws: boot-time backend selection calls it on any host.
 */
import { errorMessage } from '../../../base/errors.js';
import { KVM_API_VERSION, KVM_CREATE_VM, KVM_GET_API_VERSION } from './abi.js';
import * as native from './native.js';

export interface KvmProbe {
  usable: boolean;
  reason: string;
  apiVersion: number | null;
}

export function probeKvm(): KvmProbe {
  try {
    const fd = native.open('/dev/kvm', native.O_RDWR | native.O_CLOEXEC);
    if (fd < 0) return { usable: false, reason: `cannot open /dev/kvm: ${native.errnoName(native.lastErrno())}`, apiVersion: null };
    try {
      const version = native.ioctlValueRaw(fd, KVM_GET_API_VERSION, 0);
      if (version < 0) return { usable: false, reason: `KVM_GET_API_VERSION failed: ${native.errnoName(-version)}`, apiVersion: null };
      if (version !== KVM_API_VERSION) return { usable: false, reason: `KVM API version ${version}, need ${KVM_API_VERSION}`, apiVersion: version };
      const vm = native.ioctlValueRaw(fd, KVM_CREATE_VM, 0);
      if (vm < 0) return { usable: false, reason: `KVM_CREATE_VM failed: ${native.errnoName(-vm)}`, apiVersion: version };
      native.close(vm);
      return { usable: true, reason: 'ok', apiVersion: version };
    } finally {
      native.close(fd);
    }
  } catch (e) {
    return { usable: false, reason: errorMessage(e), apiVersion: null };
  }
}
