/**
 * x86-64 instruction decoder: bytes -> one fixed-stride record (ops.ts) per instruction.
 *
 * Follows the Intel SDM vol. 2, chapter 2 (instruction format) and appendix A (opcode map):
 * legacy prefixes (66, 67, F2, F3, F0, segment overrides), REX, one- and two-byte opcodes,
 * ModRM, SIB, displacements (incl. RIP-relative), immediates. Encodings that are invalid in the
 * current mode, and everything not yet implemented, decode to OP_UD (the interpreter raises #UD
 * when, and only when, the instruction executes).
 *
 * DEVNOTE: bytes come from a callback so the decoder never sees guest memory directly and is a
 * pure, bounded function of the bytes it is given: at most 15 bytes are fetched per
 * instruction (longer ones decode to OP_UD with the #GP flag). The callback returns -1 when a
 * byte cannot be fetched (page fault); decode then returns -1 and writes nothing meaningful.
 */
import {
  F_BASE, F_DISP, F_FL, F_IMM, F_IMM2, F_IMMHI, F_INDEX, F_LEN, F_OP, F_REG, F_RM, F_SCALE, F_SUB,
  FL_ASZ_SHIFT, FL_LOCK, FL_MEM, FL_REP, FL_REPNE, FL_REX, FL_RIPREL, FL_SEG_SHIFT,
  OP_ALU_R_RM, OP_ALU_RM_I, OP_ALU_RM_R, OP_BSF, OP_BSR, OP_BSWAP, OP_BT_RM_I, OP_BT_RM_R, OP_CALL_REL, OP_CALL_RM,
  OP_CALLF, OP_CALLF_RM, OP_CBW, OP_CLTS, OP_CMOVCC, OP_CMPXCHG, OP_CMPXCHG8B, OP_CPUID, OP_CWD, OP_DEC_RM, OP_DIV_RM,
  OP_ENTER, OP_FLAGOP, OP_GRP6, OP_LAR_LSL, OP_GRP7, OP_HLT, OP_IDIV_RM, OP_IMUL1_RM, OP_IMUL_R_RM, OP_IMUL_R_RM_I, OP_IN,
  OP_INC_RM, OP_INT, OP_IRET, OP_JCC, OP_JMP_REL, OP_JMP_RM, OP_JMPF, OP_JMPF_RM, OP_LAHF, OP_LEA, OP_LEAVE, OP_LOOP,
  OP_MOV_CR_R, OP_MOV_DR_R, OP_MOV_MOFFS, OP_MOV_R_CR, OP_MOV_R_DR, OP_MOV_R_I, OP_MOV_R_RM, OP_MOV_RM_I, OP_MOV_RM_R,
  OP_MOV_RM_SREG, OP_MOV_SREG_RM, OP_MOVSX, OP_MOVZX, OP_MUL_RM, OP_NEG_RM, OP_NOP, OP_NOT_RM, OP_OUT, OP_PAUSE,
  OP_POP_R, OP_POP_RM, OP_POP_SEG, OP_POPCNT, OP_POPF, OP_PUSH_I, OP_PUSH_R, OP_PUSH_RM, OP_PUSH_SEG, OP_PUSHF,
  OP_RDMSR, OP_RDTSC, OP_RDTSCP, OP_RET, OP_RETF, OP_SAHF, OP_SETCC, OP_SHIFT, OP_SHLD, OP_SHRD, OP_STRING,
  OP_SWAPGS, OP_SYSCALL, OP_SYSRET, OP_TEST_RM_I, OP_TEST_RM_R, OP_UD, OP_SSE, OP_X87, OP_VMCALL, OP_WRMSR, OP_XADD,
  OP_XCHG_AX, OP_XCHG_RM_R, OP_XLAT, SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_NONE, SEG_SS, STR_CMPS, STR_INS,
  STR_LODS, STR_MOVS, STR_OUTS, STR_SCAS, STR_STOS,
} from './ops.js';

/** Code size of the segment being decoded: 0 = 16-bit, 1 = 32-bit, 2 = 64-bit. */
export type CodeMode = 0 | 1 | 2;

/** Returns the byte at offset k from the instruction start, or -1 if it cannot be fetched. */
export type ByteFetch = (k: number) => number;

/** Set in F_SUB of an OP_UD record when the instruction was too long (#GP(0) rather than #UD). */
export const UD_TOO_LONG = 1;

const MAX_LEN = 15;

