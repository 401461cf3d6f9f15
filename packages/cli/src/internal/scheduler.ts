// Runs suites in child processes — up to `jobs` at once — enforcing each case's timeout (its own
// TestCase.timeoutMs, else the run's): the suite process ends and reports a timed-out case itself;
// a process that does not is killed a grace later, like kselftest's harness, which forks
// per test, and restarting it for the cases left. A run can be stopped (Ctrl-C, --bail): the
// processes are killed and, on an interruption, their running cases are reported as interrupted.
import { fork } from 'node:child_process';
import type { CaseResult, ChildMessage, ChildRequest } from './protocol.js';
import { type SuiteRef, suiteRunner } from './suite.js';

/** Which cases of a suite to run: by exact name (empty = all), then by a regular expression on "suite:case". */
export interface CaseSelection {
  names: readonly string[];
  filter: RegExp | undefined;
}

/** Events the scheduler reports while it runs (reporters listen to them). */
export interface RunListener {
  /** A suite process started; `backend` is the backend it opened (`sim`, `sim:pvm`, `linux`). */
  suiteStart?(suite: string, cases: readonly string[], backend?: string): void;
  caseStart?(suite: string, name: string): void;
  caseProgress?(suite: string, name: string, done: number, total: number): void;
  caseEnd?(result: CaseResult): void;
  suiteEnd?(suite: string, results: readonly CaseResult[]): void;
}

/** Why a run was stopped: `interrupt` (Ctrl-C: running cases are reported) or `bail` (they are dropped). */
export type StopReason = 'interrupt' | 'bail';

/** How suites are run. */
export interface SchedulerOptions {
  jobs: number;
  timeoutMs: number;
  /** The backend spec the suite processes get as KVMTEST_BACKEND (`sim`, `sim:pvm`, `linux`). */
  backend: string;
  /** More environment for the suite processes (e.g. KVMTEST_SIM_HOST for a matched simulator). */
  backendEnv?: Readonly<Record<string, string>>;
  /** Record each case's observations (comparison runs). */
  observe?: boolean;
  /** Record the memory maps of each case's VMs (HTML report). */
  memoryMaps?: boolean;
  listener: RunListener;
  /** Aborting it stops the run; its reason is a StopReason. */
  signal?: AbortSignal;
  /** The repetition these results belong to (`--repeat`), recorded in each result. */
  repeat?: number;
}

/**
 * How long after a case's limit the suite process is killed: it ends the case itself (testkit's
 * runWithTimeout, whose watchdog ends a plain-JS loop at most a second late) and reports it first.
 */
const KILL_GRACE_MS = 3_000;

function stopReason(signal: AbortSignal | undefined): StopReason | undefined {
  return signal?.aborted ? (signal.reason === 'bail' ? 'bail' : 'interrupt') : undefined;
}

