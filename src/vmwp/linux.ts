/**
 * Linux boot for one VM: load a vmlinux (PVH entry, ADR 0010) with its initrd and ACPI tables
 * into a `Vm`, assemble the kernel command line for the backend, and read the `--exec` result
 * of the default image's /init off the serial console.
 *
 * Used by `tshv run` (in-process, through host.ts) and by the VM worker for VMs whose boot kind
 * is 'linux'; both boot the same way.
 *
 * Command line (assembleCmdline): the base line (the default image's DEFAULT_CMDLINE, or the
 * user's --append), then, for each parameter not already given by name in the base:
 *   - the backend hints (cmdlineHints);
 *   - `earlyprintk=serial,ttyS0,115200 console=ttyS0,115200` (output from the first instant);
 *   - `panic=-1` (a panic resets at once, and a reset ends a non-interactive run);
 *   - `reboot=acpi` (PLATFORM_PARAMS: reboot and panic reset through the FADT's RESET_REG);
 *   - with an exec command: `quiet loglevel=1` (unless verbose) and `tshv.exec=<base64>`
 *     (src/image/init.ts).
 * A parameter the user wrote wins: `--append "console=ttyS1"` keeps ttyS1.
 *
 * Exec output (ExecOutputFilter): /init prints its banner line `TSHV-READY ...`, runs the
 * command, then prints an empty line and `TSHV-EXIT=<status>` (init.ts). Everything before the
 * banner line is boot noise (kept only as a bounded tail for error messages); everything after
 * it is the command's output, passed through as it arrives with CRLF turned into LF, except the
 * final line break (/init's `echo`) and the marker line itself. The serial console is guest
 * controlled: lines are bounded, and a marker line that does not parse is ordinary output.
 */
import { TshvError } from '../base/errors.js';
import { hex } from '../base/hex.js';
import { encodeExecParam, EXIT_MARKER, READY_BANNER } from '../image/init.js';
import type { KernelImage } from '../loader/kernel-file.js';
import { loadLinuxPvh, pcRamLayout, type PvhLoadResult } from '../loader/linux/pvh.js';
import type { BackendKind } from '../winhv/winhv.js';
import type { Vm } from './vm.js';

/** The files and command line of one Linux boot (a subset of image/build.ts ResolvedBoot). */
export interface LinuxBootFiles {
  readonly kernel: KernelImage;
  readonly initrd: Uint8Array;
  /** The final command line (assembleCmdline). */
  readonly cmdline: string;
}

/** What bootLinux placed, for a log line. */
export interface LinuxBootPlacement extends PvhLoadResult {
  readonly entry: number;
  readonly cmdline: string;
}

/**
 * TSC frequency of the emu backend in kHz: its TSC counts host nanoseconds (EMU_TSC_HZ in
 * src/hv/backends/emu/index.ts, which this layer may not import), so 1 GHz.
 */
export const EMU_TSC_KHZ = 1_000_000;
/** CONFIG_HZ of Debian's x86-64 kernels (the default image): jiffies per second. */
export const GUEST_HZ = 250;

/**
 * Kernel parameters a backend needs today. DEVNOTE: the platform is hardware-reduced ACPI with
 * no PIT, HPET or PM timer (ADR 0010), so Linux can only learn the TSC frequency from CPUID
 * 0x15/0x16 (or the Hyper-V frequency MSRs). emu reports neither yet: without a hint the kernel
 * marks the TSC unstable and waits forever for jiffies. `tsc_early_khz` gives the frequency and
 * `lpj` (loops per jiffy = TSC ticks per jiffy, as the kernel computes it from the TSC) skips
 * the delay-loop calibration. These go away when emu reports its TSC frequency in CPUID
 * 0x15/0x16. kvm passes the host CPU's CPUID leaves through, so it gets no hints; on a host
 * CPU without leaf 0x15/0x16 add `tsc_early_khz=` by --append.
 * `tsc=reliable`: emu's TSC counts host nanoseconds, so it is the right clock; without it the
 * clocksource watchdog compares it with jiffies, which lag while the emulated processor is
 * slow (ticks arrive late), marks the TSC unstable and the guest keeps time by jiffies, which
 * then falls behind host time (measured: 80 s of guest uptime after 185 s of host time).
 */
