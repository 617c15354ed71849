/**
 * The decoded-instruction record shared by the decoder (decoder.ts) and the interpreter
 * (cpu.ts): field offsets, flag bits and handler ids.
 *
 * One instruction is 16 Int32 slots in the block pool (docs/adr/0007-emu-design.md). The
 * record is also the input of the compiling tier (jit.ts), so it carries everything
 * the instruction needs and nothing that depends on run-time state.
 */

/** Entries per software TLB part (cpu.ts; per access kind and privilege); compiled code (jit.ts) probes it inline. */
export const TLB_BITS = 10;
export const TLB_MASK = (1 << TLB_BITS) - 1;
/** Tag-hi of an unusable int-keyed TLB slot (cpu.ts tlbI): no address >> 44 is this. */
export const TAG_NONE = 0x40000000;
/** Ints of an int-keyed TLB slot (cpu.ts tlbI, slot * 4 + field). */
export const TLBI_TAG_LO = 0, TLBI_TAG_HI = 1, TLBI_REG = 2, TLBI_OFF = 3;

/** Ints per decoded instruction; `index << LOG_STRIDE` is its first slot. */
export const LOG_STRIDE = 4;
export const STRIDE = 1 << LOG_STRIDE;

// Field offsets inside a record.
export const F_OP = 0;      // handler id (OP_*)
export const F_FL = 1;      // FL_* bits: sizes, prefixes
export const F_REG = 2;     // ModRM.reg (+REX.R); 8-bit operands: 0-15 low bytes, 16-19 AH,CH,DH,BH
export const F_RM = 3;      // ModRM.rm register (+REX.B) when mod == 3, same 8-bit encoding
export const F_BASE = 4;    // base register of the memory operand, -1 none
export const F_INDEX = 5;   // index register, -1 none
export const F_SCALE = 6;   // index scale as a shift count 0-3
export const F_DISP = 7;    // displacement, sign-extended
export const F_IMM = 8;     // immediate, low 32 bits (sign-extended where the encoding says so)
export const F_IMMHI = 9;   // immediate, high 32 bits
export const F_IOFF = 10;   // offset of the instruction from the start of its block
export const F_LEN = 11;    // instruction length in bytes
export const F_SUB = 12;    // sub-operation (ALU kind, condition code, group /reg, string op...)
export const F_IMM2 = 13;   // second immediate / count source (shifts: 0 = 1, 1 = CL, 2 = imm)

// F_FL bits.
export const FL_OSZ_MASK = 3;        // operand size: 0 = 8, 1 = 16, 2 = 32, 3 = 64 bits
export const FL_ASZ_SHIFT = 2;       // address size: 1 = 16, 2 = 32, 3 = 64 bits
export const FL_ASZ_MASK = 3 << FL_ASZ_SHIFT;
export const FL_MEM = 1 << 4;        // the r/m operand is memory
export const FL_REP = 1 << 5;        // F3 prefix
export const FL_REPNE = 1 << 6;      // F2 prefix
export const FL_LOCK = 1 << 7;
export const FL_SEG_SHIFT = 8;       // segment of the memory operand: 0-5, 7 = none (flat 64-bit)
export const FL_SEG_MASK = 7 << FL_SEG_SHIFT;
export const FL_RIPREL = 1 << 11;    // F_DISP is relative to the next instruction
export const FL_REX = 1 << 12;

export const SEG_ES = 0, SEG_CS = 1, SEG_SS = 2, SEG_DS = 3, SEG_FS = 4, SEG_GS = 5, SEG_LDTR = 6, SEG_TR = 7;
export const SEG_NONE = 7;

