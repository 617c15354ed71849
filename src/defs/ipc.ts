/**
 * The VMMS <-> VMWP IPC protocol: TypeBox schemas of every message, validated on receipt in
 * both directions (a worker is a separate process that runs guest-influenced code; the service
 * trusts nothing it sends, and the worker trusts nothing but well-formed requests).
 *
 * Transport: newline-delimited JSON over the worker's own Unix socket (<runtime>/workers/<id>.sock,
 * see channel.ts), so that a restarted service can reconnect to a live worker. The fork IPC
 * channel carries only the first `ready` message, which tells the spawning service the worker
 * is listening.
 *
 * Requests carry a numeric `seq`; the worker answers each with exactly one `reply` of the same
 * `seq`. Everything else the worker sends is an unsolicited event (`serial`, `progress`,
 * `stats`, `exit`).
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { VmConfig } from './api.js';

export const IPC_PROTOCOL_VERSION = 1;
/** The longest NDJSON line either side accepts. */
export const MAX_IPC_LINE_BYTES = 1024 * 1024;
/** The worker's serial scrollback. */
export const SCROLLBACK_BYTES = 256 * 1024;

const Seq = Type.Integer({ minimum: 0, maximum: 2 ** 31 });
const HostPath = Type.String({ minLength: 1, maxLength: 4096, pattern: '^/[^\\u0000]*$' });
const Base64 = Type.String({ maxLength: 2 * MAX_IPC_LINE_BYTES, pattern: '^[A-Za-z0-9+/]*={0,2}$' });

/** What the worker is doing; the service maps it onto the VM states. */
export const WorkerPhase = Type.Union([
  Type.Literal('empty'),      // no partition (fresh worker, or after turn-off)
  Type.Literal('starting'),
  Type.Literal('running'),
  Type.Literal('paused'),
  Type.Literal('saving'),
  Type.Literal('saved'),      // saved state written, partition dropped, worker waiting
  Type.Literal('restoring'),
  Type.Literal('ended'),      // the guest's run ended (see the exit event); the worker exits soon
]);
export type WorkerPhase = Static<typeof WorkerPhase>;

// ---------------------------------------------------------------------------------------------
// Service -> worker

export const ToWorker = Type.Union([
  Type.Object({ type: Type.Literal('hello'), seq: Seq, protocol: Type.Integer() }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('start'), seq: Seq, config: VmConfig }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('restore'), seq: Seq, config: VmConfig, path: HostPath }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('pause'), seq: Seq }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('resume'), seq: Seq }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('save'), seq: Seq, path: HostPath }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('turnOff'), seq: Seq }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('serialInput'), seq: Seq, data: Base64 }, { additionalProperties: false }),
]);
export type ToWorker = Static<typeof ToWorker>;
/** A request without its sequence number (the sender adds it). */
type DistributiveOmitSeq<T> = T extends unknown ? Omit<T, 'seq'> : never;
export type WorkerRequest = DistributiveOmitSeq<ToWorker>;

// ---------------------------------------------------------------------------------------------
// Worker -> service

export const IpcError = Type.Object({
  code: Type.String({ maxLength: 32 }),
  message: Type.String({ maxLength: 4096 }),
}, { additionalProperties: false });
export type IpcError = Static<typeof IpcError>;

export const WorkerStatus = Type.Object({
  vmId: Type.String({ maxLength: 64 }),
  pid: Type.Integer(),
  phase: WorkerPhase,
  /** Serial output: total bytes ever written, and the scrollback (its start offset and bytes). */
  serialEnd: Type.Integer({ minimum: 0 }),
  scrollbackStart: Type.Integer({ minimum: 0 }),
  scrollback: Base64,
  uptimeMs: Type.Integer({ minimum: 0 }),
}, { additionalProperties: false });
export type WorkerStatus = Static<typeof WorkerStatus>;

export const ExitReport = Type.Object({
  type: Type.Literal('exit'),
  /** guestOff: the guest powered off (or a test guest exited); crashed: an error ended it. */
  kind: Type.Union([Type.Literal('guestOff'), Type.Literal('crashed')]),
  reason: Type.String({ maxLength: 4096 }),
}, { additionalProperties: false });
export type ExitReport = Static<typeof ExitReport>;

export const FromWorker = Type.Union([
  Type.Object({ type: Type.Literal('ready'), pid: Type.Integer(), socket: HostPath }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('reply'), seq: Seq, ok: Type.Boolean(),
    status: Type.Optional(WorkerStatus), error: Type.Optional(IpcError),
  }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('serial'), offset: Type.Integer({ minimum: 0 }), data: Base64 }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('progress'), op: Type.Union([Type.Literal('save'), Type.Literal('restore')]),
    done: Type.Integer({ minimum: 0 }), total: Type.Integer({ minimum: 0 }),
  }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('stats'), cpuPercent: Type.Number({ minimum: 0 }), rssBytes: Type.Integer({ minimum: 0 }),
    uptimeMs: Type.Integer({ minimum: 0 }),
  }, { additionalProperties: false }),
  ExitReport,
]);
export type FromWorker = Static<typeof FromWorker>;

const toWorkerCheck = TypeCompiler.Compile(ToWorker);
const fromWorkerCheck = TypeCompiler.Compile(FromWorker);

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

function firstError(errors: Iterable<{ path: string; message: string }>): string {
  for (const e of errors) return `${e.path || '/'}: ${e.message}`;
  return 'invalid message';
}

/** Validate a decoded message for the worker. Pure. */
export function parseToWorker(v: unknown): Parsed<ToWorker> {
  if (toWorkerCheck.Check(v)) return { ok: true, value: v };
  return { ok: false, error: firstError(toWorkerCheck.Errors(v)) };
}

/** Validate a decoded message from a worker. Pure. */
export function parseFromWorker(v: unknown): Parsed<FromWorker> {
  if (fromWorkerCheck.Check(v)) return { ok: true, value: v };
  return { ok: false, error: firstError(fromWorkerCheck.Errors(v)) };
}
