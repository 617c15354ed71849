/**
 * Documented exit codes of the `tshv` command (see README "Exit codes").
 * Stable: scripts depend on them.
 */
import type { ErrorCode } from '../base/errors.js';

export const ExitCode = {
  OK: 0,
  FAILURE: 1,          // an operation failed for a reason not listed below
  USAGE: 2,            // bad command line
  NOT_SUPPORTED: 3,    // the backend or feature is not available on this host
  IMAGE: 4,            // a kernel, initrd or image file is malformed
  TOOL: 5,             // an external tool (apt-get, gcc) is missing or failed
  STATE: 6,            // the VM is in the wrong state for the operation
  BACKEND: 7,          // the processor backend failed
  NOT_FOUND: 8,        // no VM by that name, GUID or GUID prefix
  SERVICE: 9,          // the management service is not running / cannot be reached or started
  WORKER: 10,          // a VM's worker process failed or did not answer
  NOT_BUILT: 70,       // the checkout is not built
} as const;

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'EINVAL': return ExitCode.USAGE;
    case 'ENOTSUP': return ExitCode.NOT_SUPPORTED;
    case 'EIMAGE': return ExitCode.IMAGE;
    case 'ETOOL': return ExitCode.TOOL;
    case 'ESTATE': return ExitCode.STATE;
    case 'EBACKEND': return ExitCode.BACKEND;
    case 'EGUESTMEM': return ExitCode.FAILURE;
  }
}

/** Exit code for an error code of the VMMS API ({error:{code}}). */
export function exitCodeForApi(code: string): number {
  switch (code) {
    case 'EINVAL': case 'EAMBIGUOUS': case 'ETOOLARGE': return ExitCode.USAGE;
    case 'ENOTFOUND': return ExitCode.NOT_FOUND;
    case 'ESTATE': return ExitCode.STATE;
    case 'EIMAGE': return ExitCode.IMAGE;
    case 'ENOTSUP': return ExitCode.NOT_SUPPORTED;
    case 'ETOOL': return ExitCode.TOOL;
    case 'EBACKEND': return ExitCode.BACKEND;
    case 'EWORKER': return ExitCode.WORKER;
    case 'ESERVICE': return ExitCode.SERVICE;
    default: return ExitCode.FAILURE;
  }
}
