/**
 * The CLI's HTTP client of the VMMS API, over the service's Unix socket (node:http with
 * socketPath). Starts the service on demand: when the socket is missing or refuses, it spawns
 * `node dist/src/vmms/main.js` detached (by file path: the CLI does not import the service)
 * and waits for it to answer.
 *
 * API errors ({error:{code,message}}) become `ApiClientError` with the HTTP status and code;
 * main.ts maps them onto exit codes.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { ServiceInfo } from '../defs/api.js';
import { tshvPaths, type TshvPaths } from '../defs/paths.js';

export const VMMS_MAIN = fileURLToPath(new URL('../vmms/main.js', import.meta.url));

export class ApiClientError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

function isConnectError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}

export class ApiClient {
  constructor(readonly paths: TshvPaths = tshvPaths()) {}

  /** One request; resolves the parsed JSON body (undefined for 204). */
  request<T>(method: string, path: string, body?: unknown, timeoutMs = 15 * 60000): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = httpRequest({
        socketPath: this.paths.apiSocket, method, path,
        headers: payload !== undefined ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        timeout: timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let v: unknown;
          try { v = text === '' ? undefined : JSON.parse(text); } catch {
            reject(new ApiClientError(status, 'EPROTO', `the service sent a non-JSON answer (HTTP ${status})`));
            return;
          }
          if (status >= 200 && status < 300) { resolve(v as T); return; }
          const err = (v as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
          reject(new ApiClientError(status, typeof err?.code === 'string' ? err.code : 'EPROTO',
            typeof err?.message === 'string' ? err.message : `HTTP ${status}`));
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer from the service within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** A streaming GET: the raw response. */
  stream(path: string): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = httpRequest({ socketPath: this.paths.apiSocket, method: 'GET', path }, (res) => {
        if ((res.statusCode ?? 0) >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let msg = `HTTP ${res.statusCode ?? 0}`;
            let code = 'EPROTO';
            try {
              const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error: { code: string; message: string } };
              msg = v.error.message; code = v.error.code;
            } catch { /* keep the generic message */ }
            reject(new ApiClientError(res.statusCode ?? 0, code, msg));
          });
          return;
        }
        resolve(res);
      });
      req.on('error', reject);
      req.end();
    });
  }

  async serviceInfo(): Promise<ServiceInfo | undefined> {
    try {
      return await this.request<ServiceInfo>('GET', '/v1/service', undefined, 5000);
    } catch (e) {
      if (isConnectError(e)) return undefined;
      throw e;
    }
  }

  /** Start the service if it does not answer; returns its facts. */
  async ensureService(): Promise<ServiceInfo> {
    const info = await this.serviceInfo();
    if (info !== undefined) return info;
    mkdirSync(this.paths.dataDir, { recursive: true, mode: 0o700 });
    const log = openSync(this.paths.serviceLog, 'a', 0o600);
    try {
      const child = spawn(process.execPath, [VMMS_MAIN], { detached: true, stdio: ['ignore', log, log], env: process.env });
      child.unref();
    } finally {
      closeSync(log);
    }
    const deadline = performance.now() + 15000;
    while (performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      const i = await this.serviceInfo().catch(() => undefined);
      if (i !== undefined) return i;
    }
    throw new ApiClientError(0, 'ESERVICE', `the service did not start within 15 s; see ${this.paths.serviceLog}`);
  }

  /** ensureService, then request. */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    await this.ensureService();
    return this.request<T>(method, path, body);
  }
}

export function vmPath(ref: string, suffix = ''): string {
  return `/v1/vms/${encodeURIComponent(ref)}${suffix}`;
}
