import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { backendNamed } from '@kvmtest/testkit';
import { Parser } from 'tap-parser';
import { describe, expect, test } from 'vitest';

const bin = join(import.meta.dirname, '..', 'src', 'bin.ts');
const fixture = join(import.meta.dirname, 'fixtures', 'ws');

function kvmtest(args: string[], cwd = fixture, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--conditions=@kvmtest/source', '--import', 'tsx', bin, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, KVMTEST_BACKEND: '', KVMTEST_SIM_HOST: '', FORCE_COLOR: '0', ...env },
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
  test('no arguments prints the usage on stderr and exits 64 (EX_USAGE); --help exits 0', () => {
    const r = kvmtest([]);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/^usage: kvmtest <command>/);
    expect(r.stdout).toBe('');
    const help = kvmtest(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: kvmtest <command>[\s\S]*list \[suite…\] \[--json\]/);
  });

  test('each command has its own help: `help run`, `run --help`', () => {
    for (const args of [
      ['help', 'run'],
      ['run', '--help'],
    ]) {
      const r = kvmtest(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^usage: kvmtest run[\s\S]*--reporter NAME\[=FILE\][\s\S]*--shard I\/N/);
    }
    expect(kvmtest(['list', '--help']).stdout).toMatch(/--json/);
  });

  test.each([
    [['frobnicate'], /unknown command "frobnicate"/],
    [['run', '--jobs', '0'], /--jobs must be a positive integer, got "0"/],
    [
      ['run', '--reporter', 'xml'],
      /--reporter must be one of pretty, tap, junit, json, html \(optionally =FILE\), got "xml"/,
    ],
    [['run', '--colour'], /Unknown option '--colour'/],
    [['run', '--filter', '('], /--filter "\(" is not a regular expression/],
    [['run', 'nosuch'], /unknown suite "nosuch" \(suites: demo, hosts, quiet\)/],
    [['run', 'demo:nosuch'], /unknown case "nosuch" in suite demo \(cases: passes, /],
    [
      ['run', '--backend', 'qemu'],
      /--backend must be sim, sim:<host> \(mainline-amd, mainline-intel, pvm\), linux or auto, or two of them separated by a comma; "qemu" is none of these/,
    ],
    [['run', '--backend', 'sim:nosuch'], /"sim:nosuch" is none of these/],
    [
      ['run', '--backend', 'sim,linux,auto'],
      /--backend compares two backends at most, got 3 in "sim,linux,auto"/,
    ],
    [['run', '--backend', 'sim,'], /"" is none of these/],
  ])(
    "%j is a usage error: exit 64 (not kselftest's XFAIL 2) with the reason and the usage",
    (args, reason) => {
      const r = kvmtest(args);
      expect(r.code).toBe(64);
      expect(r.stderr).toMatch(reason);
      expect(r.stderr).toContain('usage: kvmtest');
      expect(r.stdout).toBe('');
    },
  );
});

