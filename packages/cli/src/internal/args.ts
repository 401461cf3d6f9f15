// Command-line parsing (node:util parseArgs, one option table per command) and each command's help.
import { parseArgs } from 'node:util';
import { parseBackendSpec, SIM_HOSTS } from './backends.js';
import { REPORTER_NAMES, type ReporterName } from './reporters/registry.js';

export type { ReporterName };
/** Backends a run can ask for: the simulator (optionally shaped like a named host), /dev/kvm, or auto. */
export type BackendName = 'sim' | 'auto' | 'linux' | `sim:${string}`;

/** A reporter asked for on the command line: its name and, with `name=FILE`, where it writes. */
export interface ReporterSpec {
  readonly name: ReporterName;
  readonly file?: string;
}

/** `--shard i/n`: this run takes the i-th of n disjoint parts of the selected cases (1-based). */
export interface Shard {
  readonly index: number;
  readonly count: number;
}

/** A parsed command line. */
export type Command =
  | { kind: 'help'; topic?: CommandName; toStderr?: boolean }
  | { kind: 'version' }
  | { kind: 'list'; selectors: string[]; filter: RegExp | undefined; json: boolean }
  | { kind: 'new'; name: string; install: boolean }
  | { kind: 'merge-reports'; files: string[]; reporters: ReporterSpec[] }
  | {
      kind: 'run';
      selectors: string[];
      filter: RegExp | undefined;
      /** The reporters, each to stdout or to its file (empty: pretty on a terminal, else TAP). */
      reporters: ReporterSpec[];
      jobs: number;
      timeoutMs: number;
      /** One backend, or two to compare (`--backend sim,linux`). */
      backends: readonly BackendName[];
      shard: Shard | undefined;
      logs: string | undefined;
      bail: boolean;
      repeat: number;
      verbose: boolean;
    };

/** The commands. */
export type CommandName = 'run' | 'list' | 'new' | 'merge-reports' | 'help';

/** A mistake on the command line: printed with the usage text, exit code EXIT_USAGE (64). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  constructor(
    message: string,
    /** The command whose help to print with the message. */
    readonly command?: CommandName,
  ) {
    super(message);
  }
}

const EXIT_CODES = `exit codes (kselftest's): 0 every case passed, 1 a case failed, timed out or was
interrupted, 4 every case was skipped; 64 a mistake on the command line (EX_USAGE of sysexits.h:
2 and 3 are kselftest's XFAIL and XPASS), 130 stopped by Ctrl-C (SIGINT)`;

export const USAGE = `usage: kvmtest <command> [options]

commands:
  run [suite | suite:case …]    run suites (all when none is named)
  list [suite…] [--json]        list the suites and their cases (--json: machine-readable)
  new <name>                    create a suite under apps/<name> and add it to the workspace
  merge-reports FILE…           join the JSON or JUnit reports of several shards into one
  help [command]                this text, or a command's options

run \`kvmtest help run\` (or \`kvmtest run --help\`) for a command's options.

${EXIT_CODES}`;

