#!/usr/bin/env node
// Runs the suite as a kselftest program: TAP on standard output, KSFT exit code (0, 1 or 4), and
// the harness's flags: -l lists the cases, -t NAME / -T NAME include / exclude one, -h the usage.
import { runSuiteProgram } from '@kvmtest/testkit';
import suite from './suite.js';

process.exitCode = await runSuiteProgram(suite);
