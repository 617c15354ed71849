import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSaved, SavedStateError } from './savedstate.js';

const ok = { schema: 's', version: 1, a: 5, b: true, c: [1, 2, 255], d: 'x' };

test('openSaved_validInput_readsTypedFields', () => {
  const r = openSaved(ok, 's', 1);
  assert.equal(r.int('a', 0, 10), 5);
  assert.equal(r.bool('b'), true);
  assert.deepEqual(Array.from(r.bytes('c', 3)), [1, 2, 255]);
  assert.equal(r.oneOf('d', ['x', 'y'] as const), 'x');
  r.done();
});

test('openSaved_malformedEnvelope_throwsSavedStateError', () => {
  for (const bad of [null, undefined, 3, 'str', [], [1], { version: 1 }, { schema: 's' }, { schema: 't', version: 1 },
    { schema: 's', version: 2 }, { schema: 's', version: '1' }, Object.create({ schema: 's', version: 1 }) as unknown,
    new Map([['schema', 's']])]) {
    assert.throws(() => openSaved(bad, 's', 1), SavedStateError, JSON.stringify(bad) ?? String(bad));
  }
});

test('savedReader_badFields_throw', () => {
  const cases: [Record<string, unknown>, (r: ReturnType<typeof openSaved>) => unknown][] = [
    [{ a: 11 }, (r) => r.int('a', 0, 10)],
    [{ a: 1.5 }, (r) => r.int('a', 0, 10)],
    [{ a: '1' }, (r) => r.int('a', 0, 10)],
    [{ a: NaN }, (r) => r.int('a', 0, 10)],
    [{}, (r) => r.int('a', 0, 10)],
    [{ a: 0x80 }, (r) => r.bits8('a', 0x7f)],
    [{ b: 1 }, (r) => r.bool('b')],
    [{ c: [256] }, (r) => r.bytes('c', 4)],
    [{ c: [-1] }, (r) => r.bytes('c', 4)],
    [{ c: [1, 2, 3, 4, 5] }, (r) => r.bytes('c', 4)],
    [{ c: 'abcd' }, (r) => r.bytes('c', 4)],
    [{ c: { length: 2 } }, (r) => r.bytes('c', 4)],
    [{ c: [1, , 3] }, (r) => r.bytes('c', 4)],   // eslint-disable-line no-sparse-arrays -- a hole must be rejected
    [{ d: 'z' }, (r) => r.oneOf('d', ['x'])],
  ];
  for (const [fields, read] of cases) {
    const r = openSaved({ schema: 's', version: 1, ...fields }, 's', 1);
    assert.throws(() => read(r), SavedStateError, JSON.stringify(fields));
  }
});

test('savedReader_unknownFieldsAndAccessors_rejected', () => {
  const r = openSaved({ schema: 's', version: 1, a: 1, extra: 2 }, 's', 1);
  r.int('a', 0, 1);
  assert.throws(() => r.done(), /unknown field extra/);
  let called = false;
  const withGetter = { schema: 's', version: 1, get a() { called = true; return 1; } };
  assert.throws(() => openSaved(withGetter, 's', 1).int('a', 0, 1), /not a data property/);
  assert.equal(called, false);
  const proto = JSON.parse('{"schema":"s","version":1,"__proto__":{"a":1}}') as unknown;
  const r2 = openSaved(proto, 's', 1);
  assert.throws(() => r2.done(), /unknown field __proto__/);
});
