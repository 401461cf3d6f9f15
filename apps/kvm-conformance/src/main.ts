#!/usr/bin/env node
// Runs the suite as a kselftest program: TAP on standard output, KSFT exit code (0, 1 or 4).
import { runSuite } from '@kvmtest/testkit';
import suite from './suite.js';

const result = await runSuite(suite);
process.exitCode = result.exitCode;
