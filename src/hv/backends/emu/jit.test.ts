/**
 * The compiling tier (jit.ts) against the interpreter: the same program runs on two machines,
 * one with compilation off, and every architectural result must be the same, including the
 * retired-instruction count (compiled loops and superblocks account for it themselves).
 *
 * The program loops TEST_JIT_THRESHOLD + 25 times over cases that stress what jit.ts emits inline:
 * flag consumers (Jcc/SETcc/CMOVcc/ADC/SBB) right after each kind of flag producer at every
 * operand size, shifts and rotates by constants (0, 1, 31, 32, 63), IMUL, sign extensions,
 * XCHG/BSWAP/NOT/NEG, MOVZX/MOVSX from memory, loops whose back edge targets the block's first
 * instruction or one in its middle, forward skips inside a block, loops longer than
 * LOOP_ITERATIONS, direct forward jumps the decoder follows, indirect jumps and calls through
 * registers and memory, 64-bit IMUL of factors below 2^32, addresses with negative indexes and
 * displacements, read-modify-write at every size, accesses across a page boundary and an
 * FS-based operand. Inputs come from
 * a xorshift generator in r13, so data-dependent branches go both ways across iterations. After
 * each case RAX, RBX, RDX and the flags are folded into r12 and stored in `results`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LOOP_ITERATIONS } from './jit.js';
import { longModeVm, TEST_JIT_THRESHOLD } from './testing.js';

const CC = ['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g'];
const A = ['al', 'ax', 'eax', 'rax'], B = ['bl', 'bx', 'ebx', 'rbx'];

function cases(): string[] {
  const out: string[] = [];
  // Inputs for a case: rax and rbx from the generator, with small and equal values mixed in
  // (one in four small, one in four equal: the edges of the conditions).
  const load = 'mov rax, r13\nmov rbx, r13\nror rbx, 29\ntest r13b, 3\njnz 8f\nmovzx eax, al\nmovzx ebx, bh\n8:\ntest r13b, 0x30\njnz 9f\nmov rbx, rax\n9:';
  for (let sz = 0; sz < 4; sz++) {
    const a = A[sz]!, b = B[sz]!;
    for (const op of ['add', 'sub', 'and', 'or', 'xor', 'cmp', 'test', 'adc', 'sbb']) {
      for (let cc = 0; cc < 16; cc += 1) {
        out.push(`${load}\n${op} ${a}, ${b}\nset${CC[cc]!} dl\nj${CC[cc]!} 7f\nadd rbx, 5\n7:\ncmov${CC[(cc + 3) & 15]!} rax, rbx`);
      }
      out.push(`${load}\n${op} ${a}, ${b}\nadc ${a}, ${b}\nsbb ${b}, ${a}\nsetc dl`);
    }
    for (const op of ['inc', 'dec', 'neg', 'not']) {
      for (let cc = 0; cc < 16; cc += 3) out.push(`${load}\nstc\n${op} ${a}\nset${CC[cc]!} dl\nadc ${b}, 0`);
    }
    if (sz >= 2) {
      for (const op of ['shl', 'shr', 'sar', 'rol', 'ror']) {
        for (const n of [0, 1, 5, 31, 32, 33, 63]) out.push(`${load}\n${op} ${a}, ${n}\nsetc dl\nseto dh\nsets cl\nsetp ch\nsetz bl`);
      }
      out.push(`${load}\nimul ${a}, ${b}\nseto dl`, `${load}\nimul ${a}, ${b}, -7\nsetc dl`, `${load}\nimul ${a}, ${b}, 0x7fff1234\nsetc dl`);
      out.push(`${load}\nxchg ${a}, ${b}`, `${load}\nbswap ${a}`, `${load}\nnot ${b}`);
    }
  }
  out.push(`${load}\ncbw\ncwde\ncdqe\ncqo`, `${load}\ncdq`, `${load}\nmovsxd rax, ebx`);
  // Loads through the scratch buffer (MOVZX/MOVSX from memory, read-modify-write).
  out.push(`${load}\nmov [rsi], rax\nmovzx edx, byte ptr [rsi + 3]\nmovsx rbx, word ptr [rsi + 1]\nmovsx ecx, byte ptr [rsi + 7]\nadd [rsi], rbx\nmov rax, [rsi]`);
  // Shifts and IMUL whose flags are dead (the next full flag writer comes first) or not
  // (INC/DEC keep CF, ADC reads it, SETcc/CMOVcc read the flags).
  out.push(`${load}\nshl rax, 5\ninc rbx\nsetc dl\nshr rbx, 3\nadd rcx, rax\nseto dh`);
  out.push(`${load}\nimul rax, rbx\nadc rcx, rax\nimul ebx, eax, 7\nsub rdx, rbx\nsets dl`);
  out.push(`${load}\nsar rax, 7\nmov rcx, rax\nxor rbx, rcx\nsetz dl\nshl ebx, 3\ncmovc eax, ebx\nsar eax, 2\ndec ecx\nadc edx, 0`);
  // Rotates whose flags are dead (only the result; an ADD before them sees through them to the
  // XOR) or live (ROL/ROR keep SF/ZF/PF of the ADD before them and set CF/OF).
  out.push(`${load}\nadd rax, rbx\nror rbx, 7\nrol eax, 13\nxor rcx, rbx\nror rcx, 41\nadd rdx, rcx\nsetc dl`);
  out.push(`${load}\nadd rax, rbx\nror rbx, 7\nsetz dl\nsets dh\nseto cl\nadd eax, ebx\nrol eax, 5\nsetp ch\nadc rbx, 0`);
  out.push(`${load}\nsub rax, rbx\nrol rbx, 63\nror ebx, 1\ncmovs rax, rbx\nror eax, 3\nxor edx, eax`);
  out.push(`${load}\nadd eax, ebx\nrol rcx, 9`, `${load}\nsub bx, ax\nror edx, 1`, `${load}\ninc eax\nror rdx, 2`, `${load}\nand rax, rbx\nrol ecx, 4`);
  // MUL r/m64 (unsigned 128-bit product in RDX:RAX): register and memory operands, factors of
  // every size, flags after it.
  out.push(`${load}\nmul rbx\nsetc cl\nseto ch\nsetz dh\nsets dl\nsetp bl\nadc rax, rdx`);
  out.push(`${load}\nmov ebx, ebx\nmul rbx\nmov [rsi], rdx\nmov rax, r13\nmul qword ptr [rsi]\nsetc cl\nadd rax, rcx`);
  out.push(`${load}\nmov rcx, rax\nmul rax\nxor rax, rdx\nmov rbx, -1\nmul rbx\nsetnz cl\nsbb rdx, rcx`);
  // 64-bit IMUL of factors below 2^32 (products past 2^63 overflow).
  out.push(`${load}\nmov eax, eax\nmov ebx, ebx\nimul rax, rbx\nseto dl\nsets cl\nsetz ch\nsetp dh`);
  // Addresses: scaled and negative indexes, negative displacements, read-modify-write of every
  // size, accesses that cross into the next page, and an FS-based operand.
  out.push(`${load}\nmov [rsi], rax\nmov [rsi + 8], rbx\nmov ecx, 1\nmov rdx, [rsi + rcx * 8]\nadd [rsi + rcx * 8 - 8], rdx
    inc dword ptr [rsi + 4]\nsub byte ptr [rsi + rcx * 2 + 3], bl\nxor word ptr [rsi + 6], bx\nneg rcx\nmov rax, [rsi + rcx * 4 + 4]\nmov rbx, [rsi + 8]`);
  out.push(`${load}\nmov [rsi + 4092], rax\nmov rbx, [rsi + 4090]\nadd qword ptr [rsi + 4094], rbx\nmov rcx, [rsi + 4094]\nmov dx, [rsi + 4095]\ninc dword ptr [rsi + 4093]\nmov eax, [rsi + 4093]`);
  out.push(`${load}\nmov r9, rax\nlea rax, [rsi - 4096]\nmov rdx, rax\nshr rdx, 32\nmov ecx, 0xc0000100\nwrmsr
    mov fs:[4096 + 16], r9\nmov rbx, fs:[4096 + 16]\nadd qword ptr fs:[4100], 7\nmov rcx, fs:[4100]\nmov rax, r9`);
  // A loop whose back edge targets the middle of its block, a forward skip, a long loop.
  out.push(`${load}\nmov ecx, eax\nand ecx, 15\ninc ecx\n1:\nadd rax, rcx\nrol rbx, 3\ndec ecx\njnz 1b\ntest al, 1\njz 2f\nadd rbx, 3\n2:`);
  out.push(`${load}\nmov ecx, ${LOOP_ITERATIONS * 3 + 7}\n1:\nxor rax, rcx\nimul rax, rax, 13\nsub ecx, 1\njnz 1b`);
  out.push(`${load}\nmov ecx, ebx\nand ecx, 63\n1:\ncmp ecx, 40\njb 2f\nadd rax, 1\n2:\nsub ecx, 1\njns 1b`);
  // A direct forward JMP inside the page (the decoder follows it: one block across the gap).
  out.push(`${load}\njmp 5f\nud2\nadd rax, 99\n5:\nadd rbx, rax\ntest al, 4\njz 6f\njmp 7f\n6:\nsub rbx, 3\n7:\nxor rax, rbx`);
  // Indirect jumps and calls (register and memory), and PUSH imm.
  out.push(`${load}\nlea rdx, [rip + 3f]\njmp rdx\nud2\n3:\nlea rcx, [rip + fn_add]\ncall rcx\ncall qword ptr [rip + fptr]\npush -77\npop rdx`);
  return out;
}

function program(cs: string[]): string {
  const body: string[] = [];
  cs.forEach((c, k) => {
    body.push(
      // xorshift64 step of r13
      'mov rax, r13\nshl rax, 13\nxor r13, rax\nmov rax, r13\nshr rax, 7\nxor r13, rax\nmov rax, r13\nshl rax, 17\nxor r13, rax',
      'xor edx, edx\nxor ecx, ecx', c,
      'pushfq\npop r8\nand r8d, 0x8d5\nxor r12, r8\nadd r12, rax\nrol r12, 9\nxor r12, rbx\nadd r12, rdx\nadd r12, rcx\nror r12, 3',
      `mov [rdi + ${k * 8}], r12`,
    );
  });
  return `mov r14, ${TEST_JIT_THRESHOLD + 25}\nmov r13, 0x9e3779b97f4a7c15\nxor r12, r12
    lea rdi, [rip + results]\nlea rsi, [rip + scratch]
    outer:\n${body.join('\n')}\ndec r14\njnz outer\nhlt
    fn_add: add rax, 0x1234\nret
    .balign 8
    fptr: .quad fn_add
    .balign 4096
    scratch: .fill 8192, 1, 0
    results: .fill ${cs.length * 8}, 1, 0`;
}

/** Run `src` cold (interpreter only) and hot (compiled, regions from `regionThreshold` dispatcher runs on). */
async function coldAndHot(src: string, regionThreshold: number) {
  const runs = [];
  for (const jit of [false, true]) {
    const vm = await longModeVm(src);
    vm.vp.cpu.jit = jit;
    vm.vp.cpu.regions = true;
    vm.vp.cpu.regionThreshold = regionThreshold;
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    runs.push({ vm, st: await vm.state(), instret: vm.vp.cpu.instret });
  }
  return runs as [typeof runs[0], typeof runs[0]];
}

