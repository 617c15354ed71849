/**
 * `tshv service start|stop|status`: the management service (VMMS) itself. The other VM verbs
 * start it on demand; `stop` leaves the VMs' worker processes running (a new service finds
 * them again).
 */
import type { Command } from 'commander';
import { ApiClient } from './client.js';
import { ExitCode } from './exit-codes.js';

export function registerServiceCommands(program: Command): void {
  const service = program.command('service').description('the management service (VMMS)');

  service.command('start')
    .description('start the service if it is not running')
    .action(async () => {
      const c = new ApiClient();
      const before = await c.serviceInfo();
      const info = before ?? await c.ensureService();
      process.stdout.write(`${before !== undefined ? 'already running' : 'started'}: pid ${info.pid}, socket ${c.paths.apiSocket}\n`);
    });

  service.command('stop')
    .description('stop the service (VM worker processes keep running)')
    .action(async () => {
      const c = new ApiClient();
      const info = await c.serviceInfo();
      if (info === undefined) { process.stdout.write('not running\n'); return; }
      await c.request('POST', '/v1/service/shutdown', {});
      const deadline = performance.now() + 5000;
      while (performance.now() < deadline && await c.serviceInfo().catch(() => undefined) !== undefined) {
        await new Promise((r) => setTimeout(r, 50));
      }
      process.stdout.write(`stopped (pid ${info.pid})\n`);
    });

  service.command('status')
    .description('whether the service runs (exit 0) or not (exit 9)')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const c = new ApiClient();
      const info = await c.serviceInfo();
      if (o.json === true) process.stdout.write(JSON.stringify(info ?? { running: false }) + '\n');
      else if (info === undefined) process.stdout.write(`not running (socket ${c.paths.apiSocket})\n`);
      else process.stdout.write(`running: pid ${info.pid}, ${info.vmCount} VMs, up ${Math.round(info.uptimeMs / 1000)} s, socket ${c.paths.apiSocket}\n`);
      if (info === undefined) process.exitCode = ExitCode.SERVICE;
    });
}
