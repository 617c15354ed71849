import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { longModeVm, realModeVm, CODE_BASE } from './testing.js';
import { decode } from './decoder.js';
import { STRIDE, F_OP, OP_UD } from './ops.js';
import { EMU_VENDOR, createEmuBackend } from './index.js';

const CF = 1n, PF = 4n, AF = 0x10n, ZF = 0x40n, SF = 0x80n, OF = 0x800n;
const ARITH = CF | PF | AF | ZF | SF | OF;

async function run64(src: string, idt?: Map<number, string>) {
  const vm = await longModeVm(src + '\nhlt\n', idt ? { idt } : {});
  const r = await vm.run();
  assert.deepEqual(r, { kind: 'halted' });
  return { vm, st: await vm.state() };
}

/** Exception handler that records (vector-specific) error code, CR2 and faulting RIP, then halts. */
const HANDLERS = `
ud_handler: mov r12, 6
  mov r13, [rsp]
  hlt
gp_handler: mov r12, 13
  pop r15
  mov r13, [rsp]
  hlt
pf_handler: mov r12, 14
  pop r15
  mov r14, cr2
  mov r13, [rsp]
  mov r11, [rsp + 8]
  hlt
de_handler: mov r12, 0
  mov r13, [rsp]
  hlt
`;
const EXC_IDT = new Map([[6, 'ud_handler'], [13, 'gp_handler'], [14, 'pf_handler'], [0, 'de_handler']]);

