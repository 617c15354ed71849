import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { divu128 } from './arith.js';

const M64 = (1n << 64n) - 1n;
const d32 = (v: bigint, k: number): number => Number((v >> BigInt(32 * k)) & 0xffffffffn) | 0;

function check(n: bigint, d: bigint): void {
  const out = new Int32Array(4);
  const ok = divu128(d32(n, 3), d32(n, 2), d32(n, 1), d32(n, 0), d32(d, 1), d32(d, 0), out);
  if (d === 0n || n >> 64n >= d) { assert.equal(ok, false, `${n} / ${d} does not fit`); return; }
  assert.equal(ok, true, `${n} / ${d}`);
  const q = (BigInt(out[1]! >>> 0) << 32n) | BigInt(out[0]! >>> 0), r = (BigInt(out[3]! >>> 0) << 32n) | BigInt(out[2]! >>> 0);
  assert.equal(q, n / d, `${n} / ${d} quotient`);
  assert.equal(r, n % d, `${n} / ${d} remainder`);
}

describe('emu arith: divu128 (128/64 DIV without BigInt)', () => {
  it('edges: largest quotient, one-digit and all-ones divisors, around 2^32 and 2^63, and no fit', () => {
    for (const [n, d] of [
      [(M64 << 64n) - 1n - (M64 - 1n) * 0n, M64], [((M64 - 1n) << 64n) | M64, M64], [M64, 1n], [(2n << 64n) | M64, 3n],
      [(0xffffffffn << 64n) | M64, 1n << 32n], [(1n << 64n) + 5n, (1n << 32n) + 1n], [1n << 64n, 2n], [0n, 7n],
      [(0x7fffffffffffffffn << 64n) | M64, 1n << 63n], [5n << 64n, 5n], [1n << 64n, 1n], [123n, 0n],
      // A first digit whose estimate is one too low, and one whose estimate is one too high.
      [119569061016549721640552989n << 32n, 35513249960409253n], [1065481633416006267959756317n << 32n, 809176477809595067n],
    ] as const) check(n, d);
  });

  it('quotients just below and at an integer (where a rounded estimate is one off)', () => {
    fc.assert(fc.property(fc.bigUintN(64), fc.bigUintN(64), fc.integer({ min: 0, max: 63 }), fc.constantFrom(0, 1, 2, -1, -2),
      (q, dRaw, shift, rSel) => {
        const d = (dRaw >> BigInt(shift)) | 1n;
        const r = rSel >= 0 ? BigInt(rSel) % d : (d + BigInt(rSel)) % d;
        const n = q * d + r;
        if (n >> 64n < d) check(n, d);
      }), { numRuns: 20000 });
  });

  it('agrees with BigInt on arbitrary inputs', () => {
    fc.assert(fc.property(fc.bigUintN(128), fc.bigUintN(64), fc.integer({ min: 0, max: 63 }),
      (n, dRaw, shift) => { check(n, dRaw >> BigInt(shift)); }), { numRuns: 20000 });
  });
});
