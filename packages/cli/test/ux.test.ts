// The run options and report fixes of `kvmtest run` beyond one suite on one machine: guest output
// in every report, per-case timeouts, ordering under --jobs, colours, sharding and merging, several
// reporters, --bail, --repeat, --logs, Ctrl-C, and a broken suite beside good ones.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { Parser } from 'tap-parser';
import { describe, expect, test, vi } from 'vitest';
import { colorEnabled } from '../src/internal/colors.js';
import { shardSelection } from '../src/internal/main.js';

// Each test starts several CLI processes, each running suites through tsx: minutes on a busy machine.
vi.setConfig({ testTimeout: 240_000 });

const bin = join(import.meta.dirname, '..', 'src', 'bin.ts');
const ws = join(import.meta.dirname, 'fixtures', 'ws2');
const node = [process.execPath, '--conditions=@kvmtest/source', '--import', 'tsx', bin] as const;
const baseEnv = { ...process.env, KVMTEST_BACKEND: '', KVMTEST_SIM_HOST: '', NO_COLOR: '', FORCE_COLOR: '0' };

function kvmtest(args: string[], env: Record<string, string> = {}, cwd = ws) {
  const [cmd, ...pre] = node;
  const r = spawnSync(cmd, [...pre, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...baseEnv, ...env },
    timeout: 90_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const tmp = () => mkdtempSync(join(tmpdir(), 'kvmtest-ux-'));
const xml = (file: string) => {
  const text = readFileSync(file, 'utf8');
  expect(XMLValidator.validate(text)).toBe(true);
  return new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    isArray: (n) => n === 'testsuite' || n === 'testcase',
  }).parse(text);
};
const resultLines = (tap: string) => tap.split('\n').filter((l) => /^(not )?ok \d+/.test(l));
const json = (file: string) =>
  JSON.parse(readFileSync(file, 'utf8')) as { results: { suite: string; name: string; status: string }[] };

