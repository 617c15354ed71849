import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { longModeVm, realModeVm } from './testing.js';

const CF = 1n, PF = 4n, AF = 0x10n, ZF = 0x40n, SF = 0x80n, OF = 0x800n;
const ARITH = CF | PF | AF | ZF | SF | OF;

async function run64(src: string) {
  const vm = await longModeVm(src + '\nhlt\n');
  const r = await vm.run();
  assert.deepEqual(r, { kind: 'halted' });
  return { vm, st: await vm.state() };
}

describe('emu: basics', () => {
  it('mov/add in long mode halts with the result', async () => {
    const { st } = await run64('mov rax, 0x123456789\nmov rbx, 0x100000000\nadd rax, rbx\nmov ecx, -1\nmov dl, 0x80\nadd dl, dl\npushfq\npop rsi');
    assert.equal(st.regs.rax, 0x223456789n);
    assert.equal(st.regs.rcx, 0xffffffffn);
    assert.equal(st.regs.rdx & 0xffn, 0n);
    assert.equal(st.regs.rsi & ARITH, CF | ZF | PF | OF);
  });
});
