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
  runWithTimeout,
  vmCreateWithOneVcpu,
} from '../src/index.js';

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
