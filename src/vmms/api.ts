/**
 * The VMMS REST/JSON API (fastify + TypeBox), served on a Unix socket only its owner can use.
 *
 *   GET    /v1/service                   service facts
 *   POST   /v1/service/shutdown          stop the service (workers keep running)
 *   GET    /v1/vms                       list (Get-VM)
 *   POST   /v1/vms                       create (New-VM)
 *   GET    /v1/vms/{vm}                  one VM
 *   DELETE /v1/vms/{vm}                  remove (Remove-VM)
 *   POST   /v1/vms/{vm}/start|pause|resume|save|stop
 *   GET    /v1/vms/{vm}/console          serial output since an offset (JSON, long-poll)
 *   GET    /v1/vms/{vm}/console/stream   serial output as a byte stream (follows until the VM stops)
 *   POST   /v1/vms/{vm}/console/input    bytes for the serial port
 *
 * {vm} is a name, a GUID or a unique GUID prefix. Every body, parameter and query is validated
 * by ajv against the schemas of src/defs/api.ts, with additional properties refused (not
 * stripped) and no type coercion. Errors are {error:{code,message}}: 400 malformed or
 * ambiguous, 404 unknown VM or route, 409 invalid state transition, 413 body too large,
 * 415 wrong content type, 422 refused image or save file, 5xx the worker or backend failed.
 */
import { PassThrough } from 'node:stream';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  ConsoleChunk, ConsoleInput, ConsoleQuery, EmptyBody, ErrorBody, NewVmRequest, ServiceInfo, StopRequest,
  VmInfo, VmList, VmRefParams,
} from '../defs/api.js';
import { ApiError, toApiError, type Vmms } from './service.js';

export const SERVICE_VERSION = '0.1.0';
export const BODY_LIMIT_BYTES = 256 * 1024;

const errors = { 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 500: ErrorBody, 501: ErrorBody };

/**
 * Query strings: decimal digits become numbers (ajv coerces nothing, so a body's "16" stays a
 * string and is refused); anything else stays a string; a repeated key is refused by the
 * schema because it stays an array.
 */
export function parseQuery(q: string): Record<string, unknown> {
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of new URLSearchParams(q)) {
    const val: unknown = /^[0-9]{1,15}$/.test(v) ? Number(v) : v;
    const prev = out[k];
    out[k] = prev === undefined ? val : Array.isArray(prev) ? [...(prev as unknown[]), val] : [prev, val];
  }
  return out;
}

export interface ApiOptions {
  /** Called after the shutdown request has been answered. */
  onShutdown?: () => void;
  /** Told every route as it is registered (the OpenAPI test compares them with the document). */
  onRoute?: (method: string, url: string) => void;
}

