// The kselftest harness: a suite is a list of named cases; running it prints TAP 13 (one result
// line per case, diagnostics as `# ` lines) and yields the KSFT exit code. A failing case does not
// stop the next; a case that throws KsftSkip is a skip; a case that outlives its timeout is
// reported `not ok … # TIMEOUT`, naming what each guest was doing; every guest still running is
// then ended (its run returns internal-error) so the case's body stops at its next run. A failing
// or timed-out case also prints the scheduler seed (KVMTEST_SEED) that replays its interleaving.
// Reporters are events, so the CLI can print TAP, a TTY view or JUnit from one run.

import { runsInFlight } from '@kvmtest/kvm';
import { simSeed } from '@kvmtest/kvm-sim';
import { KsftSkip, TestAssertionError, TestkitError } from './errors.js';
import { type FormatValue, formatString } from './format.js';
import { setGuestPrintfSink } from './guest-log.js';
import { armWatchdog, callInFreshTurn, watchdogGraceMs, watchdogStuckAt } from './watchdog.js';
import {
  type CaseOutcome,
  type CaseStatus,
  KSFT,
  tapDiagnostics,
  tapResultLine,
  tapTotals,
} from './results.js';

export { KSFT, type CaseStatus };

/** The exit code of a suite run: 0 all passed, 1 something failed, 4 everything skipped. */
export type KsftExitCode = (typeof KSFT)['PASS' | 'FAIL' | 'SKIP'];

/** What a running case can do besides asserting: log diagnostics and skip itself. */
export interface CaseContext {
  /** The suite's name. */
  readonly suite: string;
  /** The case's name. */
  readonly name: string;
  /** Prints a diagnostic line (`# …` in TAP), printf-style. */
  log(fmt: string, ...values: FormatValue[]): void;
  /** Skips the case here (like testRequire(false, why)). */
  skip(why: string): never;
  /** Reports how far a long case has come (the CLI shows it on a terminal and resets its timeout). */
  progress(done: number, total: number): void;
}

/** One test case: a name and a body that passes by returning, fails by throwing, skips with KsftSkip. */
export interface TestCase {
  readonly name: string;
  run(ctx: CaseContext): void | Promise<void>;
  /** Per-case timeout in milliseconds, overriding the run's. */
  readonly timeoutMs?: number;
}

/** A named list of test cases (a kselftest program). */
export interface Suite {
  readonly name: string;
  readonly cases: readonly TestCase[];
}

/** The result of one case as runSuite reports it. */
export interface CaseResult extends CaseOutcome {
  /** 1-based TAP test number. */
  readonly index: number;
  /** What the case threw (failures and skips). */
  readonly error?: unknown;
}

/** Counts per status. */
export interface SuiteCounts {
  pass: number;
  fail: number;
  skip: number;
  timeout: number;
}

/** The result of a suite run. */
export interface SuiteResult {
  readonly suite: string;
  readonly results: readonly CaseResult[];
  readonly counts: Readonly<SuiteCounts>;
  readonly exitCode: KsftExitCode;
}

/** Receives a suite run as events; `tapReporter` is the default. */
export interface Reporter {
  onSuiteStart?(suite: Suite, plan: readonly TestCase[]): void;
  onCaseStart?(index: number, testCase: TestCase): void;
  onLog?(index: number, line: string): void;
  onCaseEnd?(result: CaseResult): void;
  onSuiteEnd?(result: SuiteResult): void;
}

/** Options of runSuite. */
export interface RunSuiteOptions {
  /** Where the run goes; default TAP on stdout. */
  reporter?: Reporter;
  /** Which cases run: a substring of the case name, a RegExp, or a predicate. Others are left out of the plan. */
  filter?: string | RegExp | ((name: string) => boolean);
  /** Per-case timeout in milliseconds (default 30 000, kselftest_harness's TEST_TIMEOUT_DEFAULT). */
  timeoutMs?: number;
}

/** The default per-case timeout in milliseconds (kselftest_harness TEST_TIMEOUT_DEFAULT = 30 s). */
export const DEFAULT_CASE_TIMEOUT_MS = 30_000;

