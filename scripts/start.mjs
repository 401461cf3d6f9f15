#!/usr/bin/env node
// `npm start` after the bootstrap: build every package (turbo, its output kept back), print one
// line of build summary — or the compiler's errors —, then `kvmtest run` over every suite with the
// arguments given (`npm start -- --backend sim,linux`: a comparison run). Without a --reporter the
// results are printed (pretty) and written as an HTML report to kvmtest-report/index.html. The
// suites run from their TypeScript sources (the CLI loads them through tsx), so a build error is
// reported but does not hide the results; the exit code is the run's, or 1 when the build failed.
import { spawnSync } from 'node:child_process';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const env = {
  ...process.env,
  TURBO_TELEMETRY_DISABLED: '1',
  TURBO_NO_UPDATE_NOTIFIER: '1',
  DO_NOT_TRACK: '1',
  PATH: [
    join(root, 'node_modules', '.bin'),
    join(root, '.tools', 'node_modules', '.bin'),
    process.env.PATH,
  ].join(delimiter),
};

const t0 = performance.now();
const build = spawnSync(
  'turbo',
  ['run', 'build', '--output-logs=errors-only', '--log-order=grouped', '--ui=stream'],
  {
    cwd: root,
    env,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  },
);
if (build.error) throw build.error;
const text = `${build.stdout}\n${build.stderr}`;
const tasks = /Tasks:\s+(\d+) successful, (\d+) total/.exec(text);
const cached = /Cached:\s+(\d+) cached/.exec(text);
const seconds = ((performance.now() - t0) / 1000).toFixed(1);
const buildOk = build.status === 0;
if (buildOk)
  console.log(
    `build: ${tasks ? `${tasks[2]} packages` : 'done'}${cached ? ` (${cached[1]} cached)` : ''} in ${seconds} s`,
  );
else {
  // Only the failing tasks' lines: turbo's banner and summary are not the news.
  const errors = text
    .split('\n')
    .filter((l) => /^@[^:]+:[^:]+:|error TS|ERROR/.test(l) && !/^\s*•/.test(l))
    .join('\n');
  console.log(
    `build failed in ${seconds} s${tasks ? ` (${tasks[1]} of ${tasks[2]} packages built)` : ''}:\n${errors || text}`,
  );
  console.log('the suites run from their sources anyway:\n');
}

const args = process.argv.slice(2);
// The user's own --reporter or --output replaces the default reporters.
const ownReport = args.some((a) => /^(--reporter|--output|-o)(=|$)/.test(a) || /^-o./.test(a));
const reporters = ownReport ? [] : ['--reporter', 'pretty', '--reporter', 'html'];
const run = spawnSync(
  process.execPath,
  [
    '--conditions=@kvmtest/source',
    '--import',
    'tsx',
    join(root, 'packages', 'cli', 'src', 'bin.ts'),
    'run',
    ...reporters,
    ...args,
  ],
  { cwd: root, env, stdio: 'inherit' },
);
if (run.error) throw run.error;
process.exitCode = buildOk ? (run.status ?? 1) : 1;
