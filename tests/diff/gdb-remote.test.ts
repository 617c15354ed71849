/**
 * The GDB remote-protocol client: framing, escaping, run-length decoding, stop replies and
 * target descriptions (pure), malformed input, and the client against an in-process fake stub
 * (acks, a NAK and resend, a reply that never comes).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import fc from 'fast-check';
import {
  checksum, decodePayload, encodePacket, GdbClient, PacketParser, parseStopReply, parseTargetXmlRegs, parseXmlIncludes, stripXmlComments,
  type WireEvent,
} from './gdb-remote.js';

const enc = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const feed = (s: string): WireEvent[] => new PacketParser().feed(enc(s));

describe('gdb-remote framing', () => {
  it('frames with the mod-256 checksum and escapes $ # } *', () => {
    assert.equal(encodePacket('g'), '$g#67');
    assert.equal(encodePacket('OK'), '$OK#9a');
    assert.equal(encodePacket('a$b#c}d*'), '$a}\x04b}\x03c}]d}\x0a#' + checksum(enc('a}\x04b}\x03c}]d}\x0a')).toString(16).padStart(2, '0'));
    assert.throws(() => encodePacket('\u0100'), /latin1/);
  });

  it('parses acks, packets and notifications; decodes escapes and run-length encoding', () => {
    assert.deepEqual(feed('+$OK#9a-'), [{ kind: 'ack' }, { kind: 'packet', payload: 'OK' }, { kind: 'nak' }]);
    // "0* " = '0' + 3 more (' ' is 32, 32 - 29 = 3).
    const rle = '0* ';
    assert.deepEqual(feed(`$${rle}#${checksum(enc(rle)).toString(16).padStart(2, '0')}`), [{ kind: 'packet', payload: '0000' }]);
    assert.deepEqual(feed(`%Stop:T05#${checksum(enc('Stop:T05')).toString(16)}`), [{ kind: 'notification', payload: 'Stop:T05' }]);
    // Split anywhere, same result.
    const p = new PacketParser();
    const ev = [...'$OK#9a'].flatMap((c) => p.feed(enc(c)));
    assert.deepEqual(ev, [{ kind: 'packet', payload: 'OK' }]);
  });

  it('reports malformed input and resynchronises', () => {
    const kinds = (s: string): string[] => feed(s).map((e) => (e.kind === 'error' ? `error:${e.error}` : e.kind));
    assert.match(kinds('$OK#00')[0]!, /checksum mismatch/);
    assert.match(kinds('$OK#zz')[0]!, /bad checksum digit/);
    assert.match(kinds('x$OK#9a')[0]!, /unexpected byte/);
    assert.deepEqual(kinds('x$OK#9a').slice(1), ['packet']);
    assert.match(kinds('$O$OK#9a')[0]!, /packet start inside/);
    assert.deepEqual(kinds('$O$OK#9a').slice(1), ['packet']);
    const bad = (raw: string): string => { const d = decodePayload(enc(raw)); assert.equal(d.ok, false); return d.ok ? '' : d.error; };
    assert.match(bad('abc}'), /escape character at end/);
    assert.match(bad('*#'), /nothing to repeat/);
    assert.match(bad('a*'), /run-length marker at end/);
    assert.match(bad('a*\x01'), /out of range/);
    assert.match(bad('a*\x7f'), /out of range/);
    assert.deepEqual(decodePayload(enc('a*~')), { ok: true, payload: 'a'.repeat(98) });
    const small = new PacketParser(8);
    assert.match(JSON.stringify(small.feed(enc('$0123456789#00'))), /packet too long/);
    assert.equal(decodePayload(enc('a*~'.replace('~', '}')), 10).ok, false);
    assert.match(JSON.stringify(decodePayload(enc('a*z*z*z'), 100)), /too long/);
  });

  it('round-trips any latin1 payload, and never throws on arbitrary bytes (property)', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 200 }).map((a) => String.fromCharCode(...a)), (s) => {
      assert.deepEqual(feed(encodePacket(s)), [{ kind: 'packet', payload: s }]);
    }), { numRuns: 300 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      const p = new PacketParser(64);
      for (const e of p.feed(b)) assert.ok(['ack', 'nak', 'packet', 'notification', 'error'].includes(e.kind));
      // Still in sync afterwards once a fresh packet starts.
      const after = p.feed(enc('#00$OK#9a')).filter((e) => e.kind === 'packet');
      assert.deepEqual(after.at(-1), { kind: 'packet', payload: 'OK' });
    }), { numRuns: 300 });
  });
});

describe('gdb-remote payloads', () => {
  it('parses stop replies and rejects malformed ones', () => {
    assert.deepEqual(parseStopReply('S05'), { kind: 'signal', signal: 5, info: new Map() });
    assert.deepEqual(parseStopReply('T05thread:01;'), { kind: 'signal', signal: 5, info: new Map([['thread', '01']]) });
    assert.deepEqual(parseStopReply('W63'), { kind: 'exited', code: 0x63 });
    assert.deepEqual(parseStopReply('X09'), { kind: 'terminated', signal: 9 });
    assert.throws(() => parseStopReply('OK'), /not a stop reply/);
    assert.throws(() => parseStopReply('T05nocolon;'), /bad stop-reply field/);
    assert.throws(() => parseStopReply('S5'), /not a stop reply/);
  });

  it('lists <reg> elements in order, skipping commented-out ones (as in QEMU 7.2 i386-64bit.xml)', () => {
    const xml = `<feature><reg name="rax" bitsize="64" regnum="0"/><reg name="rbx" bitsize="64"/>
      <!--reg name="cs_base" bitsize="64"/>
      <reg name="ss_base" bitsize="64"/--><reg name="eflags" bitsize="32" type="x"/><reg name="st0" bitsize="80"/></feature>`;
    assert.deepEqual(parseTargetXmlRegs(xml).map((r) => [r.name, r.regnum, r.offset, r.bits]),
      [['rax', 0, 0, 64], ['rbx', 1, 8, 64], ['eflags', 2, 16, 32], ['st0', 3, 20, 80]]);
    assert.throws(() => parseTargetXmlRegs('<reg name="x" bitsize="7"/>'), /bad <reg>/);
    assert.throws(() => parseTargetXmlRegs('<reg bitsize="8"/>'), /bad <reg>/);
    assert.throws(() => parseTargetXmlRegs('<reg name="x" bitsize="8" regnum="-1"/>'), /bad regnum/);
    assert.deepEqual(parseXmlIncludes('<xi:include href="a.xml"/><!--<xi:include href="b.xml"/>--><xi:include href="../x"/>'), ['a.xml']);
    assert.equal(stripXmlComments('a<!-- b -->c<!-- open'), 'ac');
  });
});

/** A packet with `raw` as the wire payload (no escaping: for run-length encoded replies). */
function rawPacket(raw: string): string {
  return `$${raw}#${checksum(enc(raw)).toString(16).padStart(2, '0')}`;
}

