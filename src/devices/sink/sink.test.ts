import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PortSink } from './sink.js';
import { IoDispatcher } from '../../vid/dispatch.js';
import { CaptureLogger } from '../../vid/testing.js';

test('portSink_claimsPort0x80_silently', () => {
  const log = new CaptureLogger();
  const bus = new IoDispatcher({ logger: log });
  bus.register(new PortSink('post', [{ name: 'post-code', first: 0x80, last: 0x80 }]));
  for (let i = 0; i < 100; i++) bus.pioWrite(0, 0x80, 1, i);
  assert.equal(bus.pioRead(0, 0x80, 1), 0xff);
  assert.equal(log.lines.length, 0);
  const s = bus.stats();
  assert.equal(s.bus.unmappedPioWrites, 0);
  assert.equal(s.devices['post']!.pioWrites, 100);
  assert.equal(bus.pioRead(0, 0x80, 2), 0xffff, 'split: sink byte and unmapped 0x81');
});