describe('emu: integer basics and flags', () => {
  it('mov/add in long mode with 64-bit carry propagation', async () => {
    const { st } = await run64('mov rax, 0x123456789\nmov rbx, 0x100000000\nadd rax, rbx\nmov ecx, -1\nmov dl, 0x80\nadd dl, dl\npushfq\npop rsi');
    assert.equal(st.regs.rax, 0x223456789n);
    assert.equal(st.regs.rcx, 0xffffffffn);
    assert.equal(st.regs.rdx & 0xffn, 0n);
    assert.equal(st.regs.rsi & ARITH, CF | ZF | PF | OF);
  });

  it('inc preserves CF, dec sets OF at the signed minimum', async () => {
    const { st } = await run64('stc\nmov eax, 0x7fffffff\ninc eax\npushfq\npop rbx\nmov ecx, 0x80000000\ndec ecx\npushfq\npop rdx');
    assert.equal(st.regs.rax, 0x80000000n);
    assert.equal(st.regs.rbx & (CF | OF | SF | ZF | AF), CF | OF | SF | AF);
    assert.equal(st.regs.rdx & (CF | OF | SF | ZF), CF | OF);
  });

  it('div by zero raises #DE at the faulting instruction', async () => {
    const vm = await longModeVm('xor ecx, ecx\nmov eax, 5\nfault: div ecx\nhlt\n' + HANDLERS, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 0n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
  });

  it('64-bit div and idiv (128-bit dividend)', async () => {
    const { st } = await run64('mov rdx, 1\nmov rax, 0\nmov rcx, 3\ndiv rcx\nmov r8, rax\nmov r9, rdx\nmov rax, -100\ncqo\nmov rcx, 7\nidiv rcx');
    assert.equal(st.regs.r8, ((1n << 64n) / 3n));
    assert.equal(st.regs.r9, ((1n << 64n) % 3n));
    assert.equal(st.regs.rax, BigInt.asUintN(64, -14n));
    assert.equal(st.regs.rdx, BigInt.asUintN(64, -2n));
  });
});

describe('emu: 64-bit DIV/IDIV against BigInt', () => {
  // Operands below 2^52 take the exact double path, the rest BigInt: both sides of the edge
  // (2^53 + 1 is not a double), quotients just under and at an integer, negative dividends and
  // divisors.
  it('quotient and remainder of both paths', async () => {
    const P52 = 1n << 52n;
    const raw: [bigint, bigint][] = [
      [100n, 7n], [P52 - 1n, 3n], [P52 - 1n, P52 - 2n], [P52, 3n], [P52 + 5n, 7n], [(P52 - 1n) / 3n * 3n - 1n, 3n],
      [4503599627370493n, 4503599627370494n], [4503599627370495n, 1n], [999999999999999n, 1000000000000000n], [0n, 5n],
      [(1n << 51n) + 12345n, 65536n], [12345678901234n, 1000000007n], [(1n << 64n) - 1n, 10n], [1n << 40n, (1n << 51n) + 1n],
      [4503599627370495n, 4503599627370491n], [3002399751580331n, 1501199875790166n], [(1n << 53n) + 1n, 1n], [(1n << 54n) - 1n, 2n],
    ];
    const cases: { signed: boolean; a: bigint; d: bigint }[] = [];
    for (const [a, d] of raw) {
      cases.push({ signed: false, a, d });
      for (const [sa, sd] of [[1n, 1n], [-1n, 1n], [1n, -1n], [-1n, -1n]] as const) {
        const x = sa * a, y = sd * d;
        if (x >= -(1n << 63n) && x < (1n << 63n) && y >= -(1n << 63n) && y < (1n << 63n) && y !== 0n) cases.push({ signed: true, a: x, d: y });
      }
    }
    const u = (v: bigint): string => `0x${BigInt.asUintN(64, v).toString(16)}`;
    const code = cases.map((c) => `mov rax, ${u(c.a)}\n${c.signed ? 'cqo' : 'xor edx, edx'}\nmov rcx, ${u(c.d)}\n${c.signed ? 'idiv' : 'div'} rcx
      mov [rdi], rax\nmov [rdi + 8], rdx\nadd rdi, 16`).join('\n');
    const { vm } = await run64(`mov rdi, 0x90000\n${code}`);
    cases.forEach((c, k) => {
      const q = c.a / c.d, r = c.a % c.d;   // BigInt: truncating, remainder with the dividend's sign
      assert.equal(vm.partition.memory.readU64(0x90000 + 16 * k), BigInt.asUintN(64, q), `${c.signed ? 'idiv' : 'div'} ${c.a} / ${c.d} quotient`);
      assert.equal(vm.partition.memory.readU64(0x90008 + 16 * k), BigInt.asUintN(64, r), `${c.signed ? 'idiv' : 'div'} ${c.a} / ${c.d} remainder`);
    });
  });
});

describe('emu: 128/64 DIV against BigInt', () => {
  // RDX:RAX / r64 with RDX below the divisor: schoolbook division in 32-bit digits (quotient
  // digits estimated in doubles, corrected exactly). Edges: the largest quotient, divisors of one
  // digit, at and around 2^32, all ones; then pseudo-random cases.
  it('quotient and remainder', async () => {
    const M = (1n << 64n) - 1n;
    const cases: [bigint, bigint, bigint][] = [
      [M - 1n, M, M], [0n, M, 1n], [2n, M, 3n], [0xffffffffn, M, 1n << 32n], [0xfffffffen, 0n, 0xffffffffn],
      [(1n << 32n), 5n, (1n << 32n) + 1n], [1n, 0n, 2n], [123456789n, 987654321987654321n, 0x8000000000000000n],
      [0x7fffffffffffffffn, M, 0x8000000000000000n], [0x8000000000000000n - 1n, 0n, 0x8000000000000001n],
      [0xfffffffffffffffen, 0xfffffffffffffffen, M], [1n << 40n, 1n << 20n, (1n << 41n) - 1n],
    ];
    let x = 0x9e3779b97f4a7c15n;
    const next = (): bigint => { x ^= (x << 13n) & M; x ^= x >> 7n; x ^= (x << 17n) & M; return x; };
    for (let k = 0; k < 60; k++) {
      const shift = BigInt(k % 64);
      const d = (next() >> shift) | 1n;
      cases.push([next() % d, next(), d]);
    }
    const u = (v: bigint): string => `0x${v.toString(16)}`;
    const code = cases.map(([hi, lo, d]) => `mov rdx, ${u(hi)}\nmov rax, ${u(lo)}\nmov rcx, ${u(d)}\ndiv rcx
      mov [rdi], rax\nmov [rdi + 8], rdx\nadd rdi, 16`).join('\n');
    const { vm } = await run64(`mov rdi, 0x90000\n${code}`);
    cases.forEach(([hi, lo, d], k) => {
      const n = (hi << 64n) | lo;
      assert.equal(vm.partition.memory.readU64(0x90000 + 16 * k), n / d, `${n} / ${d} quotient`);
      assert.equal(vm.partition.memory.readU64(0x90008 + 16 * k), n % d, `${n} / ${d} remainder`);
    });
  });

  it('#DE when the quotient does not fit', async () => {
    const vm = await longModeVm(`mov rdx, 5\nmov rax, 1\nmov rcx, 5\nfault: div rcx\nhlt\n${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 0n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
  });
});

describe('emu: string instructions', () => {
  it('rep movsb, rep stosq, repne scasb and std', async () => {
    const { vm, st } = await run64(`
      lea rsi, [rip + src]
      mov rdi, 0x90000
      mov ecx, 11
      cld
      rep movsb
      mov rdi, 0x91000
      mov rax, 0x1122334455667788
      mov ecx, 4
      rep stosq
      lea rdi, [rip + src]
      xor eax, eax
      mov rcx, -1
      repne scasb
      not rcx
      dec rcx
      mov r8, rcx
      std
      mov rsi, 0x9000a
      mov rdi, 0x9200a
      mov ecx, 11
      rep movsb
      cld
      jmp done
      src: .ascii "hello world"
      .byte 0
      done:`);
    const mem = vm.partition.memory;
    assert.equal(new TextDecoder().decode(mem.read(0x90000, 11)), 'hello world');
    for (let k = 0; k < 4; k++) assert.equal(mem.readU64(0x91000 + 8 * k), 0x1122334455667788n);
    assert.equal(mem.readU64(0x91020), 0n);
    assert.equal(st.regs.r8, 11n);
    assert.equal(new TextDecoder().decode(mem.read(0x92000, 11)), 'hello world');
    assert.equal(st.regs.rcx, 0n);
  });
});

describe('emu: REP STOS/MOVS page runs (ERMS)', () => {
  // The bulk path moves whole runs inside a page; these check its edges against what the
  // element-by-element definition gives: misaligned starts, page crossings, every size, value
  // patterns, forward overlap, a fault part-way and a copy into decoded code.
  it('rep stos of every size across pages, with uniform and mixed values', async () => {
    const { vm, st } = await run64(`
      cld
      mov rdi, 0x90ffd
      mov eax, 0xab
      mov ecx, 5000
      rep stosb
      mov r8, rdi
      mov rdi, 0x93ff7
      mov rax, 0x1122334455667788
      mov ecx, 700
      rep stosq
      mov r9, rdi
      mov rdi, 0x96ffe
      mov eax, 0xc0c1c2c3
      mov ecx, 1500
      rep stosd
      mov rdi, 0x98fff
      mov eax, 0x7777
      mov ecx, 3000
      rep stosw
      mov rdi, 0x9c000
      mov rax, -1
      mov ecx, 513
      rep stosq
      mov r10, rcx`);
    const mem = vm.partition.memory;
    const b = mem.read(0x90ffd, 5002);
    for (let k = 0; k < 5000; k++) assert.equal(b[k], 0xab, `stosb byte ${k}`);
    assert.equal(b[5000], 0);
    assert.equal(st.regs.r8, 0x90ffdn + 5000n);
    for (let k = 0; k < 700; k++) assert.equal(mem.readU64(0x93ff7 + 8 * k), 0x1122334455667788n, `stosq ${k}`);
    assert.equal(st.regs.r9, 0x93ff7n + 5600n);
    for (let k = 0; k < 1500; k++) assert.equal(mem.readU32(0x96ffe + 4 * k), 0xc0c1c2c3, `stosd ${k}`);
    for (let k = 0; k < 3000; k++) assert.equal(mem.readU16(0x98fff + 2 * k), 0x7777, `stosw ${k}`);
    for (let k = 0; k < 513; k++) assert.equal(mem.readU64(0x9c000 + 8 * k), 0xffffffffffffffffn, `stosq -1 ${k}`);
    assert.equal(mem.readU64(0x9c000 + 8 * 513), 0n);
    assert.equal(st.regs.r10, 0n);
  });

  it('rep movs with source and destination at different page offsets, and forward overlap', async () => {
    const { vm, st } = await run64(`
      cld
      mov rdi, 0x80123
      xor ecx, ecx
      fill: mov eax, ecx
      imul eax, eax, 97
      shr eax, 3
      mov [rdi + rcx], al
      inc ecx
      cmp ecx, 9000
      jb fill
      mov rsi, 0x80123
      mov rdi, 0x88ff9
      mov ecx, 9000
      rep movsb
      mov r8, rsi
      mov r9, rdi
      mov rsi, 0x80123
      mov rdi, 0x8c005
      mov ecx, 1100
      rep movsq
      # overlap: destination one byte above the source repeats the first byte
      mov rsi, 0x90000
      mov byte ptr [rsi], 0x5a
      lea rdi, [rsi + 1]
      mov ecx, 6000
      rep movsb
      mov r10, rcx`);
    const mem = vm.partition.memory;
    const exp = new Uint8Array(9000);
    for (let k = 0; k < 9000; k++) exp[k] = ((k * 97) >>> 3) & 0xff;
    assert.deepEqual(mem.read(0x88ff9, 9000), exp);
    assert.deepEqual(mem.read(0x8c005, 8800), exp.subarray(0, 8800));
    assert.equal(st.regs.r8, 0x80123n + 9000n);
    assert.equal(st.regs.r9, 0x88ff9n + 9000n);
    const o = mem.read(0x90000, 6002);
    for (let k = 0; k <= 6000; k++) assert.equal(o[k], 0x5a, `overlap byte ${k}`);
    assert.equal(o[6001], 0);
    assert.equal(st.regs.r10, 0n);
  });

  it('rep movs whose source page is followed by a virtual page of another frame', async () => {
    // Virtual 0x81000 maps frame 0x85000: a run that read past the end of the source page in
    // RAM instead of translating again would copy frame 0x81000's zeros.
    const { vm } = await run64(`
      mov qword ptr [0x4000 + 0x81 * 8], 0x85003
      invlpg [0x81000]
      cld
      mov rdi, 0x80f00
      xor ecx, ecx
      fill: lea eax, [rcx + 1]
      mov [rdi + rcx], al
      inc ecx
      cmp ecx, 0x200
      jb fill
      mov rsi, 0x80f00
      mov rdi, 0x88010
      mov ecx, 0x200
      rep movsb`);
    const exp = new Uint8Array(0x200);
    for (let k = 0; k < 0x200; k++) exp[k] = (k + 1) & 0xff;
    assert.deepEqual(vm.partition.memory.read(0x88010, 0x200), exp);
    assert.deepEqual(vm.partition.memory.read(0x85000, 0x100), exp.subarray(0x100));
  });

  it('rep movs to and from MMIO: one exit per element, in order', async () => {
    const { vm, st } = await run64(`
      cld
      mov rsi, 0x90000
      mov dword ptr [rsi], 0x44332211
      mov dword ptr [rsi + 4], 0x88776655
      mov rdi, 0xd0000000
      mov ecx, 2
      rep movsd
      mov rsi, 0xd0000100
      mov rdi, 0x91000
      mov ecx, 100
      rep movsb
      mov r8, rcx`);
    const mm = vm.exits.mmio;
    assert.deepEqual(mm.slice(0, 2), [
      { gpa: 0xd0000000, data: [0x11, 0x22, 0x33, 0x44], write: true },
      { gpa: 0xd0000004, data: [0x55, 0x66, 0x77, 0x88], write: true },
    ]);
    assert.equal(mm.length, 102);
    for (let k = 0; k < 100; k++) assert.deepEqual(mm[2 + k], { gpa: 0xd0000100 + k, data: [0x11], write: false });
    assert.deepEqual(vm.partition.memory.read(0x91000, 101), new Uint8Array([...new Array<number>(100).fill(0x11), 0]));
    assert.equal(st.regs.r8, 0n);
  });

  it('a #PF part-way leaves RCX, RDI and the bytes before it as the element loop would', async () => {
    const vm = await longModeVm(`
      mov rax, 0x1fe000
      mov qword ptr [0x4000 + 0x1fe * 8], 0   # clear the PTE
      invlpg [rax]
      cld
      mov rdi, 0x1fc010
      mov rax, 0x0102030405060708
      mov ecx, 2000
      fault: rep stosq
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 14n);
    assert.equal(st.sregs.cr2, 0x1fe000n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
    const done = (0x1fe000 - 0x1fc010) / 8;
    assert.equal(st.regs.rcx, BigInt(2000 - done));
    assert.equal(st.regs.rdi, 0x1fe000n);
    assert.equal(vm.partition.memory.readU64(0x1fdff8), 0x0102030405060708n);
    assert.equal(vm.partition.memory.readU64(0x1fc008), 0n);
  });

  it('rep movsb over decoded code: the next run executes the new bytes', async () => {
    const { st } = await run64(`
      cld
      xor ebx, ebx
      call patched          # decoded (and run) before the copy
      add rbx, rax
      lea rsi, [rip + repl]
      lea rdi, [rip + patched]
      mov ecx, 6
      rep movsb
      call patched
      add rbx, rax
      jmp done
      patched: mov eax, 1
      ret
      repl: mov eax, 40
      ret
      done:`);
    assert.equal(st.regs.rbx, 41n);
  });
});

describe('emu: 64-bit PUSH/POP', () => {
  it('a slot straddling a page boundary, and pushes and pops of cached and uncached pages', async () => {
    const vm = await longModeVm(`
      mov r9, rsp
      mov qword ptr [0x4000 + 0x90 * 8], 0x96003   # virtual 0x90000 -> frame 0x96000
      invlpg [0x90000]
      mov qword ptr [0x8fff0], 0               # the page below in the TLB, for reads and writes
      mov rdx, [0x8fff0]
      mov rsp, 0x90004
      mov rax, 0x1122334455667788
      push rax
      mov r10, rsp
      pop rbx
      mov r11, rsp
      mov rsp, 0x91000
      push rax
      pop rcx
      mov rsp, 0x1ff000
      push rax
      push rcx
      pop rdx
      pop rsi
      mov rsp, r9
      hlt`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r10, 0x8fffcn);
    assert.equal(st.regs.rbx, 0x1122334455667788n);
    assert.equal(st.regs.r11, 0x90004n);
    // The slot's two halves on their own frames (a copy past the page end would write frame 0x90000).
    assert.equal(vm.partition.memory.readU32(0x8fffc), 0x55667788);
    assert.equal(vm.partition.memory.readU32(0x96000), 0x11223344);
    assert.equal(st.regs.rcx, 0x1122334455667788n);
    assert.equal(st.regs.rdx, 0x1122334455667788n);
    assert.equal(st.regs.rsi, 0x1122334455667788n);
    assert.equal(vm.partition.memory.readU64(0x1feff8), 0x1122334455667788n);
  });
});

describe('emu: TLB and jump cache across CR3 writes', () => {
  // p1's page is remapped to p2's frame; each page holds "mov eax, N; ret" and a quadword
  // 0xN111 at +8. p1 runs hot (compiled, in the jump cache) before the remap.
  const pages = `
    .balign 4096
    p1: mov eax, 1
    ret
    .balign 8
    .quad 0x1111
    .balign 4096
    p2: mov eax, 2
    ret
    .balign 8
    .quad 0x2111`;
  const setup = (g: number) => `
    mov rax, cr4
    or eax, 0x80                # CR4.PGE
    mov cr4, rax
    lea rbx, [rip + p1]
    mov rcx, rbx
    shr rcx, 12
    lea rsi, [0x4000 + rcx * 8] # p1's PTE
    or qword ptr [rsi], ${g}
    invlpg [rbx]
    lea rdx, [rip + p2]
    mov r8, 100
    1: call rbx
    dec r8
    jnz 1b
    mov r9, rax
    or rdx, ${3 | g}
    mov [rsi], rdx              # p1's page -> p2's frame
    mov rax, cr3
    mov cr3, rax`;

  /** Run `setup` then `more`, call p1 again and read its quadword: both must come from p2's frame now. */
  async function remapped(g: number, more: string): Promise<void> {
    const vm = await longModeVm(`${setup(g)}
      ${more}
      call rbx
      mov r10, rax
      mov r11, [rbx + 8]
      hlt
      ${pages}`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r9, 1n);
    assert.equal(st.regs.r10, 2n);
    assert.equal(st.regs.r11, 0x2111n);
    assert.ok(vm.partition.cache.stats.compiled > 0);
  }

  it('a CR3 write drops non-global translations of code and data', () => remapped(0, ''));
  it('INVLPG drops a global translation that a CR3 write kept', () => remapped(0x100, 'invlpg [rbx]'));
});

describe('emu: exceptions', () => {
  it('#PF on a not-present page: error code, CR2 and RIP', async () => {
    const vm = await longModeVm(`
      mov rax, 0x1fe000
      mov qword ptr [0x4000 + 0x1fe * 8], 0   # clear the PTE
      invlpg [rax]
      fault: mov dword ptr [rax + 0x10], 1
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 14n);
    assert.equal(st.regs.r15, 2n);               // write, supervisor, not present
    assert.equal(st.regs.r14, 0x1fe010n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
    assert.equal(st.sregs.cr2, 0x1fe010n);
  });

  it('#PF at an address past 4 GiB whose low half is a mapped, cached page (carries of the 64-bit sum)', async () => {
    // Each access's low 32 bits name a page the TLB holds (0x500, 0x90000); the carry into the
    // high half makes it 0x1_xxxx_xxxx, unmapped. Loads, stores and read-modify-write, with
    // the carry from the base, the index and a scaled index; interpreted.
    const cases: [string, bigint][] = [
      ['mov ecx, 0xfffffff0\nfault: mov rax, [rcx + 0x510]', 0x100000500n],
      ['mov ecx, 0xfffffff0\nmov edx, 0x90010\nfault: mov [rcx + rdx], rbx', 0x100090000n],
      ['mov edx, 0x80000000\nmov ecx, 0x90000\nfault: add [rcx + rdx * 2], eax', 0x100090000n],
      ['mov edx, 0x80000000\nmov ecx, 0x500\nfault: cmp [rcx + rdx * 2], eax', 0x100000500n],
    ];
    for (const [code, addr] of cases) {
      const vm = await longModeVm(`mov rbx, [0x500]\nmov [0x90000], rbx\n${code}\nhlt\n${HANDLERS}`, { idt: EXC_IDT });
      vm.vp.cpu.jit = false;
      assert.deepEqual(await vm.run(), { kind: 'halted' });
      const st = await vm.state();
      assert.equal(st.regs.r12, 14n, code);
      assert.equal(st.sregs.cr2, addr, code);
      assert.equal(st.regs.r13, BigInt(vm.sym('fault')), code);
    }
  });

  it('#PF on a write to a read-only page with CR0.WP, and NX fetch', async () => {
    const vm = await longModeVm(`
      mov qword ptr [0x4000 + 0x1fd * 8], 0x1fd001   # present, read-only
      fault: mov byte ptr [0x1fd008], 1
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r15, 3n);
    assert.equal(st.regs.r14, 0x1fd008n);
    const vm2 = await longModeVm(`
      mov rax, 0x1fc000
      mov byte ptr [rax], 0xc3                 # ret
      mov rbx, 0x80000000001fc003              # NX
      mov qword ptr [0x4000 + 0x1fc * 8], rbx
      invlpg [rax]
      call rax
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm2.run(), { kind: 'halted' });
    const st2 = await vm2.state();
    assert.equal(st2.regs.r12, 14n);
    assert.equal(st2.regs.r15, 0x11n);           // instruction fetch, protection violation
    assert.equal(st2.regs.r14, 0x1fc000n);
  });

  it('#UD on UD2 and on opcodes invalid in 64-bit mode', async () => {
    for (const op of ['ud2', '.byte 0x06', '.byte 0x0f, 0xff']) {
      const vm = await longModeVm(`nop\nfault: ${op}\nhlt\n${HANDLERS}`, { idt: EXC_IDT });
      assert.deepEqual(await vm.run(), { kind: 'halted' });
      const st = await vm.state();
      assert.equal(st.regs.r12, 6n, `${op}: ${st.regs.r12}, rip ${st.regs.rip.toString(16)}`);
      assert.equal(st.regs.r13, BigInt(vm.sym('fault')), op);
    }
  });

  it('#GP(0) on a non-canonical address', async () => {
    const vm = await longModeVm(`mov rax, 0x0000800000000000\nfault: mov rbx, [rax]\nhlt\n${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 13n);
    assert.equal(st.regs.r15, 0n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
  });

  it('a fault with no usable IDT entry escalates to triple fault (shutdown)', async () => {
    const vm = await longModeVm('ud2\nhlt\n');
    assert.deepEqual(await vm.run(), { kind: 'shutdown' });
  });

  it('user mode: IRETQ to CPL3, #PF on a supervisor page switches to RSP0 with U/S in the error code', async () => {
    const vm = await longModeVm(`
      push 0x23                 # SS
      push 0x1f0000             # RSP (user page)
      push 0x2                  # RFLAGS
      push 0x1b                 # CS
      lea rax, [rip + user]
      push rax
      iretq
      user:
      mov rbx, [0x5000]         # supervisor-only page
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 14n);
    assert.equal(st.regs.r15, 5n);               // user, read, protection violation
    assert.equal(st.regs.r11, 0x1bn);            // CS pushed by the CPU
    assert.equal(st.regs.rsp & ~0xfffn, 0x6f000n); // on RSP0's page
  });
});

describe('emu: interrupts', () => {
  it('an MSI is delivered through the IDT and the LAPIC EOI clears the ISR', async () => {
    const vm = await longModeVm(`
      mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff     # SVR: software enable
      xor r8d, r8d
      wait: sti
      hlt
      cli
      cmp r8d, 2
      jne wait
      hlt
      irq: inc r8d
      mov dword ptr [rsi + 0xb0], 0         # EOI
      iretq`, { idt: new Map([[0x40, 'irq']]) });
    const run = vm.run();
    setTimeout(() => vm.partition.signalMsi(0xfee00000n, 0x40), 5);
    setTimeout(() => vm.partition.signalMsi(0xfee00000n, 0x40), 20);
    assert.deepEqual(await run, { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r8, 2n);
    const isr = new DataView(st.lapic.buffer, st.lapic.byteOffset).getUint32(0x100 + 0x20 * 0 + 0x20, true);
    assert.equal(isr, 0);
  });

  it('INT n with an IST stack', async () => {
    const { st } = await run64(`
      mov rbx, rsp
      int 0x80
      jmp out
      h: mov r9, rsp
      iretq
      out:`, new Map([[0x80 | (1 << 8), 'h']]));
    assert.equal(st.regs.r9, 0x60000n - 40n);
    assert.equal(st.regs.rsp, st.regs.rbx);
  });
});

describe('emu: self-modifying code', () => {
  it('a store into decoded code invalidates the block', async () => {
    const { st } = await run64(`
      xor ebx, ebx
      mov ecx, 2
      again:
      call patched
      add rbx, rax
      mov byte ptr [rip + imm], 7     # patch the immediate of the next run
      dec ecx
      jnz again
      jmp done
      patched: mov eax, 1
      imm = . - 4
      ret
      done:`);
    assert.equal(st.regs.rbx, 8n);
  });
});

describe('emu: exits', () => {
  it('port I/O, incl. string forms', async () => {
    const { vm, st } = await run64('mov dx, 0x3f8\nmov al, 0x41\nout dx, al\nin al, dx\nmov r8, rax\nout 0x80, eax\nlea rsi, [rip + s]\nmov ecx, 2\nrep outsb\njmp e\ns: .ascii "hi"\ne:');
    assert.deepEqual(vm.exits.pio.slice(0, 3), [
      { port: 0x3f8, size: 1, value: 0x41, write: true },
      { port: 0x3f8, size: 1, value: 0x5a, write: false },
      { port: 0x80, size: 4, value: 0x5a, write: true },
    ]);
    assert.deepEqual(vm.exits.pio.slice(3).map((p) => p.value), [0x68, 0x69]);
    assert.equal(st.regs.r8 & 0xffn, 0x5an);
  });

  it('MMIO to unmapped physical memory', async () => {
    const { vm, st } = await run64('mov rax, 0xd0000000\nmov dword ptr [rax], 0xdeadbeef\nmov ebx, [rax + 8]');
    assert.deepEqual(vm.exits.mmio[0], { gpa: 0xd0000000, data: [0xef, 0xbe, 0xad, 0xde], write: true });
    assert.equal(vm.exits.mmio[1]!.gpa, 0xd0000008);
    assert.equal(st.regs.rbx, 0x11111111n);
  });

  it('RDMSR/WRMSR: intercepted range exits, local MSRs stay inside, refused writes #GP', async () => {
    const vm = await longModeVm(`
      mov ecx, 0x40000001
      rdmsr
      mov r8, rax
      mov r9, rdx
      mov ecx, 0xc0000082       # LSTAR: local
      mov eax, 0x12345678
      mov edx, 0xffffffff
      wrmsr
      rdmsr
      mov r10, rax
      mov ecx, 0x12345          # unknown: exit, refused -> #GP
      fault: wrmsr
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    vm.exits.msrWriteOk = false;
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r8, 0x9abcdef0n);
    assert.equal(st.regs.r9, 0x12345678n);
    assert.equal(st.regs.r10, 0x12345678n);
    assert.equal(st.msrs.get(0xc0000082), 0xffffffff12345678n);
    assert.equal(st.regs.r12, 13n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
    assert.deepEqual(vm.exits.msrs.map((m) => m.msr), [0x40000001, 0x12345]);
  });

  it('VMCALL reaches the hypercall handler with RCX/RDX/R8 and returns RAX', async () => {
    const { vm, st } = await run64('mov rcx, 0x10001\nmov rdx, 0x2000\nmov r8, -1\nvmcall');
    assert.deepEqual(vm.exits.hypercalls, [{ control: 0x10001n, input: 0x2000n, output: 0xffffffffffffffffn }]);
    assert.equal(st.regs.rax, 0x42n);
    assert.deepEqual([...vm.partition.hypercallCode], [0x0f, 0x01, 0xc1]);
  });

  it('CPUID answers from the partition table with the VP index patched in', async () => {
    const { st } = await run64('xor eax, eax\ncpuid\nmov r8, rbx\nmov r9, rdx\nmov r10, rcx\nmov eax, 1\ncpuid');
    const s = new Uint8Array(12);
    const dv = new DataView(s.buffer);
    dv.setUint32(0, Number(st.regs.r8), true); dv.setUint32(4, Number(st.regs.r9), true); dv.setUint32(8, Number(st.regs.r10), true);
    assert.equal(new TextDecoder().decode(s), EMU_VENDOR);
    assert.equal(st.regs.rbx >> 24n, 0n);
  });

  it('requestStop stops a spinning VP with its state intact', async () => {
    const vm = await longModeVm('xor eax, eax\nspin: inc rax\njmp spin');
    const run = vm.run();
    setTimeout(() => vm.vp.requestStop(), 20);
    assert.deepEqual(await run, { kind: 'stopped' });
    const st = await vm.state();
    assert.ok(st.regs.rax > 1000n);
    const rip = Number(st.regs.rip);
    assert.ok(rip >= CODE_BASE && rip < CODE_BASE + 16);
  });
});

describe('emu: modes', () => {
  it('real mode: arithmetic, IVT software interrupt, far pointers', async () => {
    const vm = await realModeVm(`
      xor ax, ax
      mov ds, ax
      mov word ptr [0x80 * 4], offset handler
      mov word ptr [0x80 * 4 + 2], 0
      mov ax, 0x1234
      int 0x80
      mov bx, 0xb800
      mov es, bx
      mov byte ptr es:[0x10], 0x55
      hlt
      handler: add ax, 0x1111
      iret`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.rax & 0xffffn, 0x2345n);
    assert.equal(vm.partition.memory.readU8(0xb8010), 0x55);
  });

  it('real mode -> protected mode -> long mode, as a boot loader does', async () => {
    const vm = await realModeVm(`
      cli
      lgdt [gdtr]
      mov eax, cr0
      or eax, 1
      mov cr0, eax
      ljmp 0x08, offset pm
      .code32
      pm: mov ax, 0x10
      mov ds, ax
      mov ss, ax
      mov es, ax
      # identity page tables at 0x10000: PML4 -> PDPT -> PD with 2 MiB pages
      mov dword ptr [0x10000], 0x11003
      mov dword ptr [0x11000], 0x12003
      mov dword ptr [0x12000], 0x83
      mov eax, 0x10000
      mov cr3, eax
      mov eax, cr4
      or eax, 0x20
      mov cr4, eax
      mov ecx, 0xc0000080
      rdmsr
      or eax, 0x100
      wrmsr
      mov eax, cr0
      or eax, 0x80000000
      mov cr0, eax
      ljmp 0x18, offset lm
      .code64
      lm: mov rax, 0x1122334455667788
      mov ecx, 0xc0000080
      rdmsr
      mov r8, rax
      hlt
      .align 8
      gdt: .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff, 0x00af9a000000ffff
      gdtr: .word 31
      .long gdt
      `);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r8 & 0x500n, 0x500n);   // LME | LMA
    assert.equal(st.sregs.cs.selector, 0x18);
    assert.equal(st.sregs.cs.attributes & 0x2000, 0x2000);
  });
});

describe('emu: decoder robustness', () => {
  it('decodes any byte string without throwing, within 15 bytes', () => {
    const out = new Int32Array(STRIDE);
    fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 20 }), fc.constantFrom(0, 1, 2), (bytes, mode) => {
      const len = decode(out, 0, (k) => (k < bytes.length ? bytes[k]! : -1), mode as 0 | 1 | 2);
      assert.ok(len === -1 || (len >= 1 && len <= 15));
      if (len > 0) assert.ok(out[F_OP]! >= 0 && out[F_OP]! < 128);
    }), { numRuns: 20000 });
  });

  it('an instruction longer than 15 bytes decodes to a #GP record', () => {
    const out = new Int32Array(STRIDE);
    const bytes = new Uint8Array(20).fill(0x66);
    const len = decode(out, 0, (k) => bytes[k] ?? -1, 2);
    assert.equal(len, 15);
    assert.equal(out[F_OP], OP_UD);
  });

  it('supportedCpuid advertises FPU, FXSR, SSE, SSE2 (implemented) but not MMX/SSE3/XSAVE; long mode and NX', () => {
    const c = createEmuBackend().supportedCpuid();
    const l1 = c.find((e) => e.function === 1)!;
    for (const bit of [0, 24, 25, 26]) assert.notEqual(l1.edx & (1 << bit), 0, `EDX bit ${bit}`);
    assert.equal(l1.edx & (1 << 23), 0, 'MMX');
    assert.equal(l1.ecx & ((1 << 0) | (1 << 9) | (1 << 26) | (1 << 27)), 0, 'SSE3/SSSE3/XSAVE/OSXSAVE');
    const e1 = c.find((e) => e.function === 0x80000001)!;
    assert.notEqual(e1.edx & (1 << 29), 0);
    assert.notEqual(e1.edx & (1 << 20), 0);
    // Leaf 7 (reachable: leaf 0 reports it): ERMS and the IA32_ARCH_CAPABILITIES MSR, nothing else.
    assert.ok(c.find((e) => e.function === 0)!.eax >= 7);
    const l7 = c.find((e) => e.function === 7 && e.index === 0)!;
    assert.deepEqual([l7.eax, l7.ebx, l7.ecx, l7.edx], [0, 1 << 9, 0, 2 ** 29]);
  });

  it('IA32_ARCH_CAPABILITIES reads the not-affected bits and refuses writes', async () => {
    const vm = await longModeVm(`
      mov ecx, 0x10a
      rdmsr
      mov r8, rax
      mov r9, rdx
      xor eax, eax
      fault: wrmsr
      hlt
      ${HANDLERS}`, { idt: EXC_IDT });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    // RDCL_NO, SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO,
    // PBRSB_NO, GDS_NO, RFDS_NO; ITS_NO in the high word.
    assert.equal(st.regs.r8, 0x0d10e171n);
    assert.equal(st.regs.r9, 0x40000000n);
    assert.equal(st.regs.r12, 13n);
    assert.equal(st.regs.r13, BigInt(vm.sym('fault')));
  });
});

