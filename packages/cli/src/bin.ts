#!/usr/bin/env node
// The `kvmtest` executable.
import { readFileSync } from 'node:fs';
import { runCli } from './internal/main.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const sink = (s: NodeJS.WriteStream) => ({ isTTY: Boolean(s.isTTY), write: (t: string) => void s.write(t) });

runCli(process.argv.slice(2), {
  cwd: process.cwd(),
  stdout: sink(process.stdout),
  stderr: sink(process.stderr),
  version: pkg.version,
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
