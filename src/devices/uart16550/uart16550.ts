/**
 * Serial16550: a 16550A UART on eight I/O ports (COM1: 0x3F8-0x3FF, IRQ 4).
 *
 * Spec: National Semiconductor PC16550D "Universal Asynchronous Receiver/Transmitter with
 * FIFOs" datasheet; register names verbatim (spec.ts). Behaviour checked against what Linux's
 * drivers/tty/serial/8250 (8250_port.c) does with a stock PC port: the IER read-back test, the
 * loopback test (MCR = LOOP|OUT2|RTS must read MSR[7:4] = DCD|CTS), the FCR/IIR[7:6] probe
 * that identifies a 16550A, and the THRE re-assertion test in serial8250_do_startup.
 *
 * Model:
 * - Transmission is instantaneous: a THR write goes straight to `onTransmit` (or, in loopback,
 *   into the receive FIFO), so LSR.THRE and LSR.TEMT always read 1 and the TX FIFO is always
 *   empty. The THRE interrupt is re-armed by every THR write and by a rising edge of IER.ETBEI
 *   while THRE is set (as the 8250 driver's THRE test and QEMU expect); reading IIR while THRE
 *   is the reported source clears it.
 * - Receive: a 16-byte FIFO (1 byte with FIFOs disabled, the 16450 holding register), fed
 *   from a bounded host-side queue (`receive()`). Host bytes wait in the queue while the FIFO
 *   is full or the UART is in loopback (the serial input is disconnected there) and move in as
 *   the guest reads; if the queue itself is full, the bytes are dropped, counted
 *   (`counters.hostDropped`) and LSR.OE is set, as a real overrun would.
 * - Interrupt priority (IIR): receiver line status (LSR.OE, cleared by reading LSR) >
 *   received data (FIFO at trigger level, or the character timeout) > THRE > modem status
 *   (MSR deltas, cleared by reading MSR). DEVNOTE: there is no character-time clock; the
 *   character timeout is treated as already elapsed whenever the FIFO holds data below the
 *   trigger level (IIR 0x0C). The guest then drains the FIFO; the trigger level still decides
 *   which of the two codes it sees.
 * - The IRQ output is `OUT2 && !LOOP && interrupt pending`: on a PC the OUT2 pin gates the
 *   interrupt buffer, and loopback forces the modem outputs inactive. The line is driven only
 *   when its level changes.
 * - Modem inputs: outside loopback CTS, DSR and DCD are asserted and RI is not (a connected
 *   null-modem); in loopback CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2, with the delta bits
 *   following (TERI on RI's trailing edge).
 * - Only 1-byte accesses are accepted; wider ones get InvalidAccessSize (the bus returns
 *   all-ones). LSR and MSR writes (factory test on real parts) are ignored.
 *
 * All volatile state is in one `State` object; `save()`/`restore()` use the schema
 * 'tshv.uart16550' version 1, validated on restore.
 */
import type { ChipsetDevice, IoRegion, IoResult, IrqLine, PioSize, PortIoIntercept, SavedState, StateUnit } from '../../vid/device.js';
import { IO_READ_INVALID_ACCESS_SIZE } from '../../vid/device.js';
import { openSaved, SavedStateError } from '../../vid/savedstate.js';
import {
  FCR_CLEAR_RCVR, FCR_ENABLE_FIFO, FCR_STORED_MASK, FCR_TRIGGER_LEVELS, IER_MASK, IER_MSI, IER_RDI, IER_RLSI,
  IER_THRI, IIR_FIFO_ENABLED, IIR_MSI, IIR_NO_INT, IIR_RDI, IIR_RLSI, IIR_RX_TIMEOUT, IIR_THRI, LCR_DLAB,
  LSR_DR, LSR_ERROR_BITS, LSR_OE, LSR_TEMT, LSR_THRE, MCR_DTR, MCR_LOOP, MCR_MASK, MCR_OUT1, MCR_OUT2, MCR_RTS,
  MSR_CTS, MSR_DCD, MSR_DCTS, MSR_DDCD, MSR_DDSR, MSR_DELTA_MASK, MSR_DSR, MSR_RI, MSR_TERI, UART_FIFO_SIZE,
  UART_IER, UART_IIR, UART_LCR, UART_LSR, UART_MCR, UART_MSR, UART_RBR, UART_SCR,
} from './spec.js';

