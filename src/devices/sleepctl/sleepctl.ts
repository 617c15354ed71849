/**
 * SleepControl: the sleep control, sleep status and reset registers of tshv's hardware-reduced
 * ACPI platform (the FADT's SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG; ADR 0012).
 *
 * Three byte-wide I/O registers at ports the composition root gives (the platform's are
 * 0x600, 0x601, 0x602: src/loader/acpi/tables.ts PLATFORM_SLEEP_PORTS, the same numbers the
 * FADT announces):
 *   control  write (SLP_TYP << 2) | SLP_EN: with SLP_TYP = the S5 value of the DSDT's \_S5
 *            (`s5SleepType`), the machine powers off; SLP_EN with any other type is refused
 *            (counted, no effect: the platform has no other sleeping state and declares none);
 *            a write without SLP_EN does nothing. Reads return 0 (the register is write-only).
 *   status   reads 0: WAK_STS is never set, because the machine never sleeps and wakes; a
 *            write (Linux writes WAK_STS to clear it before sleeping) changes nothing.
 *   reset    a write of `resetValue` resets the machine (or powers it off, with resetAction
 *            'poweroff', as the i8042 and port 0x92 do); other values do nothing. Reads 0.
 * Any access that is not one byte is refused (InvalidAccessSize: the dispatcher drops the
 * write, reads all-ones, and counts it), as the FADT declares byte access.
 *
 * DEVNOTE: the device keeps no volatile state (WAK_STS is constant 0), so it is no StateUnit and
 * adds no save-file section. A guest that asks for S1-S4 despite the DSDT then polls WAK_STS
 * forever; that costs the host nothing more than any guest spin loop.
 */
import type { ChipsetDevice, IoRegion, IoResult, PioSize, PortIoIntercept, PowerControl } from '../../vid/device.js';
import { IO_READ_INVALID_ACCESS_SIZE } from '../../vid/device.js';
import { TshvError } from '../../base/errors.js';
import type { ResetAction } from '../i8042/i8042.js';
import { sleepRequest } from './spec.js';

export interface SleepControlOptions {
  power: PowerControl;
  /** Ports of the three registers; distinct. */
  ports: { control: number; status: number; reset: number };
  /** SLP_TYP of S5 (0-7), the first element of the DSDT's \_S5 package. */
  s5SleepType: number;
  /** RESET_VALUE (a byte), as in the FADT. */
  resetValue: number;
  /** What a reset-register write does; default 'reset'. */
  resetAction?: ResetAction;
  name?: string;
}

export class SleepControl implements ChipsetDevice, PortIoIntercept {
  // Fixed configuration
  readonly debugName: string;
  readonly resetAction: ResetAction;
  readonly #regions: readonly IoRegion[];
  readonly #control: number;
  readonly #reset: number;
  readonly #s5: number;
  readonly #resetValue: number;

  // Runtime glue (counters, read by tests and statistics)
  readonly #power: PowerControl;
  powerOffs = 0;
  resets = 0;
  /** SLP_EN writes with a sleep type other than S5. */
  refusedSleeps = 0;

  constructor(opts: SleepControlOptions) {
    const { control, status, reset } = opts.ports;
    for (const p of [control, status, reset]) {
      if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new TshvError('EINVAL', `sleep control: port ${String(p)} is not 0-0xFFFF`);
    }
    if (new Set([control, status, reset]).size !== 3) throw new TshvError('EINVAL', 'sleep control: the three register ports must differ');
    if (!Number.isInteger(opts.s5SleepType) || opts.s5SleepType < 0 || opts.s5SleepType > 7) {
      throw new TshvError('EINVAL', `sleep control: SLP_TYP ${String(opts.s5SleepType)} is not 0-7`);
    }
    if (!Number.isInteger(opts.resetValue) || opts.resetValue < 0 || opts.resetValue > 0xff) {
      throw new TshvError('EINVAL', `sleep control: RESET_VALUE ${String(opts.resetValue)} is not a byte`);
    }
    this.debugName = opts.name ?? 'sleepctl';
    this.resetAction = opts.resetAction ?? 'reset';
    this.#power = opts.power;
    this.#control = control;
    this.#reset = reset;
    this.#s5 = opts.s5SleepType;
    this.#resetValue = opts.resetValue;
    this.#regions = [
      { name: 'sleep-control', first: control, last: control },
      { name: 'sleep-status', first: status, last: status },
      { name: 'reset', first: reset, last: reset },
    ];
  }

  supportsPio(): PortIoIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#regions; }

  ioRead(_port: number, size: PioSize): number {
    if (size !== 1) return IO_READ_INVALID_ACCESS_SIZE;
    return 0;
  }

  ioWrite(port: number, size: PioSize, value: number): IoResult {
    if (size !== 1) return 'InvalidAccessSize';
    const v = value & 0xff;
    if (port === this.#control) {
      const type = sleepRequest(v);
      if (type === this.#s5) {
        this.powerOffs++;
        this.#power.powerOff();
      } else if (type >= 0) {
        this.refusedSleeps++;
      }
    } else if (port === this.#reset) {
      if (v === this.#resetValue) {
        this.resets++;
        if (this.resetAction === 'poweroff') this.#power.powerOff();
        else this.#power.reset();
      }
    }
    // The status register: WAK_STS is write-1-to-clear and always clear.
    return 'ok';
  }
}
