/**
 * Differential test: the same instruction sequences run natively on the host's x86-64 processor
 * and on the emulated one; results and the *defined* flags must match exactly.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { longModeVm, runNative, TEST_JIT_THRESHOLD } from './testing.js';

const CF = 1n, PF = 4n, AF = 0x10n, ZF = 0x40n, SF = 0x80n, OF = 0x800n;
const ALL = CF | PF | AF | ZF | SF | OF;

interface Case { text: string; mask: bigint; a: bigint; b: bigint; c: bigint; d: bigint; fin: number }

const NAMES: Record<string, string[]> = {
  a: ['al', 'ax', 'eax', 'rax'], b: ['bl', 'bx', 'ebx', 'rbx'], c: ['cl', 'cx', 'ecx', 'rcx'], d: ['dl', 'dx', 'edx', 'rdx'],
};
const M64 = (1n << 64n) - 1n;

// Deterministic generator (xorshift) so failures reproduce.
let seed = 0x9e3779b97f4a7c15n;
function rnd64(): bigint {
  seed ^= (seed << 13n) & M64; seed ^= seed >> 7n; seed ^= (seed << 17n) & M64;
  return seed & M64;
}
const EDGE = [0n, 1n, 2n, 0x7fn, 0x80n, 0xffn, 0x7fffn, 0x8000n, 0xffffn, 0x7fffffffn, 0x80000000n, 0xffffffffn,
  0x7fffffffffffffffn, 0x8000000000000000n, M64, 0x0fn, 0x10n];
function operand(): bigint {
  const r = rnd64();
  const k = Number(r & 7n);
  if (k < 3) return EDGE[Number((r >> 8n) % BigInt(EDGE.length))]!;
  if (k === 3) return (r >> 3n) & 0xffn;
  return rnd64();
}

function cases(): Case[] {
  const out: Case[] = [];
  const add = (text: string, mask: bigint, a = operand(), b = operand(), c = operand(), d = operand(), fin = Number(rnd64() & 0x8d5n)): void => {
    out.push({ text, mask, a, b, c, d, fin });
  };
  const N = 24;
  for (let sz = 0; sz < 4; sz++) {
    const A = NAMES['a']![sz]!, B = NAMES['b']![sz]!, bits = 8 << sz;
    for (let k = 0; k < N; k++) {
      for (const op of ['add', 'adc', 'sub', 'sbb', 'cmp']) add(`${op} ${A}, ${B}`, ALL);
      for (const op of ['and', 'or', 'xor', 'test']) add(`${op} ${A}, ${B}`, ALL & ~AF);
      for (const op of ['inc', 'dec', 'neg', 'not']) add(`${op} ${A}`, ALL);
      add(`add ${A}, 0x7f`, ALL); add(`sub ${A}, -128`, ALL); add(`adc ${A}, -1`, ALL);
      add(`xadd ${A}, ${B}`, ALL);
      add(`cmpxchg ${A}, ${B}`, ALL);
      add(`cmpxchg ${A}, ${B}`, ALL, 5n, 7n, 0n, 0n);
      add(`mov ${A}, ${B}\ncmpxchg ${A}, ${B}`, ALL);
      for (const op of ['shl', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']) {
        const c = rnd64() % 70n;
        const masked = Number(c & (sz === 3 ? 0x3fn : 0x1fn));
        let mask = op.startsWith('r') ? (CF | OF) : ALL & ~AF;
        if (masked !== 1) mask &= ~OF;
        if (masked === 0) mask = ALL;
        if ((op === 'shl' || op === 'shr') && masked >= bits) mask &= ~CF;
        add(`${op} ${A}, cl`, mask, operand(), operand(), c);
        add(`${op} ${A}, 1`, op.startsWith('r') ? CF | OF : ALL & ~AF);
      }
      if (sz > 0) {
        for (const op of ['shld', 'shrd']) {
          const c = rnd64() % 70n;
          const masked = Number(c & (sz === 3 ? 0x3fn : 0x1fn));
          if (sz === 1 && masked > 16) continue;
          let mask = ALL & ~AF;
          if (masked !== 1) mask &= ~OF;
          if (masked === 0) mask = ALL;
          add(`${op} ${A}, ${B}, cl`, mask, operand(), operand(), c);
        }
        add(`imul ${A}, ${B}`, CF | OF);
        add(`imul ${A}, ${B}, 0x12345`.replace('0x12345', sz === 1 ? '0x1234' : '0x12345'), CF | OF);
        add(`imul ${A}, ${B}, -3`, CF | OF);
        add(`bsf ${A}, ${B}`, ZF);
        add(`bsr ${A}, ${B}`, ZF);
        add(`bt ${A}, ${B}`, CF);
        add(`bts ${A}, ${B}`, CF);
        add(`btr ${A}, ${B}`, CF);
        add(`btc ${A}, ${B}`, CF);
        add(`btc ${A}, 13`, CF);
        add(`popcnt ${A}, ${B}`, ALL);
        add(`movsx ${A === 'ax' ? 'ax' : A}, bl`, 0n);
        add(`movzx ${A}, bl`, 0n);
      }
      // Memory operands (a scratch slot below the stack pointer).
      {
        const P = ['byte', 'word', 'dword', 'qword'][sz]! + ' ptr [rsp - 64]';
        const pre = 'mov [rsp - 64], rax\n', post = '\nmov rax, [rsp - 64]';
        for (const op of ['add', 'adc', 'sub', 'sbb', 'and', 'or', 'xor']) {
          add(`${pre}${op} ${P}, ${B}${post}`, op === 'and' || op === 'or' || op === 'xor' ? ALL & ~AF : ALL);
          add(`${pre}${op} ${B}, ${P}${post}`, op === 'and' || op === 'or' || op === 'xor' ? ALL & ~AF : ALL);
          add(`${pre}${op} ${P}, ${sz === 0 ? '0x5a' : '-77'}${post}`, op === 'and' || op === 'or' || op === 'xor' ? ALL & ~AF : ALL);
        }
        add(`${pre}cmp ${P}, ${B}${post}`, ALL);
        add(`${pre}test ${P}, ${B}${post}`, ALL & ~AF);
        for (const op of ['inc', 'dec', 'neg', 'not']) add(`${pre}${op} ${P}${post}`, ALL);
        add(`${pre}mov ${P}, ${sz === 0 ? '0x7e' : '-2'}${post}`, ALL);
        add(`${pre}mov ${P}, ${B}${post}`, ALL);
        add(`${pre}mov ${B}, ${P}${post}`, ALL);
        add(`${pre}xchg ${P}, ${B}${post}`, ALL);
        add(`${pre}lock xadd ${P}, ${B}${post}`, ALL);
        add(`${pre}lock cmpxchg ${P}, ${B}${post}`, ALL);
        add(`${pre}shl ${P}, 3${post}`, ALL & ~AF & ~OF);
        add(`${pre}sar ${P}, 1${post}`, ALL & ~AF);
        if (sz > 0) add(`${pre}btc ${P}, ${sz === 1 ? 'bx' : B}${post}`, CF, operand(), rnd64() & 0x3fn);
        add(`push rax\npop rbx`, 0n);
      }
      add(`mul ${B}`, CF | OF);
      add(`imul ${B}`, CF | OF);
      for (let cc = 0; cc < 16; cc++) {
        const names = ['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g'];
        if (k < 2) add(`cmp ${A}, ${B}\nset${names[cc]!} dl\ncmov${names[cc]!} ${sz === 0 ? 'eax' : A}, ${sz === 0 ? 'ebx' : B}`, ALL);
      }
      // Division without #DE: the high half of the dividend is reduced below the divisor.
      {
        let b = operand() & ((1n << BigInt(bits)) - 1n); if (b === 0n) b = 3n;
        const a = rnd64();
        const d = rnd64() % b;
        const aa = sz === 0 ? (a & ~0xff00n) | ((d & 0xffn) << 8n) : a;
        add(`div ${B}`, 0n, aa, b, 0n, d);
        const sa = rnd64();
        const sb = operand() || 7n;
        const ext = ['cbw', 'cwd', 'cdq', 'cqo'][sz]!;
        const min = 1n << BigInt(bits - 1);
        const saa = (sa & ((1n << BigInt(bits)) - 1n)) === min ? sa ^ 1n : sa;
        let sbb = (sb & ((1n << BigInt(bits)) - 1n)) === (1n << BigInt(bits)) - 1n ? 5n : sb;
        if ((sbb & ((1n << BigInt(bits)) - 1n)) === 0n) sbb |= 7n;
        if (sz === 0) add(`movsx ax, al\nidiv ${B}`, 0n, saa, sbb === 0n ? 9n : sbb);
        else add(`${ext}\nidiv ${B}`, 0n, saa, sbb === 0n ? 9n : sbb);
      }
    }
  }
  for (let k = 0; k < 16; k++) {
    add('bswap eax', 0n); add('bswap rax', 0n); add('cbw', 0n); add('cwde', 0n); add('cdqe', 0n); add('cwd', 0n); add('cqo', 0n);
    add('lahf', 0n); add('sahf', ALL & ~OF); add('cmc', ALL); add('stc', ALL); add('clc', ALL);
    add('lea rax, [rbx + rcx*4 - 0x1234]', 0n); add('lea eax, [ebx + ecx*8 + 0x7fffffff]', 0n);
    add('movsxd rax, ebx', 0n);
    // A REX prefix followed by a legacy prefix is ignored (SDM vol. 2, 2.2.1): add ax, bx; mov ax, cx.
    add('.byte 0x48, 0x66, 0x01, 0xd8', ALL); add('.byte 0x41, 0x66, 0x89, 0xc8', 0n);
  }
  return out;
}

function mov64(reg: string, v: bigint): string { return `mov ${reg}, 0x${v.toString(16)}`; }

function program(cs: Case[]): string {
  const body: string[] = ['lea rdi, [rip + results]'];
  for (const c of cs) {
    body.push(mov64('rax', c.a), mov64('rbx', c.b), mov64('rcx', c.c), mov64('rdx', c.d), `push 0x${c.fin.toString(16)}`, 'popfq', c.text,
      'mov [rdi + 24], rdx', 'mov [rdi + 16], rbx', 'pushfq', 'pop rdx', 'mov [rdi + 8], rdx', 'mov [rdi], rax', 'add rdi, 32');
  }
  return body.join('\n');
}

describe('emu: differential against the host processor', { skip: process.arch !== 'x64' || process.platform !== 'linux' ? 'needs an x86-64 Linux host' : false }, () => {
  it('integer instructions produce the same results and defined flags (interpreter)', async () => {
    await differential(1);
  });
  it('... and the same again when the blocks are hot and compiled (jit.ts)', async () => {
    await differential(TEST_JIT_THRESHOLD + 5);
  });
});

async function differential(passes: number): Promise<void> {
  {
    const cs = cases();
    const body = program(cs);
    const data = `\n.data\nresults: .fill ${cs.length * 32}, 1, 0\n`;
    const native = runNative(`${body}\nmov eax, 1\nmov edi, 1\nlea rsi, [rip + results]\nmov edx, ${cs.length * 32}\nsyscall\nmov eax, 60\nxor edi, edi\nsyscall\n${data}`);
    assert.equal(native.length, cs.length * 32);
    const vm = await longModeVm(`mov r15, ${passes}\nouter:\n${body}\ndec r15\njnz outer\nhlt\n${data}`);
    const r = await vm.run();
    assert.deepEqual(r, { kind: 'halted' });
    const emu = vm.partition.memory.read(vm.sym('results'), cs.length * 32);
    const nd = new DataView(native.buffer, native.byteOffset), ed = new DataView(emu.buffer, emu.byteOffset);
    let failures = 0;
    const msgs: string[] = [];
    for (let k = 0; k < cs.length; k++) {
      const c = cs[k]!;
      const o = k * 32;
      const get = (dv: DataView, off: number): bigint => dv.getBigUint64(o + off, true);
      const bad: string[] = [];
      if (get(nd, 0) !== get(ed, 0)) bad.push(`rax native ${get(nd, 0).toString(16)} emu ${get(ed, 0).toString(16)}`);
      if (get(nd, 16) !== get(ed, 16)) bad.push(`rbx native ${get(nd, 16).toString(16)} emu ${get(ed, 16).toString(16)}`);
      if (get(nd, 24) !== get(ed, 24)) bad.push(`rdx native ${get(nd, 24).toString(16)} emu ${get(ed, 24).toString(16)}`);
      const fm = c.mask;
      if ((get(nd, 8) & fm) !== (get(ed, 8) & fm)) bad.push(`flags native ${(get(nd, 8) & fm).toString(16)} emu ${(get(ed, 8) & fm).toString(16)}`);
      if (bad.length > 0) {
        failures++;
        if (msgs.length < 25) msgs.push(`${c.text.replace(/\n/g, '; ')} a=${c.a.toString(16)} b=${c.b.toString(16)} c=${c.c.toString(16)} d=${c.d.toString(16)} fin=${c.fin.toString(16)}: ${bad.join(', ')}`);
      }
    }
    assert.equal(failures, 0, `${failures}/${cs.length} mismatches:\n${msgs.join('\n')}`);
    if (passes > TEST_JIT_THRESHOLD) {
      assert.ok(vm.partition.cache.blkFn.some((f) => f !== undefined), 'blocks were compiled');
      assert.ok(vm.partition.cache.stats.compiled > 0);
    }
  }
}
