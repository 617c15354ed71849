/**
 * Newline-delimited JSON framing for the VMMS <-> VMWP socket, with validation on receipt.
 *
 * `LineSplitter` is the pure, bounded part: bytes in, complete lines out; a line longer than
 * the limit is an error (the peer is broken or hostile), never an unbounded buffer.
 * `JsonChannel` wraps a duplex socket: `send()` writes one message per line; each received
 * line is JSON-parsed and passed through the given validator; an invalid line closes the
 * channel with the reason (the protocol has no way to resynchronise on a peer that lies).
 */
import type { Socket } from 'node:net';
import type { Parsed } from './ipc.js';

export class LineSplitter {
  #parts: Buffer[] = [];
  #pending = 0;
  constructor(readonly maxLineBytes: number) {}

  /** Feed bytes; returns the complete lines, or an error when a line exceeds the limit. */
  push(chunk: Buffer): { lines: string[] } | { error: string } {
    const lines: string[] = [];
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, from);
      if (nl < 0) break;
      const piece = chunk.subarray(from, nl);
      if (this.#pending + piece.length > this.maxLineBytes) return { error: `line longer than ${this.maxLineBytes} bytes` };
      this.#parts.push(piece);
      lines.push(Buffer.concat(this.#parts).toString('utf8'));
      this.#parts = [];
      this.#pending = 0;
      from = nl + 1;
    }
    const rest = chunk.subarray(from);
    if (this.#pending + rest.length > this.maxLineBytes) return { error: `line longer than ${this.maxLineBytes} bytes` };
    if (rest.length > 0) {
      this.#parts.push(Buffer.from(rest));
      this.#pending += rest.length;
    }
    return { lines };
  }
}

export class JsonChannel<In, Out> {
  readonly #socket: Socket;
  readonly #splitter: LineSplitter;
  #closed = false;
  #onMessage: (m: In) => void = () => undefined;
  #onClose: (reason: string) => void = () => undefined;

  constructor(socket: Socket, validate: (v: unknown) => Parsed<In>, maxLineBytes: number) {
    this.#socket = socket;
    this.#splitter = new LineSplitter(maxLineBytes);
    socket.on('data', (chunk: Buffer) => {
      if (this.#closed) return;
      const r = this.#splitter.push(chunk);
      if ('error' in r) { this.close(`protocol error: ${r.error}`); return; }
      for (const line of r.lines) {
        if (this.#closed) return;
        let v: unknown;
        try { v = JSON.parse(line); } catch { this.close('protocol error: a line is not JSON'); return; }
        const p = validate(v);
        if (!p.ok) { this.close(`protocol error: invalid message: ${p.error}`); return; }
        this.#onMessage(p.value);
      }
    });
    socket.on('error', (e) => this.close(`socket error: ${e.message}`));
    socket.on('close', () => this.close('connection closed'));
  }

  onMessage(fn: (m: In) => void): void { this.#onMessage = fn; }
  onClose(fn: (reason: string) => void): void { this.#onClose = fn; }
  get closed(): boolean { return this.#closed; }

  send(m: Out): void {
    if (this.#closed) return;
    this.#socket.write(JSON.stringify(m) + '\n');
  }

  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
    this.#onClose(reason);
  }
}
