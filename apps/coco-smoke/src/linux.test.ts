// coco-smoke on the real /dev/kvm: the default case runs its guest for real (through kvm-linux's
// guest agent) and passes; each type the host lacks skips, naming it and KVM_CAP_VM_TYPES.
// Skipped where /dev/kvm is unusable.
import { VM_TYPE_NUMBER, VM_TYPES } from '@kvmtest/coco';
import { CAP, type Kvm } from '@kvmtest/kvm';
import { KsftSkip, kvmFromEnv, runSuite, setDefaultKvm } from '@kvmtest/testkit';
import { expect, test } from 'vitest';
import suite from './suite.js';

let kvm: (Kvm & { close?(): void }) | undefined;
try {
  kvm = kvmFromEnv({ KVMTEST_BACKEND: 'linux' });
} catch (e) {
  if (!(e instanceof KsftSkip)) throw e;
}

test.skipIf(kvm === undefined)(
  'the default case passes on /dev/kvm; types the host lacks skip with the reason',
  async () => {
    const prev = setDefaultKvm(kvm);
    try {
      const mask = kvm!.checkExtension(CAP.VM_TYPES);
      const result = await runSuite(suite, { reporter: {} });
      for (const type of VM_TYPES) {
        const r = result.results.find((c) => c.name === type)!;
        if ((mask >>> VM_TYPE_NUMBER[type]) & 1)
          expect([type, r.status, r.reason]).toEqual([type, 'pass', undefined]);
        else {
          expect([type, r.status]).toEqual([type, 'skip']);
          expect(r.reason).toBe(`${type} VMs are not supported by the linux backend (KVM_CAP_VM_TYPES)`);
        }
      }
      expect(result.results.find((c) => c.name === 'default')?.status).toBe('pass');
      expect(result.counts.fail + result.counts.timeout).toBe(0);
    } finally {
      setDefaultKvm(prev);
      kvm?.close?.();
    }
  },
);