export function cmdlineHints(backend: BackendKind): string[] {
  switch (backend) {
    case 'emu': return [`tsc_early_khz=${EMU_TSC_KHZ}`, 'tsc=reliable', `lpj=${(EMU_TSC_KHZ * 1000) / GUEST_HZ}`];
    case 'kvm': return [];
  }
}

/** Console parameters added to every boot (unless the base line names them). */
export const CONSOLE_PARAMS = ['earlyprintk=serial,ttyS0,115200', 'console=ttyS0,115200'] as const;
/**
 * Parameters the platform needs whatever the backend (unless the base line names them).
 * DEVNOTE: `reboot=acpi`: on a hardware-reduced ACPI platform without DMI (SMBIOS) Linux 6.1
 * picks EFI reboot (arch/x86/kernel/reboot.c reboot_init: efi_reboot_required() is true when
 * HW_REDUCED_ACPI is set); without EFI that falls through to BOOT_BIOS, a jump to the real-mode
 * reset vector, and tshv has no BIOS there: measured on emu, `reboot -f` then ran garbage in low
 * memory instead of resetting (2026-11-24), and so would a panic with panic=-1. With
 * reboot=acpi the kernel writes RESET_VALUE to the FADT's RESET_REG (ADR 0012), then falls back
 * to the i8042 pulse.
 */
export const PLATFORM_PARAMS = ['reboot=acpi'] as const;
/**
 * Quiet kernel log for --exec: console_loglevel 1 prints KERN_EMERG only (a panic still shows;
 * 0 would hide it). /init sets the same level again after its banner.
 */
export const EXEC_QUIET_PARAMS = ['quiet', 'loglevel=1'] as const;

export interface CmdlineOptions {
  /** The default image's command line or the user's --append. */
  base: string;
  backend: BackendKind;
  /** A command for the default image's /init to run (tshv.exec). */
  exec?: string | undefined;
  /** With `exec`: keep the kernel log (no `quiet loglevel=1`), for diagnosis. */
  verbose?: boolean | undefined;
}

/** The name of a kernel parameter: `console=ttyS0` -> `console`, `quiet` -> `quiet`. */
export function paramName(param: string): string {
  const eq = param.indexOf('=');
  return eq < 0 ? param : param.slice(0, eq);
}

/** The base line plus hints, console, panic=-1 and exec parameters (module header). Pure. */
export function assembleCmdline(opts: CmdlineOptions): string {
  const base = opts.base.trim().split(/\s+/).filter((p) => p.length > 0);
  // Everything after "--" goes to init; kernel parameters must come before it.
  const dashes = base.indexOf('--');
  const kernelPart = dashes < 0 ? base : base.slice(0, dashes);
  const initPart = dashes < 0 ? [] : base.slice(dashes);
  const given = new Set(kernelPart.map(paramName));
  const out = [...kernelPart];
  const add = (p: string): void => {
    if (!given.has(paramName(p))) { out.push(p); given.add(paramName(p)); }
  };
  for (const p of cmdlineHints(opts.backend)) add(p);
  for (const p of CONSOLE_PARAMS) add(p);
  add('panic=-1');
  for (const p of PLATFORM_PARAMS) add(p);
  if (opts.exec !== undefined) {
    if (opts.exec.trim().length === 0) throw new TshvError('EINVAL', '--exec: the command is empty');
    if (opts.verbose !== true) for (const p of EXEC_QUIET_PARAMS) add(p);
    if (given.has('tshv.exec')) throw new TshvError('EINVAL', '--exec cannot be combined with a tshv.exec= parameter in the command line');
    out.push(encodeExecParam(opts.exec));
  }
  return [...out, ...initPart].join(' ');
}

