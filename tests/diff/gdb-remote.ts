/**
 * A small GDB remote serial protocol client (GDB manual, Appendix E "GDB Remote Serial
 * Protocol"), enough to drive QEMU's gdbstub as the oracle of the differential tests.
 *
 * Wire format: a packet is `$<payload>#<two hex digits>`, the checksum being the sum of the
 * payload bytes modulo 256. The receiver acknowledges with `+` (or `-` to ask for a resend)
 * until both sides switch to no-ack mode (`QStartNoAckMode`). In a payload the bytes `$`, `#`,
 * `}` and `*` are escaped as `}` followed by the byte XOR 0x20; replies may also be
 * run-length encoded: `X*N` repeats X a further (N - 29) times, N printable (N - 29 in 3..97,
 * never `#` or `$`).
 *
 * The parser (PacketParser, decodePayload) is pure and bounded: every malformed input (bad
 * checksum, bad escape, RLE with nothing to repeat, an over-long packet, junk between packets)
 * gives a typed error event and the parser resynchronises at the next `$`. The client
 * (GdbClient) speaks to one stub over TCP, one request at a time, with a timeout on every
 * reply; it only ever connects to an address its caller gives (the QEMU driver uses loopback).
 *
 * Registers: `readRegisterLayout()` reads the stub's target description
 * (`qXfer:features:read:target.xml`, following `xi:include`s) and lists the registers in
 * `g`-packet order with their sizes, so nothing about QEMU's layout is assumed here.
 */
import { Socket, connect } from 'node:net';

export const MAX_PACKET = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Framing (pure)

export function checksum(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

/** Escape `$ # } *` and frame `payload` (latin1 text) as a packet. */
export function encodePacket(payload: string): string {
  let body = '';
  for (let i = 0; i < payload.length; i++) {
    const c = payload.charCodeAt(i);
    if (c > 0xff) throw new RangeError('packet payload must be latin1');
    if (c === 0x24 || c === 0x23 || c === 0x7d || c === 0x2a) body += '}' + String.fromCharCode(c ^ 0x20);
    else body += payload[i];
  }
  let s = 0;
  for (let i = 0; i < body.length; i++) s = (s + body.charCodeAt(i)) & 0xff;
  return `$${body}#${s.toString(16).padStart(2, '0')}`;
}

export type DecodeResult = { ok: true; payload: string } | { ok: false; error: string };

/** Undo escaping and run-length encoding of a received payload (bytes between `$` and `#`). */
export function decodePayload(raw: Uint8Array, maxOut = MAX_PACKET): DecodeResult {
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === 0x7d) {
      const n = raw[i + 1];
      if (n === undefined) return { ok: false, error: 'escape character at end of packet' };
      out.push(n ^ 0x20);
      i++;
    } else if (c === 0x2a) {
      const n = raw[i + 1];
      if (n === undefined) return { ok: false, error: 'run-length marker at end of packet' };
      if (out.length === 0) return { ok: false, error: 'run-length marker with nothing to repeat' };
      const count = n - 29;
      if (count < 3 || count > 97) return { ok: false, error: `run-length count ${count} out of range` };
      if (out.length + count > maxOut) return { ok: false, error: 'decoded packet too long' };
      const prev = out[out.length - 1]!;
      for (let k = 0; k < count; k++) out.push(prev);
      i++;
    } else {
      out.push(c);
    }
    if (out.length > maxOut) return { ok: false, error: 'decoded packet too long' };
  }
  let s = '';
  for (let i = 0; i < out.length; i += 8192) s += String.fromCharCode(...out.slice(i, i + 8192));
  return { ok: true, payload: s };
}

export type WireEvent =
  | { kind: 'ack' }
  | { kind: 'nak' }
  | { kind: 'packet'; payload: string }
  | { kind: 'notification'; payload: string }
  | { kind: 'error'; error: string };

const HEX = /^[0-9a-fA-F]$/;