/** Declares a suite, checking that it has a name and that case names are non-empty and unique. */
export function defineSuite(suite: Suite): Suite {
  if (typeof suite !== 'object' || suite === null)
    throw new TypeError('defineSuite: suite must be an object');
  if (typeof suite.name !== 'string' || suite.name.trim() === '')
    throw new TestkitError(
      'BAD_ARGUMENT',
      `suite name ${JSON.stringify(suite.name)} must be a non-empty string`,
    );
  if (!Array.isArray(suite.cases))
    throw new TestkitError('BAD_ARGUMENT', `suite ${suite.name}: cases must be an array`);
  const seen = new Set<string>();
  for (const [i, c] of suite.cases.entries()) {
    if (typeof c?.name !== 'string' || c.name.trim() === '')
      throw new TestkitError('BAD_ARGUMENT', `suite ${suite.name}: case ${i} has no name`);
    if (/[#\n]/.test(c.name))
      throw new TestkitError(
        'BAD_ARGUMENT',
        `suite ${suite.name}: case name ${JSON.stringify(c.name)} contains '#' or a newline, which TAP cannot carry`,
      );
    if (typeof c.run !== 'function')
      throw new TestkitError(
        'BAD_ARGUMENT',
        `suite ${suite.name}: case ${JSON.stringify(c.name)} has no run function`,
      );
    if (seen.has(c.name))
      throw new TestkitError(
        'BAD_ARGUMENT',
        `suite ${suite.name}: case name ${JSON.stringify(c.name)} is used twice`,
      );
    seen.add(c.name);
  }
  return Object.freeze({ name: suite.name, cases: Object.freeze([...suite.cases]) });
}

/** The case context handed to a case body; `log` goes to `emit`. */
export function caseContext(
  suite: string,
  name: string,
  emit: (line: string) => void,
  onProgress: (done: number, total: number) => void = () => {},
): CaseContext {
  return {
    suite,
    name,
    progress: onProgress,
    log(fmt, ...values) {
      for (const l of formatString(fmt, ...values).split('\n')) emit(l);
    },
    skip(why: string): never {
      throw new KsftSkip(why);
    },
  };
}

/** The lines that describe a failure: the assertion banner, or the error's stack. */
export function describeFailure(error: unknown): string[] {
  if (error instanceof TestAssertionError) return error.message.split('\n');
  if (error instanceof Error) {
    const stack = error.stack ?? `${error.name}: ${error.message}`;
    const lines = stack.split('\n');
    // Keep the message and the first frames; the rest is the harness's own machinery.
    const firstFrame = lines.findIndex((l) => /^\s+at /.test(l));
    return firstFrame < 0 ? lines : lines.slice(0, firstFrame + 6);
  }
  return [`thrown value: ${String(error)}`];
}

/** A reporter printing TAP 13 through `write` (one call per line, without the newline). */
export function tapReporter(write: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Reporter {
  return {
    onSuiteStart(suite, plan) {
      write('TAP version 13');
      write(`1..${plan.length}`);
      write(`# Starting ${plan.length} tests from suite ${suite.name}.`);
    },
    onCaseStart(_index, c) {
      write(`#  RUN           ${c.name} ...`);
    },
    onLog(_index, line) {
      write(`# ${line}`);
    },
    onCaseEnd(r) {
      if (r.status === 'skip') write(`#      SKIP      ${r.reason ?? ''}`);
      if (r.status === 'fail') for (const l of describeFailure(r.error)) write(`# ${l}`);
      if (r.status === 'timeout') for (const l of tapDiagnostics(r.reason ?? 'timeout')) write(l);
      write(
        r.status === 'pass' || r.status === 'skip'
          ? `#            OK  ${r.name}`
          : `#          FAIL  ${r.name}`,
      );
      write(tapResultLine(r.index, r.name, r));
    },
    onSuiteEnd(res) {
      const c = res.counts;
      const total = res.results.length;
      write(`# ${c.fail + c.timeout === 0 ? 'PASSED' : 'FAILED'}: ${c.pass} / ${total} tests passed.`);
      write(tapTotals({ pass: c.pass, fail: c.fail + c.timeout, skip: c.skip }));
    },
  };
}

/** The KSFT exit code for a set of counts: 1 if anything failed, 4 if nothing passed, else 0. */
export function ksftExitCode(counts: Readonly<SuiteCounts>): KsftExitCode {
  if (counts.fail + counts.timeout > 0) return KSFT.FAIL;
  if (counts.pass === 0) return KSFT.SKIP;
  return KSFT.PASS;
}

function matcher(filter: RunSuiteOptions['filter']): (name: string) => boolean {
  if (filter === undefined) return () => true;
  if (typeof filter === 'string') return (n) => n.includes(filter);
  if (filter instanceof RegExp) return (n) => filter.test(n);
  if (typeof filter === 'function') return filter;
  throw new TypeError('runSuite: filter must be a string, a RegExp or a function');
}

/**
 * Runs the suite's cases one after another and reports them; resolves with every result and the
 * KSFT exit code (0 all passed, 1 any failed or timed out, 4 all skipped or none ran).
 */
export async function runSuite(suite: Suite, opts: RunSuiteOptions = {}): Promise<SuiteResult> {
  const reporter = opts.reporter ?? tapReporter();
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CASE_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new RangeError(`runSuite: timeoutMs ${timeoutMs} must be a positive number`);
  const accept = matcher(opts.filter);
  const plan = suite.cases.filter((c) => accept(c.name));
  reporter.onSuiteStart?.(suite, plan);
  const results: CaseResult[] = [];
  const counts: SuiteCounts = { pass: 0, fail: 0, skip: 0, timeout: 0 };
  for (const [i, c] of plan.entries()) {
    const index = i + 1;
    reporter.onCaseStart?.(index, c);
    const ctx = caseContext(suite.name, c.name, (line) => reporter.onLog?.(index, line));
    const restore = setGuestPrintfSink((line) => reporter.onLog?.(index, line));
    const result = await runCase(index, c, ctx, c.timeoutMs ?? timeoutMs).finally(restore);
    if (result.status === 'fail' || result.status === 'timeout') reporter.onLog?.(index, seedLine());
    counts[result.status === 'interrupted' ? 'fail' : result.status]++;
    results.push(result);
    reporter.onCaseEnd?.(result);
  }
  const res: SuiteResult = Object.freeze({
    suite: suite.name,
    results: Object.freeze(results),
    counts: Object.freeze(counts),
    exitCode: ksftExitCode(counts),
  });
  reporter.onSuiteEnd?.(res);
  return res;
}

async function runCase(index: number, c: TestCase, ctx: CaseContext, timeoutMs: number): Promise<CaseResult> {
  const start = performance.now();
  const done = (status: CaseStatus, reason?: string, error?: unknown): CaseResult => {
    const r: { -readonly [K in keyof CaseResult]: CaseResult[K] } = {
      index,
      name: c.name,
      status,
      durationMs: performance.now() - start,
    };
    if (reason !== undefined) r.reason = reason;
    if (error !== undefined) r.error = error;
    return Object.freeze(r);
  };
  try {
    const outcome = await runWithTimeout(c, ctx, timeoutMs);
    if (outcome !== undefined) return done('timeout', outcome.reason);
    return done('pass');
  } catch (e) {
    if (e instanceof KsftSkip) return done('skip', e.reason, e);
    return done('fail', e instanceof Error ? e.message : String(e), e);
  }
}

/** The line that lets a failure be replayed: the scheduler seed of this process's interleaving. */
export function seedLine(): string {
  return `KVMTEST_SEED=${simSeed()} replays this interleaving`;
}

/** A case that outlived its timeout: the message names the case and what every guest was doing. */
export class CaseTimeoutError extends Error {
  override readonly name = 'CaseTimeoutError';
  constructor(
    /** The TAP reason: `<seconds> seconds`, then what each guest was doing, if any ran. */
    readonly reason: string,
    /** What each guest in flight was doing when the time ran out. */
    readonly guests: readonly string[],
    caseName: string,
    /** The watchdog had to terminate JavaScript that ran without yielding (see runWithTimeout). */
    readonly stuckInJs = false,
    /** Where that JavaScript was looping (`function (file:line:column) < caller …`), when known. */
    readonly stuckAt?: string,
  ) {
    super(`case ${caseName} timed out after ${reason}`);
  }

  /** The reason without its duration: the stuck-in-JavaScript note, if any, then what each guest was doing. */
  get detail(): string {
    return [...(this.stuckInJs ? [stuckNote(this.stuckAt)] : []), ...this.guests].join('; ');
  }
}

/** The note of a case the watchdog had to end, with where it was stuck when the watchdog could pause it. */
function stuckNote(at: string | undefined): string {
  return (
    `${STUCK_IN_JS_NOTE}${at === undefined ? '' : ` at ${at}`} (a loop that makes no guest operation, ` +
    'in a guest program or the case body); the watchdog terminated it'
  );
}

/** Options of runWithTimeout. */
export interface RunWithTimeoutOptions {
  /** Restart the timeout at each `ctx.progress()` call, as the CLI does (a case that reports progress is alive). */
  progressExtends?: boolean;
}

/** How a timeout report starts its note when the watchdog had to terminate JavaScript stuck without yielding. */
export const STUCK_IN_JS_NOTE = 'stuck in JavaScript without yielding to the event loop';

/**
 * Runs a case body under `timeoutMs`: resolves undefined when the body returned, rejects with what
 * it threw, or resolves with a CaseTimeoutError when the time ran out first. On a timeout every
 * guest still in flight is ended (registerRunProbe's interrupt: its run returns internal-error),
 * so the detached body stops at its next run instead of running on.
 *
 * A guest yields to the event loop at its async operations, which is what lets the timer fire. A
 * guest or body looping in plain JavaScript (`for (;;) {}`, `for (;;) await null`) never lets it
 * fire: for that, a watchdog worker thread with its own clock terminates the JavaScript still
 * running on this thread a grace after the deadline (an inspector session's
 * `Runtime.terminateExecution`), and the report says the case was stuck in JavaScript and where
 * (`at function (file.ts:line:column) < caller`, when the debugger could pause it). The body is
 * started alone in a fresh event-loop turn so the termination unwinds only it. Limits: the watchdog works
 * on the process's main thread where `node:inspector` exists (vitest's default `forks` pool, the
 * kselftest program, the CLI's suite process); in a worker thread a plain-JS loop still hangs. And
 * JavaScript looping directly in a timer or setImmediate callback (not after an `await`) makes
 * Node 20 abort the process as it is ended, unless started with `--no-force-async-hooks-checks`
 * (the CLI's suite processes are).
 */
export async function runWithTimeout(
  c: TestCase,
  ctx: CaseContext,
  timeoutMs: number,
  opts: RunWithTimeoutOptions = {},
): Promise<CaseTimeoutError | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let expire: () => void = () => {};
  const timeout = new Promise<'timeout'>((resolve) => {
    expire = () => resolve('timeout');
  });
  const watchdogMs = timeoutMs + watchdogGraceMs(timeoutMs);
  const lease = armWatchdog(watchdogMs);
  timer = setTimeout(expire, timeoutMs);
  const restartTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(expire, timeoutMs);
    lease?.extend(watchdogMs);
  };
  const runCtx: CaseContext = opts.progressExtends
    ? {
        ...ctx,
        progress(done, total) {
          restartTimer();
          ctx.progress(done, total);
        },
      }
    : ctx;
  // Not called synchronously: a termination unwinds the whole JavaScript call it lands in, which
  // must be the body's own microtask, never this function's (nor its caller's queued after it).
  const body = callInFreshTurn(() => c.run(runCtx));
  let outcome: 'done' | 'timeout';
  try {
    outcome = await Promise.race([body.then(() => 'done' as const), timeout]);
  } catch (e) {
    clearTimeout(timer);
    // A body that failed after the watchdog terminated part of it (e.g. a guest ended by the
    // simulator's own checks once the loop was gone) timed out: that is what happened first.
    if ((await lease?.release()) !== true) throw e;
    outcome = 'timeout';
  }
  clearTimeout(timer);
  const stuck = (await lease?.release()) === true;
  if (outcome === 'done' && !stuck) return undefined;
  body.catch(() => {}); // ended below; its outcome no longer matters
  const runs = runsInFlight();
  const guests = runs.map((r) => r.describe());
  const seconds = `${timeoutMs / 1000} seconds`;
  const at = stuck ? watchdogStuckAt() : undefined;
  const detail = [...(stuck ? [stuckNote(at)] : []), ...guests].join('; ');
  const reason = detail === '' ? seconds : `${seconds}: ${detail}`;
  const err = new CaseTimeoutError(reason, guests, `${ctx.suite}/${c.name}`, stuck, at);
  for (const r of runs) r.interrupt(err.message);
  return err;
}
