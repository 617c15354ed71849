/**
 * Test doubles for src/vid and src/devices tests: a recording device, IRQ line and logger.
 * Used only by *.test.ts files; no production code imports this module.
 */
import { Logger } from '../base/log.js';
import type { ChipsetDevice, IoRegion, IoResult, MmioIntercept, PioSize, PortIoIntercept } from './device.js';

/** A Logger that records warnings instead of printing them. */
export class CaptureLogger extends Logger {
  readonly lines: string[] = [];
  constructor() { super('test'); }
  override warn(msg: string): void { this.lines.push(msg); }
}

export interface Access {
  kind: 'ioRead' | 'ioWrite' | 'mmioRead' | 'mmioWrite';
  addr: number;
  size: number;
  value?: number;
  bytes?: number[];
}

/**
 * A device that records every access. PIO reads return `pioValue(port, size)`; MMIO reads fill
 * each byte with the low byte of its address. `fail` makes every access return that error.
 */
export class RecordingDevice implements ChipsetDevice, PortIoIntercept, MmioIntercept {
  readonly log: Access[] = [];
  fail: 'InvalidRegister' | 'InvalidAccessSize' | 'UnalignedAccess' | undefined;

  constructor(
    readonly debugName: string,
    readonly pio: readonly IoRegion[] = [],
    readonly mmio: readonly IoRegion[] = [],
    readonly pioValue: (port: number, size: number) => number = (port) => port & 0xff,
  ) {}

  supportsPio(): PortIoIntercept | undefined { return this.pio.length > 0 ? this : undefined; }
  supportsMmio(): MmioIntercept | undefined { return this.mmio.length > 0 ? this : undefined; }
  pioRegions(): readonly IoRegion[] { return this.pio; }
  mmioRegions(): readonly IoRegion[] { return this.mmio; }

  ioRead(port: number, size: PioSize): number {
    this.log.push({ kind: 'ioRead', addr: port, size });
    if (this.fail === 'InvalidRegister') return -1;
    if (this.fail === 'InvalidAccessSize') return -2;
    if (this.fail === 'UnalignedAccess') return -3;
    return this.pioValue(port, size);
  }
  ioWrite(port: number, size: PioSize, value: number): IoResult {
    this.log.push({ kind: 'ioWrite', addr: port, size, value });
    return this.fail ?? 'ok';
  }
  mmioRead(gpa: number, data: Uint8Array): IoResult {
    this.log.push({ kind: 'mmioRead', addr: gpa, size: data.length });
    for (let i = 0; i < data.length; i++) data[i] = (gpa + i) & 0xff;
    return this.fail ?? 'ok';
  }
  mmioWrite(gpa: number, data: Uint8Array): IoResult {
    this.log.push({ kind: 'mmioWrite', addr: gpa, size: data.length, bytes: Array.from(data) });
    return this.fail ?? 'ok';
  }
}

/** An IrqLine that records every level driven. */
export class RecordingIrq {
  readonly levels: boolean[] = [];
  level = false;
  set(level: boolean): void { this.levels.push(level); this.level = level; }
  /** Number of rising edges seen. */
  get edges(): number {
    let n = 0;
    let prev = false;
    for (const l of this.levels) { if (l && !prev) n++; prev = l; }
    return n;
  }
}
