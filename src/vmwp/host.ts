/** Host facts and backend creation, for the management plane (which never imports hv/). */
export { probeHost, createBackend, isBackendKind, type ProbeResult } from '../winhv/winhv.js';

/** In-process Linux VMs for `tshv run` (like qemu-system-x86_64 -nographic: no service). */
export { Vm, type VmExit } from './vm.js';
export {
  assembleCmdline, bootLinux, cmdlineHints, describePlacement, ExecOutputFilter, type LinuxBootFiles, type LinuxBootPlacement,
} from './linux.js';
