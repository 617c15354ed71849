/**
 * A minimal local APIC for the emulated processor (Intel SDM vol. 3A, chapter 11), so that
 * `Partition.signalMsi` works on `emu` as it does with KVM's in-kernel irqchip.
 *
 * Implemented: the xAPIC register page at the APIC base (0xFEE00000 by default) with ID,
 * version, TPR, APR/PPR, EOI, LDR, DFR, SVR (software enable), ISR/TMR/IRR bitmaps, ESR, ICR
 * (fixed IPIs by physical destination or shorthand), the LVT entries as plain storage, and
 * vector priority: an interrupt is deliverable when its priority class exceeds the PPR, and the
 * timer: one-shot and periodic counting at LAPIC_TIMER_HZ divided by the divide configuration,
 * and TSC-deadline (SDM 10.5.4.1; LVT timer mode 10b, armed by the IA32_TSC_DEADLINE MSR, which
 * the processor forwards to `setTscDeadline`; CPUID.01H:ECX[24] is advertised).
 * IPIs: fixed, lowest priority, NMI, INIT and STARTUP (the partition routes them).
 * FUTURE: ExtINT/SMI delivery modes, x2APIC.
 *
 * DEVNOTE: register values are kept in the architectural 1 KiB layout (state.ts
 * LAPIC_STATE_SIZE) so save/restore is a copy. `ready` caches the vector that would be
 * delivered next (or -1) so the processor checks one field per block.
 */
export const LAPIC_ID = 0x20, LAPIC_VERSION = 0x30, LAPIC_TPR = 0x80, LAPIC_APR = 0x90, LAPIC_PPR = 0xa0,
  LAPIC_EOI = 0xb0, LAPIC_LDR = 0xd0, LAPIC_DFR = 0xe0, LAPIC_SVR = 0xf0, LAPIC_ISR = 0x100, LAPIC_TMR = 0x180,
  LAPIC_IRR = 0x200, LAPIC_ESR = 0x280, LAPIC_ICR_LO = 0x300, LAPIC_ICR_HI = 0x310, LAPIC_LVT_TIMER = 0x320,
  LAPIC_LVT_ERROR = 0x370, LAPIC_TIMER_ICR = 0x380, LAPIC_TIMER_CCR = 0x390, LAPIC_TIMER_DCR = 0x3e0;

export const SVR_APIC_ENABLE = 0x100;
const LVT_MASKED = 0x10000;
/** Version register: version 0x14 (integrated xAPIC), max LVT entry 5. */
const VERSION_VALUE = 0x00050014;

/** The APIC timer's input clock (the "bus" clock): 1 GHz, so one count is one nanosecond at divide-by-1. */
export const LAPIC_TIMER_HZ = 1_000_000_000;
const LVT_TIMER_PERIODIC = 1 << 17;
const LVT_TIMER_MODE_SHIFT = 17, TIMER_TSC_DEADLINE = 2;

/** How an APIC sends an IPI to another VP's APIC (the partition routes it). */
/** mode: ICR delivery mode (0 fixed, 1 lowest priority, 4 NMI, 5 INIT, 6 STARTUP). */
export type IpiSink = (destination: number, shorthand: number, destMode: number, mode: number, vector: number) => void;

export class Lapic {
  readonly regs = new Uint8Array(1024);
  readonly #dv = new DataView(this.regs.buffer);
  /** Next deliverable vector, or -1. */
  ready = -1;
  // Statistics
  readonly stats = { accepted: 0, delivered: 0, eois: 0 };

  /** Absolute time (ns, `now()` clock) of the next timer expiry, or Infinity. */
  deadline = Infinity;
  #periodNs = 0;
  /** IA32_TSC_DEADLINE as the guest wrote it (TSC-deadline mode; 0: disarmed, also after it fired). */
  tscDeadline = 0;

  constructor(readonly apicId: number, private readonly ipi: IpiSink, private readonly now: () => number = () => performance.now() * 1e6) { this.reset(); }

  reset(): void {
    this.regs.fill(0);
    this.#set(LAPIC_ID, (this.apicId & 0xff) << 24);
    this.#set(LAPIC_VERSION, VERSION_VALUE);
    this.#set(LAPIC_DFR, 0xffffffff);
    this.#set(LAPIC_SVR, 0xff);
    for (let r = LAPIC_LVT_TIMER; r <= LAPIC_LVT_ERROR; r += 0x10) this.#set(r, LVT_MASKED);
    this.ready = -1;
    this.deadline = Infinity;
    this.#periodNs = 0;
    this.tscDeadline = 0;
  }

  #timerMode(): number { return (this.#get(LAPIC_LVT_TIMER) >>> LVT_TIMER_MODE_SHIFT) & 3; }

