// The reporters `--reporter NAME[=FILE]` can name: one row each. A row says what the reporter is
// and creates it from its context (stdout or the named file, colours, verbosity). `folder`: the
// reporter writes a folder at the named path itself instead of text to a sink.
import { jsonReporter } from './json.js';
import { junitReporter } from './junit.js';
import { prettyReporter } from './pretty.js';
import type { Reporter, ReporterContext } from './reporter.js';
import { tapReporter } from './tap.js';

/** One reporter of the table. */
export interface ReporterEntry {
  readonly description: string;
  readonly create: (ctx: ReporterContext) => Reporter;
  /** True when the reporter writes a folder at `ctx.path` (then `ctx.out` goes nowhere). */
  readonly folder?: boolean;
}

/** Every reporter, by name. */
export const REPORTERS = {
  pretty: {
    description: 'a line per case, failures and output indented, a summary (terminal default)',
    create: (ctx) => prettyReporter(ctx.out, ctx),
  },
  tap: {
    description: 'TAP 13 as kselftest prints it (default into a pipe)',
    create: (ctx) => tapReporter(ctx.out),
  },
  junit: { description: 'JUnit XML for CI dashboards', create: (ctx) => junitReporter(ctx.out) },
  json: {
    description: 'every result as JSON (input of merge-reports)',
    create: (ctx) => jsonReporter(ctx.out),
  },
} as const satisfies Record<string, ReporterEntry>;

/** A reporter's name. */
export type ReporterName = keyof typeof REPORTERS;

/** The reporters' names in table order. */
export const REPORTER_NAMES = Object.keys(REPORTERS) as ReporterName[];
