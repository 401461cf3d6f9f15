// The `kvmtest` program: parse the command line, find the suites, run them, report.
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { isFailure, TestkitError } from '@kvmtest/testkit';
import {
  type Command,
  type CommandName,
  helpText,
  parseCommand,
  type ReporterSpec,
  type Shard,
  UsageError,
} from './args.js';
import { resolveBackends } from './backends.js';
import { colorEnabled, painter } from './colors.js';
import { compareSuites } from './compare.js';
import { runSuiteListing } from './listing.js';
import { logWriter } from './logs.js';
import { mergeReports, readReport } from './merge.js';
import { newSuite } from './new.js';
import { orderedListeners, tee } from './ordered.js';
import type { CaseResult } from './protocol.js';
import { REPORTERS, type ReporterEntry } from './reporters/registry.js';
import type { Reporter, Sink } from './reporters/reporter.js';
import { type CaseSelection, type RunListener, runSuites } from './scheduler.js';
import { findProject, type Project, type SuiteRef } from './suite.js';
import { exitCodeFor, KSFT_EXIT, type Summary, summarize } from './summary.js';

/** Where the program reads its environment and writes its output (injectable for tests). */
export interface CliIo {
  cwd: string;
  stdout: Sink;
  stderr: Sink;
  version: string;
  /** The environment (NO_COLOR, FORCE_COLOR, KVMTEST_BACKEND); default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Aborted with reason 'interrupt' when the user presses Ctrl-C: the run ends gracefully. */
  signal?: AbortSignal;
}

/**
 * Exit code for command-line mistakes: 64, EX_USAGE of sysexits.h. Not 2: kselftest reads 2 and
 * 3 as XFAIL and XPASS.
 */
export const EXIT_USAGE = 64;

type Selection = { ref: SuiteRef; selection: CaseSelection };

function resolveSelectors(all: readonly SuiteRef[], selectors: readonly string[]): Selection[] {
  const picked = new Map<string, { ref: SuiteRef; names: string[] | 'all' }>();
  for (const ref of selectors.length ? [] : all) picked.set(ref.name, { ref, names: 'all' });
  for (const sel of selectors) {
    const colon = sel.indexOf(':');
    const suiteName = colon < 0 ? sel : sel.slice(0, colon);
    const ref = all.find((r) => r.name === suiteName);
    if (!ref)
      throw new UsageError(
        `unknown suite ${JSON.stringify(suiteName)} (suites: ${all.map((r) => r.name).join(', ') || 'none'})`,
        'run',
      );
    const prev = picked.get(ref.name)?.names;
    if (colon < 0) picked.set(ref.name, { ref, names: 'all' });
    else if (prev !== 'all') picked.set(ref.name, { ref, names: [...(prev ?? []), sel.slice(colon + 1)] });
  }
  // Suites keep the project's order whatever the command line's.
  return all.flatMap((ref) => {
    const p = picked.get(ref.name);
    return p ? [{ ref, selection: { names: p.names === 'all' ? [] : p.names, filter: undefined } }] : [];
  });
}

/** A sink writing straight into a file (so that an interrupted run still leaves what was written). */
function fileSink(path: string): Sink & { close(): void } {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, 'w');
  return {
    isTTY: false,
    write: (t) => void writeSync(fd, t),
    close: () => closeSync(fd),
  };
}

interface BuiltReporters {
  reporters: Reporter[];
  close(): void;
}

/** A folder reporter (html) among `specs`: the suites then record their VMs' memory maps for it. */
function wantsMemoryMaps(specs: readonly ReporterSpec[]): boolean {
  return specs.some((s) => s.name === 'html');
}

/**
 * Creates the reporters. A folder reporter writes its folder itself and notes where on standard
 * output — on standard error when a TAP, JUnit or JSON report holds standard output (kept clean).
 */
function buildReporters(
  specs: readonly ReporterSpec[],
  io: CliIo,
  verbose: boolean,
  roots: readonly string[] = [io.cwd],
): BuiltReporters {
  const env = io.env ?? process.env;
  const chosen: ReporterSpec[] = specs.length ? [...specs] : [{ name: io.stdout.isTTY ? 'pretty' : 'tap' }];
  const isFolder = (s: ReporterSpec) => (REPORTERS[s.name] as ReporterEntry).folder === true;
  const onStdout = chosen.filter((s) => s.file === undefined && !isFolder(s));
  const files: { close(): void }[] = [];
  const reporters = chosen.map((spec) => {
    const entry: ReporterEntry = REPORTERS[spec.name];
    let out: Sink = io.stdout;
    if (entry.folder) out = onStdout.some((s) => s.name !== 'pretty') ? io.stderr : io.stdout;
    else if (spec.file !== undefined) {
      const f = fileSink(spec.file);
      files.push(f);
      out = f;
    }
    return entry.create({
      out,
      ...(spec.file === undefined ? {} : { path: spec.file }),
      paint: painter(colorEnabled(out.isTTY, env)),
      verbose,
      roots,
      ...(entry.folder ? { sharedStdout: onStdout.length > 0 } : {}),
    });
  });
  return {
    reporters,
    close: () => {
      for (const f of files) f.close();
    },
  };
}

