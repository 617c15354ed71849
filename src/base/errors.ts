/**
 * Error types shared by every layer.
 *
 * TshvError carries a stable machine-readable `code` (used by the CLI for exit codes and by the
 * API for error bodies) next to a human message. Errors on guest-reachable paths are never
 * thrown to crash the process: they are returned or converted at the boundary that owns the
 * policy (the VID for bus errors, the worker for fatal VP errors).
 */
export type ErrorCode =
  | 'EINVAL'        // bad argument from the user or API caller
  | 'ENOTSUP'       // feature or backend not available on this host
  | 'EBACKEND'      // the processor backend failed (ioctl error, emulator internal error)
  | 'EIMAGE'        // a kernel / initrd / image file is malformed
  | 'ETOOL'         // an external tool (apt-get, gcc) is missing or failed
  | 'ESTATE'        // operation invalid in the current state
  | 'EGUESTMEM';    // guest memory access out of range

export class TshvError extends Error {
  constructor(readonly code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TshvError';
  }
}

/** Exhaustiveness guard for discriminated unions. Only reachable through a type error. */
export function assertNever(x: never, what = 'value'): never {
  throw new Error(`unexpected ${what}: ${JSON.stringify(x)}`);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
