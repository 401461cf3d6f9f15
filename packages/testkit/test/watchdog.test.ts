// No process hang, even from plain JavaScript: a guest (or case body) that loops without any guest
// operation never lets a timer of this thread fire, so the watchdog worker terminates it and the
// case times out with a report naming it — under runSuite, under vitestSuite (a child vitest in its
// default forks pool) and in a kselftest program (a child process). The CLI path is tested in
// packages/cli (its suite process runs each case under runWithTimeout).

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type CaseResult, caseContext, runSuite, runWithTimeout } from '../src/index.js';
import { STUCK_IN_JS_NOTE } from '../src/internal/harness.js';
import { armWatchdog } from '../src/internal/watchdog.js';
import { STUCK_TIMEOUT_MS, stuckSuite } from './fixtures/stuck-suite.js';
import { lineOf } from './helpers.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const STUCK = ['guest_sync_loop_after_await', 'guest_microtask_loop', 'body_sync_loop'];
const fixture = new URL('./fixtures/stuck-suite.ts', import.meta.url).href;
/** Where each stuck case loops, as the report names it: `stuck-suite.ts:<line>:`. */
const WHERE = ['guest sync loop', 'guest microtask loop', 'body sync loop'].map(
  (m) => `stuck-suite.ts:${lineOf(fixture, `// stuck: ${m}`)}:`,
);

function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: root, timeout: 120_000, env: { ...process.env, ...env } },
      (err, stdout, stderr) =>
        resolve({
          code: err === null ? 0 : ((err as { code?: number }).code ?? null),
          stdout,
          stderr,
        }),
    );
  });
}

describe('the JS watchdog', () => {
  it('runSuite: guests and a body looping in plain JS time out, stuck in JS, and the next case passes', async () => {
    const results: CaseResult[] = [];
    const res = await runSuite(stuckSuite, {
      reporter: { onCaseEnd: (r) => results.push(r) },
      timeoutMs: 60_000,
    });
    expect(results.map((r) => [r.name, r.status])).toEqual([
      ...STUCK.map((n) => [n, 'timeout']),
      ['guest_runs_to_done_afterwards', 'pass'],
    ]);
    for (const [i, r] of results.slice(0, 3).entries()) {
      const start = `${STUCK_TIMEOUT_MS / 1000} seconds: ${STUCK_IN_JS_NOTE} at `;
      expect(r.reason?.startsWith(start), r.reason).toBe(true);
      // The watchdog paused the loop before ending it: the report says where it was.
      expect(r.reason).toContain(WHERE[i]);
    }
    expect(res.exitCode).toBe(1);
  }, 30_000);

  it('runWithTimeout: a body that returns in time is not reported stuck, and a later timer is not disturbed', async () => {
    const c = { name: 'quick', run: () => new Promise<void>((r) => setTimeout(r, 20)) };
    expect(
      await runWithTimeout(
        c,
        caseContext('s', c.name, () => {}),
        200,
      ),
    ).toBeUndefined();
    // Past the first case's watchdog deadline: nothing fires into this one.
    const slow = { name: 'slow_but_yielding', run: () => new Promise<void>((r) => setTimeout(r, 600)) };
    expect(
      await runWithTimeout(
        slow,
        caseContext('s', slow.name, () => {}),
        5_000,
      ),
    ).toBeUndefined();
  });

  it('runWithTimeout: a timeout that is not a plain-JS loop does not say stuck', async () => {
    const c = { name: 'waits', run: () => new Promise<void>(() => {}) };
    const t = await runWithTimeout(
      c,
      caseContext('s', c.name, () => {}),
      100,
    );
    expect(t?.message).toBe('case s/waits timed out after 0.1 seconds');
    expect(t?.stuckInJs).toBe(false);
  });

  it('runWithTimeout with progressExtends: progress restarts the timeout, silence ends it', async () => {
    const c = {
      name: 'progresses',
      async run(ctx: { progress(d: number, t: number): void }) {
        // 8 × 60 ms = 480 ms in all, longer than the 200 ms timeout, but never 200 ms silent.
        for (let i = 1; i <= 8; i++) {
          await new Promise((r) => setTimeout(r, 60));
          ctx.progress(i, 8);
        }
      },
    };
    const ctx = caseContext('s', c.name, () => {});
    expect(await runWithTimeout(c, ctx, 200, { progressExtends: true })).toBeUndefined();
    expect(await runWithTimeout(c, ctx, 200)).toBeDefined();
  });

  it('arming and releasing a lease reports no termination when none happened', async () => {
    const lease = armWatchdog(10_000);
    // Where the watchdog cannot work the lease is undefined; vitest's forks pool is a main thread.
    expect(lease).toBeDefined();
    lease!.extend(20_000);
    expect(await lease!.release()).toBe(false);
    expect(await lease!.release()).toBe(false);
  });

  it('the kselftest program: TAP names each stuck case, the next case passes, exit code 1', async () => {
    const r = await run(process.execPath, [
      '--conditions=@kvmtest/source',
      '--import',
      'tsx',
      'packages/testkit/test/fixtures/stuck-main.ts',
    ]);
    for (const [i, n] of STUCK.entries()) {
      const line = r.stdout.split('\n').find((l) => l.startsWith(`not ok ${i + 1} ${n} # TIMEOUT `));
      expect(line).toContain(`# TIMEOUT 0.3 seconds: ${STUCK_IN_JS_NOTE} at `);
      expect(line).toContain(WHERE[i]);
    }
    expect(r.stdout).toContain('ok 4 guest_runs_to_done_afterwards');
    expect(r.code).toBe(1);
  }, 130_000);

  it('vitestSuite: each stuck case fails with a CaseTimeoutError naming it, the run ends', async () => {
    const r = await run(
      'node_modules/.bin/vitest',
      ['run', '--config', 'packages/testkit/test/fixtures/stuck.vitest.config.ts', '--reporter=verbose'],
      { NO_COLOR: '1', FORCE_COLOR: '0', CI: '' },
    );
    const out = r.stdout + r.stderr;
    for (const [i, n] of STUCK.entries()) {
      const line = out.split('\n').find((l) => l.startsWith(`CaseTimeoutError: case stuck/${n} timed out`));
      expect(line).toContain(`timed out after 0.3 seconds: ${STUCK_IN_JS_NOTE} at `);
      expect(line).toContain(WHERE[i]);
    }
    expect(out).toMatch(/✓ .*guest_runs_to_done_afterwards/);
    expect(out).toMatch(/Tests\s+3 failed \| 1 passed \(4\)/);
    // vitest's own timeout (the backstop) never had to fire, and nothing was left unhandled.
    expect(out).not.toContain('Test timed out');
    expect(out).not.toContain('Unhandled');
    expect(r.code).toBe(1);
  }, 130_000);
});
