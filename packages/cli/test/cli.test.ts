import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { Parser } from 'tap-parser';
import { describe, expect, test } from 'vitest';

const bin = join(import.meta.dirname, '..', 'src', 'bin.ts');
const fixture = join(import.meta.dirname, 'fixtures', 'ws');

function kvmtest(args: string[], cwd = fixture) {
  const r = spawnSync(process.execPath, ['--conditions=@kvmtest/source', '--import', 'tsx', bin, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function parseTap(text: string) {
  const p = new Parser();
  const asserts: { ok: boolean; name: string; skip: boolean | string; todo: boolean | string }[] = [];
  p.on('assert', (a) => asserts.push(a));
  let final:
    | { ok: boolean; count: number; pass: number; fail: number; skip: number; plan: { end: number } }
    | undefined;
  p.on('complete', (r) => {
    final = r;
  });
  p.end(text);
  return { asserts, final: final! };
}

describe('command line errors', () => {
  test('no arguments prints the usage and exits 0', () => {
    const r = kvmtest([]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: kvmtest <command>/);
  });

  test.each([
    [['frobnicate'], /unknown command "frobnicate"/],
    [['run', '--jobs', '0'], /--jobs must be a positive integer, got "0"/],
    [['run', '--reporter', 'xml'], /--reporter must be one of pretty, tap, junit, got "xml"/],
    [['run', '--colour'], /Unknown option '--colour'/],
    [['run', '--filter', '('], /--filter "\(" is not a regular expression/],
    [['run', 'nosuch'], /unknown suite "nosuch" \(suites: demo, quiet\)/],
    [['run', 'demo:nosuch'], /unknown case "nosuch" in suite demo \(cases: passes, /],
    [['run', '--backend', 'linux'], /--backend linux is not available yet/],
  ])('%j is a usage error: exit 2 with the reason and the usage', (args, reason) => {
    const r = kvmtest(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(reason);
    expect(r.stderr).toContain('usage: kvmtest');
    expect(r.stdout).toBe('');
  });
});

describe('kvmtest list', () => {
  test('lists every suite of the workspace with its cases', () => {
    const r = kvmtest(['list']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('demo — fixture suite with every outcome');
    expect(r.stdout).toContain('  demo:hangs');
    expect(r.stdout).toContain('  quiet:b');
  });

  test('--json gives a machine-readable listing', () => {
    const r = kvmtest(['list', 'quiet', '--json']);
    expect(JSON.parse(r.stdout)).toEqual([
      { suite: 'quiet', description: 'fixture suite whose cases all skip', cases: ['a', 'b'] },
    ]);
  });
});

describe('kvmtest run', () => {
  test('TAP output parses, counts every outcome, and a hanging case times out without stopping the next', () => {
    const r = kvmtest(['run', 'demo', '--reporter', 'tap', '--timeout', '2']);
    expect(r.code).toBe(1);
    const { asserts, final } = parseTap(r.stdout);
    expect(final.plan.end).toBe(9);
    // kselftest's runner marks a timeout with a '# TIMEOUT' comment that is not a TAP directive.
    expect(asserts.map((a) => [a.name.replace(/ # TIMEOUT.*/, ''), a.ok])).toEqual([
      ['demo: passes', true],
      ['demo: logs & passes', true],
      ['demo: fails', false],
      ['demo: skips', true],
      ['demo: progresses', true],
      ['demo: hangs', false],
      ['demo: after the hang', true],
      ['demo: guest never exits', false],
      ['demo: after the guest', true],
    ]);
    expect(asserts[3]!.skip).toBe('Requirement not met: SEV-ES');
    expect(r.stdout).toMatch(/not ok 6 demo: hangs # TIMEOUT timed out after 2 s/);
    expect(r.stdout).toMatch(/not ok 8 demo: guest never exits # TIMEOUT timed out after 2 s/);
    expect(r.stdout).toContain('# guest says <hello> & "bye"');
    expect(r.stdout).toContain('# plain console output');
    expect(r.stdout).toContain('# Error: expected 0x10 but got 0x20');
    expect(r.stdout).toMatch(/^# Totals: pass:5 fail:3 xfail:0 xpass:0 skip:1 error:0$/m);
    // Nothing but TAP on standard output.
    for (const line of r.stdout.trimEnd().split('\n'))
      expect(line).toMatch(/^(TAP version 13|(not )?ok \d+ |1\.\.\d+$|#)/);
  });

  test('JUnit output is well-formed XML with the counts per suite', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kvmtest-')), 'report.xml');
    const r = kvmtest([
      'run',
      'demo',
      'quiet',
      '--reporter',
      'junit',
      '--filter',
      '^(quiet|demo:(passes|fails|skips|logs))',
      '--output',
      out,
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const xml = readFileSync(out, 'utf8');
    expect(XMLValidator.validate(xml)).toBe(true);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(xml);
    expect(doc.testsuites).toMatchObject({ tests: '6', failures: '1', skipped: '3' });
    const [demo, quiet] = doc.testsuites.testsuite;
    expect(demo).toMatchObject({ name: 'demo', tests: '4', failures: '1', skipped: '1' });
    expect(quiet).toMatchObject({ name: 'quiet', tests: '2', skipped: '2' });
    const failing = demo.testcase.find((c: { name: string }) => c.name === 'fails');
    expect(failing.failure.message).toBe('Error: expected 0x10 but got 0x20');
    const logging = demo.testcase.find((c: { name: string }) => c.name === 'logs & passes');
    expect(logging['system-out']).toContain('guest says <hello> & "bye"');
  });

  test('exit code is 4 when every case is skipped and 0 when all pass', () => {
    expect(kvmtest(['run', 'quiet', '--reporter', 'tap']).code).toBe(4);
    const r = kvmtest(['run', 'demo:passes', 'demo:progresses', '--reporter', 'pretty']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('✓ passes');
    expect(r.stdout).toMatch(/2 passed, 0 failed, 0 skipped \(2 cases in [\d.]+ s\)/);
  });

  test('--jobs runs suites in parallel processes and keeps each suite whole', () => {
    const r = kvmtest(['run', '--jobs', '2', '--reporter', 'tap', '--filter', '^(quiet|demo:passes)']);
    const { asserts } = parseTap(r.stdout);
    expect(asserts.map((a) => a.name).sort()).toEqual(['demo: passes', 'quiet: a', 'quiet: b']);
    expect(r.code).toBe(0);
  });

  test('a filter that matches nothing is a usage error', () => {
    const r = kvmtest(['run', '--filter', 'nothing-matches-this']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no case matched the selection');
  });
});
