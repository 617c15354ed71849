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
import { ExitCode, exitCodeFor } from './exit-codes.js';

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
    process.stderr.write(`tshv: internal error: ${errorMessage(e)}\n`);
    if (process.env['TSHV_DEBUG'] && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
    return ExitCode.FAILURE;
  }
}
