// `tshv run` helpers: the console escape key, --timeout / --memory parsing, and how each way a
// run ends maps to an exit code.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TshvError } from '../base/errors.js';
import { ConsoleEscape, ESCAPE_BYTE, describeRunEnd, parseMemory, parseTimeout } from './run.js';
import { ExitCode } from './exit-codes.js';

describe('ConsoleEscape', () => {
  it('ctrlBracketX_quits_bytesBeforeForwarded', () => {
    const e = new ConsoleEscape();
    const r = e.feed(Uint8Array.of(0x61, ESCAPE_BYTE, 0x78, 0x62));
    assert.deepEqual([...r.forward], [0x61]);
    assert.equal(r.quit, true);
  });

  it('splitAcrossChunks', () => {
    const e = new ConsoleEscape();
    const a = e.feed(Uint8Array.of(0x61, ESCAPE_BYTE));
    assert.deepEqual([...a.forward], [0x61]);
    assert.equal(a.quit, false);
    assert.equal(e.feed(Uint8Array.of(0x58)).quit, true);
  });

  it('doubleEscape_sendsOne_otherKeySendsBoth', () => {
    const e = new ConsoleEscape();
    assert.deepEqual([...e.feed(Uint8Array.of(ESCAPE_BYTE, ESCAPE_BYTE, 0x63)).forward], [ESCAPE_BYTE, 0x63]);
    assert.deepEqual([...e.feed(Uint8Array.of(ESCAPE_BYTE, 0x03)).forward], [ESCAPE_BYTE, 0x03]);
  });

  it('property_withoutEscapeByte_identity', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 100 }), (b) => {
      const input = b.map((x) => (x === ESCAPE_BYTE ? 0 : x));
      const r = new ConsoleEscape().feed(input);
      assert.equal(r.quit, false);
      assert.deepEqual(r.forward, input);
    }));
  });
});

describe('options', () => {
  it('parseTimeout', () => {
    assert.equal(parseTimeout('1.5'), 1500);
    assert.equal(parseTimeout('150'), 150_000);
    for (const bad of ['', '0', '-3', 'abc', 'Infinity', '1e20']) assert.throws(() => parseTimeout(bad), TshvError, bad);
  });

  it('parseMemory', () => {
    assert.equal(parseMemory('256M'), 256 * 1024 ** 2);
    assert.equal(parseMemory('1G'), 1024 ** 3);
    assert.throws(() => parseMemory('lots'), TshvError);
  });
});

describe('describeRunEnd', () => {
  it('codes', () => {
    assert.equal(describeRunEnd({ kind: 'poweroff' }, undefined).code, ExitCode.OK);
    assert.equal(describeRunEnd({ kind: 'shutdown', vp: 1 }, undefined).code, ExitCode.FAILURE);
    assert.match(describeRunEnd({ kind: 'shutdown', vp: 1 }, undefined).message ?? '', /triple fault on virtual processor 1/);
    assert.equal(describeRunEnd({ kind: 'error', vp: 0, message: 'boom' }, undefined).code, ExitCode.BACKEND);
    assert.match(describeRunEnd({ kind: 'timeout' }, 2.5).message ?? '', /timed out after 2\.5 s/);
    assert.equal(describeRunEnd({ kind: 'reset' }, undefined).code, ExitCode.FAILURE);
    assert.equal(describeRunEnd({ kind: 'halted', vp: 0 }, undefined).code, ExitCode.OK);
    assert.match(describeRunEnd({ kind: 'halted', vp: 0 }, undefined).message ?? '', /halted the machine/);
  });
});

describe('tshv run (validation before any VM exists)', () => {
  async function cli(args: string[]): Promise<{ code: number; err: string }> {
    const { runCli } = await import('./main.js');
    let err = '';
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = (s: string | Uint8Array): boolean => { err += typeof s === 'string' ? s : Buffer.from(s).toString(); return true; };
    try {
      return { code: await runCli(['node', 'tshv', ...args]), err };
    } finally {
      process.stderr.write = write;
      process.exitCode = undefined;
    }
  }

  it('malformedKernel_exit4_namesFile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tshv-run-'));
    try {
      const k = join(dir, 'not-a-kernel');
      const i = join(dir, 'initrd');
      writeFileSync(k, 'hello');
      writeFileSync(i, '070701');
      const r = await cli(['--backend', 'emu', 'run', '--kernel', k, '--initrd', i]);
      assert.equal(r.code, ExitCode.IMAGE);
      assert.ok(r.err.includes(k), r.err);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('badOptions_exit2', async () => {
    assert.equal((await cli(['run', '--timeout', '0'])).code, ExitCode.USAGE);
    assert.equal((await cli(['run', '--cpus', '0'])).code, ExitCode.USAGE);
  });
});