/**
 * Load the kernel, initrd, command line and ACPI tables for vm.vpCount processors into
 * vm.memory and set VP 0 at the PVH entry; the other VPs keep their reset state (waiting for
 * INIT/SIPI). The VM must not have run.
 */
export async function bootLinux(vm: Vm, boot: LinuxBootFiles): Promise<LinuxBootPlacement> {
  const base = await vm.getVpState(0);
  const r = loadLinuxPvh(vm.memory, {
    kernel: boot.kernel,
    initrd: boot.initrd,
    cmdline: boot.cmdline,
    ram: pcRamLayout(vm.memoryBytes),
    vpCount: vm.vpCount,
    base,
  });
  await vm.setVpState(0, r.state);
  return { ...r, entry: Number(r.state.regs.rip), cmdline: boot.cmdline };
}

/** One line for logs: where everything went. */
export function describePlacement(p: LinuxBootPlacement): string {
  const initrd = p.initrd !== undefined ? `initrd ${hex(p.initrd.paddr)}+${p.initrd.size}` : 'no initrd';
  return `PVH entry ${hex(p.entry)}, start_info ${hex(p.startInfoPaddr)}, ${initrd}, RSDP ${hex(p.acpi.rsdpPaddr)}, ` +
    `e820 ${p.e820.length} entries, cmdline ${JSON.stringify(p.cmdline)}`;
}

// ---------------------------------------------------------------------------------------------
// --exec output

/** Longest line kept whole (for the banner, the marker and the boot-log tail). */
export const MAX_LINE_BYTES = 1024;
/** Boot-log lines kept for error messages. */
export const BOOT_TAIL_LINES = 25;

/** What Linux's panic() prints first (kernel/panic.c). */
export const PANIC_LINE = 'Kernel panic - not syncing';
const LF = 0x0a;
const CR = 0x0d;
const MARKER = new TextEncoder().encode(EXIT_MARKER);
const BANNER = new TextEncoder().encode(READY_BANNER);

/** `TSHV-EXIT=<n>` with n a decimal 0..255 (and an optional CR): the status, else undefined. Pure. */
export function parseExitLine(line: string): number | undefined {
  const m = /^TSHV-EXIT=(\d{1,3})\r?$/.exec(line);
  if (m === null) return undefined;
  const n = Number(m[1]);
  return n <= 255 ? n : undefined;
}

type Phase = 'boot' | 'output' | 'done';

/**
 * Splits the serial stream of an --exec boot into the command's output (passed to `out`) and
 * its exit status. Feed it every serial chunk in order; `status` is set once the marker line
 * has been seen (then `done` is true and further bytes are ignored). Bounded memory.
 */
export class ExecOutputFilter {
  readonly #out: (bytes: Uint8Array) => void;
  #phase: Phase = 'boot';
  /** Bytes of the current line (up to MAX_LINE_BYTES; the rest is counted, not kept). */
  readonly #line = new Uint8Array(MAX_LINE_BYTES);
  #lineLen = 0;
  #lineOverflow = false;
  /** Output phase: the current line is still a prefix of the marker and held back. */
  #holding = true;
  /** Output phase: a line break held back (it may be /init's, before the marker). */
  #heldBreak = false;
  #lastWasCr = false;
  #status: number | undefined;
  #banner: string | undefined;
  #panic: string | undefined;
  readonly #tail: string[] = [];
  /** Output collected during one push(), handed over at its end. */
  readonly #pending = new Uint8Array(4096);
  #pendingLen = 0;

