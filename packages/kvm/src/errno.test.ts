import { describe, expect, test } from 'vitest';
import { ERRNO, errnoName, isErrno, isKvmError, KvmError, tryKvm } from './index.js';

describe('KvmError', () => {
  test('carries the errno name, its Linux number and the failing call', () => {
    const e = new KvmError(
      'EINVAL',
      'KVM_CREATE_VCPU',
      'vCPU id 4096 is not below KVM_CAP_MAX_VCPU_ID (4096)',
      {
        id: 4096,
      },
    );
    expect(e.code).toBe('EINVAL');
    expect(e.errno).toBe(22);
    expect(e.op).toBe('KVM_CREATE_VCPU');
    expect(e.details).toEqual({ id: 4096 });
    expect(e.message).toBe(
      'KVM_CREATE_VCPU failed with EINVAL (errno 22): vCPU id 4096 is not below KVM_CAP_MAX_VCPU_ID (4096)',
    );
    expect(e).toBeInstanceOf(Error);
  });

  test('keeps the firmware status when the kernel reported one', () => {
    const e = new KvmError('EIO', 'KVM_SEV_LAUNCH_FINISH', 'firmware rejected', {}, 2);
    expect(e.fwError).toBe(2);
  });

  test('errno numbers are the x86-64 Linux ones', () => {
    expect([ERRNO.EPERM, ERRNO.EIO, ERRNO.EBADF, ERRNO.EBUSY, ERRNO.EEXIST, ERRNO.ENOTTY]).toEqual([
      1, 5, 9, 16, 17, 25,
    ]);
    expect(errnoName(22)).toBe('EINVAL');
    expect(errnoName(9999)).toBeUndefined();
    expect(isErrno('EFAULT')).toBe(true);
    expect(isErrno('EWHAT')).toBe(false);
  });
});

describe('tryKvm', () => {
  test('returns undefined when the call succeeds', () => {
    expect(tryKvm(() => 1)).toBeUndefined();
  });

  test('returns the errno name when the call fails with a KvmError', () => {
    expect(
      tryKvm(() => {
        throw new KvmError('EBUSY', 'op', 'busy');
      }),
    ).toBe('EBUSY');
  });

  test('lets other errors through so programming mistakes are not mistaken for kernel answers', () => {
    expect(() =>
      tryKvm(() => {
        throw new TypeError('bad');
      }),
    ).toThrow(TypeError);
  });

  test('isKvmError matches on the code when one is given', () => {
    const e = new KvmError('EIO', 'op', 'dead');
    expect(isKvmError(e)).toBe(true);
    expect(isKvmError(e, 'EIO')).toBe(true);
    expect(isKvmError(e, 'EINVAL')).toBe(false);
    expect(isKvmError(new Error('x'))).toBe(false);
  });
});

describe('stack traces', () => {
  test('a KvmError thrown outside tryKvm keeps its stack for debugging', () => {
    const e = new KvmError('EINVAL', 'op', 'why');
    expect(e.stack).toMatch(/errno\.test\.ts/);
  });

  test('inside tryKvm the errno is the result and no stack is captured', () => {
    let inner: KvmError | undefined;
    expect(
      tryKvm(() => {
        inner = new KvmError('EBUSY', 'op', 'busy');
        throw inner;
      }),
    ).toBe('EBUSY');
    expect(inner?.stack).not.toMatch(/errno\.test\.ts/);
    expect(Error.stackTraceLimit).toBeGreaterThan(0);
  });
});
