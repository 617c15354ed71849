/**
 * I8042: the PC/AT keyboard controller (ports 0x60/0x64, IRQ 1) with a PS/2 keyboard behind it.
 *
 * Spec: IBM PC/AT Technical Reference, keyboard controller; command and bit names from Linux
 * drivers/input/serio/i8042.h and atkbd.c (spec.ts). Enough for Linux's i8042 driver to find a
 * controller and a keyboard (self test 0xAA -> 0x55, CTR read/write, interface test, GETID),
 * and for the guest to reset the machine the classic ways: command 0xFE (pulse the reset
 * line), or writing an output port value with bit 0 clear (0xD1). What a reset does is
 * configurable: `resetAction: 'reset'` calls PowerControl.reset(), 'poweroff' powerOff()
 * (for VMs that should stop when the guest reboots).
 *
 * Model:
 * - Commands complete at once, so the input buffer is never full (STR.IBF reads 0).
 * - The output buffer (STR.OBF) is refilled from two bounded queues: controller replies first,
 *   then keyboard bytes unless the keyboard interface is disabled (CTR.KBDDIS). IRQ 1 is
 *   `OBF && CTR.KBDINT`; after the guest reads port 0x60 the line drops before the next byte
 *   is loaded, so an edge-triggered PIC sees one edge per byte.
 * - There is no auxiliary (mouse) device. 0xA7/0xA8 set and clear CTR.AUXDIS; the aux
 *   interface test 0xA9 answers 0x02 ("clock line stuck high": nothing attached); 0xD3 and
 *   0xD4 swallow their data byte and answer nothing. DEVNOTE: Linux's i8042_check_aux() then
 *   gives up on the AUX port after one command timeout (~0.5 s of guest time on the
 *   unanswered 0xD3 loop test) and the 0xA9 error; boot with `i8042.noaux` to skip it.
 * - The keyboard answers reset (0xFF: ACK, BAT 0xAA), GETID (ACK 0xAB 0x83, or 0x41 with CTR
 *   translation on), echo, LED/typematic/scan-set commands with their parameter, enable and
 *   disable; anything else gets NAK (0xFE). Host scan codes can be fed with `sendScancodes()`.
 * - Unknown controller commands are ignored and counted (`counters.unknownCommands`).
 *
 * Volatile state is one `State`; save/restore use schema 'tshv.i8042' version 1.
 */
import type { ChipsetDevice, IoRegion, IoResult, IrqLine, PioSize, PortIoIntercept, PowerControl, SavedState, StateUnit } from '../../vid/device.js';
import { IO_READ_INVALID_ACCESS_SIZE } from '../../vid/device.js';
import { openSaved, SavedStateError } from '../../vid/savedstate.js';
import { ByteQueue } from '../common/bytequeue.js';
import {
  ATKBD_CMD_ECHO, ATKBD_CMD_ENABLE, ATKBD_CMD_GETID, ATKBD_CMD_RESEND, ATKBD_CMD_RESET_BAT, ATKBD_CMD_RESET_DEF,
  ATKBD_CMD_RESET_DIS, ATKBD_CMD_SETLEDS, ATKBD_CMD_SETREP, ATKBD_CMD_SSCANSET, ATKBD_ID_1, ATKBD_ID_2,
  ATKBD_ID_2_XLATE, ATKBD_RET_ACK, ATKBD_RET_BAT, ATKBD_RET_ECHO, ATKBD_RET_NAK, I8042_CMD_A20_DISABLE,
  I8042_CMD_A20_ENABLE, I8042_AUX_TEST_CLOCK_HIGH, I8042_CMD_AUX_DISABLE, I8042_CMD_AUX_TEST, I8042_CMD_AUX_ENABLE, I8042_CMD_AUX_LOOP, I8042_CMD_AUX_SEND,
  I8042_CMD_CTL_TEST, I8042_CMD_KBD_DISABLE, I8042_CMD_KBD_ENABLE, I8042_CMD_KBD_LOOP, I8042_CMD_KBD_TEST,
  I8042_CMD_PULSE_FIRST, I8042_CMD_READ_OUTPUT, I8042_CMD_WRITE_OUTPUT, I8042_COMMAND_PORT, I8042_CTR_AUXDIS,
  I8042_CTR_DEFAULT, I8042_CTR_KBDDIS, I8042_CTR_KBDINT, I8042_CTR_SYSFLAG, I8042_CTR_XLATE, I8042_DATA_PORT,
  I8042_KBD_TEST_OK, I8042_OUT_A20, I8042_OUT_AUX_OBF, I8042_OUT_DEFAULT, I8042_OUT_KBD_OBF, I8042_OUT_RESET,
  I8042_SELFTEST_OK, I8042_STR_CMDDAT, I8042_STR_KEYLOCK, I8042_STR_OBF,
} from './spec.js';

