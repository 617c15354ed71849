/**
 * The `tshv` command line (the counterpart of Hyper-V's PowerShell cmdlets).
 *
 * Every command accepts `--backend kvm|emu` to override the processor backend picked by
 * probing the host CPU. Exit codes are documented in exit-codes.ts and the README.
 */
import { Command, CommanderError, Option } from 'commander';
import { TshvError, errorMessage } from '../base/errors.js';
import { registerImageCommands } from '../image/cli.js';
import { registerProbeCommand } from './probe.js';
import { registerRunCommand } from './run.js';
import { ExitCode, exitCodeFor, exitCodeForApi } from './exit-codes.js';
import { ApiClientError } from './client.js';
import { registerServiceCommands } from './service.js';
import { registerVmCommands } from './vm.js';

export function buildProgram(): Command {
  const program = new Command('tshv')
    .description('tshv: a Hyper-V-style virtualization stack in TypeScript')
    .version('0.1.0')
    .addOption(new Option('--backend <kind>', 'processor backend (default: probed from the host CPU)').choices(['kvm', 'emu']))
    .exitOverride()
    .showHelpAfterError();
  registerProbeCommand(program);
  registerImageCommands(program);
  registerRunCommand(program);
  registerVmCommands(program);
  registerServiceCommands(program);
  return program;
}

export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return ExitCode.OK;
      return ExitCode.USAGE;
    }
    if (e instanceof TshvError) {
      process.stderr.write(`tshv: ${e.message}\n`);
      return exitCodeFor(e.code);
    }
    if (e instanceof ApiClientError) {
      process.stderr.write(`tshv: ${e.message}\n`);
      return exitCodeForApi(e.code);
    }
    const sys = e as NodeJS.ErrnoException | undefined;
    if (sys?.syscall === 'connect' && (sys.code === 'ECONNREFUSED' || sys.code === 'ENOENT')) {
      process.stderr.write(`tshv: cannot reach the management service: ${errorMessage(e)}\n`);
      return ExitCode.SERVICE;
    }
    process.stderr.write(`tshv: internal error: ${errorMessage(e)}\n`);
    if (process.env['TSHV_DEBUG'] && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
    return ExitCode.FAILURE;
  }
}
