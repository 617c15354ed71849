/**
 * One KVM virtual processor's thread (a worker_thread). It creates the vCPU, owns its fd and
 * its kvm_run mapping, and runs KVM_RUN synchronously in a loop. Each exit that needs the
 * device model is written into the VP's mailbox (./mailbox.ts); the thread then blocks in
 * Atomics.wait until the device thread replies, completes the exit in kvm_run, and re-enters.
 *
 * The device thread stops it by setting kvm_run.immediate_exit and sending SIGUSR2 to this
 * thread (tgkill): KVM_RUN returns EINTR at once, and if an exit was in flight, the KVM_RUN
 * that follows its reply completes it first (Documentation/virt/kvm/api.rst, immediate_exit),
 * so the state read afterwards is consistent.
 *
 * DEVNOTE: the exit loop allocates nothing: every buffer is made once at start-up and 64-bit
 * values travel as u32 halves. KVM wants vcpu ioctls from the thread that runs the vcpu, so
 * getState / setState are executed here too, between runs, on request from the device thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../../../base/errors.js';
import type { VpState } from '../state.js';
import { LAPIC_STATE_SIZE, XSAVE_AREA_SIZE } from '../state.js';
import * as abi from './abi.js';
import * as mb from './mailbox.js';
import * as native from './native.js';

// A listener makes SIGUSR2 harmless for the process; its only job is to interrupt KVM_RUN.
process.on('SIGUSR2', () => { /* kick: KVM_RUN returns EINTR */ });

const port = parentPort;
if (port === null) throw new Error('vcpu-thread must run as a worker thread');
const init = workerData as mb.VcpuInit;

function post(m: mb.FromVcpu): void { port!.postMessage(m); }

let vcpuFd = -1;
let mapping: native.Mapping | null = null;
try {
  vcpuFd = native.ioctlValue(init.vmFd, abi.KVM_CREATE_VCPU, init.index);
  native.ioctl(vcpuFd, abi.KVM_SET_CPUID2, init.cpuid);
  mapping = native.mmapShared(vcpuFd, init.mmapSize, 'kvm_run');
} catch (e) {
  if (vcpuFd >= 0) native.close(vcpuFd);
  post({ op: 'initError', message: errorMessage(e) });
  port.close();
}

