// The system calls kvm-linux makes, through koffi (FFI into the C library), and their errors.
//
// `ioctl` is variadic in C; koffi needs a fixed prototype per argument type, so there is one
// binding per shape: an integer argument, a pointer to a JS buffer (a Uint8Array whose memory the
// kernel reads or writes in place) and a raw host address (memory this package mmap'd).
// Every wrapper returns the kernel's result or throws a KvmError with the errno, naming the call.

import { createRequire } from 'node:module';
import { type Errno, errnoName, KvmError } from '@kvmtest/kvm';

// koffi is CommonJS; load it through require so both the ESM build and tsx/vitest see one copy.
const require = createRequire(import.meta.url);

/** The koffi module (typed loosely: only the calls below are used). */
export interface Koffi {
  load(path: string): { func(decl: string): (...args: unknown[]) => unknown };
  view(ref: unknown, len: number): ArrayBuffer;
  address(value: unknown): bigint;
  errno(): number;
  errno(value: number): number;
}

/** Path of the koffi package entry, for workers that load it themselves. */
export const KOFFI_PATH: string = require.resolve('koffi');

/** The loaded koffi module. */
export const koffi: Koffi = require('koffi') as Koffi;

const libc = koffi.load('libc.so.6');

type IntFn = (...args: unknown[]) => number;
const c = {
  open: libc.func('int open(const char *path, int flags)') as IntFn,
  close: libc.func('int close(int fd)') as IntFn,
  ioctlInt: libc.func('int ioctl(int fd, unsigned long req, unsigned long arg)') as IntFn,
  ioctlBuf: libc.func('int ioctl(int fd, unsigned long req, void *arg)') as IntFn,
  ioctlAddr: libc.func('int ioctl(int fd, unsigned long req, uint64_t arg)') as IntFn,
  mmap: libc.func('uint64_t mmap(uint64_t addr, size_t len, int prot, int flags, int fd, int64_t off)') as (
    ...args: unknown[]
  ) => number | bigint,
  munmap: libc.func('int munmap(uint64_t addr, size_t len)') as IntFn,
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)') as IntFn,
  fallocate: libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as IntFn,
  pread: libc.func('int64_t pread(int fd, void *buf, size_t count, int64_t offset)') as (
    ...args: unknown[]
  ) => number | bigint,
  syscall0: libc.func('long syscall(long nr)') as IntFn,
  syscall3: libc.func('long syscall(long nr, long a, long b, long c)') as IntFn,
  sigaction: libc.func('int sigaction(int sig, void *act, void *old)') as IntFn,
  dlsym: libc.func('uint64_t dlsym(uint64_t handle, const char *name)') as (
    ...args: unknown[]
  ) => number | bigint,
};

/** True when SIGUSR2's disposition is a handler (not SIG_DFL, which kills, nor SIG_IGN). */
export function sigusr2Handled(): boolean {
  // glibc's struct sigaction on x86-64: sa_handler (8), sa_mask (128), sa_flags (4), pad, sa_restorer (8).
  const old = new Uint8Array(152);
  if (c.sigaction(SIGUSR2, null, old) !== 0) return false;
  const current = new DataView(old.buffer).getBigUint64(0, true);
  return current !== 0n && current !== 1n;
}

/**
 * Makes sure SIGUSR2 has a handler in this process, so the watchdog's signal interrupts KVM_RUN
 * instead of killing the process (default action) or vanishing (ignored). When the disposition
 * is SIG_DFL or SIG_IGN, a C function that does nothing harmful in a signal handler is installed
 * with sigaction(2): getpid (async-signal-safe, no errno change). Not Node's `process.on`: libuv
 * restores SIG_DFL when it closes its signal handle at exit, and a kick still in flight then
 * would kill the process. A handler someone else installed (a JS listener: libuv's) is kept.
 */
export function ensureSigusr2Handler(): void {
  if (sigusr2Handled()) return;
  const fn = BigInt(c.dlsym(0, 'getpid'));
  if (fn === 0n)
    throw new Error(
      'kvm-linux: dlsym("getpid") failed: cannot install the SIGUSR2 handler the watchdog needs',
    );
  const act = new Uint8Array(152);
  const v = new DataView(act.buffer);
  v.setBigUint64(0, fn, true);
  v.setInt32(136, 0x10000000, true); // SA_RESTART: other syscalls interrupted by a late kick resume
  if (c.sigaction(SIGUSR2, act, null) !== 0)
    throw sysError('sigaction', 'installing the SIGUSR2 handler failed');
}

/** SIGUSR2's number on x86-64 Linux. */
export const SIGUSR2 = 12;

/** tgkill(2): sends `sig` to thread `tid` of process `tgid`; false on failure. */
export function tgkill(tgid: number, tid: number, sig: number): boolean {
  return c.syscall3(234, tgid, tid, sig) === 0; // __NR_tgkill on x86-64
}

/** gettid(2): the kernel id of the calling thread. */
export function gettid(): number {
  return c.syscall0(186); // __NR_gettid on x86-64
}

/** open(2) flags, mmap(2) constants and fcntl commands (include/uapi/asm-generic/fcntl.h, mman-common.h). */
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
const F_GETFD = 1;
/** mmap's failure value, (void *)-1. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** Page size of x86-64 Linux. */
export const PAGE_SIZE = 4096;

