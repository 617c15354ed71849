/**
 * PortSink: claims ports that a guest touches on purpose although nothing is behind them, so
 * they neither warn nor count as unmapped bus accesses.
 *
 * The classic case is port 0x80 (the POST-code port), which Linux writes for I/O delays
 * (`outb_p`, CONFIG_IO_DELAY_0X80) thousands of times during boot. Reads return all-ones, as an
 * open bus would; writes are accepted and dropped. The dispatcher still counts the accesses
 * per device (statistics show how often the guest used them).
 */
import type { ChipsetDevice, IoRegion, IoResult, PioSize, PortIoIntercept } from '../../vid/device.js';

export class PortSink implements ChipsetDevice, PortIoIntercept {
  readonly #regions: readonly IoRegion[];

  constructor(readonly debugName: string, regions: readonly IoRegion[]) {
    this.#regions = regions.map((r) => ({ ...r }));
  }

  supportsPio(): PortIoIntercept { return this; }
  pioRegions(): readonly IoRegion[] { return this.#regions; }

  ioRead(_port: number, size: PioSize): number {
    return size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff;
  }

  ioWrite(_port: number, _size: PioSize, _value: number): IoResult {
    return 'ok';
  }
}