if (mapping !== null) {
  const m = mapping;
  const runLen = m.len;
  const run = new DataView(m.buffer);
  const run8 = new Uint8Array(m.buffer);
  const run32 = new Int32Array(m.buffer, 0, Math.floor(runLen / 4));
  const box = new Int32Array(init.mailbox, 0, mb.MB_SLOTS);
  const box8 = new Uint8Array(init.mailbox, mb.MB_DATA_OFFSET, mb.MB_DATA_SIZE);
  const regsBuf = new Uint8Array(new ArrayBuffer(abi.KVM_REGS_SIZE));
  const regs32 = new Int32Array(regsBuf.buffer);
  const hypercallPort = init.hypercallPort;

  /** Post an exit and block until the device thread replies. */
  const exchange = (kind: number): void => {
    box[mb.MB_KIND] = kind;
    Atomics.store(box, mb.MB_STATE, mb.ST_POSTED);
    Atomics.notify(box, mb.MB_STATE);
    // Spin briefly first: a futex sleep and wake-up costs far more than a typical handler.
    for (let i = 0; i < mb.VCPU_SPIN_ITERATIONS && Atomics.load(box, mb.MB_STATE) === mb.ST_POSTED; i++);
    while (Atomics.load(box, mb.MB_STATE) === mb.ST_POSTED) Atomics.wait(box, mb.MB_STATE, mb.ST_POSTED);
    Atomics.store(box, mb.MB_STATE, mb.ST_IDLE);
  };

  const postStop = (reason: number, b: number, c: number, d0: number, d1: number): void => {
    box[mb.MB_A] = reason; box[mb.MB_B] = b; box[mb.MB_C] = c;
    box[mb.MB_D0] = d0; box[mb.MB_D0 + 1] = d1;
    box[mb.MB_KIND] = mb.EX_STOP;
    Atomics.store(box, mb.MB_STATE, mb.ST_POSTED);
    Atomics.notify(box, mb.MB_STATE);
  };

  /** KVM_EXIT_IO. Returns false when the VP must stop. */
  const onIo = (): boolean => {
    const dir = run.getUint8(abi.RUN_IO_DIRECTION);
    const size = run.getUint8(abi.RUN_IO_SIZE);
    const ioPort = run.getUint16(abi.RUN_IO_PORT, true);
    const count = run.getUint32(abi.RUN_IO_COUNT, true);
    const dataOff = run.getUint32(abi.RUN_IO_DATA_OFFSET, true);
    const dataOffHigh = run.getUint32(abi.RUN_IO_DATA_OFFSET + 4, true);
    const bytes = size * count;
    if ((size !== 1 && size !== 2 && size !== 4) || count === 0 || bytes > mb.MB_DATA_SIZE || dataOffHigh !== 0 || dataOff + bytes > runLen) {
      postStop(mb.STOP_BAD_EXIT, abi.KVM_EXIT_IO, 1, 0, 0);
      return false;
    }
    if (dir === abi.KVM_EXIT_IO_OUT && size === 1 && count === 1 && ioPort === hypercallPort) return onHypercall();
    box[mb.MB_A] = ioPort; box[mb.MB_B] = size; box[mb.MB_C] = count;
    if (dir === abi.KVM_EXIT_IO_OUT) {
      for (let i = 0; i < bytes; i++) box8[i] = run8[dataOff + i]!;
      exchange(mb.EX_PIO_OUT);
    } else {
      exchange(mb.EX_PIO_IN);
      for (let i = 0; i < bytes; i++) run8[dataOff + i] = box8[i]!;
    }
    return true;
  };

  const onHypercall = (): boolean => {
    let r = native.ioctlRaw(vcpuFd, abi.KVM_GET_REGS, regsBuf);
    if (r < 0) { postStop(mb.STOP_RUN_ERRNO, -r, abi.KVM_GET_REGS, 0, 0); return false; }
    box[mb.MB_RCX] = regs32[abi.REGS_RCX >> 2]!; box[mb.MB_RCX + 1] = regs32[(abi.REGS_RCX >> 2) + 1]!;
    box[mb.MB_RDX] = regs32[abi.REGS_RDX >> 2]!; box[mb.MB_RDX + 1] = regs32[(abi.REGS_RDX >> 2) + 1]!;
    box[mb.MB_R8] = regs32[abi.REGS_R8 >> 2]!; box[mb.MB_R8 + 1] = regs32[(abi.REGS_R8 >> 2) + 1]!;
    exchange(mb.EX_HYPERCALL);
    regs32[abi.REGS_RAX >> 2] = box[mb.MB_REPLY]!;
    regs32[(abi.REGS_RAX >> 2) + 1] = box[mb.MB_REPLY + 1]!;
    r = native.ioctlRaw(vcpuFd, abi.KVM_SET_REGS, regsBuf);
    if (r < 0) { postStop(mb.STOP_RUN_ERRNO, -r, abi.KVM_SET_REGS, 0, 0); return false; }
    return true;
  };

  const onMmio = (): boolean => {
    const len = run.getUint32(abi.RUN_MMIO_LEN, true);
    if (len < 1 || len > 8) { postStop(mb.STOP_BAD_EXIT, abi.KVM_EXIT_MMIO, 2, 0, 0); return false; }
    box[mb.MB_A] = run32[abi.RUN_MMIO_PHYS_ADDR >> 2]!;
    box[mb.MB_B] = run32[(abi.RUN_MMIO_PHYS_ADDR >> 2) + 1]!;
    box[mb.MB_C] = len;
    if (run.getUint8(abi.RUN_MMIO_IS_WRITE) !== 0) {
      for (let i = 0; i < len; i++) box8[i] = run8[abi.RUN_MMIO_DATA + i]!;
      exchange(mb.EX_MMIO_WRITE);
    } else {
      exchange(mb.EX_MMIO_READ);
      for (let i = 0; i < len; i++) run8[abi.RUN_MMIO_DATA + i] = box8[i]!;
    }
    return true;
  };

  const onMsr = (write: boolean): void => {
    box[mb.MB_A] = run32[abi.RUN_MSR_INDEX >> 2]!;
    if (write) {
      box[mb.MB_V0] = run32[abi.RUN_MSR_DATA >> 2]!;
      box[mb.MB_V0 + 1] = run32[(abi.RUN_MSR_DATA >> 2) + 1]!;
      exchange(mb.EX_MSR_WRITE);
    } else {
      exchange(mb.EX_MSR_READ);
      run32[abi.RUN_MSR_DATA >> 2] = box[mb.MB_REPLY]!;
      run32[(abi.RUN_MSR_DATA >> 2) + 1] = box[mb.MB_REPLY + 1]!;
    }
    run.setUint8(abi.RUN_MSR_ERROR, box[mb.MB_REPLY_ERR] !== 0 ? 1 : 0);
  };

  /** The exit loop: returns (after posting an EX_STOP) when the VP stops for any reason. */
  const runLoop = (): void => {
    for (;;) {
      const r = native.ioctlValueRaw(vcpuFd, abi.KVM_RUN, 0);
      if (r < 0) {
        if (-r === native.EINTR || -r === native.EAGAIN) {
          if (Atomics.load(box, mb.MB_STOP_REQ) !== 0) { postStop(mb.STOP_REQUESTED, 0, 0, 0, 0); return; }
          continue;         // a stray signal: keep running
        }
        postStop(mb.STOP_RUN_ERRNO, -r, abi.KVM_RUN, 0, 0);
        return;
      }
      const reason = run.getUint32(abi.RUN_EXIT_REASON, true);
      switch (reason) {
        case abi.KVM_EXIT_IO:
          if (!onIo()) return;
          break;
        case abi.KVM_EXIT_MMIO:
          if (!onMmio()) return;
          break;
        case abi.KVM_EXIT_X86_RDMSR:
          onMsr(false);
          break;
        case abi.KVM_EXIT_X86_WRMSR:
          onMsr(true);
          break;
        case abi.KVM_EXIT_INTR:
          if (Atomics.load(box, mb.MB_STOP_REQ) !== 0) { postStop(mb.STOP_REQUESTED, 0, 0, 0, 0); return; }
          break;
        case abi.KVM_EXIT_HLT:
          postStop(mb.STOP_HALTED, 0, 0, 0, 0);
          return;
        case abi.KVM_EXIT_SHUTDOWN:
          postStop(mb.STOP_SHUTDOWN, 0, 0, 0, 0);
          return;
        case abi.KVM_EXIT_SYSTEM_EVENT:
          postStop(mb.STOP_SYSTEM_EVENT, run.getUint32(abi.RUN_SYSTEM_EVENT_TYPE, true), 0, 0, 0);
          return;
        case abi.KVM_EXIT_INTERNAL_ERROR: {
          const ndata = run.getUint32(abi.RUN_INTERNAL_NDATA, true);
          postStop(mb.STOP_INTERNAL_ERROR, run.getUint32(abi.RUN_INTERNAL_SUBERROR, true), ndata,
            ndata > 0 ? run32[abi.RUN_INTERNAL_DATA >> 2]! : 0, ndata > 0 ? run32[(abi.RUN_INTERNAL_DATA >> 2) + 1]! : 0);
          return;
        }
        case abi.KVM_EXIT_FAIL_ENTRY:
          postStop(mb.STOP_FAIL_ENTRY, run32[abi.RUN_FAIL_ENTRY_REASON >> 2]!, run32[(abi.RUN_FAIL_ENTRY_REASON >> 2) + 1]!,
            run.getUint32(abi.RUN_FAIL_ENTRY_CPU, true), 0);
          return;
        default:
          postStop(mb.STOP_UNKNOWN_EXIT, reason, 0, 0, 0);
          return;
      }
    }
  };

  // ---- state transfer (rare: plain allocation is fine here) ----
  const getState = (): VpState => {
    const regs = new Uint8Array(abi.KVM_REGS_SIZE);
    native.ioctl(vcpuFd, abi.KVM_GET_REGS, regs);
    const sregs = new Uint8Array(abi.KVM_SREGS_SIZE);
    native.ioctl(vcpuFd, abi.KVM_GET_SREGS, sregs);
    let xsave: Uint8Array;
    if (init.hasXsave) {
      xsave = new Uint8Array(abi.KVM_XSAVE_SIZE);
      native.ioctl(vcpuFd, abi.KVM_GET_XSAVE, xsave);
    } else {
      const fpu = new Uint8Array(abi.KVM_FPU_SIZE);
      native.ioctl(vcpuFd, abi.KVM_GET_FPU, fpu);
      xsave = abi.fpuToXsave(fpu);
    }
    let xcr0 = 1n;
    if (init.hasXcrs) {
      const xcrs = new Uint8Array(abi.KVM_XCRS_SIZE);
      native.ioctl(vcpuFd, abi.KVM_GET_XCRS, xcrs);
      xcr0 = abi.decodeXcr0(xcrs) ?? 1n;
    }
    const msrBuf = abi.encodeMsrs(init.stateMsrs.map((i) => [i, 0n] as const));
    const n = native.ioctl(vcpuFd, abi.KVM_GET_MSRS, msrBuf);
    const msrs = abi.decodeMsrs(msrBuf, Math.min(n, init.stateMsrs.length));
    const lapic = new Uint8Array(LAPIC_STATE_SIZE);
    native.ioctl(vcpuFd, abi.KVM_GET_LAPIC, lapic);
    const events = new Uint8Array(abi.KVM_VCPU_EVENTS_SIZE);
    native.ioctl(vcpuFd, abi.KVM_GET_VCPU_EVENTS, events);
    const mp = new Uint8Array(4);
    native.ioctl(vcpuFd, abi.KVM_GET_MP_STATE, mp);
    const mpState = new DataView(mp.buffer).getUint32(0, true);
    return {
      regs: abi.decodeRegs(regs),
      sregs: abi.decodeSregs(sregs),
      xsave, xcr0, msrs, lapic,
      events: abi.decodeEvents(events),
      halted: mpState !== abi.KVM_MP_STATE_RUNNABLE,
    };
  };

  /**
   * DEVNOTE: order follows QEMU's kvm_arch_put_registers where it matters: sregs (APIC base)
   * before the LAPIC page, the LAPIC (timer mode) before TSC_DEADLINE, events and MP state last.
   * MSRs in the state that KVM does not know are skipped: KVM cannot hold them.
   */
  const setState = (s: VpState): void => {
    if (s.xsave.byteLength !== XSAVE_AREA_SIZE) throw new RangeError(`xsave area of ${s.xsave.byteLength} bytes`);
    if (s.lapic.byteLength !== LAPIC_STATE_SIZE) throw new RangeError(`lapic page of ${s.lapic.byteLength} bytes`);
    const sregs = new Uint8Array(abi.KVM_SREGS_SIZE);
    abi.encodeSregs(s.sregs, sregs);
    native.ioctl(vcpuFd, abi.KVM_SET_SREGS, sregs);
    const regs = new Uint8Array(abi.KVM_REGS_SIZE);
    abi.encodeRegs(s.regs, regs);
    native.ioctl(vcpuFd, abi.KVM_SET_REGS, regs);
    if (init.hasXcrs) {
      const xcrs = new Uint8Array(abi.KVM_XCRS_SIZE);
      abi.encodeXcr0(s.xcr0, xcrs);
      native.ioctl(vcpuFd, abi.KVM_SET_XCRS, xcrs);
    }
    if (init.hasXsave) {
      native.ioctl(vcpuFd, abi.KVM_SET_XSAVE, new Uint8Array(s.xsave));
    } else {
      const fpu = new Uint8Array(abi.KVM_FPU_SIZE);
      abi.xsaveToFpu(s.xsave, fpu);
      native.ioctl(vcpuFd, abi.KVM_SET_FPU, fpu);
    }
    native.ioctl(vcpuFd, abi.KVM_SET_LAPIC, new Uint8Array(s.lapic));
    const known = new Set(init.stateMsrs);
    const entries = [...s.msrs].filter(([i]) => known.has(i));
    if (entries.length > 0) {
      const n = native.ioctl(vcpuFd, abi.KVM_SET_MSRS, abi.encodeMsrs(entries));
      if (n !== entries.length) throw new RangeError(`KVM_SET_MSRS set ${n} of ${entries.length} MSRs (stopped at 0x${entries[n]?.[0].toString(16) ?? '?'})`);
    }
    const events = new Uint8Array(abi.KVM_VCPU_EVENTS_SIZE);
    abi.encodeEvents(s.events, events);
    native.ioctl(vcpuFd, abi.KVM_SET_VCPU_EVENTS, events);
    const mp = new Uint8Array(4);
    native.ioctl(vcpuFd, abi.KVM_GET_MP_STATE, mp);
    const v = new DataView(mp.buffer);
    const cur = v.getUint32(0, true);
    // An AP waiting for INIT/SIPI counts as halted; keep its finer state when halted is asked.
    const want = s.halted ? (cur === abi.KVM_MP_STATE_RUNNABLE ? abi.KVM_MP_STATE_HALTED : cur) : abi.KVM_MP_STATE_RUNNABLE;
    if (want !== cur) {
      v.setUint32(0, want, true);
      native.ioctl(vcpuFd, abi.KVM_SET_MP_STATE, mp);
    }
  };

  port.on('message', (msg: mb.ToVcpu) => {
    switch (msg.op) {
      case 'run':
        runLoop();
        break;
      case 'getState':
        try { post({ op: 'state', id: msg.id, state: getState() }); } catch (e) { post({ op: 'stateError', id: msg.id, message: errorMessage(e) }); }
        break;
      case 'setState':
        try { setState(msg.state); post({ op: 'stateSet', id: msg.id }); } catch (e) { post({ op: 'stateError', id: msg.id, message: errorMessage(e) }); }
        break;
      case 'dispose':
        native.munmap(m);
        native.close(vcpuFd);
        post({ op: 'disposed' });
        port.close();
        break;
    }
  });
  post({ op: 'ready', tid: native.gettid(), vcpuFd });
}