/**
 * Decode one instruction into `out` at slot `at`. Returns the length (1-15), or -1 if a byte
 * could not be fetched. F_IOFF is left to the caller.
 */
export function decode(out: Int32Array, at: number, fetch: ByteFetch, mode: CodeMode): number {
  let p = 0;
  let fail = false;
  const byte = (): number => {
    if (fail) return 0;
    if (p >= MAX_LEN) { fail = true; return 0; }
    const b = fetch(p);
    if (b < 0) { p = -1000; fail = true; return 0; }
    p++;
    return b;
  };
  const imm8 = (): number => (byte() << 24) >> 24;
  const imm16 = (): number => { const lo = byte(); return ((byte() << 8) | lo) << 16 >> 16; };
  const imm32 = (): number => { const a = byte(), b = byte(), c = byte(), d = byte(); return a | (b << 8) | (c << 16) | (d << 24); };

  // Prefixes.
  let opsize = false, adsize = false, rep = 0, lock = false, seg = -1, rex = 0;
  // DEVNOTE: in 64-bit mode a REX prefix counts only when it immediately precedes the opcode
  // (SDM vol. 2, 2.2.1): a legacy prefix after it discards it, so `48 66 01 d8` is ADD AX, BX.
  for (;;) {
    const b = fetch(p);
    if (b < 0) return -1;
    if (mode === 2 && (b & 0xf0) === 0x40) rex = b;
    else {
      if (b === 0x66) opsize = true;
      else if (b === 0x67) adsize = true;
      else if (b === 0xf3) rep = FL_REP;
      else if (b === 0xf2) rep = FL_REPNE;
      else if (b === 0xf0) lock = true;
      else if (b === 0x26) seg = SEG_ES;
      else if (b === 0x2e) seg = SEG_CS;
      else if (b === 0x36) seg = SEG_SS;
      else if (b === 0x3e) seg = SEG_DS;
      else if (b === 0x64) seg = SEG_FS;
      else if (b === 0x65) seg = SEG_GS;
      else break;
      rex = 0;
    }
    p++;
    if (p >= MAX_LEN) return tooLong(out, at);
  }
  const rexW = (rex & 8) !== 0;
  const rexR = (rex & 4) << 1, rexX = (rex & 2) << 2, rexB = (rex & 1) << 3;

  // Operand and address sizes (1 = 16, 2 = 32, 3 = 64).
  const dflt = mode === 0 ? 1 : 2;
  let osz = rexW ? 3 : opsize ? (dflt === 1 ? 2 : 1) : dflt;
  const asz = mode === 2 ? (adsize ? 2 : 3) : (adsize ? 3 - mode : mode + 1);
  /** Operand size for instructions that default to 64 bits in long mode (push, pop, near branches). */
  const osz64 = (): number => (mode === 2 ? (opsize && !rexW ? 1 : 3) : osz);
  /** Mandatory SSE prefix: 0 none, 1 66, 2 F3, 3 F2 (F2/F3 take precedence over 66). */
  const sseP = (): number => (rep === FL_REP ? 2 : rep === FL_REPNE ? 3 : opsize ? 1 : 0);

  out.fill(0, at, at + 16);
  out[at + F_BASE] = -1;
  out[at + F_INDEX] = -1;

  let op = OP_UD;
  let sub = 0;
  let memFlag = 0;
  let ripRel = 0;
  let effSeg = SEG_NONE;
  let byteOp = false;

  /** 8-bit register number for a 0-15 register field, honouring the AH..BH encoding without REX. */
  const r8 = (r: number): number => (rex === 0 && r >= 4 && r < 8 ? 16 + r - 4 : r);

  // ModRM decoding.
  let modrmRead = false;
  let mod = 0, regField = 0, rmField = 0;
  const modrm = (): void => {
    const m = byte();
    modrmRead = true;
    mod = m >> 6;
    regField = ((m >> 3) & 7);
    rmField = m & 7;
    if (mod === 3) { out[at + F_RM] = rmField | rexB; return; }
    memFlag = FL_MEM;
    let defSeg = SEG_DS;
    if (asz === 1) {
      // 16-bit addressing forms (SDM table 2-1).
      const bases = [3, 3, 5, 5, 6, 7, 5, 3];     // BX BX BP BP SI DI BP BX
      const idx = [6, 7, 6, 7, -1, -1, -1, -1];   // SI DI SI DI
      if (mod === 0 && rmField === 6) {
        out[at + F_DISP] = imm16() & 0xffff;
      } else {
        out[at + F_BASE] = bases[rmField]!;
        out[at + F_INDEX] = idx[rmField]!;
        if (rmField === 2 || rmField === 3 || rmField === 6) defSeg = SEG_SS;
        if (mod === 1) out[at + F_DISP] = imm8();
        else if (mod === 2) out[at + F_DISP] = imm16();
      }
    } else {
      if (rmField === 4) {
        const sib = byte();
        const ss = sib >> 6, ix = ((sib >> 3) & 7) | rexX, bs = sib & 7;
        if (ix !== 4) { out[at + F_INDEX] = ix; out[at + F_SCALE] = ss; }
        if (bs === 5 && mod === 0) {
          out[at + F_DISP] = imm32();
        } else {
          out[at + F_BASE] = bs | rexB;
          if (bs === 4 || bs === 5) defSeg = SEG_SS;
        }
      } else if (rmField === 5 && mod === 0) {
        out[at + F_DISP] = imm32();
        if (mode === 2) ripRel = FL_RIPREL;
      } else {
        out[at + F_BASE] = rmField | rexB;
        if (rmField === 5 || rmField === 4) defSeg = SEG_SS;
      }
      if (mod === 1) out[at + F_DISP] = imm8();
      else if (mod === 2) out[at + F_DISP] = imm32();
    }
    if (mode === 2) effSeg = seg === SEG_FS || seg === SEG_GS ? seg : SEG_NONE;
    else effSeg = seg >= 0 ? seg : defSeg;
  };
  const setReg = (): void => { out[at + F_REG] = regField | rexR; };
  /** Immediate of the operand size ("Iz"): 16 or 32 bits, sign-extended to 64. */
  const immz = (): void => {
    const v = osz === 1 ? imm16() & 0xffff : imm32();
    out[at + F_IMM] = v;
    out[at + F_IMMHI] = osz === 3 ? v >> 31 : 0;
  };
  const immb = (): void => { const v = imm8(); out[at + F_IMM] = v; out[at + F_IMMHI] = v >> 31; };
  const rel = (): void => { out[at + F_IMM] = osz === 1 && mode !== 2 ? imm16() : imm32(); };
  const fixByteRegs = (): void => {
    if (!byteOp) return;
    out[at + F_REG] = r8(out[at + F_REG]!);
    if (memFlag === 0 && modrmRead) out[at + F_RM] = r8(out[at + F_RM]!);
  };

  const b0 = byte();
  if (fail) return -1;
  if (b0 !== 0x0f) {
    // One-byte opcode map.
    if (b0 < 0x40 && (b0 & 7) < 6) {
      const kind = b0 >> 3;
      sub = kind;
      switch (b0 & 7) {
        case 0: byteOp = true; osz = 0; modrm(); setReg(); op = OP_ALU_RM_R; break;
        case 1: modrm(); setReg(); op = OP_ALU_RM_R; break;
        case 2: byteOp = true; osz = 0; modrm(); setReg(); op = OP_ALU_R_RM; break;
        case 3: modrm(); setReg(); op = OP_ALU_R_RM; break;
        case 4: osz = 0; op = OP_ALU_RM_I; out[at + F_RM] = 0; immb(); break;
        default: op = OP_ALU_RM_I; out[at + F_RM] = 0; immz(); break;
      }
    } else if (b0 < 0x40) {
      switch (b0) {
        case 0x06: case 0x0e: case 0x16: case 0x1e:
          if (mode !== 2) { op = OP_PUSH_SEG; sub = b0 >> 3; }
          break;
        case 0x07: case 0x17: case 0x1f:
          if (mode !== 2) { op = OP_POP_SEG; sub = b0 >> 3; }
          break;
        default: break; // DAA/DAS/AAA/AAS: not implemented (#UD)
      }
    } else if (b0 < 0x50) {
      // INC/DEC r (16/32-bit modes only; REX in long mode was consumed above).
      op = b0 < 0x48 ? OP_INC_RM : OP_DEC_RM;
      out[at + F_RM] = b0 & 7;
    } else if (b0 < 0x58) {
      op = OP_PUSH_R; osz = osz64(); out[at + F_REG] = (b0 & 7) | rexB;
    } else if (b0 < 0x60) {
      op = OP_POP_R; osz = osz64(); out[at + F_REG] = (b0 & 7) | rexB;
    } else if (b0 >= 0x70 && b0 < 0x80) {
      op = OP_JCC; sub = b0 & 15; osz = osz64(); out[at + F_IMM] = imm8();
    } else if (b0 >= 0x91 && b0 < 0x98) {
      op = OP_XCHG_AX; out[at + F_REG] = (b0 & 7) | rexB;
    } else if (b0 >= 0xb0 && b0 < 0xb8) {
      op = OP_MOV_R_I; osz = 0; out[at + F_REG] = r8((b0 & 7) | rexB); out[at + F_IMM] = byte();
    } else if (b0 >= 0xb8 && b0 < 0xc0) {
      op = OP_MOV_R_I; out[at + F_REG] = (b0 & 7) | rexB;
      if (osz === 3) { out[at + F_IMM] = imm32(); out[at + F_IMMHI] = imm32(); } else immz();
    } else {
      switch (b0) {
        case 0x63:
          if (mode === 2) { modrm(); setReg(); op = OP_MOVSX; sub = 2; }
          break;
        case 0x68: op = OP_PUSH_I; osz = osz64(); immz(); if (osz === 3) out[at + F_IMMHI] = out[at + F_IMM]! >> 31; break;
        case 0x6a: op = OP_PUSH_I; osz = osz64(); immb(); break;
        case 0x69: modrm(); setReg(); op = OP_IMUL_R_RM_I; immz(); break;
        case 0x6b: modrm(); setReg(); op = OP_IMUL_R_RM_I; immb(); break;
        case 0x6c: op = OP_STRING; sub = STR_INS; osz = 0; break;
        case 0x6d: op = OP_STRING; sub = STR_INS; if (osz === 3) osz = 2; break;
        case 0x6e: op = OP_STRING; sub = STR_OUTS; osz = 0; break;
        case 0x6f: op = OP_STRING; sub = STR_OUTS; if (osz === 3) osz = 2; break;
        case 0x80: case 0x82:
          if (b0 === 0x82 && mode === 2) break;
          byteOp = true; osz = 0; modrm(); op = OP_ALU_RM_I; sub = regField; immb(); break;
        case 0x81: modrm(); op = OP_ALU_RM_I; sub = regField; immz(); break;
        case 0x83: modrm(); op = OP_ALU_RM_I; sub = regField; immb(); break;
        case 0x84: byteOp = true; osz = 0; modrm(); setReg(); op = OP_TEST_RM_R; break;
        case 0x85: modrm(); setReg(); op = OP_TEST_RM_R; break;
        case 0x86: byteOp = true; osz = 0; modrm(); setReg(); op = OP_XCHG_RM_R; break;
        case 0x87: modrm(); setReg(); op = OP_XCHG_RM_R; break;
        case 0x88: byteOp = true; osz = 0; modrm(); setReg(); op = OP_MOV_RM_R; break;
        case 0x89: modrm(); setReg(); op = OP_MOV_RM_R; break;
        case 0x8a: byteOp = true; osz = 0; modrm(); setReg(); op = OP_MOV_R_RM; break;
        case 0x8b: modrm(); setReg(); op = OP_MOV_R_RM; break;
        case 0x8c: modrm(); op = OP_MOV_RM_SREG; out[at + F_REG] = regField; if (memFlag !== 0) osz = 1; if (regField > 5) op = OP_UD; break;
        case 0x8d: modrm(); setReg(); op = memFlag !== 0 ? OP_LEA : OP_UD; break;
        case 0x8e: modrm(); op = OP_MOV_SREG_RM; out[at + F_REG] = regField; osz = 1; if (regField > 5 || regField === SEG_CS) op = OP_UD; break;
        case 0x8f: osz = osz64(); modrm(); op = regField === 0 ? OP_POP_RM : OP_UD; break;
        case 0x90:
          if (rexB !== 0) { op = OP_XCHG_AX; out[at + F_REG] = 8; }
          else op = rep === FL_REP ? OP_PAUSE : OP_NOP;
          break;
        case 0x98: op = OP_CBW; break;
        case 0x99: op = OP_CWD; break;
        case 0x9a:
          if (mode !== 2) { op = OP_CALLF; out[at + F_IMM] = osz === 1 ? imm16() & 0xffff : imm32(); out[at + F_IMM2] = imm16() & 0xffff; }
          break;
        case 0x9b: op = OP_X87; sub = 0x800; break; // FWAIT
        case 0x9c: op = OP_PUSHF; osz = osz64(); break;
        case 0x9d: op = OP_POPF; osz = osz64(); break;
        case 0x9e: op = OP_SAHF; break;
        case 0x9f: op = OP_LAHF; break;
        case 0xa0: case 0xa1: case 0xa2: case 0xa3: {
          op = OP_MOV_MOFFS; sub = (b0 >> 1) & 1; if ((b0 & 1) === 0) osz = 0;
          memFlag = FL_MEM;
          if (asz === 3) { out[at + F_DISP] = imm32(); out[at + F_IMMHI] = imm32(); }
          else { out[at + F_DISP] = asz === 1 ? imm16() & 0xffff : imm32(); out[at + F_IMMHI] = 0; }
          effSeg = mode === 2 ? (seg === SEG_FS || seg === SEG_GS ? seg : SEG_NONE) : (seg >= 0 ? seg : SEG_DS);
          break;
        }
        case 0xa4: op = OP_STRING; sub = STR_MOVS; osz = 0; break;
        case 0xa5: op = OP_STRING; sub = STR_MOVS; break;
        case 0xa6: op = OP_STRING; sub = STR_CMPS; osz = 0; break;
        case 0xa7: op = OP_STRING; sub = STR_CMPS; break;
        case 0xa8: op = OP_TEST_RM_I; osz = 0; out[at + F_RM] = 0; immb(); break;
        case 0xa9: op = OP_TEST_RM_I; out[at + F_RM] = 0; immz(); break;
        case 0xaa: op = OP_STRING; sub = STR_STOS; osz = 0; break;
        case 0xab: op = OP_STRING; sub = STR_STOS; break;
        case 0xac: op = OP_STRING; sub = STR_LODS; osz = 0; break;
        case 0xad: op = OP_STRING; sub = STR_LODS; break;
        case 0xae: op = OP_STRING; sub = STR_SCAS; osz = 0; break;
        case 0xaf: op = OP_STRING; sub = STR_SCAS; break;
        case 0xc0: byteOp = true; osz = 0; modrm(); op = OP_SHIFT; sub = regField; out[at + F_IMM2] = 2; out[at + F_IMM] = byte(); break;
        case 0xc1: modrm(); op = OP_SHIFT; sub = regField; out[at + F_IMM2] = 2; out[at + F_IMM] = byte(); break;
        case 0xc2: op = OP_RET; osz = osz64(); out[at + F_IMM] = imm16() & 0xffff; break;
        case 0xc3: op = OP_RET; osz = osz64(); break;
        case 0xc6: byteOp = true; osz = 0; modrm(); op = regField === 0 ? OP_MOV_RM_I : OP_UD; out[at + F_IMM] = byte(); break;
        case 0xc7: modrm(); op = regField === 0 ? OP_MOV_RM_I : OP_UD; immz(); break;
        case 0xc8: op = OP_ENTER; osz = osz64(); out[at + F_IMM] = imm16() & 0xffff; out[at + F_IMM2] = byte(); break;
        case 0xc9: op = OP_LEAVE; osz = osz64(); break;
        case 0xca: op = OP_RETF; out[at + F_IMM] = imm16() & 0xffff; break;
        case 0xcb: op = OP_RETF; break;
        case 0xcc: op = OP_INT; sub = 1; out[at + F_IMM] = 3; break;
        case 0xcd: op = OP_INT; out[at + F_IMM] = byte(); break;
        case 0xce: if (mode !== 2) { op = OP_INT; sub = 2; out[at + F_IMM] = 4; } break;
        case 0xcf: op = OP_IRET; break;
        case 0xd0: byteOp = true; osz = 0; modrm(); op = OP_SHIFT; sub = regField; out[at + F_IMM2] = 0; break;
        case 0xd1: modrm(); op = OP_SHIFT; sub = regField; out[at + F_IMM2] = 0; break;
        case 0xd2: byteOp = true; osz = 0; modrm(); op = OP_SHIFT; sub = regField; out[at + F_IMM2] = 1; break;
        case 0xd3: modrm(); op = OP_SHIFT; sub = regField; out[at + F_IMM2] = 1; break;
        case 0xd7: op = OP_XLAT; osz = 0; effSeg = mode === 2 ? (seg === SEG_FS || seg === SEG_GS ? seg : SEG_NONE) : (seg >= 0 ? seg : SEG_DS); break;
        case 0xd8: case 0xd9: case 0xda: case 0xdb: case 0xdc: case 0xdd: case 0xde: case 0xdf:
          modrm(); op = OP_X87; sub = ((b0 - 0xd8) << 8) | (mod << 6) | (regField << 3) | rmField; break;
        case 0xe0: case 0xe1: case 0xe2: case 0xe3: op = OP_LOOP; sub = b0 & 3; osz = osz64(); out[at + F_IMM] = imm8(); break;
        case 0xe4: op = OP_IN; osz = 0; out[at + F_IMM] = byte(); break;
        case 0xe5: op = OP_IN; if (osz === 3) osz = 2; out[at + F_IMM] = byte(); break;
        case 0xe6: op = OP_OUT; osz = 0; out[at + F_IMM] = byte(); break;
        case 0xe7: op = OP_OUT; if (osz === 3) osz = 2; out[at + F_IMM] = byte(); break;
        case 0xe8: op = OP_CALL_REL; osz = osz64(); rel(); break;
        case 0xe9: op = OP_JMP_REL; osz = osz64(); rel(); break;
        case 0xea:
          if (mode !== 2) { op = OP_JMPF; out[at + F_IMM] = osz === 1 ? imm16() & 0xffff : imm32(); out[at + F_IMM2] = imm16() & 0xffff; }
          break;
        case 0xeb: op = OP_JMP_REL; osz = osz64(); out[at + F_IMM] = imm8(); break;
        case 0xec: op = OP_IN; osz = 0; sub = 1; break;
        case 0xed: op = OP_IN; if (osz === 3) osz = 2; sub = 1; break;
        case 0xee: op = OP_OUT; osz = 0; sub = 1; break;
        case 0xef: op = OP_OUT; if (osz === 3) osz = 2; sub = 1; break;
        case 0xf4: op = OP_HLT; break;
        case 0xf5: op = OP_FLAGOP; sub = 2; break;
        case 0xf6: case 0xf7: {
          if (b0 === 0xf6) { byteOp = true; osz = 0; }
          modrm();
          switch (regField) {
            case 0: case 1: op = OP_TEST_RM_I; if (osz === 0) { out[at + F_IMM] = byte(); } else immz(); break;
            case 2: op = OP_NOT_RM; break;
            case 3: op = OP_NEG_RM; break;
            case 4: op = OP_MUL_RM; break;
            case 5: op = OP_IMUL1_RM; break;
            case 6: op = OP_DIV_RM; break;
            default: op = OP_IDIV_RM; break;
          }
          break;
        }
        case 0xf8: op = OP_FLAGOP; sub = 0; break;
        case 0xf9: op = OP_FLAGOP; sub = 1; break;
        case 0xfa: op = OP_FLAGOP; sub = 5; break;
        case 0xfb: op = OP_FLAGOP; sub = 6; break;
        case 0xfc: op = OP_FLAGOP; sub = 3; break;
        case 0xfd: op = OP_FLAGOP; sub = 4; break;
        case 0xfe:
          byteOp = true; osz = 0; modrm();
          op = regField === 0 ? OP_INC_RM : regField === 1 ? OP_DEC_RM : OP_UD;
          break;
        case 0xff: {
          // Peek /reg to pick the operand size before the ModRM bytes are consumed.
          const m = fetch(p);
          if (m < 0) return -1;
          const r = (m >> 3) & 7;
          if (r === 2 || r === 4 || r === 6) osz = osz64();
          modrm();
          switch (r) {
            case 0: op = OP_INC_RM; break;
            case 1: op = OP_DEC_RM; break;
            case 2: op = OP_CALL_RM; break;
            case 3: op = memFlag !== 0 ? OP_CALLF_RM : OP_UD; break;
            case 4: op = OP_JMP_RM; break;
            case 5: op = memFlag !== 0 ? OP_JMPF_RM : OP_UD; break;
            case 6: op = OP_PUSH_RM; break;
            default: op = OP_UD; break;
          }
          break;
        }
        default: break; // remaining one-byte opcodes: #UD for now
      }
    }
  } else {
    // Two-byte opcode map (0F xx).
    const b1 = byte();
    if (b1 >= 0x40 && b1 < 0x50) {
      modrm(); setReg(); op = OP_CMOVCC; sub = b1 & 15;
    } else if (b1 >= 0x80 && b1 < 0x90) {
      op = OP_JCC; sub = b1 & 15; osz = osz64(); rel();
    } else if (b1 >= 0x90 && b1 < 0xa0) {
      byteOp = true; osz = 0; modrm(); op = OP_SETCC; sub = b1 & 15;
    } else if (b1 >= 0xc8 && b1 < 0xd0) {
      op = OP_BSWAP; out[at + F_REG] = (b1 & 7) | rexB;
    } else if (b1 >= 0x18 && b1 < 0x20) {
      modrm(); op = OP_NOP; // hint NOPs, prefetch, NOP Ev
    } else {
      switch (b1) {
        case 0x00: {
          modrm(); sub = regField; osz = 1;
          op = regField < 6 ? OP_GRP6 : OP_UD;
          break;
        }
        case 0x01: {
          const m = fetch(p);
          if (m < 0) return -1;
          if ((m >> 6) === 3) {
            p++;
            switch (m) {
              case 0xc1: case 0xd9: op = OP_VMCALL; break;
              case 0xf8: op = mode === 2 ? OP_SWAPGS : OP_UD; break;
              case 0xf9: op = OP_RDTSCP; break;
              default:
                // SMSW/LMSW with a register operand.
                if (((m >> 3) & 7) === 4 || ((m >> 3) & 7) === 6) {
                  sub = (m >> 3) & 7; op = OP_GRP7; out[at + F_RM] = (m & 7) | rexB; osz = sub === 4 ? osz : 1;
                }
                break;
            }
          } else {
            modrm(); sub = regField;
            op = regField === 5 ? OP_UD : OP_GRP7;
          }
          break;
        }
        case 0x02: case 0x03: modrm(); setReg(); op = OP_LAR_LSL; sub = b1 & 1; break;
        case 0x05: op = mode === 2 ? OP_SYSCALL : OP_UD; break;
        case 0x06: op = OP_CLTS; break;
        case 0x07: op = mode === 2 ? OP_SYSRET : OP_UD; break;
        case 0x08: case 0x09: op = OP_NOP; break; // INVD / WBINVD: no caches to write back
        case 0x0b: op = OP_UD; break;              // UD2
        case 0x0d: modrm(); op = OP_NOP; break;    // PREFETCHW
        case 0x20: case 0x22: case 0x21: case 0x23: {
          // MOV to/from control/debug registers: mod is ignored, operands are always registers.
          const m = byte();
          out[at + F_RM] = (m & 7) | rexB;
          out[at + F_REG] = ((m >> 3) & 7) | rexR;
          osz = mode === 2 ? 3 : 2;
          op = b1 === 0x20 ? OP_MOV_R_CR : b1 === 0x22 ? OP_MOV_CR_R : b1 === 0x21 ? OP_MOV_R_DR : OP_MOV_DR_R;
          if (lock && (b1 === 0x20 || b1 === 0x22)) { out[at + F_REG] = 8; lock = false; } // LOCK MOV CR0 = CR8 (AMD)
          break;
        }
        case 0x30: op = OP_WRMSR; break;
        case 0x31: op = OP_RDTSC; break;
        case 0x32: op = OP_RDMSR; break;
        case 0xa0: op = OP_PUSH_SEG; sub = SEG_FS; osz = osz64(); break;
        case 0xa1: op = OP_POP_SEG; sub = SEG_FS; osz = osz64(); break;
        case 0xa8: op = OP_PUSH_SEG; sub = SEG_GS; osz = osz64(); break;
        case 0xa9: op = OP_POP_SEG; sub = SEG_GS; osz = osz64(); break;
        case 0xa2: op = OP_CPUID; break;
        case 0xa3: modrm(); setReg(); op = OP_BT_RM_R; sub = 0; break;
        case 0xab: modrm(); setReg(); op = OP_BT_RM_R; sub = 1; break;
        case 0xb3: modrm(); setReg(); op = OP_BT_RM_R; sub = 2; break;
        case 0xbb: modrm(); setReg(); op = OP_BT_RM_R; sub = 3; break;
        case 0xba: modrm(); op = regField >= 4 ? OP_BT_RM_I : OP_UD; sub = regField & 3; out[at + F_IMM] = byte(); break;
        case 0xa4: modrm(); setReg(); op = OP_SHLD; out[at + F_IMM2] = 2; out[at + F_IMM] = byte(); break;
        case 0xa5: modrm(); setReg(); op = OP_SHLD; out[at + F_IMM2] = 1; break;
        case 0xac: modrm(); setReg(); op = OP_SHRD; out[at + F_IMM2] = 2; out[at + F_IMM] = byte(); break;
        case 0xad: modrm(); setReg(); op = OP_SHRD; out[at + F_IMM2] = 1; break;
        case 0xae: {
          modrm(); setReg();
          // Fences (mod == 3) and CLFLUSH (/7 memory) are no-ops for a single in-order processor.
          if (memFlag === 0 && regField >= 5 && rep === 0) op = OP_NOP;
          else if (memFlag !== 0 && regField === 7) op = OP_NOP;
          else if (memFlag !== 0 && regField <= 3 && rep === 0) { op = OP_SSE; sub = 0xae; } // FXSAVE FXRSTOR LDMXCSR STMXCSR
          else op = OP_UD;   // XSAVE family, FSGSBASE: not advertised
          break;
        }
        case 0x77: op = OP_SSE; sub = 0x77 | (sseP() << 8); break;   // EMMS
        case 0x10: case 0x11: case 0x12: case 0x13: case 0x14: case 0x15: case 0x16: case 0x17:
        case 0x28: case 0x29: case 0x2a: case 0x2b: case 0x2c: case 0x2d: case 0x2e: case 0x2f:
        case 0xc2: case 0xc3: case 0xc4: case 0xc5: case 0xc6: {
          modrm(); setReg(); op = OP_SSE; sub = b1 | (sseP() << 8);
          if (b1 === 0xc2 || b1 === 0xc4 || b1 === 0xc5 || b1 === 0xc6) out[at + F_IMM] = byte();
          break;
        }
        case 0xaf: modrm(); setReg(); op = OP_IMUL_R_RM; break;
        case 0xb0: byteOp = true; osz = 0; modrm(); setReg(); op = OP_CMPXCHG; break;
        case 0xb1: modrm(); setReg(); op = OP_CMPXCHG; break;
        case 0xb6: case 0xbe: {
          modrm(); setReg(); op = b1 === 0xb6 ? OP_MOVZX : OP_MOVSX; sub = 0;
          if (memFlag === 0) out[at + F_RM] = r8(out[at + F_RM]!);
          break;
        }
        case 0xb7: case 0xbf: modrm(); setReg(); op = b1 === 0xb7 ? OP_MOVZX : OP_MOVSX; sub = 1; break;
        case 0xb8: if (rep === FL_REP) { modrm(); setReg(); op = OP_POPCNT; } break;
        case 0xbc: modrm(); setReg(); op = OP_BSF; break;  // F3 0F BC (TZCNT) is BSF without BMI1
        case 0xbd: modrm(); setReg(); op = OP_BSR; break;  // F3 0F BD (LZCNT) is BSR without ABM
        case 0xc0: byteOp = true; osz = 0; modrm(); setReg(); op = OP_XADD; break;
        case 0xc1: modrm(); setReg(); op = OP_XADD; break;
        case 0xc7: modrm(); op = regField === 1 && memFlag !== 0 ? OP_CMPXCHG8B : OP_UD; if (!rexW) osz = 2; break;
        default:
          if ((b1 >= 0x50 && b1 < 0x80) || b1 >= 0xd0) {
            // SSE/SSE2 (sse.ts decides validity from the prefix); 70-73 take an imm8.
            modrm(); setReg(); op = OP_SSE; sub = b1 | (sseP() << 8);
            if (b1 >= 0x70 && b1 <= 0x73) out[at + F_IMM] = byte();
          }
          break;
      }
    }
  }
  if (fail) return p < 0 ? -1 : tooLong(out, at);
  fixByteRegs();
  if (op === OP_STRING) effSeg = mode === 2 ? (seg === SEG_FS || seg === SEG_GS ? seg : SEG_NONE) : (seg >= 0 ? seg : SEG_DS);
  out[at + F_OP] = op;
  out[at + F_SUB] = sub;
  out[at + F_FL] = osz | (asz << FL_ASZ_SHIFT) | memFlag | rep | (lock ? FL_LOCK : 0) | (effSeg << FL_SEG_SHIFT) | ripRel | (rex !== 0 ? FL_REX : 0);
  out[at + F_LEN] = p;
  if (lock && !lockable(op, memFlag)) out[at + F_OP] = OP_UD;
  return p;
}

function lockable(op: number, mem: number): boolean {
  if (mem === 0) return false;
  switch (op) {
    case OP_ALU_RM_R: case OP_ALU_RM_I: case OP_INC_RM: case OP_DEC_RM: case OP_NOT_RM: case OP_NEG_RM:
    case OP_XCHG_RM_R: case OP_CMPXCHG: case OP_XADD: case OP_CMPXCHG8B: case OP_BT_RM_R: case OP_BT_RM_I:
      return true;
    default:
      return false;
  }
}

function tooLong(out: Int32Array, at: number): number {
  out.fill(0, at, at + 16);
  out[at + F_OP] = OP_UD;
  out[at + F_SUB] = UD_TOO_LONG;
  out[at + F_LEN] = MAX_LEN;
  return MAX_LEN;
}
