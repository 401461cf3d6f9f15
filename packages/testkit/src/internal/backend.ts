// The process's default Kvm: the embedded simulator unless KVMTEST_BACKEND says otherwise, or
// whatever setDefaultKvm installed. Every creation helper also takes a Kvm explicitly.

import { isKvmError, type Kvm } from '@kvmtest/kvm';
import { openLinuxKvm } from '@kvmtest/kvm-linux';
import { createSimKvm } from '@kvmtest/kvm-sim';
import { KsftSkip, TestkitError } from './errors.js';

/** Backends KVMTEST_BACKEND may name (and `auto`: linux when /dev/kvm opens, else sim). */
export const BACKENDS = ['sim', 'linux'] as const;

let defaultKvm: Kvm | undefined;

/**
 * Why /dev/kvm cannot be used, in the words of the selftests' open_path_or_exit(), for the errors
 * that mean "not on this host" (ENOENT, EACCES, ENOTTY); undefined for any other failure.
 */
export function kvmDeviceSkipReason(e: unknown, path = '/dev/kvm'): string | undefined {
  if (!isKvmError(e)) return undefined;
  switch (e.code) {
    case 'ENOENT':
      return `- Cannot open ${path}: No such file or directory (ENOENT). Is KVM loaded and enabled?`;
    case 'EACCES':
      return `- Cannot open ${path}: Permission denied (EACCES). Root required? (or membership of the group that owns ${path})`;
    case 'ENOTTY':
      return `- ${path} is not a KVM device: KVM_GET_API_VERSION failed with ENOTTY (Inappropriate ioctl for device)`;
    default:
      return undefined;
  }
}

/** openLinuxKvm(), with a missing, forbidden or foreign /dev/kvm turned into a KsftSkip that says which. */
export function openLinuxOrSkip(): Kvm {
  try {
    return openLinuxKvm();
  } catch (e) {
    const why = kvmDeviceSkipReason(e);
    if (why !== undefined) throw new KsftSkip(why);
    throw e;
  }
}

/** Builds the Kvm KVMTEST_BACKEND names (`sim` when unset or empty; `auto`: linux if /dev/kvm opens). */
export function kvmFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): Kvm {
  const name = (env.KVMTEST_BACKEND ?? '').trim() || 'sim';
  switch (name) {
    case 'sim':
      return createSimKvm();
    case 'linux':
      return openLinuxOrSkip();
    case 'auto':
      try {
        return openLinuxKvm();
      } catch (e) {
        if (kvmDeviceSkipReason(e) !== undefined) return createSimKvm();
        throw e;
      }
    default:
      throw new TestkitError(
        'UNKNOWN_BACKEND',
        `KVMTEST_BACKEND=${JSON.stringify(name)} names no backend (known: ${BACKENDS.join(', ')}), nor auto`,
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
