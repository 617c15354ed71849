/**
 * The compiling tier (ADR 0007): a hot decoded block becomes one JavaScript function.
 *
 * The common register/memory forms (MOV, ALU, TEST, INC/DEC, Jcc/JMP, PUSH/POP) are emitted
 * inline with their decoded fields as constants, calling the interpreter's small helpers
 * (memory access, lazy flags), which V8 inlines; so are the hottest SSE2 forms (128-bit moves,
 * PXOR/POR/PAND/PANDN/PCMPEQB/PCMPEQD/PADDD/PSUBD, PMOVMSKB), behind an inline check of
 * CR0.EM/TS and CR4.OSFXSR. Other SSE instructions call `cpu.sse(i)`, and every other
 * instruction `cpu.step(i)`, so the compiled block has exactly the interpreter's semantics,
 * instruction by instruction.
 *
 * Return value of a compiled block (`BlockFn`):
 *   0 <= r < DONE : the block ended at instruction r with RIP already set (branch, fallback exit)
 *   r == DONE     : ran to the end; the caller sets RIP to the end of the block
 *   r < 0         : instruction -(r+1) raised the exception in cpu.excVec/excCode
 *
 * DEVNOTE: the source is built only from integers of the decoded record (never guest
 * strings), so `new Function` cannot be steered into running anything but these templates.
 */
import {
  F_BASE, F_DISP, F_FL, F_IMM, F_IMMHI, F_INDEX, F_IOFF, F_LEN, F_OP, F_REG, F_RM, F_SCALE, F_SUB, FL_ASZ_MASK,
  FL_ASZ_SHIFT, FL_MEM, FL_RIPREL, FL_SEG_MASK, FL_SEG_SHIFT, LOG_STRIDE, SEG_NONE,
  OP_ALU_R_RM, OP_ALU_RM_I, OP_ALU_RM_R, OP_DEC_RM, OP_INC_RM, OP_JCC, OP_JMP_REL, OP_MOV_R_I, OP_MOV_R_RM,
  OP_MOV_RM_R, OP_NOP, OP_POP_R, OP_PUSH_R, OP_TEST_RM_I, OP_TEST_RM_R, OP_MOVZX, OP_MOVSX, OP_SETCC, OP_CMOVCC,
  OP_LEA, OP_CALL_REL, OP_RET, OP_MOV_RM_I, OP_SSE,
} from './ops.js';

/**
 * What compiled code uses of the processor (cpu.ts implements it). An interface rather than
 * the class so that this module does not depend on cpu.ts (no import cycle).
 */
export interface JitCpu {
  excVec: number; excCode: number; brk: number; rip: number; ripBase: number; vhi: number; rhi: number;
  readonly sBase: Float64Array;
  readonly xmm: { readonly x: Int32Array };
  cr0: number; cr4: number;
  wrapIp(v: number): number;
  ea(i: number): number;
  step(i: number): number;
  /** One SSE instruction (sse.ts), without the interpreter's dispatch. */
  sse(i: number): number;
  rd8(lin: number): number; rd16(lin: number): number; rd32(lin: number): number; rd64(lin: number): number;
  wr8(lin: number, v: number): void; wr16(lin: number, v: number): void; wr32(lin: number, v: number): void;
  wr64(lin: number, lo: number, hi: number): void; wrN(lin: number, sz: number, lo: number, hi: number): void;
  probeW(lin: number, sz: number): boolean;
  alu(k: number, sz: number, a: number, aHi: number, b: number, bHi: number): number;
  logic(sz: number, r: number, rHi: number): number;
  incdec(sz: number, a: number, aHi: number, dec: boolean): number;
  cond(cc: number): boolean;
  setR(r: number, sz: number, lo: number, hi: number): void;
  push(sz: number, lo: number, hi: number): boolean;
  pop(sz: number): number;
}

export type BlockFn = (c: JitCpu, R: Int32Array) => number;
export const DONE = 0x10000;
/** Executions of a block before it is compiled. */
export const JIT_THRESHOLD = 40;

