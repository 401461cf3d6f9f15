#!/usr/bin/env node
// The `kvmtest` executable. Ctrl-C ends a run gracefully: the running cases are reported as
// interrupted, the reports and files are written, and the exit code is 130; a second Ctrl-C quits
// at once.
import { readFileSync } from 'node:fs';
import { EXIT_INTERRUPTED } from './internal/summary.js';
import { runCli } from './internal/main.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const sink = (s: NodeJS.WriteStream) => ({ isTTY: Boolean(s.isTTY), write: (t: string) => void s.write(t) });

const interrupt = new AbortController();
process.on('SIGINT', () => {
  if (interrupt.signal.aborted) process.exit(EXIT_INTERRUPTED);
  interrupt.abort('interrupt');
});

runCli(process.argv.slice(2), {
  cwd: process.cwd(),
  stdout: sink(process.stdout),
  stderr: sink(process.stderr),
  version: pkg.version,
  signal: interrupt.signal,
}).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(
      `kvmtest: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exitCode = 1;
  },
);