  constructor(out: (bytes: Uint8Array) => void) { this.#out = out; }

  get done(): boolean { return this.#phase === 'done'; }
  get status(): number | undefined { return this.#status; }
  /** The banner line, once seen (e.g. `TSHV-READY kernel=6.1.0-56-amd64 modules=6/6`). */
  get banner(): string | undefined { return this.#banner; }
  /**
   * The kernel's "Kernel panic - not syncing: ..." line, if one came before the banner. The
   * guest then resets (panic=-1); a host may end the run at once rather than wait for that.
   */
  get panic(): string | undefined { return this.#panic; }
  /** The last lines before the banner (the boot log), for error messages. */
  bootTail(): readonly string[] {
    const partial = this.#phase === 'boot' && this.#lineLen > 0 ? [this.#lineText()] : [];
    return [...this.#tail, ...partial];
  }

  push(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length && this.#phase !== 'done'; i++) {
      const b = bytes[i]!;
      if (this.#phase === 'boot') this.#bootByte(b);
      else this.#outputByte(b);
    }
    this.#flush();
  }

  #flush(): void {
    if (this.#pendingLen === 0) return;
    this.#out(this.#pending.slice(0, this.#pendingLen));
    this.#pendingLen = 0;
  }

  #lineText(): string {
    const text = new TextDecoder().decode(this.#line.subarray(0, this.#lineLen)).replace(/\r$/, '');
    return this.#lineOverflow ? text + '…' : text;
  }

  #keep(b: number): void {
    if (this.#lineLen < MAX_LINE_BYTES) this.#line[this.#lineLen++] = b;
    else this.#lineOverflow = true;
  }

  #resetLine(): void {
    this.#lineLen = 0;
    this.#lineOverflow = false;
  }

  #bootByte(b: number): void {
    if (b !== LF) { this.#keep(b); return; }
    const text = this.#lineText();
    this.#resetLine();
    if (text.startsWith(READY_BANNER) && (text.length === BANNER.length || text[BANNER.length] === ' ')) {
      this.#banner = text;
      this.#phase = 'output';
      this.#holding = true;
      return;
    }
    if (this.#panic === undefined && text.includes(PANIC_LINE)) this.#panic = text.slice(text.indexOf(PANIC_LINE));
    this.#tail.push(text);
    if (this.#tail.length > BOOT_TAIL_LINES) this.#tail.shift();
  }

  #emitByte(b: number): void {
    if (this.#pendingLen === this.#pending.length) this.#flush();
    this.#pending[this.#pendingLen++] = b;
  }

  /** Write the held line break and the held line prefix; the rest of the line passes through. */
  #release(): void {
    if (this.#heldBreak) { this.#emitByte(LF); this.#heldBreak = false; }
    for (let i = 0; i < this.#lineLen; i++) this.#emitByte(this.#line[i]!);
    this.#holding = false;
  }

  #outputByte(b: number): void {
    if (b === LF) {
      if (this.#holding) {
        const text = new TextDecoder().decode(this.#line.subarray(0, this.#lineLen));
        const status = this.#lineLen >= MARKER.length && !this.#lineOverflow ? parseExitLine(text) : undefined;
        if (status !== undefined) {
          this.#status = status;
          this.#phase = 'done';
          return;
        }
        this.#release();
      }
      // A break: any held one goes out first; this one is held (it may be /init's own).
      if (this.#heldBreak) this.#emitByte(LF);
      this.#heldBreak = true;
      this.#lastWasCr = false;
      this.#resetLine();
      this.#holding = true;
      return;
    }
    if (this.#lastWasCr) {
      // A CR not followed by LF is output (a progress line); emit it now.
      this.#lastWasCr = false;
      this.#passByte(CR);
    }
    if (b === CR) { this.#lastWasCr = true; return; }
    this.#passByte(b);
  }

  #passByte(b: number): void {
    if (this.#holding) {
      // Still a prefix of the marker (the digits and an optional CR may follow it)?
      const at = this.#lineLen;
      const stillMarker = at < MARKER.length ? MARKER[at] === b : b >= 0x30 && b <= 0x39 && at < MARKER.length + 3;
      if (stillMarker || (b === CR && at >= MARKER.length)) { this.#keep(b); return; }
      this.#release();
    }
    this.#emitByte(b);
  }
}
