// The suite's cases as vitest tests, so `npm test` runs them too.
import { vitestSuite } from '@kvmtest/testkit/vitest';
import suite from './suite.js';

vitestSuite(suite, { timeoutMs: 60_000 });