describe('emu: system instructions', () => {
  it('SYSRET to user mode, SYSCALL back with SFMASK, SWAPGS', async () => {
    const vm = await longModeVm(`
      mov ecx, 0xc0000081
      xor eax, eax
      mov edx, 0x00080008
      wrmsr
      mov ecx, 0xc0000082
      lea rax, [rip + entry]
      mov rdx, rax
      shr rdx, 32
      wrmsr
      mov ecx, 0xc0000084
      mov eax, 0x200
      xor edx, edx
      wrmsr
      mov ecx, 0xc0000102
      mov eax, 0x5000
      xor edx, edx
      wrmsr
      lea rcx, [rip + user]
      mov r11, 0x202
      sysretq
      user: mov r8, 1
      syscall
      after: jmp after
      entry: swapgs
      mov r12, rcx
      mov r10, r11
      mov ecx, 0xc0000101
      rdmsr
      mov r9, rax
      hlt`);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r8, 1n);
    assert.equal(st.regs.r9, 0x5000n);
    assert.equal(st.regs.r12, BigInt(vm.sym('after')));
    assert.equal(st.regs.r10 & 0x200n, 0x200n);
    assert.equal(st.regs.rflags & 0x200n, 0n);
    assert.equal(st.sregs.cs.selector, 0x08);
  });

  it('CMPXCHG16B and LOCK CMPXCHG/XADD on memory', async () => {
    const { vm, st } = await run64(`
      mov rdi, 0x90000
      mov qword ptr [rdi], 1
      mov qword ptr [rdi + 8], 2
      mov eax, 1
      mov edx, 2
      mov ebx, 3
      mov ecx, 4
      lock cmpxchg16b [rdi]
      setz r8b
      lock cmpxchg16b [rdi]
      setz r9b
      mov eax, 10
      lock xadd [rdi + 16], eax
      mov r10, rax
      mov eax, 10
      mov ecx, 7
      lock cmpxchg [rdi + 16], ecx`);
    assert.equal(vm.partition.memory.readU64(0x90000), 3n);
    assert.equal(vm.partition.memory.readU64(0x90008), 4n);
    assert.equal(st.regs.r8 & 0xffn, 1n);
    assert.equal(st.regs.r9 & 0xffn, 0n);
    assert.equal(st.regs.rax, 10n);
    assert.equal(st.regs.rdx, 4n);
    assert.equal(st.regs.r10, 0n);
    assert.equal(vm.partition.memory.readU32(0x90010), 7);
  });

  it('a not-present #GP gate raises #DF (error code 0) through its own gate', async () => {
    const vm = await longModeVm(`
      mov rax, 0x0000800000000000
      mov rbx, [rax]
      hlt
      df: pop r15
      mov r12, 8
      hlt`, { idt: new Map([[8 | (1 << 8), 'df']]) });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r12, 8n);
    assert.equal(st.regs.r15, 0n);
  });

  it('getState/setState round-trip', async () => {
    const { vm } = await run64('mov rax, -2\nmov r15, 0x1234\nstc');
    const a = await vm.state();
    await vm.vp.setState(a);
    const b = await vm.state();
    a.msrs.delete(0x10); b.msrs.delete(0x10);
    assert.deepEqual(b, a);
    assert.equal(a.regs.rax, 0xfffffffffffffffen);
    assert.equal(a.regs.rflags & 1n, 1n);
  });

  it('protected mode (32-bit): IDT gate delivery and IRET', async () => {
    const vm = await realModeVm(`
      cli
      lgdt [gdtr]
      mov eax, cr0
      or eax, 1
      mov cr0, eax
      ljmp 0x08, offset pm
      .code32
      pm: mov ax, 0x10
      mov ds, ax
      mov ss, ax
      mov esp, 0x9000
      # IDT entry 0x30 at 0x20000: 32-bit interrupt gate to handler
      mov eax, offset handler
      mov word ptr [0x20000 + 0x30 * 8], ax
      mov word ptr [0x20000 + 0x30 * 8 + 2], 0x08
      mov word ptr [0x20000 + 0x30 * 8 + 4], 0x8e00
      shr eax, 16
      mov word ptr [0x20000 + 0x30 * 8 + 6], ax
      lidt [idtr]
      mov ebx, 5
      int 0x30
      mov edi, ebx
      hlt
      handler: shl ebx, 3
      iretd
      .align 8
      gdt: .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
      gdtr: .word 23
      .long gdt
      idtr: .word 0x7ff
      .long 0x20000
      `);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.rdi, 40n);
    assert.equal(st.regs.rsp, 0x9000n);
  });
});

