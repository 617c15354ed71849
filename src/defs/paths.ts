/**
 * Where the management plane keeps things, shared by the service (VMMS), its workers and the
 * CLI so that all three agree without configuration.
 *
 *   runtime dir (0700): vmms.sock (the API), vmms.pid, workers/<vm-id>.sock and .json (each
 *                       worker's socket and {pid, socket} state file)
 *   data dir (0700):    vms/<vm-id>/config.json (the registry), vms/<vm-id>/saved.vmstate,
 *                       vms/<vm-id>/worker.log, vmms.log
 *
 * TSHV_HOME=<dir> puts both under <dir>/run and <dir>/data (every test uses its own temp dir).
 * Otherwise the runtime dir is $XDG_RUNTIME_DIR/tshv, falling back to ~/.local/state/tshv/run,
 * and the data dir $XDG_DATA_HOME/tshv or ~/.local/share/tshv.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface TshvPaths {
  runtimeDir: string;
  dataDir: string;
  apiSocket: string;
  pidFile: string;
  serviceLog: string;
  workersDir: string;
  vmsDir: string;
}

export function tshvPaths(env: NodeJS.ProcessEnv = process.env): TshvPaths {
  const home = env['TSHV_HOME'];
  let runtimeDir: string;
  let dataDir: string;
  if (home !== undefined && home !== '') {
    runtimeDir = join(home, 'run');
    dataDir = join(home, 'data');
  } else {
    const xdgRun = env['XDG_RUNTIME_DIR'];
    const xdgData = env['XDG_DATA_HOME'];
    runtimeDir = xdgRun !== undefined && xdgRun !== '' ? join(xdgRun, 'tshv') : join(homedir(), '.local', 'state', 'tshv', 'run');
    dataDir = xdgData !== undefined && xdgData !== '' ? join(xdgData, 'tshv') : join(homedir(), '.local', 'share', 'tshv');
  }
  return {
    runtimeDir,
    dataDir,
    apiSocket: join(runtimeDir, 'vmms.sock'),
    pidFile: join(runtimeDir, 'vmms.pid'),
    serviceLog: join(dataDir, 'vmms.log'),
    workersDir: join(runtimeDir, 'workers'),
    vmsDir: join(dataDir, 'vms'),
  };
}

export function workerSocketPath(p: TshvPaths, vmId: string): string { return join(p.workersDir, `${vmId}.sock`); }
export function workerStateFile(p: TshvPaths, vmId: string): string { return join(p.workersDir, `${vmId}.json`); }
export function vmDir(p: TshvPaths, vmId: string): string { return join(p.vmsDir, vmId); }
export function saveFilePath(p: TshvPaths, vmId: string): string { return join(p.vmsDir, vmId, 'saved.vmstate'); }
