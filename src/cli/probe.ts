/** `tshv probe`: which processor backend this host gets, and why. */
import type { Command } from 'commander';
import { probeHost } from '../vmwp/host.js';

export function registerProbeCommand(program: Command): void {
  program
    .command('probe')
    .description('query the host processor and pick the hypervisor backend (kvm on VT-x/AMD-V hosts, emu elsewhere)')
    .option('--json', 'print {"backend","vendor","reason"} as JSON')
    .action((opts: { json?: boolean }) => {
      const p = probeHost();
      const backendOpt = program.opts<{ backend?: string }>().backend;
      const result = {
        backend: backendOpt ?? p.backend,
        vendor: p.vendor,
        reason: backendOpt !== undefined ? `--backend ${backendOpt} given (probe would pick ${p.backend}: ${p.reason})` : p.reason,
        extension: backendOpt !== undefined && backendOpt !== 'kvm' ? null : p.extension,
        cpu: p.host.modelName,
        hostFlags: { vmx: p.host.vmx, svm: p.host.svm },
        kvm: p.kvm,
      };
      if (opts.json) {
        process.stdout.write(JSON.stringify(result) + '\n');
        return;
      }
      process.stdout.write(
        `backend:   ${result.backend}${result.extension ? ` (${result.extension})` : ''}\n` +
        `vendor:    ${result.vendor} (${result.cpu})\n` +
        `vmx/svm:   ${p.host.vmx ? 'vmx' : '-'} / ${p.host.svm ? 'svm' : '-'}\n` +
        `/dev/kvm:  ${p.kvm.usable ? 'usable' : 'not usable'} (${p.kvm.reason})\n` +
        `reason:    ${result.reason}\n`,
      );
    });
}
