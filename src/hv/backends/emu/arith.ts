/**
 * Integer arithmetic wider than a double holds exactly, without BigInt (hot paths allocate
 * nothing): unsigned 128/64-bit division in 32-bit digits, for DIV r/m64 with a dividend in
 * RDX:RAX (lib/mpi's udiv_qrnnd in the kernel's RSA signature checks).
 */

const TWO32 = 4294967296;

/** Result of div96: quotient digit, remainder digits. */
const scratch = new Float64Array(3);

/**
 * One digit of schoolbook division: [a2 a1 a0] / [d1 d0] in unsigned 32-bit digits (as
 * numbers), with [a2 a1] < [d1 d0] so that the quotient is one digit. The digit is estimated in
 * doubles and corrected against the exact remainder [a2 a1 a0] - q * [d1 d0], kept in 32-bit
 * digits with borrows. The estimate is off by at most one (the relative error of the 96- and
 * 64-bit values as doubles is below 2^-52 and the quotient below 2^32), so one correction
 * suffices; three are allowed. Result in scratch; false if the remainder did not come into
 * [0, d) (a guard for the bound, not a path).
 */
function div96(a2: number, a1: number, a0: number, d1: number, d0: number): boolean {
  let q = Math.floor((a2 * TWO32 * TWO32 + a1 * TWO32 + a0) / (d1 * TWO32 + d0));
  if (q > 0xffffffff) q = 0xffffffff;
  // p = q * [d1 d0] in three digits, from 16 x 32-bit partial products (below 2^48, exact).
  const ql = q % 65536, qh = (q - ql) / 65536;
  let t = ql * d0 + (qh * d0 % 65536) * 65536;
  const p0 = t % TWO32;
  let c = (t - p0) / TWO32 + Math.floor(qh * d0 / 65536);
  t = ql * d1 + (qh * d1 % 65536) * 65536 + c;
  const p1 = t % TWO32;
  const p2 = (t - p1) / TWO32 + Math.floor(qh * d1 / 65536);
  // r = a - p; r2 carries the sign.
  let r0 = a0 - p0, r1 = a1 - p1, r2 = a2 - p2;
  if (r0 < 0) { r0 += TWO32; r1--; }
  if (r1 < 0) { r1 += TWO32; r2--; }
  for (let k = 0; k < 4; k++) {
    if (r2 < 0) {
      q--;
      r0 += d0; c = r0 >= TWO32 ? 1 : 0; r0 -= c * TWO32;
      r1 += d1 + c; c = r1 >= TWO32 ? 1 : 0; r1 -= c * TWO32;
      r2 += c;
    } else if (r2 > 0 || r1 > d1 || (r1 === d1 && r0 >= d0)) {
      q++;
      r0 -= d0; c = r0 < 0 ? 1 : 0; r0 += c * TWO32;
      r1 -= d1 + c; c = r1 < 0 ? 1 : 0; r1 += c * TWO32;
      r2 -= c;
    } else {
      scratch[0] = q; scratch[1] = r1; scratch[2] = r0;
      return true;
    }
  }
  return false;
}

/**
 * Unsigned [x3 x2 x1 x0] / [d1 d0] in 32-bit digits (int32 values, unsigned meaning): quotient
 * low and high digits in out[0], out[1], remainder in out[2], out[3] (as int32). False, with
 * out untouched, when the quotient does not fit 64 bits ([x3 x2] >= [d1 d0], including d = 0).
 */
export function divu128(x3: number, x2: number, x1: number, x0: number, d1: number, d0: number, out: Int32Array): boolean {
  const D1 = d1 >>> 0, D0 = d0 >>> 0, X3 = x3 >>> 0, X2 = x2 >>> 0;
  if (X3 > D1 || (X3 === D1 && X2 >= D0)) return false;
  if (!div96(X3, X2, x1 >>> 0, D1, D0)) return false;
  const qHi = scratch[0]!;
  if (!div96(scratch[1]!, scratch[2]!, x0 >>> 0, D1, D0)) return false;
  out[0] = scratch[0]! | 0; out[1] = qHi | 0; out[2] = scratch[2]! | 0; out[3] = scratch[1]! | 0;
  return true;
}
