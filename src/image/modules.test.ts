import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { TshvError } from '../base/errors.js';
import { loadOrder, moduleNameFromPath, parseModinfo } from './modules.js';

function hasGcc(): boolean {
  try { execFileSync('gcc', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

const SOURCE = `
__attribute__((section(".modinfo"), used, aligned(1))) static const char m1[] = "license=GPL";
__attribute__((section(".modinfo"), used, aligned(1))) static const char m2[] = "depends=hv_vmbus,scsi-mod,";
__attribute__((section(".modinfo"), used, aligned(1))) static const char m3[] = "name=hv-storvsc";
__attribute__((section(".modinfo"), used, aligned(1))) static const char m4[] = "vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ";
int storvsc_probe(void) { return 0; }
`;

describe('modules', { skip: hasGcc() ? false : 'gcc is not installed (needed to build a test .ko-like object)' }, () => {
  let dir = '';
  let ko = new Uint8Array(0);
  let plain = new Uint8Array(0);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tshv-modinfo-'));
    writeFileSync(join(dir, 'm.c'), SOURCE);
    writeFileSync(join(dir, 'p.c'), 'int f(void) { return 1; }\n');
    execFileSync('gcc', ['-c', '-O1', '-o', join(dir, 'm.o'), join(dir, 'm.c')]);
    execFileSync('gcc', ['-c', '-O1', '-o', join(dir, 'p.o'), join(dir, 'p.c')]);
    ko = new Uint8Array(readFileSync(join(dir, 'm.o')));
    plain = new Uint8Array(readFileSync(join(dir, 'p.o')));
  });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  it('parseModinfo_gccObject_readsNameDependsVermagic', () => {
    const info = parseModinfo(ko, 'hv_storvsc.ko');
    assert.equal(info.name, 'hv_storvsc');
    assert.deepEqual(info.depends, ['hv_vmbus', 'scsi_mod']);
    assert.equal(info.vermagic, '6.1.0-56-amd64 SMP preempt mod_unload modversions ');
    assert.ok(info.fields.some(([k, v]) => k === 'license' && v === 'GPL'));
  });

  it('parseModinfo_noModinfoSection_failsNamingFile', () => {
    assert.throws(() => parseModinfo(plain, 'plain.o'), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE' && /plain\.o.*\.modinfo/.test(e.message));
  });

  it('parseModinfo_truncatedAnywhere_failsOrParsesWithinBounds', () => {
    for (let cut = 0; cut < ko.length; cut += 7) {
      try { parseModinfo(ko.subarray(0, cut), 'cut.ko'); } catch (e) {
        assert.ok(e instanceof TshvError && e.code === 'EIMAGE' && e.message.includes('cut.ko'), String(e));
      }
    }
    // Cutting off the section header table (at the end of the object) is always an error.
    assert.throws(() => parseModinfo(ko.subarray(0, ko.length - 1), 'short.ko'), /section headers run past/);
  });

  it('parseModinfo_badHeaderFields_fail', () => {
    const cases: [number, number[], RegExp][] = [
      [0, [0], /bad magic/],
      [4, [1], /ELF64/],
      [0x3a, [32, 0], /e_shentsize/],
      [0x3e, [0xff, 0xff], /e_shstrndx|e_shnum/],
      [0x28, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], /past the end/],
    ];
    for (const [off, bytes, re] of cases) {
      const b = ko.slice();
      b.set(bytes, off);
      assert.throws(() => parseModinfo(b, 'bad.ko'), (e: unknown) => e instanceof TshvError && e.code === 'EIMAGE' && re.test(e.message));
    }
  });

  it('parseModinfo_mutatedObject_onlyTypedErrors', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(ko.length - 1), fc.nat(255)), { maxLength: 8 }), fc.boolean(), (muts, inHeaders) => {
      const b = ko.slice();
      const shoff = Number(new DataView(b.buffer).getBigUint64(0x28, true));
      for (const [i, v] of muts) b[inHeaders ? Math.min(b.length - 1, shoff + (i % (b.length - shoff))) : i] = v;
      try { parseModinfo(b, 'mut.ko'); } catch (e) { assert.ok(e instanceof TshvError && e.code === 'EIMAGE', String(e)); }
    }), { numRuns: 2000 });
  });
});

describe('loadOrder', () => {
  const graph = new Map<string, string[]>([
    ['hv_vmbus', []],
    ['hv_utils', ['hv_vmbus']],
    ['hv_storvsc', ['scsi_mod', 'hv_vmbus', 'scsi_transport_fc', 'scsi_common']],
    ['scsi_mod', ['scsi_common']],
    ['scsi_common', []],
    ['scsi_transport_fc', ['scsi_mod', 'scsi_common']],
    ['hv_sock', ['hv_vmbus', 'vsock']],
    ['vsock', []],
  ]);
  const deps = (n: string): string[] | undefined => graph.get(n);

  it('loadOrder_diamond_dependenciesFirstEachOnce', () => {
    const order = loadOrder(['hv_vmbus', 'hv_utils', 'hv_storvsc', 'hv_sock'], deps);
    assert.deepEqual(order, ['hv_vmbus', 'hv_utils', 'scsi_common', 'scsi_mod', 'scsi_transport_fc', 'hv_storvsc', 'vsock', 'hv_sock']);
    for (const [i, m] of order.entries()) for (const d of graph.get(m) ?? []) assert.ok(order.indexOf(d) < i, `${d} before ${m}`);
  });

  it('loadOrder_dashNames_areNormalised', () => {
    assert.deepEqual(loadOrder(['hv-utils'], deps), ['hv_vmbus', 'hv_utils']);
    assert.equal(moduleNameFromPath('kernel/drivers/x/foo-bar.ko.xz'), 'foo_bar');
  });

  it('loadOrder_cycle_isReportedNotRecursedForever', () => {
    const cyc = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]]);
    assert.throws(() => loadOrder(['a'], (n) => cyc.get(n)), /cycle: a -> b -> c -> a/);
  });

  it('loadOrder_missingDependency_namesItAndItsUser', () => {
    assert.throws(() => loadOrder(['x'], (n) => (n === 'x' ? ['nope'] : undefined)), /module nope \(needed by x\) not found/);
  });

  it('loadOrder_randomGraphs_topologicalOrCycleError', () => {
    fc.assert(fc.property(fc.array(fc.array(fc.nat(9), { maxLength: 4 }), { minLength: 10, maxLength: 10 }), (adj) => {
      const g = (n: string): string[] | undefined => adj[Number(n.slice(1))]?.map((d) => `m${d}`);
      try {
        const order = loadOrder(['m0', 'm5'], g);
        assert.equal(new Set(order).size, order.length);
        for (const [i, m] of order.entries()) for (const d of g(m) ?? []) assert.ok(order.indexOf(d) >= 0 && order.indexOf(d) < i);
      } catch (e) {
        assert.ok(e instanceof TshvError && /cycle/.test(e.message), String(e));
      }
    }), { numRuns: 1000 });
  });
});
