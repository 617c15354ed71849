/**
 * The layering of shared/design/intent.md, enforced. Each rule names a layer and what it
 * must not import. Run by `npm run lint` (and so by `npm test`).
 *
 *   base      <- everything (pure helpers, no node:* I/O)
 *   guestmem  -> base
 *   hv/backends (interface) -> base, guestmem
 *   hv/backends/kvm, hv/backends/emu -> the interface, base, guestmem (nothing else knows them)
 *   hv        -> backends interface, base, guestmem   (hv/boot.ts alone picks a backend)
 *   winhv     -> hv, base, guestmem                   (the parent's only door into hv)
 *   vid       -> winhv, base, guestmem
 *   devices   -> vid (device interfaces), base, guestmem
 *   loader    -> base, guestmem, hv/backends/state.ts (the VpState it produces)
 *   vmbus     -> winhv, base, guestmem;   vsp -> vmbus, base, guestmem
 *   vmwp      -> everything above (composition root of one VM)
 *   defs      -> base                                 (IPC + API schemas)
 *   vmms      -> defs, base                           (spawns the worker by file path)
 *   cli       -> defs, base, image, vmwp/host.ts      (a client of the VMMS API)
 *   vmms, cli, livekd, image -> may not reach into hv/ or its backends directly
 */
const layer = (name, path, forbidden, comment) => ({
  name,
  comment,
  severity: 'error',
  from: { path },
  to: { path: forbidden },
});

module.exports = {
  forbidden: [
    layer('base-is-a-leaf', '^src/base/', '^src/(?!base/)', 'base imports nothing else of tshv'),
    layer('guestmem-only-base', '^src/guestmem/', '^src/(?!base/|guestmem/)', 'guestmem builds only on base'),
    layer('backend-interface-is-low', '^src/hv/backends/[^/]+\\.ts$', '^src/(?!base/|guestmem/|hv/backends/[^/]+\\.ts$)',
      'the backend interface depends on nothing above it and on no backend'),
    layer('kvm-backend-sealed', '^src/hv/backends/kvm/', '^src/(?!base/|guestmem/|hv/backends/(kvm/|[^/]+\\.ts$))',
      'the KVM backend sees only the interface'),
    layer('emu-backend-sealed', '^src/hv/backends/emu/', '^src/(?!base/|guestmem/|hv/backends/(emu/|[^/]+\\.ts$))',
      'the emulated processor sees only the interface'),
    {
      name: 'backends-not-leaking',
      comment: 'only hv/boot.ts (backend selection) may name a concrete backend',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/hv/(boot\\.ts|backends/)' },
      to: { path: '^src/hv/backends/(kvm|emu)/' },
    },
    layer('hv-below-parent', '^src/hv/(?!backends/)', '^src/(?!base/|guestmem/|hv/)', 'the hypervisor knows nothing of the parent stack'),
    layer('winhv-over-hv', '^src/winhv/', '^src/(?!base/|guestmem/|hv/|winhv/)', 'winhv is the typed door into hv'),
    layer('vid-over-winhv', '^src/vid/', '^src/(?!base/|guestmem/|winhv/|vid/)', 'the VID talks to the hypervisor only through winhv'),
    layer('devices-over-vid', '^src/devices/', '^src/(?!base/|guestmem/|vid/|devices/)', 'devices implement VID interfaces'),
    layer('loader-pure', '^src/loader/', '^src/(?!base/|guestmem/|loader/|hv/backends/state\\.ts$)',
      'the loader writes guest memory and produces an initial VpState, nothing else'),
    layer('vmbus-over-winhv', '^src/vmbus/', '^src/(?!base/|guestmem/|winhv/|vmbus/)', 'VMBus reaches the SynIC through winhv'),
    layer('vsp-over-vmbus', '^src/vsp/', '^src/(?!base/|guestmem/|vmbus/|vsp/)', 'VSPs sit on VMBus'),
    layer('defs-only-base', '^src/defs/', '^src/(?!base/|defs/)', 'IPC and API schemas (and their framing) build only on base'),
    layer('vmms-over-defs', '^src/vmms/', '^src/(?!base/|defs/|vmms/)',
      'the management service knows the schemas, not the worker: it spawns vmwp/worker-main.js by file path'),
    layer('cli-thin-client', '^src/cli/', '^src/(?!base/|defs/|cli/|image/|vmwp/host\\.ts$)',
      'the CLI is a client of the API (defs), plus host facts (vmwp/host.ts) and the image builder'),
    layer('management-not-into-hv', '^src/(vmms|cli|livekd|image)/', '^src/hv/', 'the management plane never reaches into the hypervisor'),
    {
      name: 'no-koffi-outside-kvm',
      comment: 'native calls (ioctl, mmap) live in the KVM backend only',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/hv/backends/kvm/' },
      to: { path: 'koffi' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
  },
};
