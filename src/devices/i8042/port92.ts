/**
 * SystemControlPortA: port 0x92, "fast A20 and reset" (PS/2 System Control Port A).
 *
 * Bit 0 (FAST_RESET): writing it as 1 when it was 0 resets the machine; bit 1 (A20_ENABLE)
 * gates address line 20 (recorded only: tshv does not emulate A20 wrap-around). The other bits
 * are kept as written. What a reset does is configurable like the i8042's: 'reset' or
 * 'poweroff' through PowerControl.
 *
 * Saved state: schema 'tshv.port92' version 1.
 */
import type { ChipsetDevice, IoRegion, IoResult, PioSize, PortIoIntercept, PowerControl, SavedState, StateUnit } from '../../vid/device.js';
import { IO_READ_INVALID_ACCESS_SIZE } from '../../vid/device.js';
import { openSaved } from '../../vid/savedstate.js';
import type { ResetAction } from './i8042.js';

export const PORT92 = 0x92;
export const PORT92_FAST_RESET = 0x01;
export const PORT92_A20_ENABLE = 0x02;
export const PORT92_SCHEMA = 'tshv.port92';
export const PORT92_VERSION = 1;

export interface SystemControlPortAOptions {
  power: PowerControl;
  resetAction?: ResetAction;
  name?: string;
}

interface State {
  value: number;
}

export class SystemControlPortA implements ChipsetDevice, PortIoIntercept, StateUnit {
  // Fixed configuration
  readonly debugName: string;
  readonly resetAction: ResetAction;
  readonly #regions: readonly IoRegion[] = [{ name: 'port92', first: PORT92, last: PORT92 }];

  // Runtime glue
  readonly #power: PowerControl;
  resets = 0;

  // Volatile state
  #s: State = { value: PORT92_A20_ENABLE };

  constructor(opts: SystemControlPortAOptions) {
    this.#power = opts.power;
    this.resetAction = opts.resetAction ?? 'reset';
    this.debugName = opts.name ?? 'port92';
  }

  supportsPio(): PortIoIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#regions; }

  /** Whether the guest has A20 enabled (informational). */
  get a20Enabled(): boolean { return (this.#s.value & PORT92_A20_ENABLE) !== 0; }

  ioRead(_port: number, size: PioSize): number {
    if (size !== 1) return IO_READ_INVALID_ACCESS_SIZE;
    return this.#s.value;
  }

  ioWrite(_port: number, size: PioSize, value: number): IoResult {
    if (size !== 1) return 'InvalidAccessSize';
    const old = this.#s.value;
    const v = value & 0xff;
    this.#s.value = v;
    if ((v & PORT92_FAST_RESET) !== 0 && (old & PORT92_FAST_RESET) === 0) {
      this.resets++;
      if (this.resetAction === 'poweroff') this.#power.powerOff();
      else this.#power.reset();
    }
    return 'ok';
  }

  reset(): void { this.#s = { value: PORT92_A20_ENABLE }; }

  save(): SavedState {
    const fields = { value: this.#s.value } satisfies Record<keyof State, unknown>;
    return { schema: PORT92_SCHEMA, version: PORT92_VERSION, ...fields };
  }

  restore(saved: unknown): void {
    const r = openSaved(saved, PORT92_SCHEMA, PORT92_VERSION);
    const value = r.bits8('value');
    r.done();
    this.#s = { value };
  }
}