/** Register operand read as a JS expression; sets `vh` for 64-bit. */
function rdReg(r: number, sz: number, lo: string, hi: string): string {
  if (sz === 3) return `const ${lo} = R[${r * 2}], ${hi} = R[${r * 2 + 1}];`;
  if (sz === 2) return `const ${lo} = R[${r * 2}], ${hi} = 0;`;
  if (sz === 1) return `const ${lo} = R[${r * 2}] & 0xffff, ${hi} = 0;`;
  return r < 16 ? `const ${lo} = R[${r * 2}] & 0xff, ${hi} = 0;` : `const ${lo} = (R[${(r - 16) * 2}] >> 8) & 0xff, ${hi} = 0;`;
}
function wrReg(r: number, sz: number, lo: string, hi: string): string {
  if (sz === 3) return `R[${r * 2}] = ${lo}; R[${r * 2 + 1}] = ${hi};`;
  if (sz === 2) return `R[${r * 2}] = ${lo}; R[${r * 2 + 1}] = 0;`;
  return `c.setR(${r}, ${sz}, ${lo}, 0);`;
}
function wrMem(sz: number): string {
  return sz === 3 ? 'wr64(lin, v, vh)' : sz === 2 ? 'wr32(lin, v)' : sz === 1 ? 'wr16(lin, v)' : 'wr8(lin, v)';
}
function rdMem(sz: number): string {
  return sz === 3 ? 'c.rd64(lin)' : sz === 2 ? 'c.rd32(lin)' : sz === 1 ? 'c.rd16(lin)' : 'c.rd8(lin)';
}

/**
 * The linear address of record `i`'s memory operand as inline code (64-bit addressing in
 * 64-bit mode); other forms call the interpreter's `ea`.
 */
function eaCode(D: Int32Array, i: number, mode: number, exc: string): string {
  const fl = D[i + F_FL]!;
  const asz = (fl & FL_ASZ_MASK) >> FL_ASZ_SHIFT;
  const seg = (fl & FL_SEG_MASK) >> FL_SEG_SHIFT;
  if (mode !== 2 || asz !== 3 || (fl & FL_RIPREL) !== 0) return `const lin = c.ea(${i}); if (c.excVec !== -1) ${exc}`;
  const b = D[i + F_BASE]!, x = D[i + F_INDEX]!, sc = 1 << D[i + F_SCALE]!;
  const lo: string[] = [String(D[i + F_DISP]!)], hi: string[] = ['0'];
  if (b >= 0) { lo.push(`(R[${b * 2}] >>> 0)`); hi.push(`R[${b * 2 + 1}]`); }
  if (x >= 0) { lo.push(`(R[${x * 2}] >>> 0) * ${sc}`); hi.push(`R[${x * 2 + 1}] * ${sc}`); }
  if (seg !== SEG_NONE) { lo.push(`(c.sBase[${seg}] >>> 0)`); hi.push(`Math.floor(c.sBase[${seg}] / 4294967296)`); }
  return `const sl = ${lo.join(' + ')}; const sh = (${hi.join(' + ')} + Math.floor(sl / 4294967296)) | 0;
    if (((sh << 16) >> 16) !== sh) { c.excVec = 13; c.excCode = 0; ${exc} }
    const lin = sh * 4294967296 + (sl >>> 0);`;
}

/** Inline 64-bit PUSH in 64-bit mode (values in `lo`/`hi`); RSP changes only after the store. */
function push64(lo: string, hi: string, exc: string): string {
  return `const sl = (R[8] >>> 0) - 8; const sh = (R[9] + Math.floor(sl / 4294967296)) | 0;
    if (((sh << 16) >> 16) !== sh) { c.excVec = 12; c.excCode = 0; ${exc} }
    c.wr64(sh * 4294967296 + (sl >>> 0), ${lo}, ${hi});
    if (c.excVec !== -1) { if (c.excVec === 13) c.excVec = 12; ${exc} }
    R[8] = sl | 0; R[9] = sh;`;
}
/** Inline 64-bit POP in 64-bit mode into consts v/vh; RSP changes only after the load. */
function pop64(exc: string): string {
  return `if (((R[9] << 16) >> 16) !== R[9]) { c.excVec = 12; c.excCode = 0; ${exc} }
    const v = c.rd64(R[9] * 4294967296 + (R[8] >>> 0)); if (c.excVec !== -1) ${exc} const vh = c.vhi;
    const sl = (R[8] >>> 0) + 8; R[9] = (R[9] + Math.floor(sl / 4294967296)) | 0; R[8] = sl | 0;`;
}