/** A fake stub: answers each request through `answer` (acks everything it receives). */
async function fakeStub(answer: (payload: string, sock: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer((sock) => {
    const p = new PacketParser();
    sock.on('error', () => undefined);   // the client may close first
    sock.on('data', (d: Buffer) => {
      for (const e of p.feed(new Uint8Array(d))) {
        if (e.kind !== 'packet' || e.payload === 'k') continue;
        sock.write('+');
        answer(e.payload, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return { server, port: typeof a === 'object' && a !== null ? a.port : 0 };
}

describe('gdb-remote client against a fake stub', () => {
  it('handshakes, resends after a NAK, skips console output, reads registers and memory', async () => {
    let nakked = false;
    const { server, port } = await fakeStub((p, s) => {
      if (p.startsWith('qSupported')) s.write(encodePacket('PacketSize=1000'));
      else if (p === 'g' && !nakked) { nakked = true; s.write('-'); }
      else if (p === 'g') s.write(encodePacket('O48690a') + rawPacket('0100000000000000fff*"'));
      else if (p.startsWith('m')) s.write(encodePacket('}]0102'.replace('}]', '7d')));
      else s.write(encodePacket(''));
    });
    try {
      const c = await GdbClient.connect('127.0.0.1', port, { timeoutMs: 2000 });
      c.layout = [{ name: 'a', bits: 64, regnum: 0, offset: 0 }, { name: 'b', bits: 32, regnum: 1, offset: 8 }];
      const regs = await c.readRegisters();
      assert.equal(regs.get('a'), 1n);
      assert.equal(regs.get('b'), 0xffffffffn);
      assert.deepEqual([...await c.readMemory(0x1000n, 3)], [0x7d, 0x01, 0x02]);
      assert.equal(nakked, true);
      c.close();
    } finally {
      server.close();
    }
  });

  it('times out when the stub never answers, and fails on a malformed reply in no-ack mode', async () => {
    const { server, port } = await fakeStub((p, s) => {
      if (p.startsWith('qSupported')) s.write(encodePacket('QStartNoAckMode+'));
      else if (p === 'QStartNoAckMode') s.write(encodePacket('OK'));
      else if (p === 'g') s.write('$00#ff');
      // '?' : no answer
    });
    try {
      const c = await GdbClient.connect('127.0.0.1', port, { timeoutMs: 300 });
      await assert.rejects(c.readRegistersRaw(), /malformed reply: checksum mismatch/);
      await assert.rejects(c.haltReason(), /no reply within 300 ms/);
      c.close();
    } finally {
      server.close();
    }
  });
});
