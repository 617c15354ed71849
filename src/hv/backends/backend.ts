/**
 * The processor-backend interface: what hv/ and everything above it may know of a backend.
 *
 * Hyper-V loads hvix64 (Intel VT-x) or hvax64 (AMD-V) at boot; tshv picks `kvm` (which drives
 * either through /dev/kvm) or `emu` (an x86-64 processor written in TypeScript). Both implement
 * this file and nothing above `src/hv/backends/` may name anything else of theirs.
 *
 * Shape (after OpenVMM's virt traits): Backend -> Partition -> VirtualProcessor, and every
 * intercept reaches the layer above through one synchronous ExitHandler. The handler runs on
 * the VM's device thread (the worker process's main thread). A backend whose processors run on
 * other threads (kvm) forwards each exit there and blocks the processor until the handler
 * returns; a backend that runs processors on the device thread (emu) calls it inline. Either
 * way the handler is called synchronously, one exit at a time, never with a Promise.
 */
import type { IDisposable } from '../../base/disposable.js';
import type { Gpa, GuestMemory, MemoryBlock } from '../../guestmem/guestmem.js';
import type { VpState } from './state.js';

export type BackendKind = 'kvm' | 'emu';

/** One CPUID leaf as the guest sees it. `index` is the ECX subleaf (0 where unused). */
export interface CpuidEntry {
  function: number;
  index: number;
  eax: number; ebx: number; ecx: number; edx: number;
}

/** The registers of a hypercall as the TLFS x64 calling convention defines them. */
export interface HypercallRegs {
  /** RCX: the hypercall input value (call code, fast bit, rep count and start index). */
  control: bigint;
  /** RDX: input parameters GPA (slow) or first input register (fast). */
  input: bigint;
  /** R8: output parameters GPA (slow) or second input register (fast). */
  output: bigint;
}

/**
 * Intercepts delivered to the hypervisor layer. All synchronous, called one at a time on the
 * device thread. `vp` is the virtual processor index.
 */
export interface ExitHandler {
  /** IN from a port; return the value (only the low `size` bytes are used). */
  pioRead(vp: number, port: number, size: 1 | 2 | 4): number;
  /** OUT to a port. */
  pioWrite(vp: number, port: number, size: 1 | 2 | 4, value: number): void;
  /** A read of unmapped or intercepted guest physical memory: fill `data` (1-8 bytes). */
  mmioRead(vp: number, gpa: number, data: Uint8Array): void;
  /** A write to unmapped memory or to a read-only (ROM) mapping. */
  mmioWrite(vp: number, gpa: number, data: Uint8Array): void;
  /** RDMSR of an intercepted MSR: return the value, or null to inject #GP. */
  msrRead(vp: number, msr: number): bigint | null;
  /** WRMSR of an intercepted MSR: return false to inject #GP. */
  msrWrite(vp: number, msr: number, value: bigint): boolean;
  /** A hypercall; return the 64-bit result value for RAX (status | reps completed << 32). */
  hypercall(vp: number, regs: HypercallRegs): bigint;
}

/** Why `VirtualProcessor.run()` returned. */
export type VpStopReason =
  | { kind: 'stopped' }                              // requestStop(): paused, state intact
  | { kind: 'shutdown' }                             // triple fault / shutdown
  | { kind: 'halted' }                               // HLT with interrupts off and nothing can wake it
  | { kind: 'error'; message: string };              // backend internal error (emulation failure...)

export interface VirtualProcessor {
  readonly index: number;
  /**
   * Run until stopped. Exits go to the partition's ExitHandler. Resolves when the VP stops;
   * never rejects for a guest-caused condition (those are VpStopReasons).
   */
  run(): Promise<VpStopReason>;
  /** Ask a running VP to stop promptly; an in-flight exit completes first. Idempotent. */
  requestStop(): void;
  /** Full architectural state; only while the VP is not running. */
  getState(): Promise<VpState>;
  setState(state: VpState): Promise<void>;
}

export interface PartitionConfig {
  vpCount: number;
  /**
   * The CPUID table each VP sees (the hypervisor layer builds it). Backends patch the per-VP
   * fields themselves: the initial APIC ID in leaf 1 EBX[31:24] and the x2APIC ID in leaves
   * 0xB / 0x1F EDX are set to the VP index.
   */
  cpuid: readonly CpuidEntry[];
  /** MSR ranges that must exit to the ExitHandler (the Hyper-V range at least). */
  interceptMsrs: readonly { first: number; last: number }[];
  /**
   * The port at which the hypercall page's code signals a hypercall on backends that cannot
   * intercept VMCALL themselves (see docs/adr/0006): an 8-bit port, used as `OUT imm8, AL`.
   * The emu backend intercepts VMCALL and VMMCALL directly and ignores it.
   */
  hypercallPort: number;
}

export interface Partition extends IDisposable {
  readonly backend: BackendKind;
  /** The partition's guest physical address space. */
  readonly memory: GuestMemory;
  /** Map a memory block at `at`. Read-only (ROM) mappings send guest writes to mmioWrite. */
  mapMemory(at: Gpa, block: MemoryBlock, writable: boolean): IDisposable;
  /** Set the intercept handler; must be called before any VP runs. */
  setExitHandler(handler: ExitHandler): void;
  /** The virtual processors, created with the partition. */
  readonly vps: readonly VirtualProcessor[];
  /** Drive an interrupt line of the platform interrupt controllers (IOAPIC pin / PIC IRQ). */
  setIrqLine(gsi: number, level: boolean): void;
  /** Deliver a message-signalled interrupt (address/data as PCI MSI defines them). */
  signalMsi(address: bigint, data: number): void;
  /**
   * The instruction bytes that, executed by the guest, reach ExitHandler.hypercall with the
   * TLFS registers (RCX, RDX, R8) and return with the result in RAX. The hypervisor writes
   * them into the guest's hypercall page (HV_X64_MSR_HYPERCALL), followed by RET.
   * emu: VMCALL. kvm: `OUT imm8, AL` to `config.hypercallPort` (docs/adr/0006).
   */
  readonly hypercallCode: Uint8Array;
}

export interface Backend {
  readonly kind: BackendKind;
  /**
   * The CPUID leaves this backend's processor can offer a guest (KVM: KVM_GET_SUPPORTED_CPUID;
   * emu: exactly what it implements). The hypervisor layer filters this and adds its own
   * leaves (0x40000000+) to build PartitionConfig.cpuid.
   */
  supportedCpuid(): readonly CpuidEntry[];
  createPartition(config: PartitionConfig): Promise<Partition>;
}
