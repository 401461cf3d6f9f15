// The suite's cases as vitest tests (on the default simulator), and the whole suite on each named
// simulated host: its assertions follow what the host advertises, so they must hold on all of them.
import { createSimKvm, SIM_HOST_PRESETS } from '@kvmtest/kvm-sim';
import { type Reporter, runSuite, setDefaultKvm } from '@kvmtest/testkit';
import { vitestSuite } from '@kvmtest/testkit/vitest';
import { expect, test } from 'vitest';
import suite from './suite.js';

vitestSuite(suite, { timeoutMs: 60_000 });

test.each(SIM_HOST_PRESETS)('every case passes on the %s simulated host', async (host) => {
  const prev = setDefaultKvm(createSimKvm({ host }));
  const failures: string[] = [];
  const reporter: Reporter = {
    onCaseEnd: (r) => {
      if (r.status !== 'pass') failures.push(`${r.name}: ${r.status} ${r.reason ?? ''}`);
    },
  };
  try {
    const result = await runSuite(suite, { reporter });
    expect(failures).toEqual([]);
    expect(result.counts.pass).toBe(suite.cases.length);
  } finally {
    setDefaultKvm(prev);
  }
});
