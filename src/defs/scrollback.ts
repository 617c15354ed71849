/**
 * A bounded byte ring addressed by absolute stream offsets: the serial console's scrollback.
 *
 * The worker keeps one (the source of truth, which survives a service restart); the service
 * mirrors it from the worker's `serial` events to answer console reads without a round trip.
 * Offsets count every byte ever written, so a reader that asks for `since` learns how many
 * bytes it lost when the ring overwrote them. Writes are allocation-free.
 */
export class Scrollback {
  readonly #buf: Uint8Array;
  #end = 0;
  /** No byte below this offset is held (after reset()). */
  #floor = 0;

  constructor(readonly capacity: number) {
    this.#buf = new Uint8Array(capacity);
  }

  /** Total bytes ever written (the offset after the last byte). */
  get end(): number { return this.#end; }
  /** Offset of the oldest byte still held. */
  get start(): number { return Math.max(this.#floor, this.#end - this.capacity); }

  write(bytes: Uint8Array): void {
    const cap = this.capacity;
    let src = bytes;
    if (src.length > cap) {
      this.#end += src.length - cap;
      src = src.subarray(src.length - cap);
    }
    let pos = this.#end % cap;
    let i = 0;
    while (i < src.length) {
      const n = Math.min(src.length - i, cap - pos);
      this.#buf.set(src.subarray(i, i + n), pos);
      i += n;
      pos = (pos + n) % cap;
    }
    this.#end += src.length;
  }

  writeByte(b: number): void {
    this.#buf[this.#end % this.capacity] = b;
    this.#end++;
  }

  /** Restart the stream at `offset` with these bytes (a service mirroring a worker's scrollback). */
  reset(offset: number, bytes: Uint8Array): void {
    this.#end = Math.max(0, offset - Math.min(bytes.length, this.capacity));
    this.#floor = this.#end;
    this.write(bytes.length > this.capacity ? bytes.subarray(bytes.length - this.capacity) : bytes);
  }

  /** The bytes from `since` (clamped to what is held) to the end, plus how many were lost. */
  read(since: number, maxBytes = this.capacity): { start: number; end: number; lost: number; data: Uint8Array } {
    const from = Math.min(Math.max(since, this.start), this.#end);
    const lost = since < this.start ? this.start - since : 0;
    const to = Math.min(this.#end, from + maxBytes);
    const out = new Uint8Array(to - from);
    for (let off = from, i = 0; off < to;) {
      const pos = off % this.capacity;
      const n = Math.min(to - off, this.capacity - pos);
      out.set(this.#buf.subarray(pos, pos + n), i);
      i += n;
      off += n;
    }
    return { start: from, end: to, lost, data: out };
  }
}
