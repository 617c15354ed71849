/**
 * The freestanding long-mode test guests on emu and QEMU TCG, compared at every port-I/O
 * instruction (guests.ts explains the method and where the comparison stops). Skipped with the
 * reason when QEMU or the guest toolchain is missing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildGuests, checkToolchain } from '../guests/build.js';
import { diffGuest } from './guests.js';
import { qemuAvailable } from './qemu.js';

const avail = qemuAvailable();
const tools = checkToolchain();
const skip = !avail.ok ? avail.reason : !tools.ok ? tools.reason : false;

describe('differential: test guests on emu vs QEMU TCG (I/O checkpoints)', { skip }, () => {
  const guests = skip === false ? [...buildGuests().values()].filter((g) => g.spec.mode === 'long64') : [];
  for (const g of guests) {
    it(g.spec.name, async () => {
      const r = await diffGuest(g);
      process.stdout.write(`# ${g.spec.name}: ${r.matched}/${r.qemuEvents} I/O checkpoints match; ${r.end}\n`);
      assert.equal(r.mismatch, null, r.mismatch ?? '');
      assert.ok(r.qemuEvents > 0, 'QEMU produced I/O checkpoints');
      assert.equal(r.matched, r.qemuEvents, r.end);
    });
  }
});
