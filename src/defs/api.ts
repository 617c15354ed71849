/**
 * The VMMS REST/JSON API: TypeBox schemas of every request and response body.
 *
 * These schemas are the single source of the API's shape: the service hands them to fastify
 * (ajv validates each request body, params and query against them, with additional properties
 * refused rather than stripped), @fastify/swagger turns them into docs/api/openapi.json, and
 * the CLI uses the static types. Change them only through the API change runbook in
 * docs/adr/0009-management-plane.md (the OpenAPI test fails until the document is regenerated).
 *
 * Limits are deliberate: names are short and never contain path separators (they become
 * nothing on disk, but they are printed and used as lookup keys), paths are absolute and
 * bounded, memory and processor counts stay within what `Vm.create` accepts.
 */
import { Type, type Static } from '@sinclair/typebox';
import { VM_STATES } from './states.js';

export const API_VERSION = 'v1';
export const MIB = 1024 * 1024;
export const MAX_MEMORY_BYTES = 64 * 1024 * MIB;
export const MIN_MEMORY_BYTES = 2 * MIB;
export const MAX_CPUS = 64;
export const MAX_PATH_CHARS = 4096;
/** The highest guest physical address a flat image may be loaded at (below the 3 GiB hole). */
export const MAX_LOAD_GPA = 0xc0000000;

/** A VM name: letters, digits, '.', '_', '-'; starts with a letter or digit; at most 64. */
export const VM_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
/** A VM reference in a URL: a name, a GUID or a GUID prefix (at least 4 hex digits). */
export const GUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
export const VM_REF_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String({ description: 'stable machine-readable code: EINVAL, ENOTFOUND, EAMBIGUOUS, ESTATE, EIMAGE, ENOTSUP, EBACKEND, EWORKER, EINTERNAL' }),
    message: Type.String(),
  }, { additionalProperties: false }),
}, { additionalProperties: false });
export type ErrorBody = Static<typeof ErrorBody>;

const AbsPath = Type.String({ minLength: 1, maxLength: MAX_PATH_CHARS, pattern: '^/[^\\u0000]*$', description: 'absolute host path' });

export const FlatBoot = Type.Object({
  kind: Type.Literal('flat'),
  file: AbsPath,
  mode: Type.Union([Type.Literal('real'), Type.Literal('prot32'), Type.Literal('long64')]),
  loadGpa: Type.Integer({ minimum: 0x10000, maximum: MAX_LOAD_GPA }),
  entryGpa: Type.Optional(Type.Integer({ minimum: 0x10000, maximum: MAX_LOAD_GPA })),
  scratch: Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffffffff, description: 'initial value of the test device\'s 32-bit scratch register (long64-counter: 0xFFFFFFFF counts forever)' })),
}, { additionalProperties: false, description: 'a freestanding test guest (flat binary) with the test device and reset = power-off' });
export type FlatBoot = Static<typeof FlatBoot>;

export const LinuxBoot = Type.Object({
  kind: Type.Literal('linux'),
  kernel: Type.Optional(AbsPath),
  initrd: Type.Optional(AbsPath),
  append: Type.Optional(Type.String({ maxLength: 4096 })),
}, { additionalProperties: false, description: 'a Linux kernel (default: the default image)' });
export type LinuxBoot = Static<typeof LinuxBoot>;

export const Boot = Type.Union([FlatBoot, LinuxBoot]);
export type Boot = Static<typeof Boot>;

export const BackendChoice = Type.Union([Type.Literal('auto'), Type.Literal('kvm'), Type.Literal('emu')]);
export type BackendChoice = Static<typeof BackendChoice>;

export const NewVmRequest = Type.Object({
  name: Type.String({ pattern: VM_NAME_PATTERN, maxLength: 64 }),
  memoryBytes: Type.Integer({ minimum: MIN_MEMORY_BYTES, maximum: MAX_MEMORY_BYTES, multipleOf: 4096 }),
  cpus: Type.Integer({ minimum: 1, maximum: MAX_CPUS }),
  backend: Type.Optional(BackendChoice),
  boot: Boot,
}, { additionalProperties: false });
export type NewVmRequest = Static<typeof NewVmRequest>;