describe('emu: compiled blocks behave as the interpreter', () => {
  it('same registers, flags, memory and instruction count, hot and cold', async () => {
    const cs = cases();
    const src = program(cs);
    const runs = [];
    for (const jit of [false, true]) {
      const vm = await longModeVm(src);
      vm.vp.cpu.jit = jit;
      const r = await vm.run();
      assert.deepEqual(r, { kind: 'halted' });
      const st = await vm.state();
      runs.push({ vm, st, instret: vm.vp.cpu.instret, results: vm.partition.memory.read(vm.sym('results'), cs.length * 8) });
    }
    const [cold, hot] = runs as [typeof runs[0], typeof runs[0]];
    // Data lives on its own pages, so no code page is invalidated and every block gets hot.
    assert.equal(hot.vm.partition.cache.stats.invalidations, 0);
    assert.ok(hot.vm.partition.cache.stats.compiled > 1000, `blocks were compiled (${hot.vm.partition.cache.stats.compiled})`);
    const cd = new DataView(cold.results.buffer, cold.results.byteOffset), hd = new DataView(hot.results.buffer, hot.results.byteOffset);
    for (let k = 0; k < cs.length; k++) {
      const c = cd.getBigUint64(k * 8, true), h = hd.getBigUint64(k * 8, true);
      if (c !== h) assert.fail(`case ${k} differs (interpreter ${c.toString(16)}, compiled ${h.toString(16)}):\n${cs[k]!}`);
    }
    assert.deepEqual(hot.st.regs, cold.st.regs);
    assert.equal(hot.instret, cold.instret, 'retired instructions');
  });

  it('identical code at two addresses shares one compiled function', async () => {
    const body = 'add rax, rbx\nxor rdx, rax\nimul rbx, rdx, 3\nret';
    const vm = await longModeVm(`mov r14, ${TEST_JIT_THRESHOLD + 5}\nouter:\ncall f1\ncall f2\ndec r14\njnz outer\nhlt\nf1:\n${body}\nf2:\n${body}`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const cache = vm.partition.cache;
    const at = (name: string): number => {
      for (let b = 0; b < cache.blocks; b++) if (cache.blkFn[b] !== undefined && Math.floor(cache.blkKey[b]! / 4) === vm.sym(name)) return b;
      return -1;
    };
    const b1 = at('f1'), b2 = at('f2');
    assert.ok(b1 >= 0 && b2 >= 0 && b1 !== b2, 'both copies compiled');
    assert.equal(cache.blkFn[b1], cache.blkFn[b2]);
  });

  it('regions: branches between the hot blocks of a page stay compiled, with the same results', async () => {
    // Calls, returns, a jump table, backward jumps to another block's head, and a loop long
    // enough that regions form early (TEST_JIT_THRESHOLD + 20 runs) and run for thousands of transfers.
    const src = `mov r14, 3000\nxor eax, eax\nmov rbx, 0x1234567\nlea rdi, [rip + table]
      top:\nmov rcx, rbx\nand ecx, 3\njmp [rdi + rcx * 8]
      h0: add rax, rbx\ncall mix\njmp next
      h1: xor rax, 0x55\nrol rbx, 7\njmp next
      h2: sub rax, 3\ncall mix\ncall mix\njmp next
      h3: imul rax, rax, 7\njmp next
      next: mov rdx, rbx\nshl rdx, 13\nxor rbx, rdx\nmov rdx, rbx\nshr rdx, 7\nxor rbx, rdx\ndec r14\njnz top\nhlt
      mix: add rax, rbx\nror rax, 11\ntest al, 1\njz 1f\ninc rax\n1: ret
      .balign 8
      table: .quad h0, h1, h2, h3`;
    const [cold, hot] = await coldAndHot(src, TEST_JIT_THRESHOLD + 20);
    assert.ok(hot.vm.partition.cache.stats.regions > 0, 'a region was compiled');
    assert.deepEqual(hot.st.regs, cold.st.regs);
    assert.equal(hot.instret, cold.instret, 'retired instructions');
  });

  it('regions: code that rewrites another block of its region takes effect at once', async () => {
    // Once the page's blocks run as a region, the loop rewrites the immediate of \`patched\`
    // (same page) a few times: every call after a rewrite must add the new value.
    const src = `mov r14, 600\nxor eax, eax\nlea rdi, [rip + patched]
      top:\ntest r14, 127\njnz 1f\nmov [rdi + 1], r14d\n1:\ncall patched\ncall other\ndec r14\njnz top\nhlt
      patched: add eax, 0x11111111\nret
      other: rol eax, 3\nret`;
    const [cold, hot] = await coldAndHot(src, TEST_JIT_THRESHOLD + 20);
    const st = hot.vm.partition.cache.stats;
    assert.ok(st.regions > 0 && st.invalidations >= 4, `regions ${st.regions}, invalidations ${st.invalidations}`);
    assert.deepEqual(hot.st.regs, cold.st.regs);
    assert.equal(hot.instret, cold.instret, 'retired instructions');
  });
});
