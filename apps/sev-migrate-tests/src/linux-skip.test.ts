// On the real /dev/kvm of a host without SEV, the suite skips as sev_migrate_tests.c does: its
// main() TEST_REQUIREs the two enc-context capabilities and X86_FEATURE_SEV, and the first one
// missing names itself ("Requirement not met: …"), KSFT exit code 4. Skipped where /dev/kvm is
// unusable or the host has SEV (there the cases run for real).
import { findCpuid, type Kvm } from '@kvmtest/kvm';
import { KsftSkip, kvmFromEnv, runSuite, setDefaultKvm } from '@kvmtest/testkit';
import { expect, test } from 'vitest';
import suite from './suite.js';

let kvm: (Kvm & { close?(): void }) | undefined;
try {
  kvm = kvmFromEnv({ KVMTEST_BACKEND: 'linux' });
} catch (e) {
  if (!(e instanceof KsftSkip)) throw e;
}
const hostHasSev =
  kvm !== undefined && ((findCpuid(kvm.getSupportedCpuid(), 0x8000_001f)?.eax ?? 0) & 2) !== 0;

test.skipIf(kvm === undefined || hostHasSev)(
  'every case skips on a linux host without SEV, naming the requirement',
  async () => {
    const prev = setDefaultKvm(kvm);
    try {
      const result = await runSuite(suite, { reporter: {} });
      expect(result.exitCode).toBe(4);
      expect(result.results.map((r) => r.status)).toEqual(suite.cases.map(() => 'skip'));
      for (const r of result.results)
        expect(r.reason).toMatch(/^Requirement not met: kvm_(has_cap|cpu_has)\(/);
    } finally {
      setDefaultKvm(prev);
      kvm?.close?.();
    }
  },
);
