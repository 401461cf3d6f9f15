// The process's default Kvm: the embedded simulator unless KVMTEST_BACKEND says otherwise, or
// whatever setDefaultKvm installed. Every creation helper also takes a Kvm explicitly.

import { argTypeError, type Kvm } from '@kvmtest/kvm';
import { createSimKvm } from '@kvmtest/kvm-sim';
import { TestkitError } from './errors.js';

/** Backends KVMTEST_BACKEND may name. */
export const BACKENDS = ['sim', 'linux'] as const;

let defaultKvm: Kvm | undefined;

/** Builds the Kvm KVMTEST_BACKEND names (`sim` when unset or empty); `linux` is not available yet. */
export function kvmFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): Kvm {
  if (typeof env !== 'object' || env === null) throw argTypeError('kvmFromEnv', 'env', 'an object', env);
  const raw = env.KVMTEST_BACKEND;
  if (raw !== undefined && typeof raw !== 'string')
    throw argTypeError('kvmFromEnv', 'env.KVMTEST_BACKEND', 'a string or undefined', raw);
  const name = (raw ?? '').trim() || 'sim';
  switch (name) {
    case 'sim':
      return createSimKvm();
    case 'linux':
      throw new TestkitError(
        'BACKEND_UNAVAILABLE',
        'KVMTEST_BACKEND=linux: the /dev/kvm backend (packages/kvm-linux) is not available yet; unset KVMTEST_BACKEND or set it to sim',
        { backend: name },
      );
    default:
      throw new TestkitError(
        'UNKNOWN_BACKEND',
        `KVMTEST_BACKEND=${JSON.stringify(name)} names no backend (known: ${BACKENDS.join(', ')})`,
        { backend: name },
      );
  }
}

/** The process's default Kvm, created on first use from KVMTEST_BACKEND (the simulator by default). */
export function getKvm(): Kvm {
  defaultKvm ??= kvmFromEnv();
  return defaultKvm;
}

/** Replaces the process's default Kvm (undefined: back to KVMTEST_BACKEND on next use); returns the previous one. */
export function setDefaultKvm(kvm: Kvm | undefined): Kvm | undefined {
  const prev = defaultKvm;
  defaultKvm = kvm;
  return prev;
}