const HELP: Record<CommandName, string> = {
  run: `usage: kvmtest run [suite | suite:case …] [options]

  --backend B[,B]          sim, sim:<host>, linux or auto (default: $KVMTEST_BACKEND, else sim);
                           auto takes linux when /dev/kvm opens, else sim; two backends separated
                           by a comma run each case on both and compare them
                           (hosts: ${SIM_HOSTS.join(', ')})
  --reporter NAME[=FILE]   ${REPORTER_NAMES.join(', ')}; repeat for several reports in one run
                           (e.g. --reporter tap --reporter junit=out.xml); default: pretty on a
                           terminal, tap otherwise
                           html[=DIR] writes a report folder (default kvmtest-report): results,
                           output, failures with their source, a map of each VM's guest memory
  -o, --output FILE        the (single) reporter writes to FILE instead of standard output
  -j, --jobs N             run up to N suites at once, each in its own process (default 1)
  --timeout SECONDS        per-case timeout (default 45, as kselftest's runner); a case's own
                           timeoutMs wins
  --filter PATTERN         only cases whose "suite:case" name matches the regular expression
  --shard I/N              run the I-th of N parts of the selected cases (CI matrices): the parts
                           are disjoint and together hold every case once
  --logs DIR               write each case's output and result to DIR/<suite>/<case>.log
  --bail                   stop at the first failure (the cases not run are not reported)
  --repeat N               run the selection N times (flaky hunting); results name the repetition
  -v, --verbose            the pretty report shows every case's output, not only failures'

${EXIT_CODES}`,
  list: `usage: kvmtest list [suite…] [--filter PATTERN] [--json]

  --filter PATTERN         only cases whose "suite:case" name matches the regular expression
  --json                   print [{ "suite", "description", "cases": [names] }] as JSON

A suite that cannot be loaded is reported on standard error; the others are still listed (exit 1).`,
  new: `usage: kvmtest new <name> [--no-install]

Creates apps/<name>: package.json (the "@kvmtest/source" and "default" export targets the CLI
loads), tsconfig, vitest config, a first case, its test, a kselftest program and a README; then
runs the workspace's pnpm install so that pnpm-lock.yaml knows the new package.
  --no-install             only write the files`,
  'merge-reports': `usage: kvmtest merge-reports FILE… [--reporter NAME[=FILE]]…

Joins reports written with --reporter json=FILE or --reporter junit=FILE (e.g. one per CI shard)
into one run and reports it (default reporter: junit to standard output). Exit code as for run.`,
  help: `usage: kvmtest help [command]`,
};

/** The help text of a command (or the general usage). */
export function helpText(topic?: CommandName): string {
  return topic ? HELP[topic] : USAGE;
}

/** Parses `--backend` (or KVMTEST_BACKEND): one backend spec, or two separated by a comma. */
export function parseBackends(flag: string, v: string): BackendName[] {
  const parts = v.split(',').map((p) => p.trim());
  const form = `sim, sim:<host> (${SIM_HOSTS.join(', ')}), linux or auto, or two of them separated by a comma`;
  if (parts.length > 2)
    throw new UsageError(
      `${flag} compares two backends at most, got ${parts.length} in ${JSON.stringify(v)}`,
      'run',
    );
  for (const p of parts)
    if (parseBackendSpec(p) === undefined)
      throw new UsageError(`${flag} must be ${form}; ${JSON.stringify(p)} is none of these`, 'run');
  return parts as BackendName[];
}

function positiveInt(flag: string, v: string, cmd: CommandName): number {
  if (!/^\d+$/.test(v) || Number(v) < 1)
    throw new UsageError(`${flag} must be a positive integer, got ${JSON.stringify(v)}`, cmd);
  return Number(v);
}

function regex(v: string | undefined, cmd: CommandName): RegExp | undefined {
  if (v === undefined) return undefined;
  try {
    return new RegExp(v);
  } catch (e) {
    throw new UsageError(
      `--filter ${JSON.stringify(v)} is not a regular expression: ${(e as Error).message}`,
      cmd,
    );
  }
}

/** Parses `--reporter NAME[=FILE]`. */
export function parseReporterSpec(v: string, cmd: CommandName = 'run'): ReporterSpec {
  const eq = v.indexOf('=');
  const name = eq < 0 ? v : v.slice(0, eq);
  const file = eq < 0 ? undefined : v.slice(eq + 1);
  if (!(REPORTER_NAMES as readonly string[]).includes(name))
    throw new UsageError(
      `--reporter must be one of ${REPORTER_NAMES.join(', ')} (optionally =FILE), got ${JSON.stringify(v)}`,
      cmd,
    );
  if (file === '') throw new UsageError(`--reporter ${name}= names no file`, cmd);
  return file === undefined ? { name: name as ReporterName } : { name: name as ReporterName, file };
}

/** Parses `--shard I/N` (1 ≤ I ≤ N). */
export function parseShard(v: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(v);
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || count < 1 || index < 1 || index > count)
    throw new UsageError(`--shard must be I/N with 1 <= I <= N, got ${JSON.stringify(v)}`, 'run');
  return { index, count };
}

const COMMANDS: readonly CommandName[] = ['run', 'list', 'new', 'merge-reports', 'help'];

