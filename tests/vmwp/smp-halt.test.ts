/**
 * When a multiprocessor VM ends on a halt (src/vmwp/vm.ts): a processor other than VP 0 that
 * halts with interrupts off (as Linux parks its other CPUs before CPU 0 writes the ACPI
 * power-off register) must not end the VM; VP 0 halting that way does.
 *
 * The guest (long64 flat image, emu backend, 2 VPs): VP 0 wakes VP 1 with INIT + STARTUP IPIs
 * through its local APIC; VP 1 starts in real mode at 0x20000, where the test put CLI; HLT. VP 0
 * then spins for a while (VP 1 has halted long before) and ends the run through the test device
 * (exit 0x31), or, in the second case, halts itself with interrupts off.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assemble } from '../../src/hv/backends/emu/testing.js';
import { loadFlatImage } from '../../src/loader/flat.js';
import { Vm } from '../../src/vmwp/vm.js';

const LOAD = 0x100000;
const AP_START = 0x20000;   // STARTUP vector 0x20

function guest(end: string): Uint8Array {
  return assemble(`
    mov edi, 0xfee00000                       # local APIC
    mov dword ptr [rdi + 0x310], 0x01000000   # ICR high: APIC ID 1
    mov dword ptr [rdi + 0x300], 0x00004500   # INIT, assert
    mov dword ptr [rdi + 0x300], 0x00004620   # STARTUP, vector 0x20
    mov ecx, 3000000
    1: dec ecx
    jnz 1b
    ${end}`, LOAD, 64).bytes;
}

async function runGuest(end: string): Promise<unknown> {
  const vm = await Vm.create({ backend: 'emu', memoryBytes: 16 << 20, vpCount: 2, resetAction: 'poweroff', testDevice: true });
  try {
    vm.memory.write(AP_START, new Uint8Array([0xfa, 0xf4]));   // CLI; HLT
    const base = await vm.getVpState(0);
    await vm.setVpState(0, loadFlatImage(vm.memory, guest(end), { mode: 'long64', loadGpa: LOAD, base }));
    return await vm.run({ timeoutMs: 60_000 });
  } finally {
    vm.dispose();
  }
}

describe('vm: halts in a multiprocessor VM', () => {
  it('an application processor parked with CLI;HLT does not end the VM', async () => {
    assert.deepEqual(await runGuest('mov al, 0x31\nout 0xf4, al\nhlt'), { kind: 'testExit', code: 0x31 });
  });
  it('VP 0 halting with interrupts off ends it', async () => {
    assert.deepEqual(await runGuest('cli\nhlt'), { kind: 'halted', vp: 0 });
  });
});
