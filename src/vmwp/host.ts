/** Host facts and backend creation, for the management plane (which never imports hv/). */
export { probeHost, createBackend, isBackendKind, type ProbeResult } from '../winhv/winhv.js';