export const UART16550_SCHEMA = 'tshv.uart16550';
export const UART16550_VERSION = 1;
export const DEFAULT_HOST_QUEUE_BYTES = 4096;
const MAX_HOST_QUEUE_BYTES = 1 << 20;

/** Modem inputs outside loopback: a connected null-modem (CTS, DSR, DCD asserted). */
const MSR_INPUTS_CONNECTED = MSR_CTS | MSR_DSR | MSR_DCD;

export interface Serial16550Options {
  /** First of the eight ports (COM1 0x3F8). */
  base: number;
  irq: IrqLine;
  /** Called with each byte the guest transmits (not in loopback). */
  onTransmit: (byte: number) => void;
  /** Capacity of the host-side receive queue beyond the FIFO (default 4096). */
  hostQueueBytes?: number;
  /** Name in statistics (default 'com@<base>'). */
  name?: string;
}

/** Runtime counters, not part of the saved state. */
export interface Serial16550Counters {
  transmitted: number;
  received: number;       // bytes the guest read from RBR
  hostDropped: number;    // host bytes dropped because the host queue was full
  overruns: number;       // times LSR.OE was set
}

interface State {
  ier: number;
  fcr: number;            // stored FCR bits (FCR_STORED_MASK)
  lcr: number;
  mcr: number;
  scr: number;
  dll: number;
  dlm: number;
  lsrErrors: number;      // sticky LSR error bits, cleared by reading LSR
  msrDelta: number;       // MSR bits 3:0, cleared by reading MSR
  thrPending: boolean;    // THRE interrupt armed
  rbr: number;            // last byte read (returned again when the FIFO is empty)
  rx: Uint8Array;         // receive FIFO ring, UART_FIFO_SIZE
  rxHead: number;
  rxCount: number;
  host: Uint8Array;       // host queue ring
  hostHead: number;
  hostCount: number;
}

function inputsFor(mcr: number): number {
  if ((mcr & MCR_LOOP) === 0) return MSR_INPUTS_CONNECTED;
  return ((mcr & MCR_RTS) !== 0 ? MSR_CTS : 0) | ((mcr & MCR_DTR) !== 0 ? MSR_DSR : 0)
    | ((mcr & MCR_OUT1) !== 0 ? MSR_RI : 0) | ((mcr & MCR_OUT2) !== 0 ? MSR_DCD : 0);
}

export class Serial16550 implements ChipsetDevice, PortIoIntercept, StateUnit {
  // Fixed configuration
  readonly debugName: string;
  readonly base: number;
  readonly hostQueueBytes: number;
  readonly #regions: readonly IoRegion[];

  // Runtime glue
  readonly #irq: IrqLine;
  readonly #onTransmit: (byte: number) => void;
  #irqLevel = false;
  readonly counters: Serial16550Counters = { transmitted: 0, received: 0, hostDropped: 0, overruns: 0 };

  // Volatile state
  #s: State;

  constructor(opts: Serial16550Options) {
    if (!Number.isInteger(opts.base) || opts.base < 0 || opts.base > 0xfff8) throw new RangeError(`bad UART base port ${opts.base}`);
    const cap = opts.hostQueueBytes ?? DEFAULT_HOST_QUEUE_BYTES;
    if (!Number.isInteger(cap) || cap < 0 || cap > MAX_HOST_QUEUE_BYTES) throw new RangeError(`bad UART host queue size ${cap}`);
    this.base = opts.base;
    this.hostQueueBytes = cap;
    this.debugName = opts.name ?? `com@${opts.base.toString(16)}`;
    this.#regions = [{ name: 'uart16550', first: opts.base, last: opts.base + 7 }];
    this.#irq = opts.irq;
    this.#onTransmit = opts.onTransmit;
    this.#s = this.#freshState();
  }

