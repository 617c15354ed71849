import test from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hypercallResult, parseHypercallInput } from './hvdef.js';

test('parseHypercallInput_decodesEveryField', () => {
  const rcx = 0x005cn | (1n << 16n) | (3n << 17n) | (5n << 32n) | (2n << 48n);
  assert.deepEqual(parseHypercallInput(rcx), { code: 0x5c, fast: true, varHeaderQwords: 3, nested: false, repCount: 5, repStart: 2 });
});

test('parseHypercallInput_reservedBitsSet_isNull', () => {
  for (const bit of [27n, 30n, 44n, 47n, 60n, 63n]) assert.equal(parseHypercallInput(1n << bit), null);
});

test('parseHypercallInput_negativeBigint_isTreatedAsU64', () => {
  assert.equal(parseHypercallInput(-1n), null);
});

test('property_parseHypercallInput_neverThrows_fieldsInRange', () => {
  fc.assert(fc.property(fc.bigUintN(64), (v) => {
    const r = parseHypercallInput(v);
    if (r !== null) {
      assert.ok(r.code <= 0xffff && r.repCount <= 0xfff && r.repStart <= 0xfff && r.varHeaderQwords <= 0x3ff);
    }
  }));
});

test('hypercallResult_packsStatusAndReps', () => {
  assert.equal(hypercallResult(0x13, 7), 0x13n | (7n << 32n));
});