/** The errno of the last failed call on this thread, as a name (EINVAL if the number is unknown to kvmtest). */
export function lastErrno(): { code: Errno; errno: number } {
  const n = koffi.errno();
  return { code: errnoName(n) ?? 'EINVAL', errno: n };
}

/** A KvmError for the call that just failed. */
export function sysError(op: string, reason: string, details: Record<string, unknown> = {}): KvmError {
  const { code, errno } = lastErrno();
  const known = errnoName(errno) !== undefined;
  return new KvmError(code, op, known ? reason : `${reason} (errno ${errno}, reported as EINVAL)`, {
    ...details,
    errno,
  });
}

/** open(path, O_RDWR|O_CLOEXEC); throws KvmError with the errno. */
export function sysOpen(path: string, op = 'open'): number {
  const fd = c.open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) throw sysError(op, `open("${path}") failed`, { path });
  return fd;
}

/** close(fd); throws KvmError EBADF (or what close gives). */
export function sysClose(fd: number, op = 'close'): void {
  if (c.close(fd) < 0) throw sysError(op, `close(${fd}) failed`, { fd });
}

/** True while `fd` is an open descriptor of this process (fcntl F_GETFD). */
export function fdIsOpen(fd: number): boolean {
  return Number.isInteger(fd) && fd >= 0 && c.fcntl(fd, F_GETFD, 0) >= 0;
}

/** fallocate(2) with a 64-bit offset and length; -1 on failure (errno in `lastErrno()`). */
export function fallocateRaw(fd: number, mode: number, offset: bigint, len: bigint): number {
  return c.fallocate(fd, mode, offset, len);
}

/** pread(2) of up to `buf.length` bytes at `offset` into `buf`; the byte count, or -1 on failure. */
export function preadRaw(fd: number, buf: Uint8Array, offset: number): number {
  return Number(c.pread(fd, buf, buf.length, offset));
}

/** ioctl(fd, req, integer); returns the result or -1 (errno in `lastErrno()`). */
export function ioctlIntRaw(fd: number, req: number, arg: number | bigint): number {
  return c.ioctlInt(fd, req, arg);
}

/** ioctl(fd, req, pointer to `buf`) — the kernel reads/writes `buf` in place; -1 on failure. */
export function ioctlBufRaw(fd: number, req: number, buf: Uint8Array | null): number {
  return c.ioctlBuf(fd, req, buf);
}

/** ioctl(fd, req, host address); -1 on failure. */
export function ioctlAddrRaw(fd: number, req: number, addr: bigint | number): number {
  return c.ioctlAddr(fd, req, addr);
}

/** ioctl with an integer argument; throws KvmError named `op`. */
export function ioctlInt(
  fd: number,
  req: number,
  arg: number | bigint,
  op: string,
  why = 'the kernel refused',
): number {
  const r = c.ioctlInt(fd, req, arg);
  if (r < 0) throw sysError(op, why, { fd, arg: typeof arg === 'bigint' ? arg : Number(arg) });
  return r;
}

/** ioctl with a buffer argument; throws KvmError named `op`. */
export function ioctlBuf(
  fd: number,
  req: number,
  buf: Uint8Array | null,
  op: string,
  why = 'the kernel refused',
): number {
  const r = c.ioctlBuf(fd, req, buf);
  if (r < 0) throw sysError(op, why, { fd });
  return r;
}

/** mmap(2); returns the address or throws KvmError. */
export function sysMmap(
  len: number,
  prot: number,
  flags: number,
  fd: number,
  offset = 0,
  addr = 0n,
  op = 'mmap',
): bigint {
  const p = BigInt(c.mmap(addr, len, prot, flags, fd, offset));
  if (p === MAP_FAILED || p === -1n) throw sysError(op, `mmap of ${len} bytes failed`, { len, fd });
  return p;
}

/** munmap(2); throws KvmError. */
export function sysMunmap(addr: bigint, len: number): void {
  if (c.munmap(addr, len) < 0) throw sysError('munmap', `munmap(0x${addr.toString(16)}, ${len}) failed`);
}

/** A zero-copy ArrayBuffer over `len` bytes of host memory at `addr` (dangles after munmap: see memory.ts). */
export function viewOf(addr: bigint, len: number): ArrayBuffer {
  return koffi.view(addr, len);
}

/** The host address of a typed array's first byte (its buffer's address plus its byteOffset). */
export function addressOf(view: ArrayBufferView): bigint {
  return koffi.address(view);
}

/** The C `_IOC` encoding of ioctl numbers (include/uapi/asm-generic/ioctl.h). */
export function ioc(dir: 0 | 1 | 2 | 3, type: number, nr: number, size: number): number {
  return ((dir << 30) >>> 0) + size * 0x10000 + type * 0x100 + nr;
}
/** `_IO(type, nr)`. */
export const io = (type: number, nr: number): number => ioc(0, type, nr, 0);
/** `_IOW(type, nr, size)`: userspace writes, the kernel reads. */
export const iow = (type: number, nr: number, size: number): number => ioc(1, type, nr, size);
/** `_IOR(type, nr, size)`: the kernel writes. */
export const ior = (type: number, nr: number, size: number): number => ioc(2, type, nr, size);
/** `_IOWR(type, nr, size)`. */
export const iowr = (type: number, nr: number, size: number): number => ioc(3, type, nr, size);
