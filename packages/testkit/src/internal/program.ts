// A suite as a kselftest program (`node dist/main.js [-h|-l] [-t name|-T name]…`), with the
// command line of tools/testing/selftests/kselftest_harness.h: test_harness_argv_check(): -l lists
// the tests and exits KSFT_SKIP, -h prints the usage and exits KSFT_SKIP, an unknown option prints
// it and exits KSFT_FAIL; -t includes a test, -T excludes one (the first matching option decides,
// and with any -t present a test no option names is left out, as test_enabled() does).

import { runSuite, type Suite, tapReporter } from './harness.js';
import { KSFT } from './results.js';

/** Where a suite program writes: stdout for TAP, stderr for the listing and the usage (as the C harness). */
export interface ProgramIo {
  stdout(line: string): void;
  stderr(line: string): void;
}

const defaultIo: ProgramIo = {
  stdout: (l) => void process.stdout.write(`${l}\n`),
  stderr: (l) => void process.stderr.write(`${l}\n`),
};

function usage(program: string): string[] {
  return [
    `Usage: ${program} [-h|-l] [-t|-T name]`,
    '\t-h       print help',
    '\t-l       list all tests',
    '',
    '\t-t name  include test',
    '\t-T name  exclude test',
    '',
    'Test filter options can be given several times; the first that names a test decides.',
  ];
}

/**
 * Runs `suite` as a kselftest program with `argv` (without node and the script) and resolves with
 * the exit code: the KSFT code of the run, KSFT_SKIP for -l and -h, KSFT_FAIL for a bad option.
 */
export async function runSuiteProgram(
  suite: Suite,
  argv: readonly string[] = process.argv.slice(2),
  io: ProgramIo = defaultIo,
  program = suite.name,
): Promise<number> {
  const filters: { include: boolean; name: string }[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-l') {
      io.stderr(`${'# FIXTURE'.padEnd(20)} ${'VARIANT'.padEnd(25)} TEST`);
      for (const [k, c] of suite.cases.entries())
        io.stderr(`${(k === 0 ? suite.name : '').padEnd(20)} ${''.padEnd(25)} ${c.name}`);
      return KSFT.SKIP;
    }
    const m = /^-([tT])(.*)$/.exec(a);
    if (m) {
      const name = m[2] || argv[++i];
      if (name === undefined) {
        io.stderr(`${program}: option requires an argument -- '${m[1]}'`);
        for (const l of usage(program)) io.stderr(l);
        return KSFT.FAIL;
      }
      filters.push({ include: m[1] === 't', name });
      continue;
    }
    if (a !== '-h') io.stderr(`${program}: invalid option -- '${a.replace(/^-+/, '')}'`);
    for (const l of usage(program)) io.stderr(l);
    return a === '-h' ? KSFT.SKIP : KSFT.FAIL;
  }
  const hasInclude = filters.some((f) => f.include);
  const enabled = (name: string) => {
    const hit = filters.find((f) => f.name === name);
    return hit ? hit.include : !hasInclude;
  };
  const result = await runSuite(suite, { filter: enabled, reporter: tapReporter(io.stdout) });
  return result.exitCode;
}
