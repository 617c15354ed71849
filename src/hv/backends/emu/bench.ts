/**
 * Micro-benchmark of the emu interpreter: guest instructions per second on loops in long mode
 * with 4-level paging (node /tmp/emu-dist/src/hv/backends/emu/bench.js). The first loop is the
 * five-instruction loop of shared/reference/emu-speed-notes.md; the second mixes loads,
 * stores, calls and compares as kernel code does; the third is the inner loop of glibc's SSE2
 * string functions.
 */
import { longModeVm } from './testing.js';

const LOOPS: Record<string, string> = {
  'speed-notes loop (add, xor, add mem, dec, jnz)': `
    mov ecx, 20000000
    lea rsi, [rip + data]
    mov rbx, 3
    l: add rax, rbx
    xor rdx, rax
    add r8, [rsi]
    dec rcx
    jnz l
    hlt
    data: .quad 7`,
  'mixed loop (load/store/call/cmp/jcc/lea)': `
    mov ecx, 4000000
    mov rdi, 0x90000
    l: mov rax, [rdi + 8]
    lea rdx, [rax + rcx*2 + 1]
    mov [rdi + 16], rdx
    call f
    cmp rdx, rax
    jb skip
    add rbx, 1
    skip: test cl, 1
    setz al
    movzx r9d, al
    add r10, r9
    dec rcx
    jnz l
    hlt
    f: push rbp
    mov rbp, rsp
    mov rax, [rdi + 16]
    shr rax, 3
    pop rbp
    ret`,
  'SSE2 scan loop (movdqa/pcmpeqb/pmovmskb/test/jz)': `
    mov ecx, 4000000
    pxor xmm0, xmm0
    lea rdi, [rip + buf]
    l: movdqa xmm1, [rdi]
    pcmpeqb xmm1, xmm0
    pmovmskb edx, xmm1
    por xmm2, xmm1
    test edx, edx
    jnz out
    dec rcx
    jnz l
    out: hlt
    .balign 16
    buf: .fill 16, 1, 0x61`,
};

async function main(): Promise<void> {
  for (const [name0, src] of Object.entries(LOOPS)) for (const jit of [true, false]) {
    const name = `${name0}${jit ? '' : ' [interpreter only]'}`;
    const vm = await longModeVm(src);
    const cpu = vm.vp.cpu;
    cpu.jit = jit;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const r = await vm.run();
    const ms = performance.now() - t0;
    const cpuMs = (process.cpuUsage(c0).user) / 1000;
    const mips = cpu.instret / ms / 1000;
    process.stdout.write(`${name.padEnd(68)} ${(cpu.instret / 1e6).toFixed(1)} M instructions in ${ms.toFixed(0)} ms: ` +
      `${mips.toFixed(1)} MIPS wall, ${(cpu.instret / cpuMs / 1000).toFixed(1)} MIPS per CPU-second (${r.kind})\n`);
  }
}

void main();
