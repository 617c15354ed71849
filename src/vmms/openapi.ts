/**
 * The OpenAPI document of the VMMS API, generated from the route schemas by @fastify/swagger.
 * docs/api/openapi.json is this document, committed; tests/vmms/openapi.test.ts validates it
 * with swagger-parser and fails when it no longer matches the routes (regenerate with
 * `node dist/src/vmms/openapi.js docs/api/openapi.json`, see the runbook in
 * docs/adr/0009-management-plane.md).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tshvPaths } from '../defs/paths.js';
import { buildApi } from './api.js';
import { Vmms } from './service.js';

export interface OpenApiResult {
  document: Record<string, unknown>;
  routes: { method: string; url: string }[];
}

/** Build the API (over an empty registry in a temp dir) and return its document and routes. */
export async function generateOpenApi(): Promise<OpenApiResult> {
  const home = mkdtempSync(join(tmpdir(), 'tshv-openapi-'));
  try {
    const routes: { method: string; url: string }[] = [];
    const app = await buildApi(new Vmms(tshvPaths({ TSHV_HOME: home }), () => undefined), { onRoute: (method, url) => routes.push({ method, url }) });
    await app.ready();
    const document = app.swagger() as unknown as Record<string, unknown>;
    await app.close();
    return { document, routes };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

export function stableJson(v: unknown): string {
  return JSON.stringify(v, null, 2) + '\n';
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const out = process.argv[2];
  const { document } = await generateOpenApi();
  if (out === undefined) process.stdout.write(stableJson(document));
  else writeFileSync(out, stableJson(document));
}
