/**
 * Malformed API requests get 4xx answers with {error:{code,message}} and change nothing:
 * bad JSON, wrong types, unknown fields, names with path separators, huge values, wrong
 * content types, unknown VMs and routes, ambiguous GUID prefixes, invalid state transitions.
 * Runs against a real service process; needs no processor backend.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import type { ErrorBody, VmInfo } from '../../src/defs/api.js';
import { MIB, TestHome, rawRequest } from './helpers.js';

describe('API input validation', { timeout: 60000 }, () => {
  const h = new TestHome('malformed');
  let file = '';
  before(async () => {
    await h.startService();
    file = join(h.home, 'guest.bin');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, Buffer.alloc(4096, 0xf4));
  });
  after(() => h.cleanup());

  const body = (over: Record<string, unknown> = {}, boot: Record<string, unknown> = {}): Record<string, unknown> => ({
    name: 'ok', memoryBytes: 16 * MIB, cpus: 1, boot: { kind: 'flat', file, mode: 'long64', loadGpa: 0x100000, ...boot }, ...over,
  });

  /** Every file under the data dir with its bytes: the registry must not change. */
  const snapshot = (): string => {
    const out: string[] = [];
    const walk = (d: string): void => {
      for (const n of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, n.name);
        if (n.isDirectory()) walk(p); else if (n.name !== 'vmms.log') out.push(`${p}:${readFileSync(p, 'hex')}`);
      }
    };
    walk(h.paths.dataDir);
    return out.sort().join('\n');
  };

  const expectError = async (status: number, code: string | RegExp, method: string, path: string, raw?: string, headers?: Record<string, string>): Promise<string> => {
    const r = await rawRequest(h.paths.apiSocket, method, path, raw, headers);
    assert.equal(r.status, status, `${method} ${path} ${raw?.slice(0, 80) ?? ''}: ${r.text}`);
    const e = (r.body as ErrorBody | undefined)?.error;
    assert.ok(e !== undefined && typeof e.message === 'string' && e.message.length > 0, `error body: ${r.text}`);
    if (typeof code === 'string') assert.equal(e.code, code); else assert.match(e.code, code);
    return e.message;
  };

  test('malformedRequests_get4xx_andChangeNothing', async () => {
    const existing = await h.ok<VmInfo>('POST', '/v1/vms', body({ name: 'existing' }));
    const before = snapshot();
    const listBefore = JSON.stringify(await h.list());
    const J = (v: unknown): string => JSON.stringify(v);

    // bad JSON
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', '{"name": "x",');
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', 'null');
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', '[]');
    // wrong types
    assert.match(await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ memoryBytes: '16M' }))), /memoryBytes/);
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ cpus: 1.5 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ cpus: '1' })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { loadGpa: '0x100000' })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { mode: 'long128' })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ boot: { kind: 'bios' } })));
    // unknown fields, at the top and nested
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ admin: true })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { extra: 1 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J({ ...body(), __proto__: { x: 1 }, constructor: 1 }));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms/existing/stop', J({ turnOff: true, force: 1 }));
    // names and references with path separators
    for (const name of ['a/b', '../x', '..', '.hidden', 'a\\b', '', 'x'.repeat(65), 'a b', 'é']) {
      await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ name })));
    }
    await expectError(400, 'EINVAL', 'GET', '/v1/vms/..%2F..%2Fetc');
    await expectError(400, 'EINVAL', 'GET', '/v1/vms/a%5Cb');
    await expectError(404, 'ENOTFOUND', 'GET', '/v1/vms/../../etc/passwd');
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { file: 'relative/path' })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { file: '/no/such/file' })));
    // huge values
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ memoryBytes: 2 ** 60 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ memoryBytes: 1e300 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ memoryBytes: 16 * MIB + 1 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({ cpus: 100000 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { loadGpa: 2 ** 53 })));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body({}, { scratch: 2 ** 32 })));
    await expectError(400, 'EINVAL', 'GET', '/v1/vms/existing/console?since=99999999999999999999');
    await expectError(400, 'EINVAL', 'GET', '/v1/vms/existing/console?since=-1');
    await expectError(400, 'EINVAL', 'GET', '/v1/vms/existing/console?since=1&since=2');
    await expectError(400, 'EINVAL', 'GET', '/v1/vms/existing/console?bogus=1');
    {
      // A 1 MiB body: announced, refused before it is read (over a raw socket, so that the
      // early answer is not lost to EPIPE on our side).
      const answer = await new Promise<string>((resolve, reject) => {
        const s = connect(h.paths.apiSocket);
        let got = '';
        s.on('data', (c: Buffer) => { got += c.toString(); if (got.includes('}}')) { s.destroy(); resolve(got); } });
        s.on('error', reject);
        s.write(`POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${1024 * 1024}\r\n\r\n{"name":"`);
      });
      assert.match(answer, /^HTTP\/1\.1 413/);
      assert.match(answer, /"code":"ETOOLARGE"/);
    }
    // content type
    await expectError(415, 'EINVAL', 'POST', '/v1/vms', J(body()), { 'content-type': 'application/xml' });
    await expectError(400, 'EINVAL', 'POST', '/v1/vms', J(body()), { 'content-type': 'text/plain' });
    // unknown VM, unknown route
    await expectError(404, 'ENOTFOUND', 'GET', '/v1/vms/nobody');
    await expectError(404, 'ENOTFOUND', 'POST', '/v1/vms/nobody/start', '{}');
    await expectError(404, 'ENOTFOUND', 'DELETE', '/v1/vms/nobody');
    await expectError(404, 'ENOTFOUND', 'GET', '/v1/nothing');
    // invalid state transitions
    assert.match(await expectError(409, 'ESTATE', 'POST', '/v1/vms/existing/pause', '{}'), /Off/);
    await expectError(409, 'ESTATE', 'POST', '/v1/vms/existing/resume', '{}');
    await expectError(409, 'ESTATE', 'POST', '/v1/vms/existing/save', '{}');
    await expectError(409, 'ESTATE', 'POST', '/v1/vms/existing/stop', '{}');
    await expectError(409, 'ESTATE', 'POST', '/v1/vms/existing/console/input', J({ data: 'AA==' }));
    await expectError(400, 'EINVAL', 'POST', '/v1/vms/existing/console/input', J({ data: 'not base64!' }));
    // duplicate name
    await expectError(409, 'ESTATE', 'POST', '/v1/vms', J(body({ name: 'existing' })));

    assert.equal(snapshot(), before, 'the registry did not change');
    assert.equal(JSON.stringify(await h.list()), listBefore);
    assert.equal((await h.vm(existing.id)).name, 'existing');
  });

  test('guidPrefixes_resolveWhenUnique_andAmbiguousOnesAreRefused', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 17; i++) ids.push((await h.ok<VmInfo>('POST', '/v1/vms', body({ name: `p${i}` }))).id);
    const all = (await h.list()).map((v) => v.id);
    // 17+ GUIDs over 16 hex digits: some first digit is shared.
    const digit = [...'0123456789abcdef'].find((d) => all.filter((id) => id.startsWith(d)).length > 1)!;
    const msg = await expectError(400, 'EAMBIGUOUS', 'GET', `/v1/vms/${digit}`);
    assert.match(msg, /matches \d+ VMs/);
    for (const id of ids) {
      let n = 1;
      while (all.filter((x) => x.startsWith(id.slice(0, n))).length > 1) n++;
      assert.equal((await h.vm(id.slice(0, n))).id, id);
      assert.equal((await h.vm(id.toUpperCase())).id, id);
    }
    for (const id of ids) assert.equal((await h.api('DELETE', `/v1/vms/${id}`)).status, 204);
  });

  test('runtimeAndDataDirs_areOwnerOnly', async () => {
    const { statSync } = await import('node:fs');
    assert.equal(statSync(h.paths.runtimeDir).mode & 0o777, 0o700);
    assert.equal(statSync(h.paths.dataDir).mode & 0o777, 0o700);
    assert.equal(statSync(h.paths.apiSocket).mode & 0o077, 0);
  });
});