/**
 * Incremental packet parser: feed() bytes as they arrive, get the complete events. Holds at
 * most MAX_PACKET + 3 bytes of a partial packet.
 */
export class PacketParser {
  #buf: number[] = [];
  #state: 'idle' | 'body' | 'cs1' | 'cs2' = 'idle';
  #start = 0x24;
  #cs = '';
  constructor(readonly maxPacket = MAX_PACKET) {}

  feed(bytes: Uint8Array): WireEvent[] {
    const ev: WireEvent[] = [];
    for (const b of bytes) {
      switch (this.#state) {
        case 'idle':
          if (b === 0x2b) ev.push({ kind: 'ack' });
          else if (b === 0x2d) ev.push({ kind: 'nak' });
          else if (b === 0x24 || b === 0x25) { this.#state = 'body'; this.#start = b; this.#buf = []; }
          else if (b === 0x03) { /* interrupt request: only stubs receive it */ }
          else ev.push({ kind: 'error', error: `unexpected byte 0x${b.toString(16)} between packets` });
          break;
        case 'body':
          if (b === 0x23) { this.#state = 'cs1'; this.#cs = ''; }
          else if (b === 0x24) { ev.push({ kind: 'error', error: 'packet start inside a packet' }); this.#buf = []; }
          else if (this.#buf.length >= this.maxPacket) { ev.push({ kind: 'error', error: 'packet too long' }); this.#state = 'idle'; this.#buf = []; }
          else this.#buf.push(b);
          break;
        case 'cs1':
        case 'cs2': {
          const ch = String.fromCharCode(b);
          if (!HEX.test(ch)) { ev.push({ kind: 'error', error: `bad checksum digit 0x${b.toString(16)}` }); this.#state = 'idle'; break; }
          this.#cs += ch;
          if (this.#state === 'cs1') { this.#state = 'cs2'; break; }
          this.#state = 'idle';
          const raw = Uint8Array.from(this.#buf);
          this.#buf = [];
          const want = parseInt(this.#cs, 16);
          const got = checksum(raw);
          if (want !== got) { ev.push({ kind: 'error', error: `checksum mismatch: packet says ${this.#cs}, computed ${got.toString(16).padStart(2, '0')}` }); break; }
          const d = decodePayload(raw, this.maxPacket);
          if (!d.ok) ev.push({ kind: 'error', error: d.error });
          else ev.push({ kind: this.#start === 0x25 ? 'notification' : 'packet', payload: d.payload });
          break;
        }
      }
    }
    return ev;
  }
}

// ---------------------------------------------------------------------------------------------
// Payload helpers (pure)

export function hexToBytes(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) throw new RangeError(`not a hex byte string: ${s.slice(0, 40)}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function bytesToHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** Little-endian integer from target-order bytes. */
export function leToBigint(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

export function bigintToLe(v: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = BigInt.asUintN(size * 8, v);
  for (let i = 0; i < size; i++) { out[i] = Number(x & 0xffn); x >>= 8n; }
  return out;
}

export type StopReply =
  | { kind: 'signal'; signal: number; info: Map<string, string> }
  | { kind: 'exited'; code: number }
  | { kind: 'terminated'; signal: number };

/** Parse a stop reply (`S05`, `T05thread:01;`, `W00`, `X09`). */
export function parseStopReply(p: string): StopReply {
  const m = /^([STWX])([0-9a-fA-F]{2})(.*)$/s.exec(p);
  if (m === null) throw new RangeError(`not a stop reply: ${p.slice(0, 60)}`);
  const n = parseInt(m[2]!, 16);
  if (m[1] === 'W') return { kind: 'exited', code: n };
  if (m[1] === 'X') return { kind: 'terminated', signal: n };
  const info = new Map<string, string>();
  if (m[1] === 'T') {
    for (const part of m[3]!.split(';')) {
      if (part === '') continue;
      const k = part.indexOf(':');
      if (k <= 0) throw new RangeError(`bad stop-reply field ${part.slice(0, 40)}`);
      info.set(part.slice(0, k), part.slice(k + 1));
    }
  }
  return { kind: 'signal', signal: n, info };
}

export interface RegDesc { name: string; bits: number; regnum: number; offset: number }

/**
 * The `<reg>` elements of a target description document in order, with their `regnum`
 * (explicit or continuing from the previous one) and byte offset in the `g` packet.
 * `startRegnum`/`startOffset` continue a layout across included documents.
 */
export function parseTargetXmlRegs(xml: string, startRegnum = 0, startOffset = 0): RegDesc[] {
  if (xml.length > MAX_PACKET) throw new RangeError('target description too long');
  const out: RegDesc[] = [];
  let regnum = startRegnum, offset = startOffset;
  // Registers inside comments do not exist (QEMU 7.2's i386-64bit.xml comments out cs_base..es_base).
  for (const m of stripXmlComments(xml).matchAll(/<reg\b([^>]{0,1000})\/?>/g)) {
    const attrs = new Map<string, string>();
    for (const a of m[1]!.matchAll(/([a-zA-Z_:-]+)\s*=\s*"([^"]*)"/g)) attrs.set(a[1]!, a[2]!);
    const name = attrs.get('name');
    const bits = Number(attrs.get('bitsize'));
    if (name === undefined || !Number.isInteger(bits) || bits <= 0 || bits > 4096 || bits % 8 !== 0) {
      throw new RangeError(`bad <reg> element: ${m[0].slice(0, 80)}`);
    }
    const rn = attrs.get('regnum');
    if (rn !== undefined) {
      const n = Number(rn);
      if (!Number.isInteger(n) || n < 0 || n > 10000) throw new RangeError(`bad regnum ${rn}`);
      regnum = n;
    }
    out.push({ name, bits, regnum, offset });
    regnum++;
    offset += bits / 8;
  }
  return out;
}

/** The document without `<!-- ... -->` comments (an unterminated comment runs to the end). */
export function stripXmlComments(xml: string): string {
  return xml.replace(/<!--[\s\S]*?(-->|$)/g, '');
}

/** The `href`s of `<xi:include>` elements in document order. */
export function parseXmlIncludes(xml: string): string[] {
  return [...stripXmlComments(xml).matchAll(/<xi:include\s+href="([A-Za-z0-9_.-]{1,100})"\s*\/>/g)].map((m) => m[1]!);
}

// ---------------------------------------------------------------------------------------------
// The client

export class GdbError extends Error {
  override name = 'GdbError';
}

export interface GdbClientOptions { timeoutMs?: number }

/** One connection to a gdbstub. Requests are strictly sequential (await each one). */
export class GdbClient {
  readonly #sock: Socket;
  readonly #parser = new PacketParser();
  readonly #queue: WireEvent[] = [];
  #waiter: (() => void) | null = null;
  #closed: Error | null = null;
  #noAck = false;
  readonly timeoutMs: number;
  layout: RegDesc[] = [];
  #gSize = 0;

  private constructor(sock: Socket, opts: GdbClientOptions) {
    this.#sock = sock;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    sock.on('data', (d: Buffer) => {
      for (const e of this.#parser.feed(new Uint8Array(d.buffer, d.byteOffset, d.length))) this.#queue.push(e);
      this.#wake();
    });
    sock.on('close', () => { this.#closed ??= new GdbError('connection closed by the stub'); this.#wake(); });
    sock.on('error', (e) => { this.#closed = new GdbError(`socket error: ${e.message}`); this.#wake(); });
  }

  static async connect(host: string, port: number, opts: GdbClientOptions = {}): Promise<GdbClient> {
    const timeout = opts.timeoutMs ?? 10_000;
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host, port });
      const t = setTimeout(() => { s.destroy(); reject(new GdbError(`connect to ${host}:${port} timed out`)); }, timeout);
      s.once('connect', () => { clearTimeout(t); resolve(s); });
      s.once('error', (e) => { clearTimeout(t); reject(new GdbError(`connect to ${host}:${port}: ${e.message}`)); });
    });
    sock.setNoDelay(true);
    const c = new GdbClient(sock, opts);
    const sup = await c.request('qSupported:xmlRegisters=i386');
    if (/QStartNoAckMode\+/.test(sup)) {
      const r = await c.request('QStartNoAckMode');
      if (r === 'OK') c.#noAck = true;
    }
    return c;
  }

  #wake(): void { const w = this.#waiter; this.#waiter = null; w?.(); }

  async #next(deadline: number): Promise<WireEvent> {
    for (;;) {
      const e = this.#queue.shift();
      if (e !== undefined) return e;
      if (this.#closed !== null) throw this.#closed;
      const left = deadline - Date.now();
      if (left <= 0) throw new GdbError(`no reply within ${this.timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { this.#waiter = null; resolve(); }, left);
        this.#waiter = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  /** Send one packet and return the reply payload (`O` console-output packets are skipped). */
  async request(payload: string, timeoutMs = this.timeoutMs): Promise<string> {
    const frame = encodePacket(payload);
    const deadline = Date.now() + timeoutMs;
    let resends = 0;
    this.#sock.write(frame, 'latin1');
    for (;;) {
      const e = await this.#next(deadline);
      switch (e.kind) {
        case 'ack': break;
        case 'nak':
          if (++resends > 3) throw new GdbError(`stub rejected ${payload.slice(0, 20)} ${resends} times`);
          this.#sock.write(frame, 'latin1');
          break;
        case 'error':
          if (!this.#noAck) this.#sock.write('-');
          else throw new GdbError(`malformed reply: ${e.error}`);
          break;
        case 'notification': break;
        case 'packet':
          if (!this.#noAck) this.#sock.write('+');
          if (/^O[0-9a-fA-F]+$/.test(e.payload) && e.payload !== 'OK') break;
          return e.payload;
      }
    }
  }

  /** Request whose reply must be `OK`. */
  async ok(payload: string): Promise<void> {
    const r = await this.request(payload);
    if (r !== 'OK') throw new GdbError(`${payload.slice(0, 30)}: stub answered ${r.slice(0, 60)}`);
  }

  /** Read a qXfer object completely (bounded by MAX_PACKET). */
  async readXfer(object: string, annex: string): Promise<string> {
    let out = '';
    for (;;) {
      const r = await this.request(`qXfer:${object}:read:${annex}:${out.length.toString(16)},ffb`);
      if (r.startsWith('E') || r === '') throw new GdbError(`qXfer ${object} ${annex}: ${r || 'not supported'}`);
      out += r.slice(1);
      if (out.length > MAX_PACKET) throw new GdbError('qXfer object too long');
      if (r[0] === 'l') return out;
      if (r[0] !== 'm') throw new GdbError(`qXfer ${annex}: bad reply ${r.slice(0, 20)}`);
    }
  }

  /** Read the target description and set `layout` (g-packet order). */
  async readRegisterLayout(): Promise<RegDesc[]> {
    const regs: RegDesc[] = [];
    const visit = async (annex: string, depth: number): Promise<void> => {
      if (depth > 4) throw new GdbError('target description includes nest too deep');
      const xml = stripXmlComments(await this.readXfer('features', annex));
      // Registers of this document come before (in document order) or after includes; QEMU's
      // top-level document only includes. Handle both by splitting at each include.
      const parts = xml.split(/(<xi:include\s+href="[^"]*"\s*\/>)/);
      for (const part of parts) {
        const inc = parseXmlIncludes(part);
        if (inc.length > 0) { for (const h of inc) await visit(h, depth + 1); continue; }
        const last = regs[regs.length - 1];
        regs.push(...parseTargetXmlRegs(part, last === undefined ? 0 : last.regnum + 1, last === undefined ? 0 : last.offset + last.bits / 8));
      }
    };
    await visit('target.xml', 0);
    this.layout = regs;
    return regs;
  }

  reg(name: string): RegDesc {
    const r = this.layout.find((d) => d.name === name);
    if (r === undefined) throw new GdbError(`no register ${name} in the target description`);
    return r;
  }

  /** `g`: all registers as raw bytes (target order). */
  async readRegistersRaw(): Promise<Uint8Array> {
    const r = await this.request('g');
    if (r.startsWith('E')) throw new GdbError(`g: ${r}`);
    const b = hexToBytes(r.replace(/x/g, '0'));
    this.#gSize = b.length;
    return b;
  }

  /** `g`, decoded by `layout` into name -> value for every register inside the reply. */
  async readRegisters(): Promise<Map<string, bigint>> {
    const raw = await this.readRegistersRaw();
    const out = new Map<string, bigint>();
    for (const d of this.layout) {
      if (d.offset + d.bits / 8 > raw.length || d.bits > 64) continue;
      out.set(d.name, leToBigint(raw.subarray(d.offset, d.offset + d.bits / 8)));
    }
    return out;
  }

  /** `G`: write all registers from raw bytes (as `g` returned them). */
  async writeRegistersRaw(raw: Uint8Array): Promise<void> {
    if (this.#gSize !== 0 && raw.length !== this.#gSize) throw new GdbError(`G: ${raw.length} bytes, g gave ${this.#gSize}`);
    await this.ok(`G${bytesToHex(raw)}`);
  }

  /** `P`: write one register. */
  async writeRegister(name: string, value: bigint): Promise<void> {
    const d = this.reg(name);
    await this.ok(`P${d.regnum.toString(16)}=${bytesToHex(bigintToLe(value, d.bits / 8))}`);
  }

  /** `m`: read guest-virtual memory, in chunks. */
  async readMemory(addr: bigint, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    for (let done = 0; done < len;) {
      const n = Math.min(0x800, len - done);
      const r = await this.request(`m${(addr + BigInt(done)).toString(16)},${n.toString(16)}`);
      if (r.startsWith('E') || r.length === 0) throw new GdbError(`m ${(addr + BigInt(done)).toString(16)}: ${r || 'empty reply'}`);
      const b = hexToBytes(r);
      if (b.length === 0 || b.length > n) throw new GdbError(`m: ${b.length} bytes for ${n}`);
      out.set(b, done);
      done += b.length;
    }
    return out;
  }

  /** `M`: write guest-virtual memory, in chunks. */
  async writeMemory(addr: bigint, data: Uint8Array): Promise<void> {
    for (let done = 0; done < data.length; done += 0x800) {
      const chunk = data.subarray(done, done + 0x800);
      await this.ok(`M${(addr + BigInt(done)).toString(16)},${chunk.length.toString(16)}:${bytesToHex(chunk)}`);
    }
  }

  /** `s`: one instruction; returns the stop reply. */
  async step(timeoutMs?: number): Promise<StopReply> {
    return parseStopReply(await this.request('s', timeoutMs));
  }

  /** `c`: run until a breakpoint or the end; returns the stop reply. */
  async cont(timeoutMs?: number): Promise<StopReply> {
    return parseStopReply(await this.request('c', timeoutMs));
  }

  /** `?`: why the target stopped. */
  async haltReason(): Promise<StopReply> {
    return parseStopReply(await this.request('?'));
  }

  async setBreakpoint(addr: bigint): Promise<void> { await this.ok(`Z0,${addr.toString(16)},1`); }
  async clearBreakpoint(addr: bigint): Promise<void> { await this.ok(`z0,${addr.toString(16)},1`); }

  /** Send the kill request (no reply expected) and close. */
  close(): void {
    if (this.#closed === null) {
      try { this.#sock.write(encodePacket('k'), 'latin1'); } catch { /* closing anyway */ }
    }
    this.#closed ??= new GdbError('client closed');
    this.#sock.destroy();
  }
}