/** Runs one suite to completion (or until stopped) and returns its results in case order. */
export async function runSuite(
  ref: SuiteRef,
  sel: CaseSelection,
  opts: SchedulerOptions,
): Promise<CaseResult[]> {
  const L = opts.listener;
  const results = new Map<number, CaseResult>();
  let cases: string[] | undefined;
  let selected: number[] | undefined;
  let timeouts: (number | null)[] = [];
  let backend = opts.backend;
  const repeat = opts.repeat === undefined ? {} : { repeat: opts.repeat };

  const record = (index: number, r: CaseResult) => {
    const full = { ...r, backend, ...repeat };
    results.set(index, full);
    L.caseEnd?.(full);
  };
  const loadFailure = (reason: string): CaseResult[] => {
    const r: CaseResult = {
      suite: ref.name,
      name: '(load)',
      status: 'fail',
      durationMs: 0,
      reason,
      output: '',
      backend,
      ...repeat,
    };
    L.suiteStart?.(ref.name, [r.name], backend);
    L.caseEnd?.(r);
    L.suiteEnd?.(ref.name, [r]);
    return [r];
  };

  let runner: ReturnType<typeof suiteRunner>;
  try {
    runner = suiteRunner(ref);
  } catch (e) {
    return loadFailure((e as Error).message);
  }

  for (;;) {
    if (stopReason(opts.signal)) break;
    const remaining = selected?.filter((i) => !results.has(i));
    if (remaining?.length === 0) break;
    const request: ChildRequest = remaining
      ? { suiteRef: ref.name, indices: remaining }
      : { suiteRef: ref.name, names: [...sel.names], ...(sel.filter ? { filter: sel.filter.source } : {}) };
    request.timeoutMs = opts.timeoutMs;
    if (opts.observe) request.observe = true;
    if (opts.memoryMaps) request.memoryMaps = true;
    const child = fork(runner.childEntry, [runner.entry, JSON.stringify(request)], {
      cwd: ref.dir,
      // Without async_hooks' stack checks, testkit's watchdog can also end JavaScript looping
      // directly in a timer callback (Node 20 otherwise aborts the process as it unwinds).
      execArgv: [...runner.execArgv, '--no-force-async-hooks-checks'],
      env: { ...process.env, ...opts.backendEnv, KVMTEST_BACKEND: opts.backend },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    let stderr = '';
    let running: { index: number; t0: number; output: string; limitMs: number } | undefined;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    let fatal: string | undefined;
    const armTimer = () => {
      clearTimeout(timer);
      const limitMs = running?.limitMs ?? opts.timeoutMs;
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, limitMs + KILL_GRACE_MS);
    };
    const onStop = () => child.kill('SIGKILL');
    opts.signal?.addEventListener('abort', onStop, { once: true });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    child.stdout?.on('data', (d: Buffer) => {
      if (running) running.output += d.toString('utf8');
    });
    child.on('message', (raw) => {
      const msg = raw as ChildMessage;
      if (stopReason(opts.signal)) return; // the run is over: nothing more is reported
      switch (msg.type) {
        case 'suite':
          backend = msg.backend;
          timeouts = msg.timeouts ?? [];
          if (!cases) {
            cases = msg.cases;
            selected = msg.selected;
            if (selected.length > 0)
              L.suiteStart?.(
                ref.name,
                selected.map((i) => cases![i]!),
                backend,
              );
          }
          break;
        case 'case-start':
          running = {
            index: msg.index,
            t0: performance.now(),
            output: '',
            limitMs: timeouts[msg.index] ?? opts.timeoutMs,
          };
          armTimer();
          L.caseStart?.(ref.name, cases![msg.index]!);
          break;
        case 'case-log':
          if (running?.index === msg.index) running.output += msg.text;
          break;
        case 'case-progress':
          if (running?.index === msg.index) {
            armTimer(); // progress proves the case is alive
            L.caseProgress?.(ref.name, cases![msg.index]!, msg.done, msg.total);
          }
          break;
        case 'case-end':
          clearTimeout(timer);
          record(msg.index, {
            suite: ref.name,
            name: cases![msg.index]!,
            status: msg.status,
            durationMs: msg.durationMs,
            output: running?.index === msg.index ? running.output : '',
            ...(msg.reason === undefined ? {} : { reason: msg.reason }),
            ...(msg.summary === undefined ? {} : { summary: msg.summary }),
            ...(msg.observations === undefined ? {} : { observations: msg.observations }),
            ...(msg.memory === undefined ? {} : { memory: msg.memory }),
          });
          running = undefined;
          break;
        case 'fatal':
          fatal = msg.message;
          break;
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onStop);
    const stop = stopReason(opts.signal);
    if (stop) {
      if (stop === 'interrupt' && running && cases) {
        const { index, t0, output } = running;
        const r: CaseResult = {
          suite: ref.name,
          name: cases[index]!,
          status: 'interrupted',
          durationMs: performance.now() - t0,
          reason: `${ref.name}:${cases[index]} was running when the run was interrupted (SIGINT)`,
          output,
          backend,
          ...repeat,
        };
        results.set(index, r);
        L.caseEnd?.(r);
      }
      break;
    }
    const died = `the suite process died with exit code ${code}${stderr.trim() ? `: ${stderr.trim()}` : ''}`;
    if (!cases) return loadFailure(fatal ?? died);
    if (running) {
      const { index, t0, output, limitMs } = running;
      const own = timeouts[index] != null;
      const durationMs = performance.now() - t0;
      // Past its limit, a process that died (rather than being killed) still timed out first.
      const late = !timedOut && durationMs >= limitMs;
      const timedOutAfter = `${ref.name}:${cases[index]} timed out after ${limitMs / 1000} s (${own ? "the case's own timeoutMs" : 'the run timeout'})`;
      record(index, {
        suite: ref.name,
        name: cases[index]!,
        status: timedOut || late ? 'timeout' : 'fail',
        durationMs,
        reason: timedOut
          ? `${timedOutAfter}; the suite process did not report it and was killed`
          : late
            ? `${timedOutAfter}; then ${fatal ?? died}`
            : (fatal ?? died),
        output,
      });
    } else if (code !== 0) {
      // Died between cases: fail the next one so the loop always advances.
      const next = selected!.find((i) => !results.has(i));
      if (next !== undefined)
        record(next, {
          suite: ref.name,
          name: cases[next]!,
          status: 'fail',
          durationMs: 0,
          reason: fatal ?? died,
          output: '',
        });
    }
  }
  const ordered = (selected ?? []).flatMap((i) => {
    const r = results.get(i);
    return r ? [r] : [];
  });
  if (cases && selected && selected.length > 0) L.suiteEnd?.(ref.name, ordered);
  return ordered;
}

/**
 * Runs every suite with at most `opts.jobs` suite processes at once; results keep the suites' order.
 * `listenerFor(i)` gives the listener of the i-th suite (default: `opts.listener`).
 */
export async function runSuites(
  refs: readonly { ref: SuiteRef; selection: CaseSelection }[],
  opts: SchedulerOptions & { listenerFor?: (i: number) => RunListener; onSuiteDone?: (i: number) => void },
): Promise<CaseResult[][]> {
  const out: CaseResult[][] = Array.from({ length: refs.length }, () => []);
  let next = 0;
  const worker = async () => {
    while (next < refs.length && !opts.signal?.aborted) {
      const i = next++;
      const { ref, selection } = refs[i]!;
      out[i] = await runSuite(ref, selection, { ...opts, listener: opts.listenerFor?.(i) ?? opts.listener });
      opts.onSuiteDone?.(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.jobs, refs.length) }, worker));
  return out;
}
