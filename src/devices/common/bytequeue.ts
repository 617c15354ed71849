/**
 * ByteQueue: a fixed-capacity FIFO of bytes (a ring over a Uint8Array).
 *
 * For device queues on guest paths: push/shift allocate nothing, and the capacity is a hard
 * bound (push reports a full queue instead of growing).
 */
export class ByteQueue {
  readonly #buf: Uint8Array;
  #head = 0;
  #count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`bad queue capacity ${capacity}`);
    this.#buf = new Uint8Array(capacity);
  }

  get count(): number { return this.#count; }
  get full(): boolean { return this.#count === this.capacity; }

  /** Append a byte; false (and nothing stored) if the queue is full. */
  push(b: number): boolean {
    if (this.#count === this.capacity) return false;
    this.#buf[(this.#head + this.#count) % this.capacity] = b;
    this.#count++;
    return true;
  }

  /** Remove and return the oldest byte; 0 if empty (callers check `count`). */
  shift(): number {
    if (this.#count === 0) return 0;
    const b = this.#buf[this.#head]!;
    this.#head = (this.#head + 1) % this.capacity;
    this.#count--;
    return b;
  }

  clear(): void {
    this.#head = 0;
    this.#count = 0;
  }

  /** The contents, oldest first (for saved state). */
  toArray(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.#count; i++) out.push(this.#buf[(this.#head + i) % this.capacity]!);
    return out;
  }

  /** Replace the contents; throws RangeError if they do not fit. */
  load(bytes: Uint8Array): void {
    if (bytes.length > this.capacity) throw new RangeError(`${bytes.length} bytes exceed queue capacity ${this.capacity}`);
    this.#buf.set(bytes, 0);
    this.#head = 0;
    this.#count = bytes.length;
  }
}