test('KVMTEST_BACKEND is the default of --backend, and a bad value is a usage error naming it', () => {
  const r = kvmtest(['run', 'demo:passes'], fixture, { KVMTEST_BACKEND: 'qemu' });
  expect(r.code).toBe(64);
  expect(r.stderr).toMatch(/KVMTEST_BACKEND must be sim, sim:<host>/);
  const host = kvmtest(['run', 'demo:passes'], fixture, { KVMTEST_SIM_HOST: 'qemu' });
  expect(host.code).toBe(64);
  expect(host.stderr).toMatch(/KVMTEST_SIM_HOST="qemu" names no simulated host/);
  const impossible = kvmtest(['run', 'demo:passes'], fixture, {
    KVMTEST_SIM_HOST: '{"cpu":{"minSevAsid":600,"maxSevAsid":509}}',
  });
  expect(impossible.code).toBe(64);
  expect(impossible.stderr).toMatch(/minSevAsid 600 is above cpu.maxSevAsid 509/);
  const tap = kvmtest(['run', 'hosts:limits', '--reporter', 'tap'], fixture, { KVMTEST_BACKEND: 'sim:pvm' });
  expect(tap.code).toBe(0);
  expect(tap.stdout).toMatch(/^# backend: sim:pvm\n(# .*\n)*ok 1 hosts: limits$/m);
});

describe('kvmtest list', () => {
  test('lists every suite of the workspace with its cases', () => {
    const r = kvmtest(['list']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('demo — fixture suite with every outcome');
    expect(r.stdout).toContain('  demo:hangs');
    expect(r.stdout).toContain('  quiet:b');
    expect(r.stdout).toContain('  hosts:needs sev');
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
    // The suite process ends the looping body itself (testkit's watchdog) and reports it.
    expect(r.stdout).toMatch(
      /not ok 6 demo: hangs # TIMEOUT demo:hangs timed out after 2 s \(the run timeout\): stuck in JavaScript/,
    );
    expect(r.stdout).toMatch(
      /not ok 8 demo: guest never exits # TIMEOUT demo:guest never exits timed out after 2 s/,
    );
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
    // The message is the failure's own text; the stack is the element's body.
    expect(failing.failure.message).toBe('expected 0x10 but got 0x20');
    expect(failing.failure['#text']).toMatch(/Error: expected 0x10 but got 0x20\n\s+at .*suite\.ts:21:\d+/);
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

  test('a filter that matches nothing runs nothing, prints no suite header and exits 4 (nothing ran)', () => {
    const r = kvmtest(['run', '--filter', 'nothing-matches-this', '--reporter', 'pretty']);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('no case matched the selection');
    expect(r.stdout).not.toMatch(/demo|hosts|quiet/);
  });
});

describe('backends', () => {
  test('every report names the backend: pretty header, a TAP comment per case, a JUnit property', () => {
    const pretty = kvmtest(['run', 'demo:passes', '--reporter', 'pretty', '--backend', 'sim:mainline-intel']);
    expect(pretty.code).toBe(0);
    expect(pretty.stdout).toMatch(/^backend: sim:mainline-intel\n/);
    const tap = kvmtest(['run', 'demo:passes', 'demo:skips', '--reporter', 'tap']);
    expect(tap.stdout.match(/^# backend: sim$/gm)?.length).toBe(3); // the run, then each case
    const out = join(mkdtempSync(join(tmpdir(), 'kvmtest-')), 'report.xml');
    kvmtest(['run', 'demo:passes', '--reporter', 'junit', '--backend', 'sim:pvm', '--output', out]);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(
      readFileSync(out, 'utf8'),
    );
    expect(doc.testsuites.testsuite.testcase.properties.property).toEqual({
      name: 'backend',
      value: 'sim:pvm',
    });
  });

  // Whether this machine's /dev/kvm opens through testkit decides what auto and linux must do.
  const linuxOpens = (() => {
    try {
      backendNamed('linux');
      return true;
    } catch {
      return false;
    }
  })();

  test('auto takes linux when /dev/kvm opens, else sim, and says which and why', () => {
    const r = kvmtest(['run', 'demo:passes', '--reporter', 'tap', '--backend', 'auto']);
    expect(r.code).toBe(0);
    if (linuxOpens) expect(r.stdout).toMatch(/^# backend: linux \(auto: \/dev\/kvm opened\)$/m);
    else expect(r.stdout).toMatch(/^# backend: sim \(auto: linux unavailable \(.+\)\)$/m);
    expect(parseTap(r.stdout).asserts.map((a) => a.ok)).toEqual([true]);
  });

  test.skipIf(linuxOpens)(
    'linux that cannot be opened skips every case with the reason, never a crash (exit 4)',
    () => {
      const r = kvmtest(['run', 'hosts', '--reporter', 'tap', '--backend', 'linux']);
      expect(r.code).toBe(4);
      const { asserts } = parseTap(r.stdout);
      expect(asserts).toHaveLength(4);
      for (const a of asserts) expect(a.skip).toMatch(/^linux backend unavailable: /);
      expect(r.stdout).toMatch(/^# backend: linux \(unavailable: .+\)$/m);
    },
  );

  test.skipIf(!linuxOpens)('linux that opens runs the cases there and names it on each', () => {
    const r = kvmtest(['run', 'hosts:limits', 'hosts:everywhere', '--reporter', 'tap', '--backend', 'linux']);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/^# backend: linux$/gm)?.length).toBe(3);
  });

  test('comparing two hosts that differ: `differs` with the first differing observation, `skipped on X`, `same`', () => {
    const r = kvmtest(['run', 'hosts', '--reporter', 'tap', '--backend', 'sim:mainline-amd,sim:pvm']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    const comparison = (name: string) => {
      const i = lines.indexOf(
        `ok ${['limits', 'sev vm', 'needs sev', 'everywhere'].indexOf(name) + 1} hosts: ${name}`,
      );
      return lines[i - 1];
    };
    // MAX_VCPUS (observation 1) agrees; VM_TYPES (observation 2) is the first difference.
    expect(comparison('limits')).toBe(
      '# comparison: differs at observation #2 VM_TYPES: sim:mainline-amd 29, sim:pvm 1',
    );
    // The automatic errno of KVM_CREATE_VM(sev) on the host without SEV.
    expect(comparison('sev vm')).toBe(
      '# comparison: differs at observation #1 after: sim:mainline-amd after = "done", sim:pvm errno kvm.createVm = "EINVAL"',
    );
    expect(comparison('needs sev')).toMatch(/^# comparison: skipped on sim:pvm: /);
    expect(comparison('everywhere')).toBe('# comparison: same');
    expect(r.stdout).toContain('# backend: sim:mainline-amd,sim:pvm');
    const pretty = kvmtest(['run', 'hosts', '--reporter', 'pretty', '--backend', 'sim:mainline-amd,sim:pvm']);
    expect(pretty.stdout).toMatch(/^comparing backends: sim:mainline-amd with sim:pvm\n/);
    expect(pretty.stdout).toMatch(/✓ limits \d+ ms differs at observation #2 VM_TYPES/);
    expect(pretty.stdout).toMatch(/compared: 1 same, 2 differ, 1 skipped on a backend/);
  });

  test('comparing identical hosts: every case `same` (or skipped on both)', () => {
    const r = kvmtest(['run', 'hosts', '--reporter', 'junit', '--backend', 'sim:pvm,sim:pvm']);
    expect(r.code).toBe(0);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(r.stdout);
    const verdicts = doc.testsuites.testsuite.testcase.map(
      (c: { properties: { property: { name: string; value: string }[] } }) =>
        c.properties.property.find((p) => p.name === 'comparison')!.value,
    );
    expect(verdicts[0]).toBe('same');
    expect(verdicts[1]).toBe('same');
    expect(verdicts[2]).toMatch(/^skipped on both/);
    expect(verdicts[3]).toBe('same');
  });

  test('a case failing on one side only differs, and the run fails', () => {
    const r = kvmtest(['run', 'demo:passes', 'demo:fails', '--reporter', 'tap', '--backend', 'sim,sim:pvm']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('# comparison: same'); // passes, and fails the same way on both
    expect(r.stdout).toMatch(/\[sim\] Error: expected 0x10 but got 0x20/);
  });
});
