// Runs suites in child processes — up to `jobs` at once — enforcing the per-case timeout by killing
// the process (like kselftest's harness, which forks per test) and restarting it for the cases left.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { CaseResult, ChildMessage, ChildRequest } from './protocol.js';
import { type SuiteRef, sourceConditionActive } from './suite.js';

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
}

function childEntryPath(): string {
  return fileURLToPath(import.meta.url).replace(/scheduler\.(ts|js)$/, 'child.$1');
}

/** Runs one suite to completion and returns its selected cases' results in case order. */
export async function runSuite(
  ref: SuiteRef,
  sel: CaseSelection,
  opts: SchedulerOptions,
): Promise<CaseResult[]> {
  const entry = sourceConditionActive() ? ref.sourceEntry : ref.distEntry;
  const L = opts.listener;
  const results = new Map<number, CaseResult>();
  let cases: string[] | undefined;
  let selected: number[] | undefined;
  let backend = opts.backend;

  const record = (index: number, r: CaseResult) => {
    const withBackend = { ...r, backend };
    results.set(index, withBackend);
    L.caseEnd?.(withBackend);
  };

  for (;;) {
    const remaining = selected?.filter((i) => !results.has(i));
    if (remaining?.length === 0) break;
    const request: ChildRequest = remaining
      ? { suiteRef: ref.name, indices: remaining }
      : { suiteRef: ref.name, names: [...sel.names], ...(sel.filter ? { filter: sel.filter.source } : {}) };
    if (opts.observe) request.observe = true;
    if (opts.memoryMaps) request.memoryMaps = true;
    const child = fork(childEntryPath(), [entry, JSON.stringify(request)], {
      cwd: ref.dir,
      execArgv: process.execArgv,
      env: { ...process.env, ...opts.backendEnv, KVMTEST_BACKEND: opts.backend },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    let stderr = '';
    let running: { index: number; t0: number; output: string } | undefined;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    let fatal: string | undefined;
    const armTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
    };
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    child.stdout?.on('data', (d: Buffer) => {
      if (running) running.output += d.toString('utf8');
    });
    child.on('message', (raw) => {
      const msg = raw as ChildMessage;
      switch (msg.type) {
        case 'suite':
          backend = msg.backend;
          if (!cases) {
            cases = msg.cases;
            selected = msg.selected;
            L.suiteStart?.(
              ref.name,
              selected.map((i) => cases![i]!),
              backend,
            );
          }
          break;
        case 'case-start':
          running = { index: msg.index, t0: performance.now(), output: '' };
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
            ...(msg.message === undefined ? {} : { message: msg.message }),
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
    const died = `the suite process died with exit code ${code}${stderr.trim() ? `: ${stderr.trim()}` : ''}`;
    if (!cases) {
      // The module did not load: one failed result stands for the suite.
      const r: CaseResult = {
        suite: ref.name,
        name: '(load)',
        status: 'fail',
        durationMs: 0,
        message: fatal ?? died,
        output: '',
        backend,
      };
      L.suiteStart?.(ref.name, [r.name], backend);
      L.caseEnd?.(r);
      L.suiteEnd?.(ref.name, [r]);
      return [r];
    }
    if (running) {
      const { index, t0, output } = running;
      record(index, {
        suite: ref.name,
        name: cases[index]!,
        status: timedOut ? 'timeout' : 'fail',
        durationMs: performance.now() - t0,
        message: timedOut
          ? `timed out after ${opts.timeoutMs / 1000} s; the suite process was killed`
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
          message: fatal ?? died,
          output: '',
        });
    }
  }
  const ordered = selected!.map((i) => results.get(i)!);
  L.suiteEnd?.(ref.name, ordered);
  return ordered;
}

/** Runs every suite with at most `opts.jobs` suite processes at once; results keep the suites' order. */
export async function runSuites(
  refs: readonly { ref: SuiteRef; selection: CaseSelection }[],
  opts: SchedulerOptions,
): Promise<CaseResult[][]> {
  const out: CaseResult[][] = new Array(refs.length);
  let next = 0;
  const worker = async () => {
    while (next < refs.length) {
      const i = next++;
      const { ref, selection } = refs[i]!;
      out[i] = await runSuite(ref, selection, opts);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.jobs, refs.length) }, worker));
  return out;
}
