// The `kvmtest` program: parse the command line, find the suites, run them, report.
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { TestkitError } from '@kvmtest/testkit';
import { runSuiteListing } from './listing.js';
import { type Command, parseCommand, USAGE, UsageError } from './args.js';
import { resolveBackends } from './backends.js';
import { compareSuites } from './compare.js';
import type { CaseResult } from './protocol.js';
import { htmlReporter } from './html/reporter.js';
import { junitReporter } from './reporters/junit.js';
import { prettyReporter } from './reporters/pretty.js';
import type { Reporter, Sink } from './reporters/reporter.js';
import { tapReporter } from './reporters/tap.js';
import { type CaseSelection, runSuites } from './scheduler.js';
import { discoverSuites, findWorkspaceRoot, type SuiteRef } from './suite.js';
import { exitCodeFor, summarize } from './summary.js';

/** Where the program reads its environment and writes its output (injectable for tests). */
export interface CliIo {
  cwd: string;
  stdout: Sink;
  stderr: Sink;
  version: string;
}

/** Exit code for command-line mistakes. */
export const EXIT_USAGE = 2;

function resolveSelectors(all: readonly SuiteRef[], selectors: readonly string[]) {
  const picked = new Map<string, { ref: SuiteRef; names: string[] | 'all' }>();
  for (const ref of selectors.length ? [] : all) picked.set(ref.name, { ref, names: 'all' });
  for (const sel of selectors) {
    const colon = sel.indexOf(':');
    const suiteName = colon < 0 ? sel : sel.slice(0, colon);
    const ref = all.find((r) => r.name === suiteName);
    if (!ref)
      throw new UsageError(
        `unknown suite ${JSON.stringify(suiteName)} (suites: ${all.map((r) => r.name).join(', ') || 'none'})`,
      );
    const prev = picked.get(ref.name)?.names;
    if (colon < 0) picked.set(ref.name, { ref, names: 'all' });
    else if (prev !== 'all') picked.set(ref.name, { ref, names: [...(prev ?? []), sel.slice(colon + 1)] });
  }
  return [...picked.values()].map(({ ref, names }) => ({
    ref,
    selection: { names: names === 'all' ? [] : names, filter: undefined } as CaseSelection,
  }));
}

function bufferSink(isTTY: boolean): Sink & { text(): string } {
  let buf = '';
  return {
    isTTY,
    write: (t) => {
      buf += t;
    },
    text: () => buf,
  };
}

async function run(cmd: Extract<Command, { kind: 'run' }>, io: CliIo, suites: SuiteRef[]): Promise<number> {
  let backends: ReturnType<typeof resolveBackends>;
  try {
    backends = resolveBackends(cmd.backends);
  } catch (e) {
    // KVMTEST_SIM_HOST naming no preset, or a SimConfig no host can have: the user's mistake.
    if (e instanceof TestkitError || e instanceof TypeError || e instanceof RangeError)
      throw new UsageError(e.message);
    throw e;
  }
  const selections = resolveSelectors(suites, cmd.selectors).map((s) => ({
    ...s,
    selection: { ...s.selection, filter: cmd.filter },
  }));
  for (const { ref, selection } of selections) {
    if (selection.names.length === 0) continue;
    const known = await runSuiteListing(ref);
    const unknown = selection.names.filter((n) => !known.includes(n));
    if (unknown.length)
      throw new UsageError(
        `unknown case ${unknown.map((n) => JSON.stringify(n)).join(', ')} in suite ${ref.name} (cases: ${known.join(', ')})`,
      );
  }
  const fileOut = cmd.output === undefined ? undefined : bufferSink(false);
  const sink = fileOut ?? io.stdout;
  const name = cmd.reporter ?? (sink.isTTY ? 'pretty' : 'tap');
  const reporter: Reporter =
    name === 'html'
      ? htmlReporter(resolve(io.cwd, cmd.htmlDir ?? 'kvmtest-report'), io.stdout, {
          roots: [io.cwd, ...suites.map((r) => r.dir)],
        })
      : name === 'pretty'
        ? prettyReporter(sink)
        : name === 'tap'
          ? tapReporter(sink)
          : junitReporter(sink);
  reporter.runStart?.(backends);
  const t0 = performance.now();
  const [first, second] = backends;
  const results = (
    second === undefined
      ? await runSuites(selections, {
          jobs: cmd.jobs,
          timeoutMs: cmd.timeoutMs,
          backend: first!.spec,
          backendEnv: first!.env,
          listener: reporter,
          ...(name === 'html' ? { memoryMaps: true } : {}),
        })
      : await compareSuites(
          selections,
          [first!, second],
          { jobs: cmd.jobs, timeoutMs: cmd.timeoutMs },
          reporter,
        )
  ).flat();
  const summary = summarize(results, performance.now() - t0);
  reporter.finish(results, summary);
  if (fileOut && cmd.output) writeFileSync(cmd.output, fileOut.text());
  if (summary.total === 0) {
    io.stderr.write('kvmtest: no case matched the selection\n');
    return EXIT_USAGE;
  }
  return exitCodeFor(summary);
}

async function list(cmd: Extract<Command, { kind: 'list' }>, io: CliIo, suites: SuiteRef[]): Promise<number> {
  const selected = cmd.selectors.length ? resolveSelectors(suites, cmd.selectors).map((s) => s.ref) : suites;
  const listing: { suite: string; description: string; cases: string[] }[] = [];
  for (const ref of selected) {
    const cases = (await runSuiteListing(ref)).filter(
      (c) => !cmd.filter || cmd.filter.test(`${ref.name}:${c}`),
    );
    listing.push({ suite: ref.name, description: ref.description, cases });
  }
  if (cmd.json) io.stdout.write(`${JSON.stringify(listing, null, 2)}\n`);
  else
    for (const s of listing) {
      io.stdout.write(`${s.suite}${s.description ? ` — ${s.description}` : ''}\n`);
      for (const c of s.cases) io.stdout.write(`  ${s.suite}:${c}\n`);
    }
  return 0;
}

/** Runs the program with `argv` (no node/script) and returns its exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let cmd: Command;
  try {
    cmd = parseCommand(argv);
    if (cmd.kind === 'help') {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (cmd.kind === 'version') {
      io.stdout.write(`${io.version}\n`);
      return 0;
    }
    const root = findWorkspaceRoot(io.cwd);
    if (!root) throw new UsageError(`no kvmtest workspace (pnpm-workspace.yaml) at or above ${io.cwd}`);
    const suites = discoverSuites(root);
    return cmd.kind === 'list' ? await list(cmd, io, suites) : await run(cmd, io, suites);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`kvmtest: ${e.message}\n\n${USAGE}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

export type { CaseResult };
