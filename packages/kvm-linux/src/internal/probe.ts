// Whether /dev/kvm can be used here, and if not, why (for skips).

import { isKvmError } from '@kvmtest/kvm';
import { openLinuxKvm } from './kvm.js';

/** `{ ok: true }` when /dev/kvm opens and answers KVM_GET_API_VERSION 12; else the errno and the reason. */
export function kvmAvailability(
  path = '/dev/kvm',
): { ok: true } | { ok: false; code: string; reason: string } {
  try {
    openLinuxKvm({ path }).close();
    return { ok: true };
  } catch (e) {
    if (isKvmError(e)) return { ok: false, code: e.code, reason: e.message };
    return { ok: false, code: 'ERROR', reason: e instanceof Error ? e.message : String(e) };
  }
}
