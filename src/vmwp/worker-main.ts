/**
 * Entry point of the VM worker process (VMWP): `node dist/src/vmwp/worker-main.js <vm-id>`.
 *
 * Spawned by the management service with child_process.fork (detached, so that it outlives a
 * service restart). It listens on its own Unix socket <runtime>/workers/<vm-id>.sock (mode
 * 0600 in the 0700 runtime dir), records {pid, socket} in <runtime>/workers/<vm-id>.json,
 * tells the spawning service `ready` over the fork IPC channel and then speaks the protocol of
 * src/defs/ipc.ts over the socket. One service connection at a time: a new one (a restarted
 * service) replaces the old. When the VM's run ends (guest power-off, fatal error) or the
 * service turns it off, the worker writes the outcome into its state file (so that a service
 * which was not connected still learns it), removes its socket and exits.
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { errorMessage } from '../base/errors.js';
import { JsonChannel } from '../defs/channel.js';
import { IPC_PROTOCOL_VERSION, MAX_IPC_LINE_BYTES, parseToWorker, type ExitReport, type FromWorker, type ToWorker } from '../defs/ipc.js';
import { tshvPaths, workerSocketPath, workerStateFile } from '../defs/paths.js';
import { WorkerHost, errorCodeOf } from './worker-host.js';

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try { writeSync(fd, text); fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
}

function main(): void {
  const vmId = process.argv[2] ?? '';
  if (!GUID_RE.test(vmId)) {
    process.stderr.write(`tshv worker: bad VM id ${JSON.stringify(vmId)}\n`);
    process.exit(2);
  }
  const paths = tshvPaths();
  mkdirSync(paths.workersDir, { recursive: true, mode: 0o700 });
  const socketPath = workerSocketPath(paths, vmId);
  const stateFile = workerStateFile(paths, vmId);
  const startedAt = new Date().toISOString();
  rmSync(socketPath, { force: true });

  let channel: JsonChannel<ToWorker, FromWorker> | undefined;
  let exiting = false;
  const emit = (m: FromWorker): void => { channel?.send(m); };

  const finish = (exit: ExitReport | undefined): void => {
    if (exiting) return;
    exiting = true;
    host.dispose();
    try {
      writeFileAtomic(stateFile, JSON.stringify({ vmId, pid: process.pid, socket: socketPath, startedAt, exit: exit ?? null }) + '\n');
    } catch { /* best effort */ }
    server.close();
    rmSync(socketPath, { force: true });
    // Let the last messages drain, then go.
    const ch = channel;
    setTimeout(() => { ch?.close('worker exiting'); process.exit(0); }, 50);
  };

  let lastExit: ExitReport | undefined;
  const host: WorkerHost = new WorkerHost(vmId, (m) => {
    if (m.type === 'exit') lastExit = m;
    emit(m);
  }, () => finish(lastExit));

  const handle = async (ch: JsonChannel<ToWorker, FromWorker>, m: ToWorker): Promise<void> => {
    const progress = (op: 'save' | 'restore') => (done: number, total: number): void => ch.send({ type: 'progress', op, done, total });
    try {
      let thenExit = false;
      switch (m.type) {
        case 'hello':
          if (m.protocol !== IPC_PROTOCOL_VERSION) throw new Error(`protocol ${m.protocol} is not ${IPC_PROTOCOL_VERSION}`);
          break;
        case 'start': await host.start(m.config); break;
        case 'restore': await host.restore(m.config, m.path, progress('restore')); break;
        case 'pause': await host.pause(); break;
        case 'resume': host.resume(); break;
        case 'save': await host.save(m.path, progress('save')); break;
        case 'turnOff': await host.turnOff(); thenExit = true; break;
        case 'serialInput': host.serialInput(new Uint8Array(Buffer.from(m.data, 'base64'))); break;
      }
      ch.send({ type: 'reply', seq: m.seq, ok: true, status: host.status() });
      if (thenExit) finish({ type: 'exit', kind: 'guestOff', reason: 'turned off' });
    } catch (e) {
      ch.send({ type: 'reply', seq: m.seq, ok: false, error: { code: errorCodeOf(e), message: errorMessage(e).slice(0, 4000) } });
    }
  };

  const server = createServer((socket: Socket) => {
    channel?.close('replaced by a new service connection');
    const ch = new JsonChannel<ToWorker, FromWorker>(socket, parseToWorker, MAX_IPC_LINE_BYTES);
    channel = ch;
    ch.onMessage((m) => { void handle(ch, m); });
    ch.onClose(() => { if (channel === ch) channel = undefined; });
  });
  server.on('error', (e) => {
    process.stderr.write(`tshv worker ${vmId}: ${e.message}\n`);
    process.exit(1);
  });
  server.listen(socketPath, () => {
    chmodSync(socketPath, 0o600);
    writeFileAtomic(stateFile, JSON.stringify({ vmId, pid: process.pid, socket: socketPath, startedAt, exit: null }) + '\n');
    if (process.send !== undefined) {
      // The fork channel has done its job once `ready` is out; the socket carries everything
      // else, and the worker must not depend on the service process staying alive.
      process.send({ type: 'ready', pid: process.pid, socket: socketPath } satisfies FromWorker, undefined, {}, () => {
        if (process.connected) process.disconnect();
      });
    }
  });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => finish({ type: 'exit', kind: 'crashed', reason: `worker received ${sig}` }));
  }
}

main();
