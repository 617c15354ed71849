/**
 * Validation of saved device state: restored state is untrusted input.
 *
 * A saved state is a plain object `{ schema, version, ...fields }` (device.ts `SavedState`).
 * `openSaved()` checks the envelope; the returned reader hands out typed, range-checked fields
 * and `done()` rejects fields nobody asked for, so a state from another schema or a newer
 * version fails loudly instead of half-applying. Devices read every field into locals first
 * and only then replace their state, so a bad input changes nothing.
 *
 * DEVNOTE: only own, enumerable data properties are read (`Object.hasOwn` + a property
 * descriptor), so `__proto__` keys, getters and prototype tricks in the input do nothing.
 */
import { TshvError } from '../base/errors.js';

export class SavedStateError extends TshvError {
  constructor(readonly schema: string, detail: string) {
    super('EINVAL', `saved state ${schema}: ${detail}`);
    this.name = 'SavedStateError';
  }
}

/** Upper bound on any byte array in a saved device state (keeps a hostile input cheap). */
export const MAX_SAVED_BYTES = 1 << 20;

export class SavedReader {
  readonly #obj: object;
  readonly #seen = new Set<string>(['schema', 'version']);

  constructor(readonly schema: string, obj: object) {
    this.#obj = obj;
  }

  #get(name: string): unknown {
    this.#seen.add(name);
    if (!Object.hasOwn(this.#obj, name)) throw new SavedStateError(this.schema, `missing field ${name}`);
    const d = Object.getOwnPropertyDescriptor(this.#obj, name);
    if (d === undefined || !('value' in d)) throw new SavedStateError(this.schema, `field ${name} is not a data property`);
    return d.value;
  }

  /** An integer in [min, max]. */
  int(name: string, min: number, max: number): number {
    const v = this.#get(name);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new SavedStateError(this.schema, `field ${name} must be an integer in [${min}, ${max}]`);
    }
    return v;
  }

  /** An integer in [0, 255] with no bits outside `allowedMask`. */
  bits8(name: string, allowedMask = 0xff): number {
    const v = this.int(name, 0, 0xff);
    if ((v & ~allowedMask) !== 0) throw new SavedStateError(this.schema, `field ${name} has reserved bits set`);
    return v;
  }

  bool(name: string): boolean {
    const v = this.#get(name);
    if (typeof v !== 'boolean') throw new SavedStateError(this.schema, `field ${name} must be a boolean`);
    return v;
  }

  oneOf<T extends string>(name: string, values: readonly T[]): T {
    const v = this.#get(name);
    const found = values.find((x) => x === v);
    if (found === undefined) throw new SavedStateError(this.schema, `field ${name} must be one of ${values.join(', ')}`);
    return found;
  }

  /** An array of byte values, at most `maxLen` long, as a fresh Uint8Array. */
  bytes(name: string, maxLen: number): Uint8Array {
    const v = this.#get(name);
    const limit = Math.min(maxLen, MAX_SAVED_BYTES);
    if (!Array.isArray(v)) throw new SavedStateError(this.schema, `field ${name} must be an array of bytes`);
    const arr: unknown[] = v;
    if (arr.length > limit) throw new SavedStateError(this.schema, `field ${name} holds ${arr.length} bytes, at most ${limit} allowed`);
    const out = new Uint8Array(arr.length);
    for (let i = 0; i < arr.length; i++) {
      const b = arr[i];
      if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 0xff) {
        throw new SavedStateError(this.schema, `field ${name}[${i}] is not a byte`);
      }
      out[i] = b;
    }
    return out;
  }

  /** Reject fields that no reader call asked for. */
  done(): void {
    for (const k of Object.keys(this.#obj)) {
      if (!this.#seen.has(k)) throw new SavedStateError(this.schema, `unknown field ${k}`);
    }
  }
}

/** Check the envelope of a saved state and return a reader over its fields. */
export function openSaved(input: unknown, schema: string, version: number): SavedReader {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new SavedStateError(schema, 'not an object');
  }
  const proto: unknown = Object.getPrototypeOf(input);
  if (proto !== Object.prototype && proto !== null) throw new SavedStateError(schema, 'not a plain object');
  const r = new SavedReader(schema, input);
  const s = Object.getOwnPropertyDescriptor(input, 'schema')?.value as unknown;
  if (s !== schema) throw new SavedStateError(schema, `schema is ${typeof s === 'string' ? JSON.stringify(s.slice(0, 64)) : typeof s}, expected ${schema}`);
  const v = Object.getOwnPropertyDescriptor(input, 'version')?.value as unknown;
  if (v !== version) throw new SavedStateError(schema, `unsupported version ${typeof v === 'number' ? v : typeof v} (this build reads ${version})`);
  return r;
}
