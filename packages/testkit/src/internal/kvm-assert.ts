// The selftests' "ioctl failed" assertion for any kernel-shaped call (TEST_ASSERT(!ret, ...) around
// an ioctl): generic, used by every per-type helper module.

import { KvmError } from '@kvmtest/kvm';
import { displayLocation, firstFrame, isTestkitSource } from './callsite.js';
import { TestAssertionError } from './errors.js';

/** The first stack frame outside the testkit's own sources, for an assertion's location. */
export function userLocation(): ReturnType<typeof displayLocation> {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 30;
  try {
    Error.captureStackTrace(holder);
  } finally {
    Error.stackTraceLimit = limit;
  }
  return displayLocation(firstFrame(holder.stack, (p) => !isTestkitSource(p)));
}

/** Runs a kernel-shaped call; a KvmError becomes the selftests' "ioctl failed" assertion (the KvmError is the cause). */
export function kvmAssert<T>(opName: string | (() => string), fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    const op = typeof opName === 'string' ? opName : opName();
    const fw = e.fwError === undefined ? '' : ` fw_error: ${e.fwError}`;
    throw new TestAssertionError(
      {
        location: userLocation(),
        expression: `${op} succeeds`,
        userMessage: `${op} failed, rc: -1 errno: ${e.errno} (${e.code})${fw}\n${e.message}`,
      },
      { cause: e },
    );
  }
}
