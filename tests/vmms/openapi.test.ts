/**
 * docs/api/openapi.json is a valid OpenAPI document (swagger-parser) and is exactly what the
 * service's route schemas generate, with one operation per registered route. When this fails
 * after an API change, regenerate it (see docs/adr/0009-management-plane.md):
 *   node dist/src/vmms/openapi.js docs/api/openapi.json
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import SwaggerParser from '@apidevtools/swagger-parser';
import { generateOpenApi, stableJson } from '../../src/vmms/openapi.js';

/** docs/api/openapi.json of the source tree: found from this module, else from the working directory. */
function findDoc(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const c = join(d, 'docs', 'api', 'openapi.json');
    if (existsSync(c) && existsSync(join(d, 'package.json'))) return c;
    d = dirname(d);
  }
  return join(process.cwd(), 'docs', 'api', 'openapi.json');
}
const DOC = findDoc();

function committed(): Record<string, unknown> {
  return JSON.parse(readFileSync(DOC, 'utf8')) as Record<string, unknown>;
}

test('openapiDocument_isValid', async () => {
  const api = await SwaggerParser.validate(structuredClone(committed()) as never);
  assert.equal((api as { openapi?: string }).openapi, '3.0.3');
});

test('openapiDocument_matchesTheRoutes', async () => {
  const { document, routes } = await generateOpenApi();
  assert.equal(readFileSync(DOC, 'utf8'), stableJson(document), 'docs/api/openapi.json is stale: regenerate it');
  const paths = committed()['paths'] as Record<string, Record<string, unknown>>;
  const documented = new Set<string>();
  for (const [p, ops] of Object.entries(paths)) for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${p}`);
  const registered = new Set(routes.map((r) => `${r.method} ${r.url.replace(/:([A-Za-z]+)/g, '{$1}')}`));
  assert.deepEqual([...documented].sort(), [...registered].sort());
  assert.ok(registered.size >= 12);
});
