import test from 'node:test';
import assert from 'node:assert/strict';
import { Logger, RateLimitedLog, setLogSink } from './log.js';

test('rateLimitedLog_floodIsSuppressedAndCounted', () => {
  const lines: string[] = [];
  setLogSink((_l, _c, m) => lines.push(m));
  let now = 0;
  const rl = new RateLimitedLog(new Logger('t'), 3, 1000, () => now);
  for (let i = 0; i < 1000; i++) rl.warn(() => `msg ${i}`);
  assert.equal(rl.emitted, 3);
  assert.equal(rl.suppressed, 997);
  now = 2000;
  rl.warn(() => 'later');
  assert.ok(lines.some((l) => /997 similar messages suppressed/.test(l)));
  assert.equal(lines.at(-1), 'later');
});