  #freshState(): State {
    return {
      ier: 0, fcr: 0, lcr: 0, mcr: 0, scr: 0, dll: 0x0c, dlm: 0,   // divisor 12: 9600 baud
      lsrErrors: 0, msrDelta: 0, thrPending: false, rbr: 0,
      rx: new Uint8Array(UART_FIFO_SIZE), rxHead: 0, rxCount: 0,
      host: new Uint8Array(this.hostQueueBytes), hostHead: 0, hostCount: 0,
    };
  }

  supportsPio(): PortIoIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#regions; }

  // ---------------------------------------------------------------- host side

  /** Host input (the far end of the serial line). Bytes beyond the host queue are dropped and counted. */
  receive(bytes: Uint8Array): void {
    const s = this.#s;
    const cap = s.host.length;
    let dropped = 0;
    const direct = (s.mcr & MCR_LOOP) === 0;
    const rxCap = this.#rxCapacity();
    for (let i = 0; i < bytes.length; i++) {
      // Straight into the FIFO while it has room and nothing older waits in the host queue.
      if (direct && s.hostCount === 0 && s.rxCount < rxCap) { this.#rxPush(bytes[i]!); continue; }
      if (s.hostCount >= cap) { dropped = bytes.length - i; break; }
      s.host[(s.hostHead + s.hostCount) % cap] = bytes[i]!;
      s.hostCount++;
    }
    if (dropped > 0) {
      this.counters.hostDropped += dropped;
      this.#overrun();
    }
    this.#pump();
    this.#updateIrq();
  }

  /** Bytes waiting for the guest: in the receive FIFO, and in the host queue behind it. */
  get rxFifoCount(): number { return this.#s.rxCount; }
  get hostQueueCount(): number { return this.#s.hostCount; }
  /** The level currently driven on the IRQ line. */
  get irqLevel(): boolean { return this.#irqLevel; }

  // ---------------------------------------------------------------- guest side

  ioRead(port: number, size: PioSize): number {
    if (size !== 1) return IO_READ_INVALID_ACCESS_SIZE;
    const s = this.#s;
    switch (port - this.base) {
      case UART_RBR:
        if ((s.lcr & LCR_DLAB) !== 0) return s.dll;
        return this.#readRbr();
      case UART_IER:
        return (s.lcr & LCR_DLAB) !== 0 ? s.dlm : s.ier;
      case UART_IIR: {
        const id = this.#pendingId();
        if (id === IIR_THRI) {
          s.thrPending = false;    // reading IIR clears a THRE interrupt it reports
          this.#updateIrq();
        }
        return id | ((s.fcr & FCR_ENABLE_FIFO) !== 0 ? IIR_FIFO_ENABLED : 0);
      }
      case UART_LCR:
        return s.lcr;
      case UART_MCR:
        return s.mcr;
      case UART_LSR: {
        const v = (s.rxCount > 0 ? LSR_DR : 0) | s.lsrErrors | LSR_THRE | LSR_TEMT;
        if (s.lsrErrors !== 0) {
          s.lsrErrors = 0;
          this.#updateIrq();
        }
        return v;
      }
      case UART_MSR: {
        const v = inputsFor(s.mcr) | s.msrDelta;
        if (s.msrDelta !== 0) {
          s.msrDelta = 0;
          this.#updateIrq();
        }
        return v;
      }
      case UART_SCR:
        return s.scr;
      default:
        return 0xff;   // unreachable: the dispatcher only sends ports inside the region
    }
  }

  ioWrite(port: number, size: PioSize, value: number): IoResult {
    if (size !== 1) return 'InvalidAccessSize';
    const s = this.#s;
    const v = value & 0xff;
    switch (port - this.base) {
      case UART_RBR:   // THR / DLL
        if ((s.lcr & LCR_DLAB) !== 0) s.dll = v;
        else this.#writeThr(v);
        break;
      case UART_IER:   // IER / DLM
        if ((s.lcr & LCR_DLAB) !== 0) s.dlm = v;
        else this.#writeIer(v);
        break;
      case UART_IIR:   // FCR
        this.#writeFcr(v);
        break;
      case UART_LCR:
        s.lcr = v;
        break;
      case UART_MCR:
        this.#writeMcr(v);
        break;
      case UART_LSR:
      case UART_MSR:
        break;         // factory-test writes: ignored
      case UART_SCR:
        s.scr = v;
        break;
      default:
        break;
    }
    this.#updateIrq();
    return 'ok';
  }

  #readRbr(): number {
    const s = this.#s;
    if (s.rxCount > 0) {
      s.rbr = s.rx[s.rxHead]!;
      s.rxHead = (s.rxHead + 1) % UART_FIFO_SIZE;
      s.rxCount--;
      this.counters.received++;
      this.#pump();
      this.#updateIrq();
    }
    return s.rbr;
  }

  #writeThr(v: number): void {
    const s = this.#s;
    if ((s.mcr & MCR_LOOP) !== 0) {
      if (s.rxCount < this.#rxCapacity()) this.#rxPush(v);
      else this.#overrun();   // the byte in the shift register is lost; the FIFO keeps its contents
    } else {
      this.counters.transmitted++;
      this.#onTransmit(v);
    }
    s.thrPending = true;      // the transmitter is empty again at once
  }

  #writeIer(v: number): void {
    const s = this.#s;
    const nv = v & IER_MASK;
    const changed = s.ier ^ nv;
    s.ier = nv;
    if ((changed & IER_THRI) !== 0) {
      // A rising edge of ETBEI with THRE set raises the THRE interrupt (LSR.THRE is always set here).
      s.thrPending = (nv & IER_THRI) !== 0;
    }
  }

  #writeFcr(v: number): void {
    const s = this.#s;
    const enable = v & FCR_ENABLE_FIFO;
    if (enable !== (s.fcr & FCR_ENABLE_FIFO)) this.#clearRx();   // changing FIFO mode resets both FIFOs
    if (enable !== 0) {
      if ((v & FCR_CLEAR_RCVR) !== 0) this.#clearRx();
      s.fcr = v & FCR_STORED_MASK;   // FCR_CLEAR_XMIT: the TX FIFO is always empty here
    } else {
      s.fcr = 0;                     // other bits are programmed only together with bit 0
    }
    this.#pump();
  }

  #writeMcr(v: number): void {
    const s = this.#s;
    const nv = v & MCR_MASK;
    const before = inputsFor(s.mcr);
    const after = inputsFor(nv);
    const diff = before ^ after;
    let delta = 0;
    if ((diff & MSR_CTS) !== 0) delta |= MSR_DCTS;
    if ((diff & MSR_DSR) !== 0) delta |= MSR_DDSR;
    if ((before & MSR_RI) !== 0 && (after & MSR_RI) === 0) delta |= MSR_TERI;
    if ((diff & MSR_DCD) !== 0) delta |= MSR_DDCD;
    s.msrDelta |= delta;
    s.mcr = nv;
    this.#pump();   // leaving loopback reconnects the host input
  }

  // ---------------------------------------------------------------- internals

  #rxCapacity(): number {
    return (this.#s.fcr & FCR_ENABLE_FIFO) !== 0 ? UART_FIFO_SIZE : 1;
  }

  #rxPush(b: number): void {
    const s = this.#s;
    s.rx[(s.rxHead + s.rxCount) % UART_FIFO_SIZE] = b;
    s.rxCount++;
  }

  #clearRx(): void {
    this.#s.rxHead = 0;
    this.#s.rxCount = 0;
  }

  #overrun(): void {
    this.#s.lsrErrors |= LSR_OE;
    this.counters.overruns++;
  }

  /** Move host bytes into the receive FIFO while it has room (not in loopback). */
  #pump(): void {
    const s = this.#s;
    if ((s.mcr & MCR_LOOP) !== 0) return;
    const cap = this.#rxCapacity();
    const hcap = s.host.length;
    while (s.hostCount > 0 && s.rxCount < cap) {
      this.#rxPush(s.host[s.hostHead]!);
      s.hostHead = (s.hostHead + 1) % hcap;
      s.hostCount--;
    }
  }

  /** The IIR interrupt identification (bits 3:0) of the highest-priority pending source. */
  #pendingId(): number {
    const s = this.#s;
    if ((s.ier & IER_RLSI) !== 0 && (s.lsrErrors & LSR_ERROR_BITS) !== 0) return IIR_RLSI;
    if ((s.ier & IER_RDI) !== 0 && s.rxCount > 0) {
      if ((s.fcr & FCR_ENABLE_FIFO) === 0) return IIR_RDI;
      return s.rxCount >= FCR_TRIGGER_LEVELS[s.fcr >>> 6]! ? IIR_RDI : IIR_RX_TIMEOUT;
    }
    if ((s.ier & IER_THRI) !== 0 && s.thrPending) return IIR_THRI;
    if ((s.ier & IER_MSI) !== 0 && (s.msrDelta & MSR_DELTA_MASK) !== 0) return IIR_MSI;
    return IIR_NO_INT;
  }

  #updateIrq(force = false): void {
    const s = this.#s;
    const level = (s.mcr & (MCR_OUT2 | MCR_LOOP)) === MCR_OUT2 && this.#pendingId() !== IIR_NO_INT;
    if (level !== this.#irqLevel || force) {
      this.#irqLevel = level;
      this.#irq.set(level);
    }
  }

  // ---------------------------------------------------------------- state unit

  reset(): void {
    this.#s = this.#freshState();
    this.#updateIrq(true);
  }

  save(): SavedState {
    const s = this.#s;
    const rx: number[] = [];
    for (let i = 0; i < s.rxCount; i++) rx.push(s.rx[(s.rxHead + i) % UART_FIFO_SIZE]!);
    const host: number[] = [];
    for (let i = 0; i < s.hostCount; i++) host.push(s.host[(s.hostHead + i) % s.host.length]!);
    const fields = {
      ier: s.ier, fcr: s.fcr, lcr: s.lcr, mcr: s.mcr, scr: s.scr, dll: s.dll, dlm: s.dlm,
      lsrErrors: s.lsrErrors, msrDelta: s.msrDelta, thrPending: s.thrPending, rbr: s.rbr,
      rx, rxHead: 0, rxCount: rx.length, host, hostHead: 0, hostCount: host.length,
    } satisfies Record<keyof State, unknown>;
    // Ring positions are normalised away: the saved form is the queue contents in order.
    const { rxHead: _rh, rxCount: _rc, hostHead: _hh, hostCount: _hc, ...saved } = fields;
    return { schema: UART16550_SCHEMA, version: UART16550_VERSION, ...saved };
  }

  restore(saved: unknown): void {
    const r = openSaved(saved, UART16550_SCHEMA, UART16550_VERSION);
    const ier = r.bits8('ier', IER_MASK);
    const fcr = r.bits8('fcr', FCR_STORED_MASK);
    const lcr = r.bits8('lcr');
    const mcr = r.bits8('mcr', MCR_MASK);
    const scr = r.bits8('scr');
    const dll = r.bits8('dll');
    const dlm = r.bits8('dlm');
    const lsrErrors = r.bits8('lsrErrors', LSR_ERROR_BITS);
    const msrDelta = r.bits8('msrDelta', MSR_DELTA_MASK);
    const thrPending = r.bool('thrPending');
    const rbr = r.bits8('rbr');
    const rxBytes = r.bytes('rx', UART_FIFO_SIZE);
    const hostBytes = r.bytes('host', this.hostQueueBytes);
    r.done();
    const rxCap = (fcr & FCR_ENABLE_FIFO) !== 0 ? UART_FIFO_SIZE : 1;
    if (rxBytes.length > rxCap) throw new SavedStateError(UART16550_SCHEMA, `rx holds ${rxBytes.length} bytes, FIFO mode allows ${rxCap}`);

    const s = this.#freshState();
    Object.assign(s, { ier, fcr, lcr, mcr, scr, dll, dlm, lsrErrors, msrDelta, thrPending, rbr });
    s.rx.set(rxBytes);
    s.rxCount = rxBytes.length;
    s.host.set(hostBytes);
    s.hostCount = hostBytes.length;
    this.#s = s;
    this.#pump();
    this.#updateIrq(true);
  }
}
