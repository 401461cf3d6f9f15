// No process hang: a guest that never exits, or a guest/host pair ping-ponging on ucalls forever,
// ends at the case's timeout with a report naming the case and what the guest was doing — under
// runSuite, under runWithTimeout (what vitestSuite runs each case with) and in a kselftest program.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  type CaseResult,
  caseContext,
  defineGuest,
  defineSuite,
  guestSync,
  runSuite,
  runUcall,
  guestDone,
  readGuestGlobal,
  runWithTimeout,
  testAssert,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
} from '../src/index.js';
import { setSimSeed } from '@kvmtest/kvm-sim';

const endless = defineGuest(
  async (g) => {
    const at = g.global('counter');
    for (;;) await g.readAsync(at, 8);
  },
  { globals: { counter: 0n } },
);

const syncForever = defineGuest(async (g) => {
  for (;;) await guestSync(g, 1n);
});

function collect() {
  const lines: string[] = [];
  const results: CaseResult[] = [];
  return {
    lines,
    results,
    reporter: {
      onLog: (_i: number, l: string) => lines.push(l),
      onCaseEnd: (r: CaseResult) => results.push(r),
    },
  };
}

describe('case timeouts', () => {
  it('runSuite: a guest that never exits times out, naming the case and the guest; the case timeoutMs wins', async () => {
    const { lines, results, reporter } = collect();
    const suite = defineSuite({
      name: 'endless',
      cases: [
        {
          name: 'never_exits',
          timeoutMs: 200,
          async run() {
            using vm = vmCreateWithOneVcpu(endless, 'default');
            await runUcall(vm.vcpus[0]!);
          },
        },
      ],
    });
    const res = await runSuite(suite, { reporter, timeoutMs: 60_000 });
    expect(res.counts.timeout).toBe(1);
    expect(results[0]!.reason).toMatch(/^0\.2 seconds: vCPU 0 .*readAsync/);
    expect(lines.some((l) => /^KVMTEST_SEED=\d+/.test(l))).toBe(true);
  });

  it('runWithTimeout (vitestSuite): a guest and host ping-ponging on ucalls forever are ended', async () => {
    let runs = 0;
    let after: unknown;
    const c = {
      name: 'sync_forever',
      async run() {
        using vm = vmCreateWithOneVcpu(syncForever, 'default');
        try {
          for (;;) {
            await runUcall(vm.vcpus[0]!);
            runs++;
          }
        } catch (e) {
          after = e;
        }
      },
    };
    const t = await runWithTimeout(
      c,
      caseContext('s', c.name, () => {}),
      200,
    );
    expect(t?.message).toMatch(/case s\/sync_forever timed out after 0\.2 seconds: vCPU 0 .*(out|in)/);
    expect(runs).toBeGreaterThan(0);
    // The detached body stops: its next run reports the timeout.
    for (let i = 0; i < 50 && after === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    expect(String(after)).toMatch(/timed out/);
  });

  it('the kselftest program: TAP names the timed-out case, exit code 1, and the process ends', async () => {
    const tsx = fileURLToPath(new URL('../../../node_modules/.bin/tsx', import.meta.url));
    const main = fileURLToPath(new URL('./fixtures/endless-main.ts', import.meta.url));
    const { code, stdout } = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(tsx, ['--conditions=@kvmtest/source', main], { timeout: 60_000 }, (err, stdout) =>
        resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? null), stdout }),
      );
    });
    expect(stdout).toMatch(/not ok 1 guest_never_exits # TIMEOUT 0\.3 seconds: vCPU 0 .*readAsync/);
    expect(stdout).toMatch(/# KVMTEST_SEED=\d+/);
    expect(code).toBe(1);
  }, 70_000);
});

/** Two vCPUs store their id into one global 2000 times each; who stores last depends on the interleaving. */
const racer = defineGuest(
  async (g) => {
    const at = g.global('last');
    for (let i = 0; i < 2000; i++) await g.writeAsync(at, 8, BigInt(g.vcpuId));
    await guestDone(g);
  },
  { globals: { last: 7n } },
);

const raceSuite = defineSuite({
  name: 'race',
  cases: [
    {
      name: 'vcpu0_stores_last',
      async run() {
        using vm = vmCreateWithVcpus(2, racer, 'default');
        await Promise.all(vm.vcpus.map((v) => runUcall(v)));
        const last = readGuestGlobal(vm, 'last');
        testAssert(last === 0n, 'vCPU %d stored last', Number(last));
      },
    },
  ],
});

describe('seeded interleaving under the harness', () => {
  it('a failing interleaving replays from the seed its report printed', async () => {
    let failed: { seed: string; reason: string } | undefined;
    for (let s = 1; s <= 64 && failed === undefined; s++) {
      setSimSeed(s);
      const { lines, results, reporter } = collect();
      await runSuite(raceSuite, { reporter });
      if (results[0]!.status === 'fail') {
        const seed = lines
          .find((l) => l.startsWith('KVMTEST_SEED='))!
          .slice('KVMTEST_SEED='.length)
          .split(' ')[0]!;
        failed = { seed, reason: results[0]!.reason ?? '' };
      }
    }
    expect(failed, 'some seed in 1..64 lets vCPU 1 store last').toBeDefined();
    for (let k = 0; k < 2; k++) {
      setSimSeed(Number(failed!.seed));
      const { results, reporter } = collect();
      await runSuite(raceSuite, { reporter });
      expect([results[0]!.status, results[0]!.reason]).toEqual(['fail', failed!.reason]);
    }
  });
});
