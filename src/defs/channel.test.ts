import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LineSplitter } from './channel.js';
import { Scrollback } from './scrollback.js';
import { parseFromWorker, parseToWorker } from './ipc.js';

test('LineSplitter_anyChunking_yieldsTheSameLines', () => {
  fc.assert(fc.property(fc.array(fc.string({ maxLength: 40 }).map((s) => s.replace(/\n/g, '')), { maxLength: 20 }), fc.array(fc.nat(50), { maxLength: 30 }), (lines, cuts) => {
    const text = Buffer.from(lines.map((l) => l + '\n').join(''));
    const sp = new LineSplitter(1000);
    const got: string[] = [];
    let at = 0;
    for (const c of cuts) {
      const r = sp.push(text.subarray(at, Math.min(text.length, at + c)));
      assert.ok('lines' in r);
      got.push(...r.lines);
      at = Math.min(text.length, at + c);
    }
    const r = sp.push(text.subarray(at));
    assert.ok('lines' in r);
    got.push(...r.lines);
    assert.deepEqual(got, lines);
  }));
});

test('LineSplitter_overlongLine_isAnErrorNotAnUnboundedBuffer', () => {
  const sp = new LineSplitter(16);
  assert.ok('lines' in sp.push(Buffer.from('0123456789')));
  assert.ok('error' in sp.push(Buffer.from('0123456789')));
  assert.ok('error' in new LineSplitter(4).push(Buffer.from('12345\n')));
});

test('Scrollback_readsMatchAModelStream', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 20 }), fc.nat(3000), (cap, writes, since) => {
    const sb = new Scrollback(cap);
    const all: number[] = [];
    for (const w of writes) {
      if (w.length === 1) sb.writeByte(w[0]!); else sb.write(w);
      all.push(...w);
    }
    assert.equal(sb.end, all.length);
    const r = sb.read(since);
    const start = Math.max(0, all.length - cap);
    const from = Math.min(Math.max(since, start), all.length);
    assert.equal(r.start, from);
    assert.equal(r.lost, since < start ? start - since : 0);
    assert.deepEqual([...r.data], all.slice(from));
  }));
});

test('Scrollback_reset_continuesAtTheGivenOffset', () => {
  const sb = new Scrollback(8);
  sb.reset(100, new Uint8Array([1, 2, 3]));
  assert.equal(sb.end, 100);
  assert.deepEqual([...sb.read(97).data], [1, 2, 3]);
  sb.write(new Uint8Array([4]));
  assert.deepEqual([...sb.read(0).data], [1, 2, 3, 4]);
  sb.write(new Uint8Array([5, 6, 7, 8, 9]));
  assert.deepEqual([...sb.read(0).data], [2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(sb.read(0).lost, 98);
});

test('parseToWorker_malformedMessages_areRefused', () => {
  assert.ok(parseToWorker({ type: 'pause', seq: 1 }).ok);
  for (const bad of [null, 1, 'x', [], {}, { type: 'pause' }, { type: 'pause', seq: -1 }, { type: 'pause', seq: 1, extra: 1 },
    { type: 'save', seq: 1, path: 'relative' }, { type: 'save', seq: 1, path: '/a\u0000b' }, { type: 'nope', seq: 1 },
    { type: 'serialInput', seq: 1, data: '***' }, { type: 'start', seq: 1, config: { id: 'x' } }]) {
    assert.equal(parseToWorker(bad).ok, false, JSON.stringify(bad));
  }
});

test('parseFromWorker_malformedMessages_areRefused', () => {
  assert.ok(parseFromWorker({ type: 'stats', cpuPercent: 1.5, rssBytes: 10, uptimeMs: 0 }).ok);
  for (const bad of [{ type: 'reply', seq: 'a', ok: true }, { type: 'serial', offset: -1, data: '' }, { type: 'exit', kind: 'weird', reason: '' },
    { type: 'progress', op: 'save', done: 1 }, { type: 'ready', pid: 1, socket: 'rel' }, { type: '__proto__' }]) {
    assert.equal(parseFromWorker(bad).ok, false, JSON.stringify(bad));
  }
  fc.assert(fc.property(fc.anything(), (v) => { parseFromWorker(v); parseToWorker(v); }));
});
