/**
 * Kernel entry/exit transitions as Linux performs them (arch/x86/entry/entry_64.S), checked on
 * the emu CPU: the return to user mode (SWAPGS, the MDS `verw` buffer clear, IRETQ to CPL3) and
 * the way back (SYSCALL, #PF from CPL3 through RSP0) with the per-CPU GS base restored.
 * Regression tests for the Debian 6.1 boot that died at "Run /init" (VERW was #UD).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { longModeVm } from './testing.js';

/** GP/PF handlers: record the vector in r12 and the error code in r15, then halt. */
const HANDLERS = `
gp_handler: mov r12, 13
  pop r15
  hlt
pf_handler: mov r12, 14
  pop r15
  swapgs
  mov r14, gs:[0x10]
  hlt
`;
const IDT = new Map([[13, 'gp_handler'], [14, 'pf_handler']]);

describe('emu: VERR/VERW', () => {
  it('at CPL0: ZF per selector (null, code, data, user data, system, beyond the GDT limit), other flags kept', async () => {
    // Test GDT: 0x08 code64 (readable), 0x10 data, 0x1b user code, 0x23 user data, 0x28 TSS; limit 0x37.
    const vm = await longModeVm(`
      stc
      mov ax, 0x10; verr ax; setz bl; verw ax; setz bh
      mov ax, 0x08; verr ax; setz cl; verw ax; setz ch
      mov ax, 0x23; verr ax; setz dl; verw ax; setz dh
      mov ax, 0x28; verr ax; setz sil
      mov ax, 0x00; verr ax; setz dil
      mov ax, 0x100; verw ax; setz r8b
      setc r9b
      mov word ptr [rip + selmem], 0x13    # RPL 3 on a DPL 0 data segment
      verw [rip + selmem]; setz r10b
      hlt
      selmem: .word 0`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const r = (await vm.state()).regs;
    assert.equal(r.rbx & 0xffffn, 0x0101n, 'data 0x10 readable and writable');
    assert.equal(r.rcx & 0xffffn, 0x0001n, 'code 0x08 readable, not writable');
    assert.equal(r.rdx & 0xffffn, 0x0101n, 'user data 0x23 accessible at CPL0');
    assert.equal(r.rsi & 0xffn, 0n, 'TSS is a system segment');
    assert.equal(r.rdi & 0xffn, 0n, 'null selector');
    assert.equal(r.r8 & 0xffn, 0n, 'beyond the GDT limit: ZF=0, no fault');
    assert.equal(r.r9 & 0xffn, 1n, 'CF untouched');
    assert.equal(r.r10 & 0xffn, 0n, 'RPL 3 > DPL 0');
  });

  it('at CPL3: kernel segments are not accessible, user data is; no fault', async () => {
    const vm = await longModeVm(`
      push 0x23; push 0x1f0000; push 0x2; push 0x1b
      lea rax, [rip + user]; push rax
      iretq
      user:
      mov ax, 0x10; verw ax; setz bl
      mov ax, 0x23; verw ax; setz bh; verr ax; setz cl
      mov ax, 0x1b; verr ax; setz ch
      hlt                         # #GP at CPL3 ends the test
      ${HANDLERS}`, { idt: IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 13n);
    assert.equal(st.regs.rbx & 0xffffn, 0x0100n);
    assert.equal(st.regs.rcx & 0xffffn, 0x0101n);
  });
});

describe('emu: LAR/LSL', () => {
  it('access rights and limits of code, data and TSS descriptors; null selector leaves the destination', async () => {
    const vm = await longModeVm(`
      mov ax, 0x08; lar ebx, ax; setz r8b
      mov ax, 0x10; lsl rcx, ax
      mov ax, 0x28; lsl edx, ax; lar esi, ax
      mov rdi, -1; xor eax, eax; lsl rdi, ax; setz r9b
      mov word ptr [rip + selmem], 0x23
      lar r10w, [rip + selmem]
      hlt
      selmem: .word 0`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const r = (await vm.state()).regs;
    assert.equal(r.rbx, 0xa09b00n);
    assert.equal(r.r8 & 0xffn, 1n);
    assert.equal(r.rcx, 0xffffffffn, 'granular limit scaled');
    assert.equal(r.rdx, 0x67n);
    assert.equal(r.rsi, 0x8900n);
    assert.equal(r.rdi, 0xffffffffffffffffn, 'unchanged on ZF=0');
    assert.equal(r.r9 & 0xffn, 0n);
    assert.equal(r.r10 & 0xffffn, 0xf300n);
  });
});

describe('emu: VERR/VERW/LAR/LSL over every selector', () => {
  it('never fault; ZF counts match the test GDT (limit 0x37, no LDT) at CPL0', async () => {
    const vm = await longModeVm(`
      xor ecx, ecx                # selector
      xor r8, r8; xor r9, r9; xor r10, r10; xor r11, r11
      next:
      verr cx; setz al; movzx eax, al; add r8, rax
      verw cx; setz al; movzx eax, al; add r9, rax
      lar edx, ecx; setz al; movzx eax, al; add r10, rax
      lsl edx, ecx; setz al; movzx eax, al; add r11, rax
      inc ecx
      cmp ecx, 0x10000
      jb next
      hlt
      ${HANDLERS}`, { idt: IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const r = (await vm.state()).regs;
    assert.equal(r.r12, 0n, 'no exception');
    // code 0x08 and data 0x10 (DPL0: RPL 0 only), user code/data (DPL3: any RPL), TSS (LAR/LSL, RPL 0).
    assert.deepEqual([r.r8, r.r9, r.r10, r.r11], [10n, 5n, 11n, 11n]);
  });
});

describe('emu: Linux-style kernel exit and re-entry', () => {
  it('SWAPGS + VERW + IRETQ to CPL3, then SYSCALL and #PF back with the per-CPU GS base', async () => {
    const vm = await longModeVm(`
      # STAR: SYSCALL CS 0x08 (SS 0x10); SYSRET base 0x08 (CS 0x1b)
      mov ecx, 0xc0000081; xor eax, eax; mov edx, 0x00080008; wrmsr
      mov ecx, 0xc0000082; lea rax, [rip + syscall_entry]; mov rdx, rax; shr rdx, 32; wrmsr
      mov ecx, 0xc0000084; mov eax, 0x47700; xor edx, edx; wrmsr
      # GS base = per-CPU area at 0x5000 (its 0x10 holds a marker); user GS base in KERNEL_GS_BASE
      mov qword ptr [0x5010], 0x1234
      mov ecx, 0xc0000101; mov eax, 0x5000; xor edx, edx; wrmsr
      mov ecx, 0xc0000102; mov eax, 0x1f8000; xor edx, edx; wrmsr
      # exit to user as common_interrupt_return does
      push 0x23; push 0x1f0000; push 0x202; push 0x1b
      lea rax, [rip + user]; push rax
      swapgs
      verw [rip + ds_sel]
      iretq
      ds_sel: .word 0x10
      user:
      mov rdx, gs:[0]             # user GS base (0x1f8000)
      mov r8, 1
      syscall
      back: jmp back
      syscall_entry:
      swapgs
      mov r13, gs:[0x10]          # per-CPU read right after entry
      mov r10, rcx
      # back to user once more, then fault there
      lea rcx, [rip + user2]
      mov r11, 0x202
      swapgs
      verw [rip + ds_sel]
      sysretq
      user2:
      mov rbx, [0x5000]           # supervisor page: #PF from CPL3 through RSP0
      hlt
      ${HANDLERS}`, { idt: IDT });
    vm.partition.memory.write(0x1f8000, new Uint8Array([0x77, 0, 0, 0, 0, 0, 0, 0]));
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.rdx, 0x77n, 'user GS base after SWAPGS + IRETQ');
    assert.equal(st.regs.r13, 0x1234n, 'kernel GS base after SYSCALL + SWAPGS');
    assert.equal(st.regs.r10, BigInt(vm.sym('back')));
    assert.equal(st.regs.r12, 14n);
    assert.equal(st.regs.r15, 5n, 'user read, protection violation');
    assert.equal(st.regs.r14, 0x1234n, 'kernel GS base after #PF from CPL3 + SWAPGS');
    assert.equal(st.regs.rsp & ~0xfffn, 0x6f000n, 'on RSP0');
    assert.equal(st.sregs.gs.base, 0x5000n);
  });
});
