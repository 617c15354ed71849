/**
 * The VM verbs of `tshv`, in the spirit of the Hyper-V cmdlets, each a thin client of the VMMS
 * API (client.ts):
 *
 *   tshv new NAME [--memory 256M] [--cpus 1] [--kernel F] [--initrd F] [--append S]
 *                 [--flat FILE --mode real|prot32|long64 --load-gpa ADDR [--entry-gpa ADDR]]
 *   tshv list [--json]            (Get-VM: Name, State, CPU Usage, Memory, Uptime, Status)
 *   tshv show VM [--json]
 *   tshv start VM                 (a Saved VM is restored, with a progress bar)
 *   tshv stop VM [--turn-off] [--timeout SECONDS]
 *   tshv pause VM | resume VM | save VM | remove VM
 *   tshv console VM               (serial console; Ctrl-] detaches)
 *
 * VM is a name, a GUID or a unique GUID prefix. The global --backend picks the backend of a
 * new VM. Failures are ApiClientError, mapped onto exit codes by main.ts.
 */
import { resolve } from 'node:path';
import Table from 'cli-table3';
import type { Command } from 'commander';
import { TshvError } from '../base/errors.js';
import type { Boot, NewVmRequest, VmInfo, VmList } from '../defs/api.js';
import { makeProgress } from '../image/cli.js';
import { ApiClient, ApiClientError, vmPath } from './client.js';
import { parseMemory } from './run.js';

const CTRL_RIGHT_BRACKET = 0x1d;

function parseAddress(what: string, s: string): number {
  const v = /^0x[0-9a-f]{1,12}$/i.test(s) ? Number.parseInt(s.slice(2), 16) : /^[0-9]{1,15}$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(v)) throw new TshvError('EINVAL', `${what}: cannot parse ${JSON.stringify(s)} (use e.g. 0x100000)`);
  return v;
}

