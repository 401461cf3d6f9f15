// Command-line parsing: `kvmtest list`, `kvmtest run [selector…] [options]`.
import { parseArgs } from 'node:util';
import { parseBackendSpec, SIM_HOSTS } from './backends.js';

/** Output formats of `kvmtest run`. */
export type ReporterName = 'pretty' | 'tap' | 'junit' | 'html';
/** Backends a run can ask for: the simulator (optionally shaped like a named host), /dev/kvm, or auto. */
export type BackendName = 'sim' | 'auto' | 'linux' | `sim:${string}`;

/** A parsed command line. */
export type Command =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'list'; selectors: string[]; filter: RegExp | undefined; json: boolean }
  | {
      kind: 'run';
      selectors: string[];
      filter: RegExp | undefined;
      reporter: ReporterName | undefined;
      jobs: number;
      timeoutMs: number;
      /** One backend, or two to compare (`--backend sim,linux`). */
      backends: readonly BackendName[];
      output: string | undefined;
      /** `--reporter html[=DIR]`: the report folder (default kvmtest-report). */
      htmlDir: string | undefined;
    };

/** A mistake on the command line: printed with the usage text, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const USAGE = `usage: kvmtest <command> [options]

commands:
  list [suite…]                 list the suites of the workspace and their cases
  run [suite | suite:case …]    run suites (all when none is named)

run options:
  --backend B[,B]               sim, sim:<host>, linux or auto (default: $KVMTEST_BACKEND, else sim);
                                auto takes linux when /dev/kvm opens, else sim; two backends
                                separated by a comma run each case on both and compare them
                                (hosts: ${SIM_HOSTS.join(', ')})
  --reporter pretty|tap|junit   output format (default: pretty on a terminal, tap otherwise)
  --reporter html[=DIR]         an HTML report folder (default kvmtest-report): results, logs,
                                failures with their source, and a map of each VM's guest memory
  --jobs N                      run up to N suites at once, each in its own process (default 1)
  --timeout SECONDS             per-case timeout (default 45, as kselftest's runner)
  --filter PATTERN              only cases whose "suite:case" name matches the regular expression
  --output FILE                 write the report to FILE instead of standard output

exit codes: 0 all passed, 1 a case failed, 4 every case was skipped, 2 usage error`;

const REPORTERS: readonly ReporterName[] = ['pretty', 'tap', 'junit', 'html'];

/** Parses `--backend` (or KVMTEST_BACKEND): one backend spec, or two separated by a comma. */
export function parseBackends(flag: string, v: string): BackendName[] {
  const parts = v.split(',').map((p) => p.trim());
  const form = `sim, sim:<host> (${SIM_HOSTS.join(', ')}), linux or auto, or two of them separated by a comma`;
  if (parts.length > 2)
    throw new UsageError(
      `${flag} compares two backends at most, got ${parts.length} in ${JSON.stringify(v)}`,
    );
  for (const p of parts)
    if (parseBackendSpec(p) === undefined)
      throw new UsageError(`${flag} must be ${form}; ${JSON.stringify(p)} is none of these`);
  return parts as BackendName[];
}

function positiveInt(flag: string, v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1)
    throw new UsageError(`${flag} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

function regex(v: string | undefined): RegExp | undefined {
  if (v === undefined) return undefined;
  try {
    return new RegExp(v);
  } catch (e) {
    throw new UsageError(
      `--filter ${JSON.stringify(v)} is not a regular expression: ${(e as Error).message}`,
    );
  }
}

function oneOf<T extends string>(flag: string, v: string | undefined, allowed: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v))
    throw new UsageError(`${flag} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}

/**
 * Parses argv (without node and the script); throws UsageError naming the bad flag or value.
 * KVMTEST_BACKEND in `env` is the default of `--backend`.
 */
export function parseCommand(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
): Command {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') return { kind: 'help' };
  if (cmd === '--version' || cmd === 'version') return { kind: 'version' };
  if (cmd !== 'list' && cmd !== 'run') throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...rest],
      allowPositionals: true,
      strict: true,
      options:
        cmd === 'list'
          ? { filter: { type: 'string' }, json: { type: 'boolean' } }
          : {
              backend: { type: 'string' },
              reporter: { type: 'string' },
              jobs: { type: 'string', short: 'j' },
              timeout: { type: 'string' },
              filter: { type: 'string' },
              output: { type: 'string', short: 'o' },
            },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  if (cmd === 'list')
    return {
      kind: 'list',
      selectors: parsed.positionals,
      filter: regex(str('filter')),
      json: v.json === true,
    };
  const timeout = str('timeout');
  const html = /^html=(.*)$/s.exec(str('reporter') ?? '');
  if (html && html[1] === '') throw new UsageError('--reporter html=DIR needs a folder after "="');
  return {
    kind: 'run',
    selectors: parsed.positionals,
    filter: regex(str('filter')),
    reporter: html ? 'html' : oneOf('--reporter', str('reporter'), REPORTERS),
    jobs: str('jobs') === undefined ? 1 : positiveInt('--jobs', str('jobs')!),
    timeoutMs: timeout === undefined ? 45_000 : positiveInt('--timeout', timeout) * 1000,
    backends:
      str('backend') !== undefined
        ? parseBackends('--backend', str('backend')!)
        : env.KVMTEST_BACKEND?.trim()
          ? parseBackends('KVMTEST_BACKEND', env.KVMTEST_BACKEND.trim())
          : ['sim'],
    output: str('output'),
    htmlDir: html ? html[1] : undefined,
  };
}
