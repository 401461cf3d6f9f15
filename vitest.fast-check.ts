// Property tests everywhere run under one fast-check configuration (a vitest setup file of every
// project): reproducible in CI, random on a laptop, wider on demand.
//   CI set              → seed KVMTEST_FC_CI_SEED (fixed), so a red CI run replays exactly;
//   KVMTEST_FC_SEED=n   → that seed (replay a failure: fast-check prints its seed and path);
//   KVMTEST_FC_RUNS=n   → n runs for every property that does not fix its own numRuns.
// fast-check's failure message carries `seed` and `path`; it is never swallowed.
import fc from 'fast-check';

/** The seed every property uses when CI is set and KVMTEST_FC_SEED is not. */
export const KVMTEST_FC_CI_SEED = 0x6b766d;

function intFromEnv(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${v} must be an integer`);
  return n;
}

const seed = intFromEnv('KVMTEST_FC_SEED') ?? (process.env.CI ? KVMTEST_FC_CI_SEED : undefined);
const numRuns = intFromEnv('KVMTEST_FC_RUNS');
fc.configureGlobal({
  ...(seed === undefined ? {} : { seed }),
  ...(numRuns === undefined ? {} : { numRuns }),
});