/** Each selected case's name per suite (the suites are loaded to list them). */
async function listSelected(selections: readonly Selection[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const { ref, selection } of selections) {
    const known = await runSuiteListing(ref);
    const unknown = selection.names.filter((n) => !known.includes(n));
    if (unknown.length)
      throw new UsageError(
        `unknown case ${unknown.map((n) => JSON.stringify(n)).join(', ')} in suite ${ref.name} (cases: ${known.join(', ')})`,
        'run',
      );
    out.set(
      ref.name,
      known.filter(
        (c) =>
          (selection.names.length === 0 || selection.names.includes(c)) &&
          (!selection.filter || selection.filter.test(`${ref.name}:${c}`)),
      ),
    );
  }
  return out;
}

/**
 * The part of the selection shard `index`/`count` runs: the selected cases in project order
 * (suites by name, cases in suite order) dealt round-robin, so every case is in exactly one shard
 * and each shard gets a share of every suite.
 */
export function shardSelection(
  cases: ReadonlyMap<string, readonly string[]>,
  shard: Shard,
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let k = 0;
  for (const [suite, names] of cases)
    for (const name of names) {
      if (k++ % shard.count === shard.index - 1) out.set(suite, [...(out.get(suite) ?? []), name]);
    }
  return out;
}

async function run(cmd: Extract<Command, { kind: 'run' }>, io: CliIo, project: Project): Promise<number> {
  let backends: ReturnType<typeof resolveBackends>;
  try {
    backends = resolveBackends(cmd.backends);
  } catch (e) {
    // KVMTEST_SIM_HOST naming no preset, or a SimConfig no host can have: the user's mistake.
    if (e instanceof TestkitError || e instanceof TypeError || e instanceof RangeError)
      throw new UsageError(e.message, 'run');
    throw e;
  }
  // A broken suite named on the command line is reported as a failed load, not an unknown suite.
  const brokenNames = new Set(project.broken.map((b) => b.name));
  const healthy = cmd.selectors.filter((s) => !brokenNames.has(s.split(':')[0]!));
  const named =
    cmd.selectors.length > 0 && healthy.length === 0 ? [] : resolveSelectors(project.suites, healthy);
  let selections = named.map((s) => ({
    ...s,
    selection: { ...s.selection, filter: cmd.filter },
  }));
  if (cmd.shard || selections.some((s) => s.selection.names.length > 0)) {
    const listed = await listSelected(selections);
    if (cmd.shard) {
      const part = shardSelection(listed, cmd.shard);
      selections = selections.flatMap((s) => {
        const names = part.get(s.ref.name);
        return names?.length ? [{ ref: s.ref, selection: { names, filter: undefined } }] : [];
      });
    }
  }
  const broken = cmd.selectors.length
    ? project.broken.filter((b) => cmd.selectors.some((s) => s.split(':')[0] === b.name))
    : project.broken;

  const built = buildReporters(cmd.reporters, io, cmd.verbose, [io.cwd, ...selections.map((s) => s.ref.dir)]);
  const target = tee(...built.reporters);
  for (const r of built.reporters) r.runStart?.(backends);
  const t0 = performance.now();
  const stop = new AbortController();
  let stopped: Summary['stopped'];
  const onInterrupt = () => {
    stopped = 'interrupt';
    stop.abort('interrupt');
  };
  if (io.signal?.aborted) onInterrupt();
  io.signal?.addEventListener('abort', onInterrupt, { once: true });
  const bail: RunListener = {
    caseEnd(r) {
      if (cmd.bail && isFailure(r.status) && !stop.signal.aborted) {
        stopped = 'bail';
        stop.abort('bail');
      }
    },
  };
  const live: RunListener[] = [bail, ...(cmd.logs ? [logWriter(cmd.logs)] : [])];
  const all: CaseResult[] = [];
  for (const b of broken) {
    const r: CaseResult = {
      suite: b.name,
      name: '(load)',
      status: 'fail',
      durationMs: 0,
      reason: b.error,
      output: '',
    };
    target.suiteStart?.(b.name, [r.name]);
    target.caseEnd?.(r);
    target.suiteEnd?.(b.name, [r]);
    all.push(r);
  }
  const [first, second] = backends;
  try {
    for (let rep = 1; rep <= cmd.repeat && !stop.signal.aborted; rep++) {
      const repeat = cmd.repeat > 1 ? { repeat: rep } : {};
      if (second === undefined) {
        const ordered = orderedListeners(target, selections.length);
        const results = await runSuites(selections, {
          jobs: cmd.jobs,
          timeoutMs: cmd.timeoutMs,
          backend: first!.spec,
          backendEnv: first!.env,
          ...(wantsMemoryMaps(cmd.reporters) ? { memoryMaps: true } : {}),
          listener: target,
          listenerFor: (i) => tee(...live, ordered.listenerFor(i)),
          onSuiteDone: (i) => ordered.complete(i),
          signal: stop.signal,
          ...repeat,
        });
        ordered.flush();
        all.push(...results.flat());
      } else {
        const results = await compareSuites(
          selections,
          [first!, second],
          { jobs: cmd.jobs, timeoutMs: cmd.timeoutMs, signal: stop.signal, ...repeat },
          tee(...live, target),
        );
        all.push(...results.flat());
      }
    }
  } finally {
    io.signal?.removeEventListener('abort', onInterrupt);
  }
  const summary = summarize(all, performance.now() - t0, stopped);
  for (const r of built.reporters) r.finish(all, summary);
  built.close();
  if (summary.total === 0 && !stopped) {
    io.stderr.write(
      cmd.shard
        ? `kvmtest: shard ${cmd.shard.index}/${cmd.shard.count} holds no case of the selection\n`
        : 'kvmtest: no case matched the selection\n',
    );
    return cmd.shard ? KSFT_EXIT.PASS : KSFT_EXIT.SKIP;
  }
  return exitCodeFor(summary);
}