export const I8042_SCHEMA = 'tshv.i8042';
export const I8042_VERSION = 1;

/** What the guest's reset request does. */
export type ResetAction = 'reset' | 'poweroff';

export const CONTROLLER_RAM_BYTES = 32;
export const CONTROLLER_QUEUE_BYTES = 8;
export const KEYBOARD_QUEUE_BYTES = 16;
const NO_COMMAND = -1;

export interface I8042Options {
  /** IRQ 1. */
  irq: IrqLine;
  power: PowerControl;
  /** Default 'reset'. */
  resetAction?: ResetAction;
  name?: string;
}

export interface I8042Counters {
  resets: number;            // reset requests passed to PowerControl
  unknownCommands: number;   // controller commands ignored
  keyboardDropped: number;   // keyboard bytes dropped (queue full)
}

interface State {
  ram: Uint8Array;            // controller RAM; byte 0 is the command byte (CTR)
  outputPort: number;         // bits other than the OBF bits 4/5
  cmdDat: boolean;            // STR.CMDDAT: last write went to the command port
  pendingCommand: number;     // controller command waiting for its data byte, or NO_COMMAND
  obFull: boolean;
  obByte: number;
  ctrlQueue: ByteQueue;
  kbdQueue: ByteQueue;
  kbdPendingCommand: number;  // keyboard command waiting for its parameter, or NO_COMMAND
  kbdScanning: boolean;
  kbdScancodeSet: number;     // 1..3
  kbdLeds: number;
  kbdLastSent: number;
}