describe('emu: interpreter/ops consistency', () => {
  it('every literal case label in the interpreter matches its OP_ constant', async () => {
    const { readFileSync } = await import('node:fs');
    const ops = await import('./ops.js') as unknown as Record<string, number>;
    const src = readFileSync(new URL('./cpu.js', import.meta.url), 'utf8');
    let n = 0;
    for (const m of src.matchAll(/case (\d+) \/\* (OP_\w+) \*\//g)) {
      assert.equal(Number(m[1]), ops[m[2]!], `${m[2]} is ${ops[m[2]!]}, not ${m[1]}`);
      n++;
    }
    assert.ok(n > 80);
  });
});

describe('emu: hostile code', () => {
  it('random bytes executed in long mode never throw or hang the host', async () => {
    const vm = await longModeVm('hlt');
    const cpu = vm.vp.cpu;
    const base = await vm.state();
    await fc.assert(fc.asyncProperty(
      fc.uint8Array({ minLength: 1, maxLength: 96 }), fc.array(fc.bigUintN(64), { minLength: 16, maxLength: 16 }),
      async (code, regs) => {
        const st = structuredClone(base);
        const names = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
        names.forEach((n, k) => { st.regs[n] = regs[k]!; });
        await vm.vp.setState(st);
        vm.partition.memory.write(CODE_BASE, code);
        const r = cpu.runSlice(5000);
        assert.ok(r >= 0 && r <= 5, `run result ${r}`);
      }), { numRuns: 400 });
  });
});

describe('emu: blocks across page boundaries', () => {
  it('an instruction crossing a page is cached, compiled, and invalidated by writes to either page', async () => {
    const { vm, st } = await run64(`
      xor ebx, ebx
      mov ecx, 100
      call loop
      mov r8, rax
      mov r9, rbx
      lea rdi, [rip + imm]
      mov byte ptr [rdi + 3], 0x55     # high byte of the immediate, on the second page
      mov ecx, 3
      call loop
      jmp done
      .balign 4096
      .skip 4090
      loop: add ebx, 1
      mov eax, 0x12345678
      imm = . - 4
      dec ecx
      jnz loop
      ret
      done:`);
    assert.equal(st.regs.r8, 0x12345678n);
    assert.equal(st.regs.r9, 100n);
    assert.equal(st.regs.rax, 0x55345678n);
    assert.equal(st.regs.rbx, 103n);
    assert.ok(vm.partition.cache.stats.invalidations >= 1);
  });
});

describe('emu: LAPIC timer in a guest', () => {
  it('a periodic timer wakes HLT and interrupts through the IDT', async () => {
    const vm = await longModeVm(`
      mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff      # SVR
      mov dword ptr [rsi + 0x3e0], 0xb       # divide by 1
      mov dword ptr [rsi + 0x320], 0x20050   # periodic, vector 0x50
      mov dword ptr [rsi + 0x380], 1000000   # 1 ms
      xor r8d, r8d
      wait: sti
      hlt
      cli
      cmp r8d, 3
      jb wait
      mov dword ptr [rsi + 0x320], 0x10050   # mask
      hlt
      tick: inc r8d
      mov dword ptr [rsi + 0xb0], 0
      iretq`, { idt: new Map([[0x50, 'tick']]) });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    assert.equal((await vm.state()).regs.r8, 3n);
  });

  it('a TSC-deadline timer (WRMSR IA32_TSC_DEADLINE) wakes HLT once, after the deadline, and the MSR reads 0 after', async () => {
    const vm = await longModeVm(`
      mov eax, 1
      cpuid
      bt ecx, 24                             # CPUID.01H:ECX.TSC_DEADLINE
      setc r9b
      mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff      # SVR
      mov dword ptr [rsi + 0x320], 0x40051   # TSC-deadline, vector 0x51
      xor r8d, r8d
      rdtsc
      shl rdx, 32
      or rax, rdx
      mov r10, rax                           # start
      add rax, 3000000                       # +3 ms
      mov r11, rax                           # the deadline
      mov rdx, rax
      shr rdx, 32
      mov ecx, 0x6e0
      wrmsr
      rdmsr
      shl rdx, 32
      or rax, rdx
      mov r12, rax                           # reads back while armed
      sti
      hlt
      cli
      rdtsc
      shl rdx, 32
      or rax, rdx
      mov r13, rax                           # when the interrupt came
      mov ecx, 0x6e0
      rdmsr
      shl rdx, 32
      or rax, rdx
      mov r14, rax                           # 0 after it fired
      hlt
      tick: inc r8d
      mov dword ptr [rsi + 0xb0], 0
      iretq`, { idt: new Map([[0x51, 'tick']]) });
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const r = (await vm.state()).regs;
    assert.equal(r.r9, 1n);
    assert.equal(r.r8, 1n);
    assert.equal(r.r12, r.r11);
    assert.ok(r.r13 >= r.r11, `interrupt at ${r.r13} before the deadline ${r.r11}`);
    assert.equal(r.r14, 0n);
  });
});

describe('emu: a TSC deadline far in the future', () => {
  it('halts quietly until stopped (no timer overflow warning, no early expiry)', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => { warnings.push(w.name); };
    process.on('warning', onWarning);
    try {
      const vm = await longModeVm(`
        mov rsi, 0xfee00000
        mov dword ptr [rsi + 0xf0], 0x1ff      # SVR
        mov dword ptr [rsi + 0x320], 0x40052   # TSC-deadline, vector 0x52
        mov ecx, 0x6e0
        mov eax, 0xffffffff
        mov edx, 0x7fffffff                    # about 292 years of nanoseconds away
        wrmsr
        xor r8d, r8d
        sti
        hlt
        hlt
        tick: inc r8d
        iretq`, { idt: new Map([[0x52, 'tick']]) });
      const run = vm.run();
      await new Promise((r) => setTimeout(r, 100));
      vm.vp.requestStop();
      assert.deepEqual(await run, { kind: 'stopped' });
      assert.equal((await vm.state()).regs.r8, 0n);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('emu: NMI', () => {
  it('an NMI MSI interrupts even with IF=0 and is blocked until IRET', async () => {
    const vm = await longModeVm(`
      xor r8d, r8d
      cli
      spin: cmp r8d, 1
      jne spin
      hlt
      nmi: inc r8d
      iretq`, { idt: new Map([[2, 'nmi']]) });
    const run = vm.run();
    setTimeout(() => vm.partition.signalMsi(0xfee00000n, 0x400), 5);
    assert.deepEqual(await run, { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.r8, 1n);
    assert.equal(st.events.nmiMasked, false);
  });
});

/**
 * Start VP1 of a two-VP test machine at the symbol `ap` in long mode (the BSP's mode and
 * segments, its own APIC and a stack of its own) and let it run until it first waits.
 */
async function startAp(vm: Awaited<ReturnType<typeof longModeVm>>) {
  const vp1 = vm.partition.vps[1]!;
  const bsp = await vm.vp.getState();
  const st = await vp1.getState();   // keeps VP1's own APIC (ID 1)
  st.regs = { ...bsp.regs, rip: BigInt(vm.sym('ap')), rsp: 0x50000n };
  st.sregs = { ...bsp.sregs, apicBase: st.sregs.apicBase };
  assert.equal(st.halted, true);       // an AP waits for STARTUP until its state is set
  st.halted = false;
  await vp1.setState(st);
  const r1 = vp1.run();
  await new Promise((res) => setTimeout(res, 5));
  return { vp1, r1 };
}

describe('emu: several processors', () => {
  it('VP0 sends fixed IPIs to VP1 through its ICR; both run interleaved on one thread', async () => {
    const vm = await longModeVm(`
      mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff
      mov dword ptr [rsi + 0x310], 1 << 24     # destination APIC 1
      mov dword ptr [0x90000], 0
      xor ecx, ecx
      send: mov dword ptr [rsi + 0x300], 0x61  # fixed, vector 0x61
      inc ecx
      # Wait until VP1 has taken it (a second IPI while the first is pending would merge with
      # it in the IRR): VP1 runs when this VP's slice ends.
      wait: pause
      cmp [0x90000], ecx
      jne wait
      cmp ecx, 3
      jb send
      hlt
      ap: mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff
      xor r8d, r8d
      apwait: sti
      hlt
      cli
      cmp r8d, 3
      jb apwait
      hlt
      ipi: inc r8d
      mov dword ptr [0x90000], r8d
      mov dword ptr [rsi + 0xb0], 0
      iretq`, { idt: new Map([[0x61, 'ipi']]), vpCount: 2 });
    // VP1 must be listening before VP0 sends.
    const { vp1, r1 } = await startAp(vm);
    const r0 = vm.run();
    assert.deepEqual(await r0, { kind: 'halted' });
    assert.deepEqual(await r1, { kind: 'halted' });
    assert.equal((await vp1.getState()).regs.r8, 3n);
  });
});

describe('emu: pause-loop exiting', () => {
  it('a processor spinning on PAUSE gives the thread to the processor it woke', async () => {
    // VP0 wakes VP1 with an IPI and spins (PAUSE) until VP1's handler sets a flag. Both share
    // one thread: without pause-loop exiting VP0 would spin out its slice (milliseconds,
    // hundreds of thousands of iterations) before VP1 ran.
    const vm = await longModeVm(`
      mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff
      mov dword ptr [0x90000], 0
      mov dword ptr [rsi + 0x310], 1 << 24
      mov dword ptr [rsi + 0x300], 0x61
      xor ecx, ecx
      spin: inc rcx
      pause
      cmp dword ptr [0x90000], 1
      jne spin
      hlt
      ap: mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff
      sti
      hlt
      cli
      hlt
      ipi: mov dword ptr [0x90000], 1
      mov dword ptr [rsi + 0xb0], 0
      iretq`, { idt: new Map([[0x61, 'ipi']]), vpCount: 2 });
    const { r1 } = await startAp(vm);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    assert.deepEqual(await r1, { kind: 'halted' });
    const spins = (await vm.vp.getState()).regs.rcx;
    assert.ok(spins >= 1n && spins <= 10n, `VP0 spun ${spins} times`);
  });
});

describe('emu: 32-bit paging', () => {
  it('2-level paging with a 4 MiB PSE page, A/D bits, and #PF error code/CR2 in protected mode', async () => {
    const vm = await realModeVm(`
      cli
      lgdt [gdtr]
      mov eax, cr0
      or eax, 1
      mov cr0, eax
      ljmp 0x08, offset pm
      .code32
      pm: mov ax, 0x10
      mov ds, ax
      mov es, ax
      mov ss, ax
      mov esp, 0x9000
      # page table at 0x31000: identity 0-4 MiB, page 0x200000 not present
      mov edi, 0x31000
      mov eax, 0x3
      mov ecx, 1024
      fill: mov [edi], eax
      add eax, 0x1000
      add edi, 4
      loop fill
      mov dword ptr [0x31000 + 0x200 * 4], 0
      mov dword ptr [0x30000], 0x31003          # PDE 0 -> page table
      mov dword ptr [0x30004], 0x00000083       # PDE 1: 4 MiB page at 0 (alias)
      # IDT entry 14 at 0x20000
      mov eax, offset pf
      mov word ptr [0x20000 + 14 * 8], ax
      mov word ptr [0x20000 + 14 * 8 + 2], 0x08
      mov word ptr [0x20000 + 14 * 8 + 4], 0x8e00
      shr eax, 16
      mov word ptr [0x20000 + 14 * 8 + 6], ax
      lidt [idtr]
      mov eax, 0x30000
      mov cr3, eax
      mov eax, cr4
      or eax, 0x10                              # PSE
      mov cr4, eax
      mov eax, cr0
      or eax, 0x80000000
      mov cr0, eax
      mov dword ptr [0x405000], 0xcafef00d      # through the alias
      mov esi, [0x5000]
      mov ebx, [0x30004]                        # PDE 1 with A and D set
      fault: mov eax, [0x200010]
      hlt
      pf: pop edx
      mov ecx, cr2
      pop edi
      hlt
      .align 8
      gdt: .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
      gdtr: .word 23
      .long gdt
      idtr: .word 0x7ff
      .long 0x20000
      `);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    const st = await vm.state();
    assert.equal(st.regs.rsi, 0xcafef00dn);
    assert.equal(st.regs.rbx & 0x60n, 0x60n);
    assert.equal(st.regs.rdx, 0n);                    // read, supervisor, not present
    assert.equal(st.regs.rcx, 0x200010n);
    assert.equal(st.regs.rdi, BigInt(vm.sym('fault')));
  });
});

describe('emu: hostile guests cannot hang the host', () => {
  it('an exception handler on a not-present page with an IST stack loops without retiring: the slice still ends', async () => {
    const vm = await longModeVm(`
      mov qword ptr [0x4000 + 0x1f0 * 8], 0   # the handler's page: not present
      invlpg [0x1f0000]
      ud2
      h: hlt`, { idt: new Map([[6, 'h'], [14 | (1 << 8), 'h']]) });
    // Point both gates at the unmapped page.
    const mem = vm.partition.memory;
    for (const v of [6, 14]) {
      const lo = mem.readU64(0x6000 + v * 16);
      mem.writeU64(0x6000 + v * 16, (lo & ~0xffff00000000ffffn) | 0x0000n | (0x001fn << 48n));
    }
    const t0 = performance.now();
    const r = vm.vp.cpu.runSlice(10000);
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(r, 0, `result ${r}`);   // RUN_SLICE: still looping, but the slice ended
  });
});

describe('emu: host-side writes', () => {
  it('a write through Partition.memory (loader, DMA) invalidates decoded code', async () => {
    const vm = await longModeVm('again: mov eax, 1\nimm = . - 4\nhlt\njmp again');
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    assert.equal((await vm.state()).regs.rax, 1n);
    vm.partition.memory.writeU32(vm.sym('imm'), 9);
    const st = await vm.state();
    st.regs.rip = BigInt(CODE_BASE);
    st.halted = false;
    await vm.vp.setState(st);
    assert.deepEqual(await vm.run(), { kind: 'halted' });
    assert.equal((await vm.state()).regs.rax, 9n);
  });
});

describe('emu: INIT/STARTUP', () => {
  it('the BSP starts an AP with INIT + STARTUP; the AP runs real-mode code at vector * 4096', async () => {
    const vm = await longModeVm(`
      mov rsi, 0xfee00000
      mov dword ptr [rsi + 0xf0], 0x1ff
      mov dword ptr [rsi + 0x310], 1 << 24
      mov dword ptr [rsi + 0x300], 0x4500      # INIT
      mov dword ptr [rsi + 0x300], 0x0699      # STARTUP, vector 0x99 -> 0x99000
      wait: cmp dword ptr [0x99100], 0x600d
      jne wait
      hlt`, { vpCount: 2 });
    // AP trampoline at 0x99000 (16-bit): mov ax, 0x9000; mov ds, ax; mov dword [0x9100], 0x600d; hlt
    vm.partition.memory.write(0x99000, new Uint8Array([0xb8, 0x00, 0x90, 0x8e, 0xd8, 0x66, 0xc7, 0x06, 0x00, 0x91, 0x0d, 0x60, 0x00, 0x00, 0xf4]));
    const vp1 = vm.partition.vps[1]!;
    const r1 = vp1.run();
    const r0 = vm.run();
    assert.deepEqual(await r0, { kind: 'halted' });
    assert.deepEqual(await r1, { kind: 'halted' });
    const ap = await vp1.getState();
    assert.equal(ap.sregs.cs.selector, 0x9900);
    assert.equal(vm.partition.memory.readU32(0x99100), 0x600d);
  });
});
