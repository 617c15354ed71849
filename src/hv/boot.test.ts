import test from 'node:test';
import assert from 'node:assert/strict';
import { chooseBackend, parseCpuinfo, probeHost } from './boot.js';

const kvmOk = { usable: true, reason: 'KVM API 12, VM created', apiVersion: 12 };
const kvmNo = { usable: false, reason: '/dev/kvm: ENOENT', apiVersion: null };

test('parseCpuinfo_readsVendorFlagsOfFirstCpu', () => {
  const text = 'processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu vme vmx sse2\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nflags : svm\n';
  assert.deepEqual(parseCpuinfo(text), { vendor: 'GenuineIntel', modelName: 'Xeon', vmx: true, svm: false });
});

test('parseCpuinfo_garbageGivesUnknownWithoutExtensions', () => {
  assert.deepEqual(parseCpuinfo('\u0000\u0001 nonsense ::: \n'), { vendor: 'unknown', modelName: 'unknown', vmx: false, svm: false });
  assert.deepEqual(parseCpuinfo(''), { vendor: 'unknown', modelName: 'unknown', vmx: false, svm: false });
});

test('chooseBackend_intelVmxWithKvm_picksKvmVmx', () => {
  const r = chooseBackend({ vendor: 'GenuineIntel', modelName: '', vmx: true, svm: false }, kvmOk);
  assert.equal(r.backend, 'kvm');
  assert.equal(r.extension, 'vmx');
});

test('chooseBackend_amdSvmWithKvm_picksKvmSvm', () => {
  const r = chooseBackend({ vendor: 'AuthenticAMD', modelName: '', vmx: false, svm: true }, kvmOk);
  assert.equal(r.backend, 'kvm');
  assert.equal(r.extension, 'svm');
});

test('chooseBackend_extensionButNoKvm_picksEmuAndSaysWhy', () => {
  const r = chooseBackend({ vendor: 'GenuineIntel', modelName: '', vmx: true, svm: false }, kvmNo);
  assert.equal(r.backend, 'emu');
  assert.match(r.reason, /KVM is not usable: \/dev\/kvm: ENOENT/);
});

test('chooseBackend_kvmWithoutVmxOrSvm_picksEmu_explainsSoftwareKvm', () => {
  const r = chooseBackend({ vendor: 'AuthenticAMD', modelName: '', vmx: false, svm: false }, kvmOk);
  assert.equal(r.backend, 'emu');
  assert.match(r.reason, /without AMD-V/);
  assert.match(r.reason, /only emulates/);
});

test('chooseBackend_mismatchedVendorFlag_picksEmu', () => {
  // An AMD vendor string with a vmx flag is not a combination KVM can use as VT-x.
  const r = chooseBackend({ vendor: 'AuthenticAMD', modelName: '', vmx: true, svm: false }, kvmOk);
  assert.equal(r.backend, 'emu');
});

test('probeHost_onThisMachine_returnsConsistentResult', () => {
  const p = probeHost();
  assert.ok(p.backend === 'kvm' || p.backend === 'emu');
  assert.equal(p.vendor, p.host.vendor);
  if (!p.host.vmx && !p.host.svm) assert.equal(p.backend, 'emu');
  assert.ok(p.reason.length > 0);
});