export async function buildApi(vmms: Vmms, opts: ApiOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT_BYTES,
    routerOptions: { querystringParser: parseQuery },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'tshv VMMS API',
        version: SERVICE_VERSION,
        description: 'The tshv virtual machine management service. Served over a Unix socket in the owner\'s 0700 runtime directory (see docs/adr/0009-management-plane.md).',
      },
      servers: [{ url: 'http://localhost', description: 'the Unix socket <runtime dir>/vmms.sock' }],
      tags: [{ name: 'service' }, { name: 'vms' }, { name: 'console' }],
    },
  });

  if (opts.onRoute !== undefined) {
    const tell = opts.onRoute;
    app.addHook('onRoute', (r) => {
      for (const m of Array.isArray(r.method) ? r.method : [r.method]) if (m !== 'HEAD') tell(m, r.url);
    });
  }

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err.validation !== undefined) {
      void reply.status(400).send({ error: { code: 'EINVAL', message: `${err.validationContext ?? 'request'}${err.message.replace(/^(body|params|querystring)/, '')}` } });
      return;
    }
    if (err instanceof ApiError || !('statusCode' in err) || err.statusCode === undefined || err.statusCode >= 500) {
      const a = toApiError(err);
      void reply.status(a.status).send({ error: { code: a.code, message: a.message } });
      return;
    }
    // fastify's own 4xx: bad JSON, body too large, unsupported media type...
    void reply.status(err.statusCode).send({ error: { code: err.statusCode === 413 ? 'ETOOLARGE' : 'EINVAL', message: err.message } });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'ENOTFOUND', message: `no route ${req.method} ${req.url.split('?')[0] ?? ''}` } });
  });

  app.get('/v1/service', {
    schema: { operationId: 'getService', tags: ['service'], summary: 'Service facts', response: { 200: ServiceInfo } },
  }, () => ({
    version: SERVICE_VERSION, pid: process.pid, uptimeMs: Math.round(performance.now() - vmms.startedAt),
    vmCount: vmms.vmCount, runtimeDir: vmms.paths.runtimeDir, dataDir: vmms.paths.dataDir,
  }));

  app.post('/v1/service/shutdown', {
    schema: { operationId: 'shutdownService', tags: ['service'], summary: 'Stop the service; workers keep running', body: Type.Optional(EmptyBody), response: { 202: EmptyBody } },
  }, async (_req, reply) => {
    await reply.status(202).send({});
    setImmediate(() => opts.onShutdown?.());
  });

  app.get('/v1/vms', {
    schema: { operationId: 'listVms', tags: ['vms'], summary: 'List VMs (Get-VM)', response: { 200: VmList } },
  }, () => ({ vms: vmms.list() }));

  app.post('/v1/vms', {
    schema: { operationId: 'newVm', tags: ['vms'], summary: 'Create a VM (New-VM)', body: NewVmRequest, response: { 201: VmInfo, ...errors } },
  }, async (req, reply) => reply.status(201).send(vmms.create(req.body)));

  app.get('/v1/vms/:vm', {
    schema: { operationId: 'getVm', tags: ['vms'], summary: 'One VM', params: VmRefParams, response: { 200: VmInfo, ...errors } },
  }, (req) => vmms.info(vmms.resolve(req.params.vm)));

  app.delete('/v1/vms/:vm', {
    schema: { operationId: 'removeVm', tags: ['vms'], summary: 'Remove a VM that is Off, Saved or Crashed (Remove-VM)', params: VmRefParams, response: { 204: Type.Null(), ...errors } },
  }, async (req, reply) => {
    vmms.remove(req.params.vm);
    await reply.status(204).send(null);
  });

  const action = (name: 'start' | 'pause' | 'resume' | 'save', summary: string, run: (ref: string) => Promise<VmInfo>): void => {
    app.post(`/v1/vms/:vm/${name}`, {
      schema: { operationId: `${name}Vm`, tags: ['vms'], summary, params: VmRefParams, body: Type.Optional(EmptyBody), response: { 200: VmInfo, ...errors } },
    }, (req) => run((req.params).vm));
  };
  action('start', 'Start a VM; a Saved VM is restored (Start-VM)', (r) => vmms.start(r));
  action('pause', 'Pause a running VM (Suspend-VM)', (r) => vmms.pause(r));
  action('resume', 'Resume a paused VM (Resume-VM)', (r) => vmms.resume(r));
  action('save', 'Save a running or paused VM to its data directory (Save-VM)', (r) => vmms.save(r));

  app.post('/v1/vms/:vm/stop', {
    schema: {
      operationId: 'stopVm', tags: ['vms'],
      summary: 'Stop a VM (Stop-VM): graceful with a timeout, then turn off; turnOff cuts power at once. Turning off a Saved VM discards its saved state.',
      params: VmRefParams, body: Type.Optional(StopRequest), response: { 200: VmInfo, ...errors },
    },
  }, (req) => vmms.stop(req.params.vm, { turnOff: req.body?.turnOff, timeoutMs: req.body?.timeoutMs }));

  app.get('/v1/vms/:vm/console', {
    schema: { operationId: 'readConsole', tags: ['console'], summary: 'Serial output from an offset (scrollback is bounded); long-polls with waitMs', params: VmRefParams, querystring: ConsoleQuery, response: { 200: ConsoleChunk, ...errors } },
  }, (req) => vmms.consoleRead(req.params.vm, req.query.since, req.query.waitMs));

  app.get('/v1/vms/:vm/console/stream', {
    schema: {
      operationId: 'streamConsole', tags: ['console'], summary: 'Serial output as a byte stream: the scrollback from `since`, then live output until the VM stops',
      params: VmRefParams, querystring: Type.Object({ since: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })) }, { additionalProperties: false }),
      response: { 200: { description: 'raw serial bytes', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }, ...errors },
    },
  }, async (req, reply) => {
    const out = new PassThrough();
    const stop = vmms.consoleSubscribe(req.params.vm, req.query.since, (b) => out.write(b), () => out.end());
    req.raw.on('close', stop);
    await reply.header('content-type', 'application/octet-stream').send(out);
  });

  app.post('/v1/vms/:vm/console/input', {
    schema: { operationId: 'writeConsole', tags: ['console'], summary: 'Bytes for the guest serial port (base64)', params: VmRefParams, body: ConsoleInput, response: { 204: Type.Null(), ...errors } },
  }, async (req, reply) => {
    await vmms.consoleInput(req.params.vm, new Uint8Array(Buffer.from(req.body.data, 'base64')));
    await reply.status(204).send(null);
  });

  return app;
}
