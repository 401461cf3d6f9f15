// The reporters `--reporter NAME[=FILE]` can name: one row each. A row says what the reporter is
// and creates it from its context (stdout or the named file, colours, verbosity). `folder`: the
// reporter writes a folder at the named path itself instead of text to a sink.
import { resolve } from 'node:path';
import { htmlReporter } from '../html/reporter.js';
import { jsonReporter } from './json.js';
import { junitReporter } from './junit.js';
import { prettyReporter } from './pretty.js';
import type { Reporter, ReporterContext } from './reporter.js';
import { tapReporter } from './tap.js';

/** One reporter of the table. */
export interface ReporterEntry {
  readonly description: string;
  readonly create: (ctx: ReporterContext) => Reporter;
  /** True when the reporter writes a folder at `ctx.path` (`ctx.out` then only gets a note of where). */
  readonly folder?: boolean;
}

/** Where `--reporter html` writes its folder when no `=DIR` is given (relative to the working directory). */
export const DEFAULT_HTML_DIR = 'kvmtest-report';

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
  html: {
    description: `a report folder (default ${DEFAULT_HTML_DIR}): results, output, failures with their source, a map of each VM's guest memory`,
    folder: true,
    create: (ctx) =>
      htmlReporter(resolve(ctx.roots?.[0] ?? process.cwd(), ctx.path ?? DEFAULT_HTML_DIR), ctx.out, {
        ...(ctx.roots ? { roots: ctx.roots } : {}),
        summary: !ctx.sharedStdout,
      }),
  },
} as const satisfies Record<string, ReporterEntry>;

/** A reporter's name. */
export type ReporterName = keyof typeof REPORTERS;

/** The reporters' names in table order. */
export const REPORTER_NAMES = Object.keys(REPORTERS) as ReporterName[];