export class I8042 implements ChipsetDevice, PortIoIntercept, StateUnit {
  // Fixed configuration
  readonly debugName: string;
  readonly resetAction: ResetAction;
  readonly #regions: readonly IoRegion[] = [
    { name: 'data', first: I8042_DATA_PORT, last: I8042_DATA_PORT },
    { name: 'command', first: I8042_COMMAND_PORT, last: I8042_COMMAND_PORT },
  ];

  // Runtime glue
  readonly #irq: IrqLine;
  readonly #power: PowerControl;
  #irqLevel = false;
  readonly counters: I8042Counters = { resets: 0, unknownCommands: 0, keyboardDropped: 0 };

  // Volatile state
  #s: State;

  constructor(opts: I8042Options) {
    this.#irq = opts.irq;
    this.#power = opts.power;
    this.resetAction = opts.resetAction ?? 'reset';
    this.debugName = opts.name ?? 'i8042';
    this.#s = I8042.#freshState();
  }

  static #freshState(): State {
    const ram = new Uint8Array(CONTROLLER_RAM_BYTES);
    ram[0] = I8042_CTR_DEFAULT;
    return {
      ram, outputPort: I8042_OUT_DEFAULT, cmdDat: false, pendingCommand: NO_COMMAND, obFull: false, obByte: 0,
      ctrlQueue: new ByteQueue(CONTROLLER_QUEUE_BYTES), kbdQueue: new ByteQueue(KEYBOARD_QUEUE_BYTES),
      kbdPendingCommand: NO_COMMAND, kbdScanning: true, kbdScancodeSet: 2, kbdLeds: 0, kbdLastSent: 0,
    };
  }

  supportsPio(): PortIoIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#regions; }

  get irqLevel(): boolean { return this.#irqLevel; }
  /** The command byte (CTR). */
  get commandByte(): number { return this.#s.ram[0]!; }
  /** Bytes queued behind the output buffer (controller replies, keyboard bytes). */
  get queuedBytes(): { controller: number; keyboard: number } {
    return { controller: this.#s.ctrlQueue.count, keyboard: this.#s.kbdQueue.count };
  }

  /** Host keyboard input: bytes as the guest should read them (set 1 when CTR translation is on). */
  sendScancodes(bytes: Uint8Array): void {
    const s = this.#s;
    if (!s.kbdScanning) return;
    for (let i = 0; i < bytes.length; i++) this.#kbdReply(bytes[i]!);
    this.#refill();
    this.#updateIrq();
  }

  // ---------------------------------------------------------------- guest side

  ioRead(port: number, size: PioSize): number {
    if (size !== 1) return IO_READ_INVALID_ACCESS_SIZE;
    const s = this.#s;
    if (port === I8042_COMMAND_PORT) return this.#status();
    // Data port: the output buffer (its last value again when empty).
    const v = s.obByte;
    if (s.obFull) {
      s.obFull = false;
      this.#updateIrq();   // drop the line before the next byte raises it again
      this.#refill();
      this.#updateIrq();
    }
    return v;
  }

  ioWrite(port: number, size: PioSize, value: number): IoResult {
    if (size !== 1) return 'InvalidAccessSize';
    const v = value & 0xff;
    if (port === I8042_COMMAND_PORT) {
      this.#s.cmdDat = true;
      this.#command(v);
    } else {
      this.#s.cmdDat = false;
      this.#data(v);
    }
    this.#refill();
    this.#updateIrq();
    return 'ok';
  }

  #status(): number {
    const s = this.#s;
    return (s.obFull ? I8042_STR_OBF : 0) | (s.ram[0]! & I8042_CTR_SYSFLAG) | (s.cmdDat ? I8042_STR_CMDDAT : 0) | I8042_STR_KEYLOCK;
  }

  #command(cmd: number): void {
    const s = this.#s;
    s.pendingCommand = NO_COMMAND;   // a new command cancels one waiting for data
    if (cmd >= 0x20 && cmd <= 0x3f) { this.#ctrlReply(s.ram[cmd & 0x1f]!); return; }
    if (cmd >= 0x60 && cmd <= 0x7f) { s.pendingCommand = cmd; return; }
    if (cmd >= I8042_CMD_PULSE_FIRST) {
      if ((cmd & I8042_OUT_RESET) === 0) this.#systemReset();   // 0xFE and friends pulse the reset line
      return;
    }
    switch (cmd) {
      case I8042_CMD_AUX_DISABLE: s.ram[0] = s.ram[0]! | I8042_CTR_AUXDIS; break;
      case I8042_CMD_AUX_ENABLE: s.ram[0] = s.ram[0]! & ~I8042_CTR_AUXDIS; break;
      case I8042_CMD_CTL_TEST:
        s.ram[0] = s.ram[0]! | I8042_CTR_SYSFLAG;
        this.#ctrlReply(I8042_SELFTEST_OK);
        break;
      case I8042_CMD_KBD_TEST: this.#ctrlReply(I8042_KBD_TEST_OK); break;
      case I8042_CMD_AUX_TEST: this.#ctrlReply(I8042_AUX_TEST_CLOCK_HIGH); break;
      case I8042_CMD_KBD_DISABLE: s.ram[0] = s.ram[0]! | I8042_CTR_KBDDIS; break;
      case I8042_CMD_KBD_ENABLE: s.ram[0] = s.ram[0]! & ~I8042_CTR_KBDDIS; break;
      case I8042_CMD_READ_OUTPUT: {
        const obf = s.obFull ? I8042_OUT_KBD_OBF : 0;
        this.#ctrlReply((s.outputPort & ~(I8042_OUT_KBD_OBF | I8042_OUT_AUX_OBF)) | obf);
        break;
      }
      case I8042_CMD_WRITE_OUTPUT:
      case I8042_CMD_KBD_LOOP:
      case I8042_CMD_AUX_LOOP:
      case I8042_CMD_AUX_SEND:
        s.pendingCommand = cmd;
        break;
      case I8042_CMD_A20_DISABLE: s.outputPort &= ~I8042_OUT_A20; break;
      case I8042_CMD_A20_ENABLE: s.outputPort |= I8042_OUT_A20; break;
      default:
        this.counters.unknownCommands++;
        break;
    }
  }

  #data(v: number): void {
    const s = this.#s;
    const cmd = s.pendingCommand;
    if (cmd === NO_COMMAND) { this.#keyboard(v); return; }
    s.pendingCommand = NO_COMMAND;
    if (cmd >= 0x60 && cmd <= 0x7f) { s.ram[cmd & 0x1f] = v; return; }
    switch (cmd) {
      case I8042_CMD_WRITE_OUTPUT:
        s.outputPort = v & ~(I8042_OUT_KBD_OBF | I8042_OUT_AUX_OBF);
        if ((v & I8042_OUT_RESET) === 0) this.#systemReset();
        break;
      case I8042_CMD_KBD_LOOP:
        this.#ctrlReply(v);
        break;
      default:
        break;   // aux loop / aux send: no aux device; the byte is swallowed
    }
  }

  /** A byte written to the keyboard. */
  #keyboard(v: number): void {
    const s = this.#s;
    const pending = s.kbdPendingCommand;
    if (pending !== NO_COMMAND) {
      s.kbdPendingCommand = NO_COMMAND;
      if (pending === ATKBD_CMD_SETLEDS) { s.kbdLeds = v & 0x07; this.#kbdReply(ATKBD_RET_ACK); return; }
      if (pending === ATKBD_CMD_SETREP) { this.#kbdReply(ATKBD_RET_ACK); return; }
      // ATKBD_CMD_SSCANSET: 0 asks for the current set, 1-3 select one.
      if (v === 0) {
        this.#kbdReply(ATKBD_RET_ACK);
        const set = s.kbdScancodeSet;
        this.#kbdReply((s.ram[0]! & I8042_CTR_XLATE) !== 0 ? (set === 1 ? 0x43 : set === 2 ? 0x41 : 0x3f) : set);
      } else if (v >= 1 && v <= 3) {
        s.kbdScancodeSet = v;
        this.#kbdReply(ATKBD_RET_ACK);
      } else {
        this.#kbdReply(ATKBD_RET_NAK);
      }
      return;
    }
    switch (v) {
      case ATKBD_CMD_RESET_BAT:
        s.kbdQueue.clear();
        s.kbdScanning = true;
        s.kbdScancodeSet = 2;
        s.kbdLeds = 0;
        this.#kbdReply(ATKBD_RET_ACK);
        this.#kbdReply(ATKBD_RET_BAT);
        break;
      case ATKBD_CMD_RESEND:
        this.#kbdReply(s.kbdLastSent);
        break;
      case ATKBD_CMD_RESET_DEF:
        s.kbdScancodeSet = 2;
        this.#kbdReply(ATKBD_RET_ACK);
        break;
      case ATKBD_CMD_RESET_DIS:
        s.kbdScanning = false;
        s.kbdScancodeSet = 2;
        this.#kbdReply(ATKBD_RET_ACK);
        break;
      case ATKBD_CMD_ENABLE:
        s.kbdScanning = true;
        this.#kbdReply(ATKBD_RET_ACK);
        break;
      case ATKBD_CMD_GETID:
        this.#kbdReply(ATKBD_RET_ACK);
        this.#kbdReply(ATKBD_ID_1);
        this.#kbdReply((s.ram[0]! & I8042_CTR_XLATE) !== 0 ? ATKBD_ID_2_XLATE : ATKBD_ID_2);
        break;
      case ATKBD_CMD_ECHO:
        this.#kbdReply(ATKBD_RET_ECHO);
        break;
      case ATKBD_CMD_SETLEDS:
      case ATKBD_CMD_SETREP:
      case ATKBD_CMD_SSCANSET:
        s.kbdPendingCommand = v;
        this.#kbdReply(ATKBD_RET_ACK);
        break;
      default:
        if (v >= 0xf7 && v <= 0xfd) this.#kbdReply(ATKBD_RET_ACK);   // set-3 key type commands: accepted
        else this.#kbdReply(ATKBD_RET_NAK);
        break;
    }
  }

  #ctrlReply(b: number): void {
    // The queue holds at most one reply per command; when full the oldest reply is kept.
    this.#s.ctrlQueue.push(b);
  }

  #kbdReply(b: number): void {
    const s = this.#s;
    if (!s.kbdQueue.push(b)) { this.counters.keyboardDropped++; return; }
    if (b !== ATKBD_CMD_RESEND) s.kbdLastSent = b;
  }

  #refill(): void {
    const s = this.#s;
    if (s.obFull) return;
    if (s.ctrlQueue.count > 0) {
      s.obByte = s.ctrlQueue.shift();
      s.obFull = true;
    } else if (s.kbdQueue.count > 0 && (s.ram[0]! & I8042_CTR_KBDDIS) === 0) {
      s.obByte = s.kbdQueue.shift();
      s.obFull = true;
    }
  }

  #updateIrq(force = false): void {
    const s = this.#s;
    const level = s.obFull && (s.ram[0]! & I8042_CTR_KBDINT) !== 0;
    if (level !== this.#irqLevel || force) {
      this.#irqLevel = level;
      this.#irq.set(level);
    }
  }

  #systemReset(): void {
    this.counters.resets++;
    if (this.resetAction === 'poweroff') this.#power.powerOff();
    else this.#power.reset();
  }

  // ---------------------------------------------------------------- state unit

  reset(): void {
    this.#s = I8042.#freshState();
    this.#updateIrq(true);
  }

  save(): SavedState {
    const s = this.#s;
    const fields = {
      ram: Array.from(s.ram), outputPort: s.outputPort, cmdDat: s.cmdDat, pendingCommand: s.pendingCommand,
      obFull: s.obFull, obByte: s.obByte, ctrlQueue: s.ctrlQueue.toArray(), kbdQueue: s.kbdQueue.toArray(),
      kbdPendingCommand: s.kbdPendingCommand, kbdScanning: s.kbdScanning, kbdScancodeSet: s.kbdScancodeSet,
      kbdLeds: s.kbdLeds, kbdLastSent: s.kbdLastSent,
    } satisfies Record<keyof State, unknown>;
    return { schema: I8042_SCHEMA, version: I8042_VERSION, ...fields };
  }

  restore(saved: unknown): void {
    const r = openSaved(saved, I8042_SCHEMA, I8042_VERSION);
    const ram = r.bytes('ram', CONTROLLER_RAM_BYTES);
    const outputPort = r.bits8('outputPort', ~(I8042_OUT_KBD_OBF | I8042_OUT_AUX_OBF) & 0xff);
    const cmdDat = r.bool('cmdDat');
    const pendingCommand = r.int('pendingCommand', NO_COMMAND, 0xff);
    const obFull = r.bool('obFull');
    const obByte = r.bits8('obByte');
    const ctrl = r.bytes('ctrlQueue', CONTROLLER_QUEUE_BYTES);
    const kbd = r.bytes('kbdQueue', KEYBOARD_QUEUE_BYTES);
    const kbdPendingCommand = r.int('kbdPendingCommand', NO_COMMAND, 0xff);
    const kbdScanning = r.bool('kbdScanning');
    const kbdScancodeSet = r.int('kbdScancodeSet', 1, 3);
    const kbdLeds = r.bits8('kbdLeds', 0x07);
    const kbdLastSent = r.bits8('kbdLastSent');
    r.done();
    if (ram.length !== CONTROLLER_RAM_BYTES) throw new SavedStateError(I8042_SCHEMA, `ram must hold ${CONTROLLER_RAM_BYTES} bytes`);
    const validPending = pendingCommand === NO_COMMAND || (pendingCommand >= 0x60 && pendingCommand <= 0x7f)
      || pendingCommand === I8042_CMD_WRITE_OUTPUT || pendingCommand === I8042_CMD_KBD_LOOP
      || pendingCommand === I8042_CMD_AUX_LOOP || pendingCommand === I8042_CMD_AUX_SEND;
    if (!validPending) throw new SavedStateError(I8042_SCHEMA, `pendingCommand ${pendingCommand} takes no data byte`);
    if (kbdPendingCommand !== NO_COMMAND && kbdPendingCommand !== ATKBD_CMD_SETLEDS
      && kbdPendingCommand !== ATKBD_CMD_SETREP && kbdPendingCommand !== ATKBD_CMD_SSCANSET) {
      throw new SavedStateError(I8042_SCHEMA, `kbdPendingCommand ${kbdPendingCommand} takes no parameter`);
    }

    const s = I8042.#freshState();
    s.ram.set(ram);
    Object.assign(s, { outputPort, cmdDat, pendingCommand, obFull, obByte, kbdPendingCommand, kbdScanning, kbdScancodeSet, kbdLeds, kbdLastSent });
    s.ctrlQueue.load(ctrl);
    s.kbdQueue.load(kbd);
    this.#s = s;
    this.#refill();
    this.#updateIrq(true);
  }
}
