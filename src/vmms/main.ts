/**
 * Entry point of the management service: `node dist/src/vmms/main.js` (the CLI's
 * `tshv service start` runs it detached; `--foreground` is implied when run by hand).
 *
 * Creates the runtime and data directories with mode 0700 (tightening them if they exist),
 * refuses to start when another service answers on the socket, removes a stale socket,
 * loads the registry, reconnects to live workers, and listens on <runtime>/vmms.sock with mode
 * 0600. SIGTERM / SIGINT or POST /v1/service/shutdown stop it; workers keep running and the
 * next service finds them again.
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { errorMessage } from '../base/errors.js';
import { tshvPaths } from '../defs/paths.js';
import { buildApi } from './api.js';
import { Vmms } from './service.js';

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function main(): Promise<void> {
  const paths = tshvPaths();
  for (const d of [paths.runtimeDir, paths.dataDir, paths.workersDir]) {
    mkdirSync(d, { recursive: true, mode: 0o700 });
    chmodSync(d, 0o700);
  }
  if (await answers(paths.apiSocket)) {
    process.stderr.write(`vmms: a service already answers on ${paths.apiSocket}\n`);
    process.exit(0);
  }
  rmSync(paths.apiSocket, { force: true });
  const log = (m: string): void => { process.stderr.write(`${new Date().toISOString()} vmms: ${m}\n`); };
  const vmms = new Vmms(paths, log);
  await vmms.init();
  let closing = false;
  const shutdown = (why: string): void => {
    if (closing) return;
    closing = true;
    log(`stopping (${why}); workers keep running`);
    vmms.detachAll();
    rmSync(paths.apiSocket, { force: true });
    rmSync(paths.pidFile, { force: true });
    void app.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  const app = await buildApi(vmms, { onShutdown: () => shutdown('shutdown request') });
  const oldMask = process.umask(0o077);
  try {
    await app.listen({ path: paths.apiSocket });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(paths.apiSocket, 0o600);
  writeFileSync(paths.pidFile, `${process.pid}\n`, { mode: 0o600 });
  log(`listening on ${paths.apiSocket} (pid ${process.pid}, ${vmms.vmCount} VMs)`);
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((e: unknown) => {
  process.stderr.write(`vmms: ${errorMessage(e)}\n`);
  process.exit(1);
});
