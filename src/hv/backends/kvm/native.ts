/**
 * The libc calls the KVM backend needs (open, close, ioctl, mmap, munmap, gettid, tgkill),
 * bound with koffi. Loaded separately by every thread that imports it (koffi supports worker
 * threads; each binding is per isolate). Nothing outside src/hv/backends/kvm/ may import koffi.
 *
 * DEVNOTE: ioctl(2) is variadic in C. It is declared here with a fixed third argument (once as
 * a pointer, once as an integer): on x86-64 System V the variadic and fixed conventions pass
 * integer and pointer arguments identically, and koffi's fixed-signature calls are much cheaper
 * than its variadic ones, which matters for KVM_RUN.
 */
import koffi from 'koffi';
import { TshvError } from '../../../base/errors.js';
import { IOCTL_NAMES } from './abi.js';

const libc = koffi.load('libc.so.6');

export const O_RDWR = 2;
export const O_CLOEXEC = 0x80000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const SIGUSR2 = 12;

type Fn<A extends unknown[], R> = (...args: A) => R;

export const open = libc.func('int open(const char *path, int flags)') as Fn<[string, number], number>;
export const close = libc.func('int close(int fd)') as Fn<[number], number>;
const ioctlPtr = libc.func('int ioctl(int fd, unsigned long request, void *arg)') as Fn<[number, number, Uint8Array | null], number>;
const ioctlInt = libc.func('int ioctl(int fd, unsigned long request, unsigned long arg)') as Fn<[number, number, number], number>;
const mmapRaw = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)') as Fn<[null, number, number, number, number, number], unknown>;
const munmapRaw = libc.func('int munmap(void *addr, size_t len)') as Fn<[unknown, number], number>;
export const gettid = libc.func('int gettid()') as Fn<[], number>;
export const getpid = libc.func('int getpid()') as Fn<[], number>;
export const tgkill = libc.func('int tgkill(int tgid, int tid, int sig)') as Fn<[number, number, number], number>;
// memmove(dst, src, 0) returns dst: the cheapest way to learn where a typed array's bytes live.
const memmoveAddr = libc.func('uintptr_t memmove(void *dst, void *src, size_t n)') as Fn<[Uint8Array, Uint8Array, number], number | bigint>;

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(koffi.os.errno)) if (!errnoNames.has(value)) errnoNames.set(value, name);

export function errnoName(e: number): string { return errnoNames.get(e) ?? `errno ${e}`; }

/** errno of the last koffi call on this thread. */
export function lastErrno(): number { return koffi.errno(); }

export const EINTR = koffi.os.errno['EINTR'] ?? 4;
export const E2BIG = koffi.os.errno['E2BIG'] ?? 7;
export const EAGAIN = koffi.os.errno['EAGAIN'] ?? 11;

function requestName(request: number): string { return IOCTL_NAMES.get(request) ?? `ioctl 0x${request.toString(16)}`; }

export function ioctlFailed(request: number, errno: number): TshvError {
  return new TshvError('EBACKEND', `${requestName(request)} failed: ${errnoName(errno)}`);
}

/** ioctl with a buffer argument; throws TshvError('EBACKEND') on failure. Returns the result. */
export function ioctl(fd: number, request: number, arg: Uint8Array | null): number {
  const r = ioctlPtr(fd, request, arg);
  if (r < 0) throw ioctlFailed(request, koffi.errno());
  return r;
}

/** ioctl with an integer argument; throws TshvError('EBACKEND') on failure. */
export function ioctlValue(fd: number, request: number, arg: number): number {
  const r = ioctlInt(fd, request, arg);
  if (r < 0) throw ioctlFailed(request, koffi.errno());
  return r;
}

/** ioctl with an integer argument; returns -errno on failure instead of throwing (hot path). */
export function ioctlValueRaw(fd: number, request: number, arg: number): number {
  const r = ioctlInt(fd, request, arg);
  return r < 0 ? -koffi.errno() : r;
}

/** ioctl with a buffer; returns -errno on failure instead of throwing. */
export function ioctlRaw(fd: number, request: number, arg: Uint8Array | null): number {
  const r = ioctlPtr(fd, request, arg);
  return r < 0 ? -koffi.errno() : r;
}

export interface Mapping { readonly ptr: unknown; readonly len: number; readonly buffer: ArrayBuffer }

/** mmap(fd) shared read/write, viewed zero-copy as an ArrayBuffer. */
export function mmapShared(fd: number, len: number, what: string): Mapping {
  const ptr = mmapRaw(null, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const addr = koffi.address(ptr);
  if (addr === 0xffffffffffffffffn || addr === 0n) {
    throw new TshvError('EBACKEND', `mmap ${what} failed: ${errnoName(koffi.errno())}`);
  }
  return { ptr, len, buffer: koffi.view(ptr, len) };
}

export function munmap(m: Mapping): void { munmapRaw(m.ptr, m.len); }

/** The host virtual address of a typed array's first byte (the array must stay alive). */
export function addressOf(bytes: Uint8Array): number {
  const a = memmoveAddr(bytes, bytes, 0);
  return typeof a === 'bigint' ? Number(a) : a;
}