export function formatUptime(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

export function vmTable(vms: readonly VmInfo[]): string {
  const t = new Table({ head: ['Name', 'State', 'CPU Usage(%)', 'Memory(M)', 'Uptime', 'Status'], style: { head: [], border: [] } });
  for (const v of vms) {
    t.push([v.name, v.state, v.cpuUsagePercent.toFixed(0), String(Math.round(v.memoryBytes / 1048576)), formatUptime(v.uptimeMs), clip(v.status, 60)]);
  }
  return t.toString();
}

function describe(v: VmInfo): string {
  const boot = v.boot.kind === 'flat'
    ? `flat ${v.boot.file} (${v.boot.mode} at 0x${v.boot.loadGpa.toString(16)})`
    : `linux ${v.boot.kernel ?? '(default image)'}`;
  return [
    `Name:          ${v.name}`,
    `Id:            ${v.id}`,
    `State:         ${v.state}`,
    `Status:        ${v.status}`,
    `Memory:        ${Math.round(v.memoryBytes / 1048576)} MiB`,
    `Processors:    ${v.cpus}`,
    `Backend:       ${v.backend}`,
    `Boot:          ${boot}`,
    `Uptime:        ${formatUptime(v.uptimeMs)}`,
    `CPU usage:     ${v.cpuUsagePercent}%`,
    `Worker:        ${v.workerPid !== null ? `pid ${v.workerPid}${v.workerRssBytes !== null ? `, RSS ${Math.round(v.workerRssBytes / 1048576)} MiB` : ''}` : '-'}`,
    `Saved state:   ${v.hasSavedState ? 'yes' : 'no'}`,
    `Created:       ${v.createdAt}`,
  ].join('\n') + '\n';
}

/** Run a long action while drawing the VM's reported progress. */
async function withProgress(client: ApiClient, ref: string, action: Promise<VmInfo>): Promise<VmInfo> {
  const progress = makeProgress();
  let done = false;
  const poll = (async () => {
    while (!done) {
      await new Promise((r) => setTimeout(r, 100));
      if (done) break;
      const v = await client.request<VmInfo>('GET', vmPath(ref), undefined, 5000).catch(() => undefined);
      if (v?.progress != null && v.progress.total > 0) progress.onProgress(v.progress.op, v.progress.done, v.progress.total);
    }
  })();
  try {
    return await action;
  } finally {
    done = true;
    await poll;
    progress.stop();
  }
}

export function registerVmCommands(program: Command): void {
  const client = (): ApiClient => new ApiClient();
  const print = (v: VmInfo, json: boolean | undefined): void => {
    process.stdout.write(json === true ? JSON.stringify(v) + '\n' : `${v.name}: ${v.state} (${v.status})\n`);
  };

  program.command('new')
    .description('create a VM (New-VM); --flat runs a freestanding test guest with the test device')
    .argument('<name>', 'VM name (letters, digits, . _ -)')
    .option('--memory <size>', 'guest memory', '256M')
    .option('--cpus <n>', 'virtual processors', '1')
    .option('--kernel <file>', 'vmlinux or bzImage (default: the default image)')
    .option('--initrd <file>', 'initramfs (default: the default image)')
    .option('--append <cmdline>', 'kernel command line')
    .option('--flat <file>', 'a flat binary test guest instead of Linux')
    .option('--mode <mode>', 'CPU mode the flat guest starts in: real, prot32 or long64', 'long64')
    .option('--load-gpa <addr>', 'guest physical address to load the flat guest at', '0x100000')
    .option('--entry-gpa <addr>', 'entry point of the flat guest (default: its load address)')
    .option('--scratch <value>', 'initial test device scratch register (0xffffffff: long64-counter counts forever)')
    .option('--json', 'print the new VM as JSON')
    .action(async (name: string, o: { memory: string; cpus: string; kernel?: string; initrd?: string; append?: string; flat?: string; mode: string; loadGpa: string; entryGpa?: string; scratch?: string; json?: boolean }) => {
      const cpus = Number(o.cpus);
      if (!Number.isInteger(cpus)) throw new TshvError('EINVAL', `--cpus must be an integer, got ${o.cpus}`);
      let boot: Boot;
      if (o.flat !== undefined) {
        if (o.mode !== 'real' && o.mode !== 'prot32' && o.mode !== 'long64') throw new TshvError('EINVAL', `--mode must be real, prot32 or long64, got ${o.mode}`);
        boot = {
          kind: 'flat', file: resolve(o.flat), mode: o.mode, loadGpa: parseAddress('--load-gpa', o.loadGpa),
          ...(o.entryGpa !== undefined ? { entryGpa: parseAddress('--entry-gpa', o.entryGpa) } : {}),
          ...(o.scratch !== undefined ? { scratch: parseAddress('--scratch', o.scratch) } : {}),
        };
      } else {
        boot = {
          kind: 'linux',
          ...(o.kernel !== undefined ? { kernel: resolve(o.kernel) } : {}),
          ...(o.initrd !== undefined ? { initrd: resolve(o.initrd) } : {}),
          ...(o.append !== undefined ? { append: o.append } : {}),
        };
      }
      const backend = program.opts<{ backend?: 'kvm' | 'emu' }>().backend;
      const req: NewVmRequest = { name, memoryBytes: parseMemory(o.memory), cpus, boot, ...(backend !== undefined ? { backend } : {}) };
      const v = await client().call<VmInfo>('POST', '/v1/vms', req);
      if (o.json === true) process.stdout.write(JSON.stringify(v) + '\n');
      else process.stdout.write(`created ${v.name} (${v.id})\n`);
    });

  program.command('list')
    .description('list VMs (Get-VM)')
    .option('--json', 'print {"vms":[...]} as JSON')
    .action(async (o: { json?: boolean }) => {
      const l = await client().call<VmList>('GET', '/v1/vms');
      process.stdout.write(o.json === true ? JSON.stringify(l) + '\n' : vmTable(l.vms) + '\n');
    });

  program.command('show')
    .description('show one VM')
    .argument('<vm>', 'name, GUID or GUID prefix')
    .option('--json', 'print as JSON')
    .action(async (ref: string, o: { json?: boolean }) => {
      const v = await client().call<VmInfo>('GET', vmPath(ref));
      process.stdout.write(o.json === true ? JSON.stringify(v) + '\n' : describe(v));
    });

  program.command('start')
    .description('start a VM (Start-VM); a Saved VM is restored from its saved state')
    .argument('<vm>', 'name, GUID or GUID prefix')
    .option('--json', 'print the VM as JSON')
    .action(async (ref: string, o: { json?: boolean }) => {
      const c = client();
      await c.ensureService();
      print(await withProgress(c, ref, c.request<VmInfo>('POST', vmPath(ref, '/start'), {})), o.json);
    });

  program.command('stop')
    .description('stop a VM (Stop-VM). Graceful shutdown needs the ACPI power button or the shutdown integration service, which tshv does not have yet: without --turn-off the service waits --timeout seconds for the guest to power off by itself, then turns it off')
    .argument('<vm>', 'name, GUID or GUID prefix')
    .option('--turn-off', 'cut power at once')
    .option('--timeout <seconds>', 'how long to wait for a graceful stop', '10')
    .option('--json', 'print the VM as JSON')
    .action(async (ref: string, o: { turnOff?: boolean; timeout: string; json?: boolean }) => {
      const s = Number(o.timeout);
      if (!Number.isFinite(s) || s < 0 || s > 600) throw new TshvError('EINVAL', `--timeout must be 0..600 seconds, got ${o.timeout}`);
      print(await client().call<VmInfo>('POST', vmPath(ref, '/stop'), { turnOff: o.turnOff === true, timeoutMs: Math.round(s * 1000) }), o.json);
    });

  for (const [verb, desc] of [['pause', 'pause a running VM (Suspend-VM)'], ['resume', 'resume a paused VM (Resume-VM)']] as const) {
    program.command(verb).description(desc).argument('<vm>', 'name, GUID or GUID prefix').option('--json', 'print the VM as JSON')
      .action(async (ref: string, o: { json?: boolean }) => {
        print(await client().call<VmInfo>('POST', vmPath(ref, `/${verb}`), {}), o.json);
      });
  }

  program.command('save')
    .description('save a running or paused VM (Save-VM); its worker stays, and `start` restores it')
    .argument('<vm>', 'name, GUID or GUID prefix')
    .option('--json', 'print the VM as JSON')
    .action(async (ref: string, o: { json?: boolean }) => {
      const c = client();
      await c.ensureService();
      print(await withProgress(c, ref, c.request<VmInfo>('POST', vmPath(ref, '/save'), {})), o.json);
    });

  program.command('remove')
    .description('remove a VM that is Off, Saved or Crashed, with its data directory (Remove-VM)')
    .argument('<vm>', 'name, GUID or GUID prefix')
    .action(async (ref: string) => {
      await client().call<undefined>('DELETE', vmPath(ref));
      process.stdout.write(`removed ${ref}\n`);
    });

  program.command('console')
    .description('attach to the serial console of a running VM (Ctrl-] detaches)')
    .argument('<vm>', 'name, GUID or GUID prefix')
    .action(async (ref: string) => {
      const c = client();
      const v = await c.call<VmInfo>('GET', vmPath(ref));
      if (v.state !== 'Running' && v.state !== 'Paused') throw new ApiClientError(409, 'ESTATE', `VM ${v.name} is ${v.state}; the console needs it Running`);
      const res = await c.stream(vmPath(ref, '/console/stream'));
      const stdin = process.stdin;
      const tty = stdin.isTTY;
      if (tty) process.stderr.write(`tshv: connected to ${v.name}; Ctrl-] detaches\r\n`);
      await new Promise<void>((resolveDone) => {
        let finished = false;
        const finish = (why: string): void => {
          if (finished) return;
          finished = true;
          if (tty) stdin.setRawMode(false);
          stdin.removeAllListeners('data');
          // pause() alone keeps a pipe open until its writer closes it; the console is done.
          stdin.destroy();
          res.destroy();
          process.stderr.write(`\r\ntshv: ${why}\r\n`);
          resolveDone();
        };
        res.on('data', (b: Buffer) => process.stdout.write(b));
        res.on('end', () => finish('the VM stopped; console closed'));
        res.on('error', () => finish('connection to the service lost'));
        if (tty) stdin.setRawMode(true);
        stdin.on('data', (b: Buffer) => {
          const cut = b.indexOf(CTRL_RIGHT_BRACKET);
          const send = cut >= 0 ? b.subarray(0, cut) : b;
          if (send.length > 0) {
            c.request('POST', vmPath(ref, '/console/input'), { data: send.toString('base64') }).catch((e: unknown) => {
              finish(`input refused: ${e instanceof Error ? e.message : String(e)}`);
            });
          }
          if (cut >= 0) finish('detached');
        });
        stdin.on('end', () => { if (!tty) return; finish('stdin closed'); });
        stdin.resume();
      });
    });
}