/** Dword-lane bodies of the inlined SSE2 forms (66 0F xx): r = f(a, b) on each 32-bit lane. */
const SSE_LANE: Record<number, string> = {
  0xef: 'a ^ b', 0xeb: 'a | b', 0xdb: 'a & b', 0xdf: '~a & b', 0x76: 'a === b ? -1 : 0', 0xfe: '(a + b) | 0',
  0xfa: '(a - b) | 0',
  // PCMPEQB on four bytes at once: bytes of a ^ b that are zero become 0xFF.
  0x74: 'Math.imul(~((((a ^ b) & 0x7f7f7f7f) + 0x7f7f7f7f) | (a ^ b) | 0x7f7f7f7f) >>> 7, 255)',
};

/**
 * Inline code for the hottest SSE2 forms (glibc's string loops and the kernel's copies):
 * MOVDQA/MOVDQU/MOVAPS/MOVUPS loads and stores, PXOR/POR/PAND/PANDN/PCMPEQB/PCMPEQD/PADDD/
 * PSUBD and PMOVMSKB. Anything else, and every case where SSE is disabled (the interpreter
 * raises the fault), goes to `c.sse(i)`. Semantics are sse.ts's, lane for lane.
 */
function sseCode(D: Int32Array, i: number, mode: number, exc: string, brkCheck: string, slow: string): string | null {
  const sub = D[i + F_SUB]!, opb = sub & 0xff, pfx = sub >> 8;
  const fl = D[i + F_FL]!, mem = (fl & FL_MEM) !== 0;
  const d = D[i + F_REG]! * 4, r = D[i + F_RM]! * 4;
  const guard = (body: string): string => `if ((c.cr0 & 12) !== 0 || (c.cr4 & 512) === 0) ${slow} else { const X = c.xmm.x; ${body} }`;
  const load = (aligned: boolean): string => mem
    ? `${eaCode(D, i, mode, exc)} ${aligned ? `if ((lin % 16) !== 0) { c.excVec = 13; c.excCode = 0; ${exc} }` : ''}
       const s0 = c.rd64(lin), s1 = c.vhi; if (c.excVec !== -1) ${exc} const s2 = c.rd64(lin + 8), s3 = c.vhi; if (c.excVec !== -1) ${exc}`
    : `const s0 = X[${r}], s1 = X[${r + 1}], s2 = X[${r + 2}], s3 = X[${r + 3}];`;
  // Loads: MOVDQA (66 6F), MOVDQU (F3 6F), MOVAPS (28), MOVUPS (10).
  if ((opb === 0x6f && (pfx === 1 || pfx === 2)) || ((opb === 0x28 || opb === 0x10) && pfx === 0)) {
    return guard(`${load(opb === 0x28 || (opb === 0x6f && pfx === 1))} X[${d}] = s0; X[${d + 1}] = s1; X[${d + 2}] = s2; X[${d + 3}] = s3;`);
  }
  // Stores to memory: MOVDQA (66 7F), MOVDQU (F3 7F), MOVAPS (29), MOVUPS (11).
  if (mem && ((opb === 0x7f && (pfx === 1 || pfx === 2)) || ((opb === 0x29 || opb === 0x11) && pfx === 0))) {
    const aligned = opb === 0x29 || (opb === 0x7f && pfx === 1);
    return guard(`${eaCode(D, i, mode, exc)} ${aligned ? `if ((lin % 16) !== 0) { c.excVec = 13; c.excCode = 0; ${exc} }` : ''}
      if (!c.probeW(lin, 4)) ${exc} c.wr64(lin, X[${d}], X[${d + 1}]); if (c.excVec !== -1) ${exc}
      c.wr64(lin + 8, X[${d + 2}], X[${d + 3}]); if (c.excVec !== -1) ${exc} ${brkCheck}`);
  }
  if (pfx !== 1) return null;
  const lane = SSE_LANE[opb];
  if (lane !== undefined) {
    const body = [0, 1, 2, 3].map((k) => `{ const a = X[${d + k}], b = s${k}; X[${d + k}] = ${lane}; }`).join(' ');
    return guard(`${load(true)} ${body}`);
  }
  if (opb === 0xd7 && !mem) {
    // PMOVMSKB r32, xmm: the top bit of each byte.
    const g = (k: number): string => `((X[${r + k}] >>> 7) & 1 | (X[${r + k}] >>> 14) & 2 | (X[${r + k}] >>> 21) & 4 | (X[${r + k}] >>> 28) & 8)`;
    return guard(`R[${D[i + F_REG]! * 2}] = ${g(0)} | ${g(1)} << 4 | ${g(2)} << 8 | ${g(3)} << 12; R[${D[i + F_REG]! * 2 + 1}] = 0;`);
  }
  return null;
}

