// Errno values and the error every kernel-shaped call throws.

/** Linux x86-64 errno numbers by name (include/uapi/asm-generic/errno-base.h, errno.h). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  ERANGE: 34,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
} as const;

/** An errno name such as `'EINVAL'`. */
export type Errno = keyof typeof ERRNO;

/** True when `v` is a known errno name. */
export function isErrno(v: unknown): v is Errno {
  return typeof v === 'string' && Object.hasOwn(ERRNO, v);
}

/** Errno name for a number, or undefined. */
export function errnoName(n: number): Errno | undefined {
  return (Object.keys(ERRNO) as Errno[]).find((k) => ERRNO[k] === n);
}

/** Nesting depth of `tryKvm` calls: inside one, a failure is a value and needs no stack trace. */
let expectingErrno = 0;

/**
 * A failed kernel call: what `ioctl()` returning -1 with `errno` looks like here.
 * `op` names the call (`KVM_CREATE_VCPU`, `KVM_SEV_LAUNCH_START`, …); `fwError` carries the SEV
 * firmware status (`kvm_sev_cmd.error`) or TDX `hw_error` when the kernel reported one.
 */
export class KvmError extends Error {
  override readonly name = 'KvmError';
  readonly code: Errno;
  readonly errno: number;
  readonly op: string;
  readonly fwError: number | undefined;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: Errno,
    op: string,
    reason: string,
    details: Record<string, unknown> = {},
    fwError?: number,
  ) {
    const message = `${op} failed with ${code} (errno ${ERRNO[code]}): ${reason}`;
    if (expectingErrno > 0) {
      // Inside tryKvm the errno is the result; capturing a stack would cost ~3 µs per call, which
      // dominates loops such as the selftests' 30,000 expected-to-fail migrations.
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 0;
      try {
        super(message);
      } finally {
        Error.stackTraceLimit = limit;
      }
    } else super(message);
    this.code = code;
    this.errno = ERRNO[code];
    this.op = op;
    this.fwError = fwError;
    this.details = Object.freeze({ ...details });
  }
}

/** True when `e` is a KvmError, optionally with the given errno name. */
export function isKvmError(e: unknown, code?: Errno): e is KvmError {
  return e instanceof KvmError && (code === undefined || e.code === code);
}

/**
 * Runs `fn` and returns `undefined` on success or the errno name it failed with — the `try` form
 * of the selftest idiom (`tryX(...) === 'EINVAL'`). Errors that are not KvmError propagate.
 */
export function tryKvm(fn: () => unknown): Errno | undefined {
  expectingErrno++;
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  } finally {
    expectingErrno--;
  }
}
