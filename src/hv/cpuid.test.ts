import test from 'node:test';
import assert from 'node:assert/strict';
import { buildCpuidTable, TSHV_SIGNATURE } from './cpuid.js';

test('buildCpuidTable_replacesHypervisorLeaves_setsHypervisorBit', () => {
  const t = buildCpuidTable([
    { function: 0, index: 0, eax: 0xd, ebx: 1, ecx: 2, edx: 3 },
    { function: 1, index: 0, eax: 0, ebx: 0, ecx: 0x1, edx: 0 },
    { function: 0x40000000, index: 0, eax: 0x40000001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d },
    { function: 0x40000001, index: 0, eax: 0xffff, ebx: 0, ecx: 0, edx: 0 },
  ]);
  const leaf1 = t.find((e) => e.function === 1)!;
  assert.equal(leaf1.ecx, 0x80000001);
  const hv = t.filter((e) => e.function >= 0x40000000);
  assert.equal(hv.length, 1);
  const sig = new Uint8Array(12);
  const dv = new DataView(sig.buffer);
  dv.setUint32(0, hv[0]!.ebx, true); dv.setUint32(4, hv[0]!.ecx, true); dv.setUint32(8, hv[0]!.edx, true);
  assert.equal(new TextDecoder().decode(sig), TSHV_SIGNATURE);
});