/** Compile block `b` of the cache; returns null when nothing in it benefits. */
export function compileBlock(D: Int32Array, first: number, count: number, mode: number): BlockFn | null {
  const out: string[] = [];
  let inline = 0;
  for (let k = 0; k < count; k++) {
    const i = (first + k) << LOG_STRIDE;
    const op = D[i + F_OP]!, fl = D[i + F_FL]!, sz = fl & 3, mem = (fl & FL_MEM) !== 0;
    const exc = `return ${-(k + 1)};`;
    const next = D[i + F_IOFF]! + D[i + F_LEN]!;
    const memCheck = `if (c.excVec !== -1) ${exc}`;
    const brkCheck = `if (c.brk !== 0) { c.brk = 0; c.rip = c.wrapIp(c.ripBase + ${next}); return ${k}; }`;
    const reg = D[i + F_REG]!, rm = D[i + F_RM]!;
    let code: string | null = null;
    switch (op) {
      case OP_NOP: code = ''; break;
      case OP_MOV_RM_I:
        if (!mem) { code = sz >= 2 ? wrReg(rm, sz, String(D[i + F_IMM]!), String(D[i + F_IMMHI]!)) : null; break; }
        code = `{ ${eaCode(D, i, mode, exc)} const v = ${D[i + F_IMM]!}, vh = ${D[i + F_IMMHI]!}; c.${wrMem(sz)}; ${memCheck} ${brkCheck} }`;
        break;
      case OP_MOV_R_I:
        code = sz >= 2 ? wrReg(reg, sz, String(D[i + F_IMM]!), String(D[i + F_IMMHI]!)) : null;
        break;
      case OP_MOV_R_RM:
        code = mem ? `{ ${eaCode(D, i, mode, exc)} const v = ${rdMem(sz)}; ${memCheck} ${wrReg(reg, sz, 'v', sz === 3 ? 'c.vhi' : '0')} }`
          : `{ ${rdReg(rm, sz, 'v', 'vh')} ${wrReg(reg, sz, 'v', 'vh')} }`;
        break;
      case OP_MOV_RM_R:
        code = mem ? `{ ${eaCode(D, i, mode, exc)} ${rdReg(reg, sz, 'v', 'vh')} c.${wrMem(sz)}; ${memCheck} ${brkCheck} }`
          : `{ ${rdReg(reg, sz, 'v', 'vh')} ${wrReg(rm, sz, 'v', 'vh')} }`;
        break;
      case OP_MOVZX: case OP_MOVSX: {
        if (mem || sz < 2) break;
        const ssz = D[i + F_SUB]!;
        const ext = op === OP_MOVZX ? 'const r = v, rh = 0;'
          : ssz === 0 ? 'const r = (v << 24) >> 24, rh = r >> 31;' : ssz === 1 ? 'const r = (v << 16) >> 16, rh = r >> 31;' : 'const r = v | 0, rh = r >> 31;';
        code = `{ ${rdReg(rm, ssz === 2 ? 2 : ssz, 'v', 'vh')} ${ext} ${wrReg(reg, sz, 'r', 'rh')} }`;
        break;
      }
      case OP_SETCC:
        if (mem) break;
        code = `c.setR(${rm}, 0, c.cond(${D[i + F_SUB]!}) ? 1 : 0, 0);`;
        break;
      case OP_CMOVCC:
        if (mem || sz < 2) break;
        code = `if (c.cond(${D[i + F_SUB]!})) { ${rdReg(rm, sz, 'v', 'vh')} ${wrReg(reg, sz, 'v', 'vh')} } else R[${reg * 2 + 1}] = ${sz === 2 ? '0' : `R[${reg * 2 + 1}]`};`;
        break;
      case OP_LEA: {
        if (mode !== 2 || sz < 2) break;
        const fl2 = D[i + F_FL]!;
        if (((fl2 & FL_ASZ_MASK) >> FL_ASZ_SHIFT) !== 3) break;
        if ((fl2 & FL_RIPREL) !== 0) {
          code = `{ const t = c.ripBase + ${next + D[i + F_DISP]!}; ${wrReg(reg, sz, '(t >>> 0) | 0', 'Math.floor(t / 4294967296) | 0')} }`;
          break;
        }
        const b = D[i + F_BASE]!, x = D[i + F_INDEX]!, sc = 1 << D[i + F_SCALE]!;
        const lo: string[] = [String(D[i + F_DISP]!)], hi: string[] = ['0'];
        if (b >= 0) { lo.push(`(R[${b * 2}] >>> 0)`); hi.push(`R[${b * 2 + 1}]`); }
        if (x >= 0) { lo.push(`(R[${x * 2}] >>> 0) * ${sc}`); hi.push(`R[${x * 2 + 1}] * ${sc}`); }
        code = `{ const sl = ${lo.join(' + ')}; ${wrReg(reg, sz, 'sl | 0', `(${hi.join(' + ')} + Math.floor(sl / 4294967296)) | 0`)} }`;
        break;
      }
      case OP_CALL_REL: {
        if (mode !== 2 || sz !== 3) break;
        const target = next + D[i + F_IMM]!;
        code = `{ const ret = c.ripBase + ${next}; const rl = (ret >>> 0) | 0, rh = Math.floor(ret / 4294967296) | 0; ${push64('rl', 'rh', exc)}
          const t = c.ripBase + ${target}; if (t < -140737488355328 || t >= 140737488355328) { c.excVec = 13; c.excCode = 0; ${exc} } c.rip = t; return ${k}; }`;
        break;
      }
      case OP_ALU_RM_R: case OP_ALU_RM_I: case OP_ALU_R_RM: {
        const kind = D[i + F_SUB]!;
        if (mem && op !== OP_ALU_R_RM) {
          // Read-modify-write (or CMP) on memory.
          const src = op === OP_ALU_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};` : rdReg(reg, sz, 'b', 'bh');
          const probe = kind === 7 ? '' : `if (!c.probeW(lin, ${sz})) ${exc}`;
          const wb = kind === 7 ? '' : `c.wrN(lin, ${sz}, r, c.rhi); ${brkCheck}`;
          code = `{ ${src} ${eaCode(D, i, mode, exc)} ${probe} const a = ${rdMem(sz)}; ${memCheck} const r = c.alu(${kind}, ${sz}, a, ${sz === 3 ? 'c.vhi' : '0'}, b, bh); ${wb} }`;
          break;
        }
        const dst = op === OP_ALU_R_RM ? reg : rm;
        const src = op === OP_ALU_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};`
          : op === OP_ALU_RM_R ? rdReg(reg, sz, 'b', 'bh')
          : mem ? `${eaCode(D, i, mode, exc)} const b = ${rdMem(sz)}; ${memCheck} const bh = ${sz === 3 ? 'c.vhi' : '0'};`
          : rdReg(rm, sz, 'b', 'bh');
        code = `{ ${src} ${rdReg(dst, sz, 'a', 'ah')} const r = c.alu(${kind}, ${sz}, a, ah, b, bh); ${kind === 7 ? '' : wrReg(dst, sz, 'r', 'c.rhi')} }`;
        break;
      }
      case OP_TEST_RM_R: case OP_TEST_RM_I: {
        const src = op === OP_TEST_RM_I ? `const b = ${D[i + F_IMM]!}, bh = ${D[i + F_IMMHI]!};` : rdReg(reg, sz, 'b', 'bh');
        const dst = mem ? `${eaCode(D, i, mode, exc)} const a = ${rdMem(sz)}; ${memCheck} const ah = ${sz === 3 ? 'c.vhi' : '0'};` : rdReg(rm, sz, 'a', 'ah');
        code = `{ ${src} ${dst} c.logic(${sz}, a & b, ah & bh); }`;
        break;
      }
      case OP_INC_RM: case OP_DEC_RM:
        if (mem) {
          code = `{ ${eaCode(D, i, mode, exc)} if (!c.probeW(lin, ${sz})) ${exc} const a = ${rdMem(sz)}; ${memCheck}
            const r = c.incdec(${sz}, a, ${sz === 3 ? 'c.vhi' : '0'}, ${op === OP_DEC_RM}); c.wrN(lin, ${sz}, r, c.rhi); ${brkCheck} }`;
          break;
        }
        code = `{ ${rdReg(rm, sz, 'a', 'ah')} const r = c.incdec(${sz}, a, ah, ${op === OP_DEC_RM}); ${wrReg(rm, sz, 'r', 'c.rhi')} }`;
        break;
      case OP_JCC: case OP_JMP_REL: {
        if (mode !== 2) break;
        const target = next + D[i + F_IMM]!;
        const jump = `{ const t = c.ripBase + ${target}; if (t < -140737488355328 || t >= 140737488355328) { c.excVec = 13; c.excCode = 0; ${exc} } c.rip = t; return ${k}; }`;
        code = op === OP_JMP_REL ? jump : `if (c.cond(${D[i + F_SUB]!})) ${jump} c.rip = c.ripBase + ${next}; return ${k};`;
        break;
      }
      case OP_PUSH_R:
        if (sz !== 3) break;
        code = mode === 2 ? `{ const v = R[${reg * 2}], vh = R[${reg * 2 + 1}]; ${push64('v', 'vh', exc)} ${brkCheck} }`
          : `if (!c.push(3, R[${reg * 2}], R[${reg * 2 + 1}])) ${exc} ${brkCheck}`;
        break;
      case OP_POP_R:
        if (sz !== 3) break;
        code = mode === 2 ? `{ ${pop64(exc)} R[${reg * 2}] = v; R[${reg * 2 + 1}] = vh; }`
          : `{ const v = c.pop(3); ${memCheck} R[${reg * 2}] = v; R[${reg * 2 + 1}] = c.vhi; }`;
        break;
      case OP_RET:
        if (mode !== 2 || sz !== 3 || D[i + F_IMM]! !== 0) break;
        // The target is checked before RSP moves, so a #GP leaves the stack as it was.
        code = `{ const lin = R[9] * 4294967296 + (R[8] >>> 0); if (((R[9] << 16) >> 16) !== R[9]) { c.excVec = 12; c.excCode = 0; ${exc} }
          const v = c.rd64(lin); ${memCheck} const vh = c.vhi;
          if (((vh << 16) >> 16) !== vh) { c.excVec = 13; c.excCode = 0; ${exc} }
          const sl = (R[8] >>> 0) + 8; R[9] = (R[9] + Math.floor(sl / 4294967296)) | 0; R[8] = sl | 0;
          c.rip = vh * 4294967296 + (v >>> 0); return ${k}; }`;
        break;
      case OP_SSE: {
        const slow = `{ const st = c.sse(${i}); if (st !== 0) return st === 2 ? ${-(k + 1)} : ${k}; ${brkCheck} }`;
        code = sseCode(D, i, mode, exc, brkCheck, slow) ?? slow;
        break;
      }
      default: break;
    }
    if (code === null) {
      code = `{ const st = c.step(${i}); if (st !== 0) return st === 2 ? ${-(k + 1)} : ${k}; ${brkCheck} }`;
    } else inline++;
    out.push(code);
  }
  if (inline === 0) return null;
  out.push(`return ${DONE};`);
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the compiling tier of ADR 0007; source holds only integers from decoded records
  return new Function('c', 'R', out.join('\n')) as BlockFn;
}