const OPTIONS = {
  run: {
    backend: { type: 'string' },
    reporter: { type: 'string', multiple: true },
    jobs: { type: 'string', short: 'j' },
    timeout: { type: 'string' },
    filter: { type: 'string' },
    output: { type: 'string', short: 'o' },
    shard: { type: 'string' },
    logs: { type: 'string' },
    bail: { type: 'boolean' },
    repeat: { type: 'string' },
    verbose: { type: 'boolean', short: 'v' },
    help: { type: 'boolean', short: 'h' },
  },
  list: { filter: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  new: { 'no-install': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  'merge-reports': {
    reporter: { type: 'string', multiple: true },
    output: { type: 'string', short: 'o' },
    help: { type: 'boolean', short: 'h' },
  },
  help: {},
} as const;

/**
 * Parses argv (without node and the script); throws UsageError naming the bad flag or value.
 * KVMTEST_BACKEND in `env` is the default of `--backend`.
 */
export function parseCommand(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
): Command {
  const [first, ...rest] = argv;
  // No command at all is a mistake (usage on stderr, non-zero exit), as for most CLIs.
  if (first === undefined) return { kind: 'help', toStderr: true };
  if (first === '--help' || first === '-h') return { kind: 'help' };
  if (first === '--version' || first === 'version') return { kind: 'version' };
  if (!(COMMANDS as readonly string[]).includes(first))
    throw new UsageError(`unknown command ${JSON.stringify(first)}`);
  const cmd = first as CommandName;
  if (cmd === 'help') {
    const topic = rest[0];
    if (topic === undefined) return { kind: 'help' };
    if (!(COMMANDS as readonly string[]).includes(topic))
      throw new UsageError(`no help on ${JSON.stringify(topic)}: not a command`);
    return { kind: 'help', topic: topic as CommandName };
  }
  let parsed: { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: [...rest],
      allowPositionals: true,
      strict: true,
      options: OPTIONS[cmd],
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError((e as Error).message, cmd);
  }
  const v = parsed.values;
  if (v.help === true) return { kind: 'help', topic: cmd };
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const reporters = (): ReporterSpec[] => {
    const specs = ((v.reporter as string[] | undefined) ?? []).map((r) => parseReporterSpec(r, cmd));
    const output = str('output');
    if (output !== undefined) {
      if (specs.length > 1)
        throw new UsageError('--output goes with one reporter; with several, use --reporter NAME=FILE', cmd);
      if (specs[0]?.file !== undefined)
        throw new UsageError(`--output and --reporter ${specs[0].name}=FILE both name a file`, cmd);
      return [{ name: specs[0]?.name ?? (cmd === 'run' ? 'tap' : 'junit'), file: output }];
    }
    return specs;
  };
  switch (cmd) {
    case 'list':
      return {
        kind: 'list',
        selectors: parsed.positionals,
        filter: regex(str('filter'), cmd),
        json: v.json === true,
      };
    case 'new': {
      const [name, ...extra] = parsed.positionals;
      if (name === undefined) throw new UsageError('new needs the name of the suite to create', cmd);
      if (extra.length) throw new UsageError(`new takes one name, got also ${extra.join(' ')}`, cmd);
      return { kind: 'new', name, install: v['no-install'] !== true };
    }
    case 'merge-reports':
      if (parsed.positionals.length === 0)
        throw new UsageError('merge-reports needs the report files to join', cmd);
      return { kind: 'merge-reports', files: parsed.positionals, reporters: reporters() };
    default: {
      const timeout = str('timeout');
      return {
        kind: 'run',
        selectors: parsed.positionals,
        filter: regex(str('filter'), cmd),
        reporters: reporters(),
        jobs: str('jobs') === undefined ? 1 : positiveInt('--jobs', str('jobs')!, cmd),
        timeoutMs: timeout === undefined ? 45_000 : positiveInt('--timeout', timeout, cmd) * 1000,
        backends:
          str('backend') !== undefined
            ? parseBackends('--backend', str('backend')!)
            : env.KVMTEST_BACKEND?.trim()
              ? parseBackends('KVMTEST_BACKEND', env.KVMTEST_BACKEND.trim())
              : ['sim'],
        shard: str('shard') === undefined ? undefined : parseShard(str('shard')!),
        logs: str('logs'),
        bail: v.bail === true,
        repeat: str('repeat') === undefined ? 1 : positiveInt('--repeat', str('repeat')!, cmd),
        verbose: v.verbose === true,
      };
    }
  }
}