/** The configuration of one VM: what the registry stores and the worker is given. */
export const VmConfig = Type.Object({
  id: Type.String({ pattern: GUID_PATTERN }),
  name: Type.String({ pattern: VM_NAME_PATTERN }),
  memoryBytes: Type.Integer({ minimum: MIN_MEMORY_BYTES, maximum: MAX_MEMORY_BYTES, multipleOf: 4096 }),
  cpus: Type.Integer({ minimum: 1, maximum: MAX_CPUS }),
  backend: BackendChoice,
  boot: Boot,
  createdAt: Type.String(),
}, { additionalProperties: false });
export type VmConfig = Static<typeof VmConfig>;

export const VmStateSchema = Type.Union(VM_STATES.map((s) => Type.Literal(s)));

export const Progress = Type.Object({
  op: Type.Union([Type.Literal('save'), Type.Literal('restore')]),
  done: Type.Integer({ minimum: 0 }),
  total: Type.Integer({ minimum: 0 }),
}, { additionalProperties: false });
export type Progress = Static<typeof Progress>;

export const VmInfo = Type.Object({
  id: Type.String(),
  name: Type.String(),
  state: VmStateSchema,
  status: Type.String({ description: 'human-readable status: "Operating normally", the crash reason, ...' }),
  memoryBytes: Type.Integer(),
  cpus: Type.Integer(),
  backend: BackendChoice,
  boot: Boot,
  createdAt: Type.String(),
  uptimeMs: Type.Integer({ minimum: 0 }),
  cpuUsagePercent: Type.Number({ minimum: 0 }),
  workerPid: Type.Union([Type.Integer(), Type.Null()]),
  workerRssBytes: Type.Union([Type.Integer(), Type.Null()]),
  hasSavedState: Type.Boolean(),
  progress: Type.Union([Progress, Type.Null()]),
  workerSpawnMs: Type.Union([Type.Number(), Type.Null()], { description: 'fork() to worker ready, of the last spawn' }),
}, { additionalProperties: false });
export type VmInfo = Static<typeof VmInfo>;

export const VmList = Type.Object({ vms: Type.Array(VmInfo) }, { additionalProperties: false });
export type VmList = Static<typeof VmList>;

export const VmRefParams = Type.Object({
  vm: Type.String({ pattern: VM_REF_PATTERN, maxLength: 64, description: 'VM name, GUID or unique GUID prefix (a name wins over a prefix)' }),
}, { additionalProperties: false });
export type VmRefParams = Static<typeof VmRefParams>;

export const EmptyBody = Type.Object({}, { additionalProperties: false });

export const StopRequest = Type.Object({
  turnOff: Type.Optional(Type.Boolean({ description: 'cut power at once instead of asking the guest' })),
  timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600000, description: 'how long a graceful stop waits before turning off' })),
}, { additionalProperties: false });
export type StopRequest = Static<typeof StopRequest>;

export const ConsoleQuery = Type.Object({
  since: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'byte offset of the serial output to start at' })),
  waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 30000, description: 'long-poll: wait this long for new output when there is none' })),
}, { additionalProperties: false });
export type ConsoleQuery = Static<typeof ConsoleQuery>;

export const ConsoleChunk = Type.Object({
  start: Type.Integer({ minimum: 0, description: 'offset of the first byte of data' }),
  end: Type.Integer({ minimum: 0, description: 'offset after the last byte (pass as since= next time)' }),
  lost: Type.Integer({ minimum: 0, description: 'bytes between since and start that fell out of the scrollback' }),
  data: Type.String({ description: 'the serial bytes, base64' }),
}, { additionalProperties: false });
export type ConsoleChunk = Static<typeof ConsoleChunk>;

export const ConsoleInput = Type.Object({
  data: Type.String({ maxLength: 65536, pattern: '^[A-Za-z0-9+/]*={0,2}$', description: 'bytes for the guest serial port, base64' }),
}, { additionalProperties: false });
export type ConsoleInput = Static<typeof ConsoleInput>;

export const ServiceInfo = Type.Object({
  version: Type.String(),
  pid: Type.Integer(),
  uptimeMs: Type.Integer(),
  vmCount: Type.Integer(),
  runtimeDir: Type.String(),
  dataDir: Type.String(),
}, { additionalProperties: false });
export type ServiceInfo = Static<typeof ServiceInfo>;