  /**
   * WRMSR IA32_TSC_DEADLINE: `tsc` is the value written, `at` the same instant on this APIC's
   * `now()` clock (the processor converts: its TSC counts nanoseconds plus an offset). Outside
   * TSC-deadline mode the write is ignored (SDM 10.5.4.1); 0 disarms.
   */
  setTscDeadline(tsc: number, at: number): void {
    if (this.#timerMode() !== TIMER_TSC_DEADLINE) return;
    this.tscDeadline = tsc;
    this.deadline = tsc === 0 ? Infinity : at;
  }
  /** RDMSR IA32_TSC_DEADLINE: 0 outside TSC-deadline mode. */
  readTscDeadline(): number { return this.#timerMode() === TIMER_TSC_DEADLINE ? this.tscDeadline : 0; }

  #divisor(): number {
    const d = this.#get(LAPIC_TIMER_DCR);
    const v = (d & 3) | ((d >> 1) & 4);
    return v === 7 ? 1 : 2 << v;
  }

  /** Fire the timer if its deadline has passed. Called by the processor now and then. */
  poll(now = this.now()): void {
    if (now < this.deadline) return;
    const lvt = this.#get(LAPIC_LVT_TIMER);
    const mode = (lvt >>> LVT_TIMER_MODE_SHIFT) & 3;
    if (mode === TIMER_TSC_DEADLINE) {
      this.tscDeadline = 0;   // fired: the MSR reads 0 again
      this.deadline = Infinity;
    } else if ((lvt & LVT_TIMER_PERIODIC) !== 0 && this.#periodNs > 0) {
      this.deadline += this.#periodNs;
      if (this.deadline <= now) this.deadline = now + this.#periodNs;  // fell behind: skip the missed ticks
    } else this.deadline = Infinity;
    if ((lvt & LVT_MASKED) === 0) this.accept(lvt & 0xff, false);
  }

  #get(off: number): number { return this.#dv.getUint32(off, true); }
  #set(off: number, v: number): void { this.#dv.setUint32(off, v >>> 0, true); }
  #setBit(base: number, v: number, on: boolean): void {
    const off = base + ((v >> 5) << 4);
    const m = 1 << (v & 31);
    this.#set(off, on ? this.#get(off) | m : this.#get(off) & ~m);
  }
  /** Highest set vector in a 256-bit bitmap, or -1. */
  #highest(base: number): number {
    for (let w = 7; w >= 0; w--) {
      const x = this.#get(base + (w << 4));
      if (x !== 0) return (w << 5) + 31 - Math.clz32(x);
    }
    return -1;
  }

  get softwareEnabled(): boolean { return (this.#get(LAPIC_SVR) & SVR_APIC_ENABLE) !== 0; }
  get tpr(): number { return this.#get(LAPIC_TPR) & 0xff; }
  set tpr(v: number) { this.#set(LAPIC_TPR, v & 0xff); this.#update(); }

  #ppr(): number {
    const tpr = this.tpr;
    const isr = this.#highest(LAPIC_ISR);
    const isrClass = isr < 0 ? 0 : isr & 0xf0;
    return (tpr & 0xf0) >= isrClass ? tpr : isrClass;
  }

  #update(): void {
    const irr = this.#highest(LAPIC_IRR);
    this.#set(LAPIC_PPR, this.#ppr());
    this.ready = irr >= 16 && (irr & 0xf0) > (this.#ppr() & 0xf0) ? irr : -1;
  }

  /** Accept a fixed interrupt (from MSI, IPI or an interrupt controller). Vectors 0-15 are illegal. */
  accept(vector: number, level: boolean): void {
    vector &= 0xff;
    if (vector < 16) { this.#set(LAPIC_ESR, this.#get(LAPIC_ESR) | 0x40); return; }  // received illegal vector
    if (!this.softwareEnabled) return;
    this.stats.accepted++;
    this.#setBit(LAPIC_IRR, vector, true);
    this.#setBit(LAPIC_TMR, vector, level);
    this.#update();
  }

  /** The processor takes the interrupt: IRR -> ISR. Returns the vector (the caller checked `ready`). */
  acknowledge(): number {
    const v = this.ready;
    if (v < 0) return -1;
    this.#setBit(LAPIC_IRR, v, false);
    this.#setBit(LAPIC_ISR, v, true);
    this.stats.delivered++;
    this.#update();
    return v;
  }

  /** Called after the EOI of a level-triggered vector (the IOAPIC clears its Remote IRR). */
  onLevelEoi: (vector: number) => void = () => undefined;

  #eoi(): void {
    const v = this.#highest(LAPIC_ISR);
    let level = false;
    if (v >= 0) {
      level = (this.#get(LAPIC_TMR + ((v >> 5) << 4)) & (1 << (v & 31))) !== 0;
      this.#setBit(LAPIC_ISR, v, false);
    }
    this.stats.eois++;
    this.#update();
    if (level) this.onLevelEoi(v);
  }

  /** A 32-bit MMIO read at `off` (0-0xFFF) of the APIC page. */
  read(off: number): number {
    off &= 0xff0;
    if (off >= 0x400) return 0;
    if (off === LAPIC_PPR) return this.#ppr();
    if (off === LAPIC_TIMER_CCR) {
      if (this.deadline === Infinity || this.#timerMode() === TIMER_TSC_DEADLINE) return 0;
      return Math.min(0xffffffff, Math.max(0, Math.ceil((this.deadline - this.now()) / this.#divisor())));
    }
    return this.#get(off);
  }

  /** A 32-bit MMIO write. Read-only registers ignore writes. */
  write(off: number, v: number): void {
    off &= 0xff0;
    v >>>= 0;
    switch (off) {
      case LAPIC_ID: this.#set(off, v & 0xff000000); break;
      case LAPIC_TPR: this.tpr = v; break;
      case LAPIC_EOI: this.#eoi(); break;
      case LAPIC_LDR: this.#set(off, v & 0xff000000); break;
      case LAPIC_DFR: this.#set(off, v | 0x0fffffff); break;
      case LAPIC_SVR: {
        this.#set(off, v & 0x13ff);
        if ((v & SVR_APIC_ENABLE) === 0) {
          for (let r = LAPIC_LVT_TIMER; r <= LAPIC_LVT_ERROR; r += 0x10) this.#set(r, this.#get(r) | LVT_MASKED);
        }
        this.#update();
        break;
      }
      case LAPIC_ESR: this.#set(off, 0); break;
      case LAPIC_ICR_HI: this.#set(off, v & 0xff000000); break;
      case LAPIC_ICR_LO: {
        this.#set(off, v & ~0x1000);  // delivery status always idle
        const mode = (v >> 8) & 7;
        // INIT with level de-assert (trigger level, level 0) is a no-op on xAPICs.
        const deassert = mode === 5 && (v & 0x8000) !== 0 && (v & 0x4000) === 0;
        if ((mode <= 1 || mode === 4 || mode === 5 || mode === 6) && !deassert) {
          this.ipi(this.#get(LAPIC_ICR_HI) >>> 24, (v >> 18) & 3, (v >> 11) & 1, mode, v & 0xff);
        }
        break;
      }
      case LAPIC_TIMER_ICR: {
        if (this.#timerMode() === TIMER_TSC_DEADLINE) break;   // ignored in TSC-deadline mode
        this.#set(off, v);
        this.#periodNs = v * this.#divisor() * (1e9 / LAPIC_TIMER_HZ);
        this.deadline = v === 0 ? Infinity : this.now() + this.#periodNs;
        break;
      }
      case LAPIC_TIMER_DCR: this.#set(off, v & 0xb); break;
      default:
        if (off >= LAPIC_LVT_TIMER && off <= LAPIC_LVT_ERROR) {
          const before = this.#timerMode();
          this.#set(off, this.softwareEnabled ? v : v | LVT_MASKED);
          // Switching the timer into or out of TSC-deadline mode disarms it (SDM 10.5.4.1).
          if (off === LAPIC_LVT_TIMER && (before === TIMER_TSC_DEADLINE) !== (this.#timerMode() === TIMER_TSC_DEADLINE)) {
            this.tscDeadline = 0;
            this.deadline = Infinity;
            if (this.#timerMode() === TIMER_TSC_DEADLINE) this.#set(LAPIC_TIMER_ICR, 0);
          }
        }
        break; // ID/version/ISR/TMR/IRR/PPR/APR and reserved: read-only or ignored
    }
  }

  /** Does a logical or physical destination match this APIC? */
  matches(destination: number, destMode: number): boolean {
    if (destMode === 0) return destination === 0xff || destination === (this.#get(LAPIC_ID) >>> 24);
    const ldr = this.#get(LAPIC_LDR) >>> 24;
    const flat = (this.#get(LAPIC_DFR) >>> 28) === 0xf;
    if (flat) return (ldr & destination) !== 0;
    return (destination >>> 4) === (ldr >>> 4) && (destination & ldr & 0xf) !== 0;
  }

  getState(): Uint8Array { return this.regs.slice(); }
  setState(bytes: Uint8Array): void {
    this.regs.set(bytes.subarray(0, 1024));
    // The timer restarts from its initial count (the image holds no absolute time); in
    // TSC-deadline mode it stays disarmed until the processor re-arms it from the saved MSR.
    const icr = this.#get(LAPIC_TIMER_ICR);
    this.#periodNs = icr * this.#divisor() * (1e9 / LAPIC_TIMER_HZ);
    this.tscDeadline = 0;
    this.deadline = icr === 0 || this.#timerMode() === TIMER_TSC_DEADLINE ? Infinity : this.now() + this.#periodNs;
    this.#update();
  }
}