// Handler ids. Dense so the interpreter's switch becomes a jump table.
export const OP_UD = 0;
export const OP_NOP = 1;
export const OP_ALU_RM_R = 2;    // sub = ALU kind (0 ADD 1 OR 2 ADC 3 SBB 4 AND 5 SUB 6 XOR 7 CMP)
export const OP_ALU_R_RM = 3;
export const OP_ALU_RM_I = 4;
export const OP_TEST_RM_R = 5;
export const OP_TEST_RM_I = 6;
export const OP_MOV_RM_R = 7;
export const OP_MOV_R_RM = 8;
export const OP_MOV_RM_I = 9;
export const OP_MOV_R_I = 10;    // reg in F_REG
export const OP_MOVZX = 11;      // sub = source size
export const OP_MOVSX = 12;      // sub = source size (MOVSXD: 2)
export const OP_LEA = 13;
export const OP_XCHG_RM_R = 14;
export const OP_PUSH_R = 15;
export const OP_POP_R = 16;
export const OP_PUSH_I = 17;
export const OP_PUSH_RM = 18;
export const OP_POP_RM = 19;
export const OP_INC_RM = 20;
export const OP_DEC_RM = 21;
export const OP_NOT_RM = 22;
export const OP_NEG_RM = 23;
export const OP_MUL_RM = 24;
export const OP_IMUL1_RM = 25;
export const OP_DIV_RM = 26;
export const OP_IDIV_RM = 27;
export const OP_IMUL_R_RM = 28;
export const OP_IMUL_R_RM_I = 29;
export const OP_SHIFT = 30;      // sub = 0 ROL 1 ROR 2 RCL 3 RCR 4 SHL 5 SHR 6 SAL 7 SAR; imm2 = count source
export const OP_SHLD = 31;
export const OP_SHRD = 32;
export const OP_BT_RM_R = 33;    // sub = 0 BT 1 BTS 2 BTR 3 BTC
export const OP_BT_RM_I = 34;
export const OP_BSF = 35;
export const OP_BSR = 36;
export const OP_POPCNT = 37;
export const OP_SETCC = 38;      // sub = condition code
export const OP_CMOVCC = 39;
export const OP_JCC = 40;        // imm = displacement
export const OP_JMP_REL = 41;
export const OP_CALL_REL = 42;
export const OP_JMP_RM = 43;
export const OP_CALL_RM = 44;
export const OP_RET = 45;        // imm = bytes to release
export const OP_LOOP = 46;       // sub = 0 LOOPNE 1 LOOPE 2 LOOP 3 JrCXZ
export const OP_STRING = 47;     // sub = STR_*
export const OP_CMPXCHG = 48;
export const OP_XADD = 49;
export const OP_CMPXCHG8B = 50;  // osz 3 = CMPXCHG16B
export const OP_BSWAP = 51;
export const OP_CBW = 52;
export const OP_CWD = 53;
export const OP_LAHF = 54;
export const OP_SAHF = 55;
export const OP_PUSHF = 56;
export const OP_POPF = 57;
export const OP_FLAGOP = 58;     // sub = 0 CLC 1 STC 2 CMC 3 CLD 4 STD 5 CLI 6 STI
export const OP_ENTER = 59;      // imm = size, imm2 = level
export const OP_LEAVE = 60;
export const OP_INT = 61;        // imm = vector; sub = 1 for INT3, 2 for INTO
export const OP_IRET = 62;
export const OP_HLT = 63;
export const OP_IN = 64;         // sub = 0 imm port, 1 DX
export const OP_OUT = 65;
export const OP_CPUID = 66;
export const OP_RDMSR = 67;
export const OP_WRMSR = 68;
export const OP_RDTSC = 69;
export const OP_RDTSCP = 70;
export const OP_MOV_R_CR = 71;   // reg = CR number, rm = GPR
export const OP_MOV_CR_R = 72;
export const OP_MOV_R_DR = 73;
export const OP_MOV_DR_R = 74;
export const OP_GRP7 = 75;       // sub = /reg: 0 SGDT 1 SIDT 2 LGDT 3 LIDT 4 SMSW 6 LMSW 7 INVLPG
export const OP_VMCALL = 76;
export const OP_SWAPGS = 77;
export const OP_SYSCALL = 78;
export const OP_SYSRET = 79;
export const OP_GRP6 = 80;       // sub = /reg: 0 SLDT 1 STR 2 LLDT 3 LTR 4 VERR 5 VERW
export const OP_MOV_RM_SREG = 81;
export const OP_MOV_SREG_RM = 82;
export const OP_PUSH_SEG = 83;   // sub = segment
export const OP_POP_SEG = 84;
export const OP_JMPF = 85;       // imm = offset, imm2 = selector
export const OP_JMPF_RM = 86;
export const OP_CALLF_RM = 87;
export const OP_CALLF = 88;
export const OP_RETF = 89;       // imm = bytes to release
export const OP_XLAT = 90;
export const OP_MOV_MOFFS = 91;  // sub = 0 load acc, 1 store acc; disp/imm hold the address
export const OP_CLTS = 92;
export const OP_PAUSE = 93;
export const OP_XCHG_AX = 94;    // reg = other register
export const OP_LAR_LSL = 95;    // sub 0 LAR, 1 LSL; reg = destination
export const OP_SSE = 97;        // sse.ts: sub = 0F opcode byte | mandatory prefix << 8 (0 none, 1 66, 2 F3, 3 F2); imm = imm8
export const OP_X87 = 98;        // fpu.ts: sub = (opcode - D8) << 8 | ModRM; FWAIT: sub = 0x800

/**
 * Lazy flag kinds (cpu.ts `fOp`): which operation the recorded operands and result belong to.
 * The compiling tier (jit.ts) writes the same record inline, so both share these values.
 */
export const FOP_NONE = 0, FOP_ADD = 1, FOP_ADC = 2, FOP_SUB = 3, FOP_SBB = 4, FOP_LOGIC = 5, FOP_INC = 6, FOP_DEC = 7;

export const STR_MOVS = 0, STR_CMPS = 1, STR_STOS = 2, STR_LODS = 3, STR_SCAS = 4, STR_INS = 5, STR_OUTS = 6;

/**
 * Handlers after which a block must end (control flow or state that the next block's decode
 * depends on). A conditional branch does not end its block: the block goes on with the
 * fall-through path and a taken branch leaves it in the middle (a superblock), so a compiled
 * block covers an if/else diamond or a loop body with its exit test.
 */
export const ENDS_BLOCK = new Uint8Array(128);
for (const op of [
  OP_UD, OP_JMP_REL, OP_CALL_REL, OP_JMP_RM, OP_CALL_RM, OP_RET, OP_LOOP, OP_POPF, OP_FLAGOP,
  OP_INT, OP_IRET, OP_HLT, OP_WRMSR, OP_MOV_CR_R, OP_MOV_DR_R, OP_GRP7, OP_VMCALL, OP_SWAPGS, OP_SYSCALL,
  OP_SYSRET, OP_GRP6, OP_MOV_SREG_RM, OP_POP_SEG, OP_JMPF, OP_JMPF_RM, OP_CALLF_RM, OP_CALLF, OP_RETF,
  OP_CLTS, OP_IN, OP_OUT, OP_STRING, OP_RDMSR, OP_CPUID, OP_PAUSE, OP_LAR_LSL,
]) ENDS_BLOCK[op] = 1;