describe('guest printf lines in every report', () => {
  test('TAP comments, JUnit system-out, pretty on failure and with --verbose', () => {
    const dir = tmp();
    const r = kvmtest([
      'run',
      'guest:prints',
      'guest:prints then fails',
      '--reporter',
      'tap',
      '--reporter',
      `junit=${join(dir, 'j.xml')}`,
      '--reporter',
      `pretty=${join(dir, 'pretty.txt')}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/# hello from the guest: 42\n# backend: sim\nok 1 guest: prints/);
    const suite = xml(join(dir, 'j.xml')).testsuites.testsuite[0];
    for (const c of suite.testcase) expect(c['system-out']).toContain('hello from the guest: 42');
    const failing = suite.testcase.find((c: { name: string }) => c.name === 'prints then fails');
    // The assertion's text (the expression, at its TypeScript source line), not the banner.
    const line =
      readFileSync(join(ws, 'apps', 'guest', 'src', 'suite.ts'), 'utf8')
        .split('\n')
        .findIndex((l) => l.includes('testAssertEq(1n, 2n)')) + 1;
    expect(failing.failure.message).toBe(`0x1 != 0x2 (1n != 2n) (src/suite.ts:${line})`);
    expect(failing.failure['#text']).toContain(
      `==== Test Assertion Failure ====\n  src/suite.ts:${line}: 1n == 2n`,
    );
    const pretty = readFileSync(join(dir, 'pretty.txt'), 'utf8');
    expect(pretty).toMatch(/✗ prints then fails[\s\S]*hello from the guest: 42/);
    expect(pretty.split('✗')[0]).not.toContain('hello from the guest');
    const verbose = kvmtest(['run', 'guest:prints', '--reporter', 'pretty', '--verbose']);
    expect(verbose.stdout).toMatch(/✓ prints .*\n\s+hello from the guest: 42/);
  });
});

test("a case's own timeoutMs wins over --timeout, and the report names the case", () => {
  const r = kvmtest(['run', 'guest:own timeout', '--timeout', '60', '--reporter', 'tap']);
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(
    /not ok 1 guest: own timeout # TIMEOUT guest:own timeout timed out after 0.5 s \(the case's own timeoutMs\)/,
  );
});

test('a guest looping in plain JS is ended in the suite process, which reports it naming the case', () => {
  const r = kvmtest([
    'run',
    'guest:own timeout',
    'guest:loops in plain JS',
    'guest:loops in a timer callback',
    '--timeout',
    '60',
    '--reporter',
    'tap',
  ]);
  expect(r.code).toBe(1);
  // Both reports come from the suite process (the second from a fresh one), not from its kill.
  expect(r.stdout).toMatch(
    /not ok 1 guest: own timeout # TIMEOUT guest:own timeout timed out after 0.5 s \(the case's own timeoutMs\)(\n|$)/m,
  );
  expect(r.stdout).toMatch(
    /not ok 2 guest: loops in plain JS # TIMEOUT guest:loops in plain JS timed out after 0.5 s \(the case's own timeoutMs\): stuck in JavaScript without yielding/,
  );
  // …and says where the loop was, in the suite's source.
  expect(r.stdout).toMatch(/# TIMEOUT guest:loops in plain JS .* at <anonymous> \(suite\.ts:\d+:\d+\)/);
  expect(r.stdout).toMatch(
    /not ok 3 guest: loops in a timer callback # TIMEOUT guest:loops in a timer callback timed out after 0.5 s \(the case's own timeoutMs\): stuck in JavaScript without yielding/,
  );
  expect(r.stdout).not.toContain('was killed');
});

describe('report correctness', () => {
  test('--jobs 2 prints every case under its own suite header, and TAP numbers are stable', () => {
    const r = kvmtest(['run', 'alpha', 'beta', 'hang:first', '-j', '2', '--reporter', 'pretty']);
    const lines = r.stdout.split('\n');
    const under = (header: string, n: number) =>
      lines
        .slice(lines.findIndex((l) => l.startsWith(header)) + 1)
        .filter((l) => /^ {2}[✓✗-] /.test(l) || /^\S/.test(l))
        .slice(0, n);
    expect(under('alpha (4 cases)', 4).map((l) => l.trim().split(' ')[1])).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(under('beta (3 cases)', 3).map((l) => l.trim().split(' ')[1])).toEqual(['b1', 'b2', 'b3']);
    expect(r.stdout).toContain('hang (1 case)\n');
    const tap1 = resultLines(kvmtest(['run', 'alpha', 'beta', '-j', '2', '--reporter', 'tap']).stdout);
    const tap2 = resultLines(kvmtest(['run', 'alpha', 'beta', '-j', '2', '--reporter', 'tap']).stdout);
    expect(tap1).toEqual(tap2);
    expect(tap1.map((l) => l.replace(/^(not )?ok (\d+) (\w+: \w+).*/, '$2 $3'))).toEqual([
      '1 alpha: a1',
      '2 alpha: a2',
      '3 alpha: a3',
      '4 alpha: a4',
      '5 beta: b1',
      '6 beta: b2',
      '7 beta: b3',
    ]);
  });

  test('NO_COLOR and FORCE_COLOR per their conventions', () => {
    expect(colorEnabled(true, {})).toBe(true);
    expect(colorEnabled(false, {})).toBe(false);
    expect(colorEnabled(true, { NO_COLOR: '1' })).toBe(false);
    expect(colorEnabled(true, { NO_COLOR: '' })).toBe(true);
    expect(colorEnabled(false, { FORCE_COLOR: '1' })).toBe(true);
    expect(colorEnabled(true, { FORCE_COLOR: '0' })).toBe(false);
    expect(colorEnabled(false, { FORCE_COLOR: '1', NO_COLOR: '1' })).toBe(false);
    const forced = kvmtest(['run', 'hang:first', '--reporter', 'pretty'], { FORCE_COLOR: '1' });
    expect(forced.stdout).toContain('\u001b[32m✓');
    const plain = kvmtest(['run', 'hang:first', '--reporter', 'pretty'], { FORCE_COLOR: '1', NO_COLOR: '1' });
    expect(plain.stdout).not.toContain('\u001b[');
  });

  test('a broken suite does not stop `list` from listing the others', () => {
    const r = kvmtest(['list']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('alpha:a1');
    expect(r.stdout).toContain('hang:sleeps');
    expect(r.stderr).toMatch(
      /suite broken cannot be listed: .*needs "@kvmtest\/source" and "default" targets/,
    );
    // `run` reports the broken suite as one failed (load) result and runs the others.
    const run = kvmtest(['run', 'broken', 'beta', '--reporter', 'tap']);
    expect(run.code).toBe(1);
    expect(resultLines(run.stdout)).toEqual([
      'not ok 1 broken: (load)',
      'ok 2 beta: b1',
      'ok 3 beta: b2',
      'ok 4 beta: b3',
    ]);
    const ok = kvmtest(['list', 'alpha', '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual([
      { suite: 'alpha', description: 'fixture suite alpha', cases: ['a1', 'a2', 'a3', 'a4'] },
    ]);
  });
});

describe('CI at scale', () => {
  test('shards are disjoint and together run every case once; merge-reports joins them', () => {
    const dir = tmp();
    const parts = [1, 2, 3].map((i) => {
      const file = join(dir, `s${i}.json`);
      const r = kvmtest([
        'run',
        'alpha',
        'beta',
        'guest:prints',
        '--shard',
        `${i}/3`,
        '--reporter',
        `json=${file}`,
        '--reporter',
        `junit=${join(dir, `s${i}.xml`)}`,
      ]);
      expect([0, 1]).toContain(r.code);
      return json(file).results.map((x) => `${x.suite}:${x.name}`);
    });
    const all = parts.flat();
    expect(new Set(all).size).toBe(all.length);
    expect(all.sort()).toEqual([
      'alpha:a1',
      'alpha:a2',
      'alpha:a3',
      'alpha:a4',
      'beta:b1',
      'beta:b2',
      'beta:b3',
      'guest:prints',
    ]);
    const merged = kvmtest([
      'merge-reports',
      ...[1, 2, 3].map((i) => join(dir, `s${i}.json`)),
      '--reporter',
      'tap',
    ]);
    expect(merged.code).toBe(1); // a2 fails
    expect(resultLines(merged.stdout)).toHaveLength(8);
    expect(merged.stdout).toContain('# hello from the guest: 42');
    const fromJunit = kvmtest([
      'merge-reports',
      ...[1, 2, 3].map((i) => join(dir, `s${i}.xml`)),
      '-o',
      join(dir, 'all.xml'),
    ]);
    expect(fromJunit.code).toBe(1);
    const doc = xml(join(dir, 'all.xml')).testsuites;
    expect(doc).toMatchObject({ tests: '8', failures: '1' });
    expect(doc.testsuite.map((s: { name: string }) => s.name)).toEqual(['alpha', 'beta', 'guest']);
  });

  test('shardSelection deals cases round-robin in project order', () => {
    const cases = new Map([
      ['a', ['1', '2', '3']],
      ['b', ['1', '2']],
    ]);
    expect([...shardSelection(cases, { index: 1, count: 2 })]).toEqual([
      ['a', ['1', '3']],
      ['b', ['2']],
    ]);
    expect([...shardSelection(cases, { index: 2, count: 2 })]).toEqual([
      ['a', ['2']],
      ['b', ['1']],
    ]);
  });

  test('--bail stops at the first failure; --repeat N runs the selection N times; --logs writes a file per case', () => {
    const bail = kvmtest(['run', 'alpha', 'beta', '--bail', '--reporter', 'tap']);
    expect(bail.code).toBe(1);
    expect(resultLines(bail.stdout)).toEqual(['ok 1 alpha: a1', 'not ok 2 alpha: a2']);
    expect(bail.stdout).toContain('# --bail: stopped at the first failure');
    const logs = tmp();
    const rep = kvmtest(['run', 'beta', '--repeat', '2', '--reporter', 'tap', '--logs', logs]);
    expect(rep.code).toBe(0);
    expect(resultLines(rep.stdout)).toEqual([
      'ok 1 beta: b1 (repeat 1)',
      'ok 2 beta: b2 (repeat 1)',
      'ok 3 beta: b3 (repeat 1)',
      'ok 4 beta: b1 (repeat 2)',
      'ok 5 beta: b2 (repeat 2)',
      'ok 6 beta: b3 (repeat 2)',
    ]);
    const log = readFileSync(join(logs, 'beta', 'b2.2.log'), 'utf8');
    expect(log).toMatch(/^case: beta:b2 \(repeat 2\)\nresult: pass\n[\s\S]*--- output\nlog of b2/);
  });

  test('Ctrl-C: the running case is interrupted, TAP ends with its plan, JUnit is written, exit 130', async () => {
    const dir = tmp();
    const [cmd, ...pre] = node;
    const child = spawn(
      cmd,
      [...pre, 'run', 'hang', '--reporter', 'tap', '--reporter', `junit=${join(dir, 'j.xml')}`],
      {
        cwd: ws,
        env: baseEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        // The first case has ended: the second is running (it waits a minute).
        if (out.includes('ok 1 hang: first')) setTimeout(() => child.kill('SIGINT'), 300);
      });
      child.on('close', resolve);
    });
    expect(code).toBe(130);
    expect(resultLines(out)).toEqual(['ok 1 hang: first', 'not ok 2 hang: sleeps # interrupted']);
    expect(out).toMatch(/1\.\.2\n# Totals: pass:1 fail:1/);
    const p = new Parser();
    let complete: { plan: { end: number } } | undefined;
    p.on('complete', (c) => {
      complete = c;
    });
    p.end(out);
    expect(complete?.plan.end).toBe(2);
    const doc = xml(join(dir, 'j.xml')).testsuites;
    expect(doc).toMatchObject({ tests: '2', errors: '1' });
    expect(doc.testsuite[0].testcase[1].error.type).toBe('interrupted');
  });
});

test('a run with two reporters to files writes both; nothing left behind on stdout', () => {
  const dir = tmp();
  const r = kvmtest([
    'run',
    'beta',
    '--reporter',
    `tap=${join(dir, 'r.tap')}`,
    '--reporter',
    `json=${join(dir, 'r.json')}`,
  ]);
  expect(r.code).toBe(0);
  expect(r.stdout).toBe('');
  expect(existsSync(join(dir, 'r.tap'))).toBe(true);
  expect(json(join(dir, 'r.json')).results).toHaveLength(3);
});

test('suite globs: * within a folder name, ** across folders', async () => {
  const { globToRegExp, suiteNameOfFile } = await import('../src/internal/suite.js');
  expect(globToRegExp('test/*.suite.ts').test('test/a.suite.ts')).toBe(true);
  expect(globToRegExp('test/*.suite.ts').test('test/x/a.suite.ts')).toBe(false);
  expect(globToRegExp('test/**/*.suite.ts').test('test/a.suite.ts')).toBe(true);
  expect(globToRegExp('test/**/*.suite.ts').test('test/x/y/a.suite.ts')).toBe(true);
  expect(globToRegExp('src/?.ts').test('src/ab.ts')).toBe(false);
  expect(suiteNameOfFile('test/memslots.suite.ts')).toBe('memslots');
  expect(suiteNameOfFile('smoke.mjs')).toBe('smoke');
});