async function list(cmd: Extract<Command, { kind: 'list' }>, io: CliIo, project: Project): Promise<number> {
  const selected = cmd.selectors.length
    ? resolveSelectors(project.suites, cmd.selectors).map((s) => s.ref)
    : project.suites;
  const listing: { suite: string; description: string; cases: string[] }[] = [];
  const errors: { suite: string; error: string }[] = project.broken
    .filter((b) => !cmd.selectors.length || cmd.selectors.includes(b.name))
    .map((b) => ({ suite: b.name, error: b.error }));
  for (const ref of selected) {
    let cases: string[];
    try {
      cases = await runSuiteListing(ref);
    } catch (e) {
      errors.push({ suite: ref.name, error: (e as Error).message });
      continue;
    }
    cases = cases.filter((c) => !cmd.filter || cmd.filter.test(`${ref.name}:${c}`));
    if (cmd.filter && cases.length === 0) continue;
    listing.push({ suite: ref.name, description: ref.description, cases });
  }
  if (cmd.json) io.stdout.write(`${JSON.stringify(listing, null, 2)}\n`);
  else
    for (const s of listing) {
      io.stdout.write(`${s.suite}${s.description ? ` — ${s.description}` : ''}\n`);
      for (const c of s.cases) io.stdout.write(`  ${s.suite}:${c}\n`);
    }
  for (const e of errors) io.stderr.write(`kvmtest: suite ${e.suite} cannot be listed: ${e.error}\n`);
  return errors.length ? KSFT_EXIT.FAIL : 0;
}

async function merge(cmd: Extract<Command, { kind: 'merge-reports' }>, io: CliIo): Promise<number> {
  const merged = mergeReports(cmd.files.map(readReport));
  const summary = summarize(merged.results, merged.durationMs);
  const built = buildReporters(cmd.reporters.length ? cmd.reporters : [{ name: 'junit' }], io, false);
  // Replay the run suite by suite, so that streaming reporters (TAP, pretty) see every case.
  const target = tee(...built.reporters);
  const suites = [...new Set(merged.results.map((r) => r.suite))];
  for (const s of suites) {
    const rs = merged.results.filter((r) => r.suite === s);
    target.suiteStart?.(
      s,
      rs.map((r) => r.name),
    );
    for (const r of rs) target.caseEnd?.(r);
    target.suiteEnd?.(s, rs);
  }
  for (const r of built.reporters) r.finish(merged.results, summary);
  built.close();
  return exitCodeFor(summary);
}

function noProject(cwd: string): UsageError {
  return new UsageError(
    `no kvmtest project at or above ${cwd}: add "kvmtest": { "suites": ["test/*.suite.ts"] } to package.json (or a kvmtest.config.json with "suites"), or run inside a kvmtest workspace (pnpm-workspace.yaml with apps/)`,
  );
}

/** Runs the program with `argv` (no node/script) and returns its exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let cmd: Command;
  let topic: CommandName | undefined;
  try {
    cmd = parseCommand(argv, io.env ?? process.env);
    if (cmd.kind === 'help') {
      (cmd.toStderr ? io.stderr : io.stdout).write(`${helpText(cmd.topic)}\n`);
      return cmd.toStderr ? EXIT_USAGE : 0;
    }
    if (cmd.kind === 'version') {
      io.stdout.write(`${io.version}\n`);
      return 0;
    }
    topic = cmd.kind;
    if (cmd.kind === 'merge-reports') return await merge(cmd, io);
    const project = findProject(io.cwd);
    if (!project) throw noProject(io.cwd);
    if (cmd.kind === 'new') {
      if (project.kind !== 'workspace')
        throw new UsageError(
          `kvmtest new writes apps/<name> of a kvmtest workspace; in this project (${project.root}) add a suite file matching its "suites" globs`,
          'new',
        );
      return newSuite(project.root, cmd.name, cmd.install, io);
    }
    return cmd.kind === 'list' ? await list(cmd, io, project) : await run(cmd, io, project);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`kvmtest: ${e.message}\n\n${helpText(e.command ?? topic)}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

export type { CaseResult };
