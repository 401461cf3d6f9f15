// The bad-input fuzz every library runs (guest-memory, ucall, kvm-sim, testkit): call each public
// function with arbitrary values and sort what happens. Test-only; imported by each package's
// `test/fuzz.test.ts`, which supplies the calls and the state snapshot.
//
// Outcomes of one call:
//   typed    — the package's error class, KvmError, or a TypeError/RangeError our code threw on purpose;
//   engine   — anything else thrown (an engine TypeError such as "Cannot mix BigInt", a plain Error);
//   wrong    — the call succeeded although an argument broke its declared parameter kind;
//   changed  — the call was rejected and the state snapshot differs from the one taken before it.
import fc from 'fast-check';

/** Messages of errors the JavaScript engine raises by itself (V8), never deliberately by our code. */
const ENGINE = [
  /Cannot mix BigInt/,
  /Do not know how to serialize a BigInt/,
  /Cannot (read|set) propert/,
  /Cannot convert/,
  /is not a function/,
  /is not iterable/,
  /is not a constructor/,
  /Invalid (typed )?array length/,
  /Invalid string length/,
  /Invalid DataView/,
  /Maximum call stack/,
  /Offset is outside the bounds/,
  /cannot be converted to a BigInt/,
  /Cannot create property/,
  /Reduce of empty array/,
  /is not defined/,
  /The value of "\w+" is out of range/,
  /Start offset .* is outside the bounds/,
  /Invalid time value/,
  /Invalid count value/,
  /Division by zero/,
  /BigInt negative exponent/,
  /Maximum BigInt size/,
];

/** True for a TypeError/RangeError that our code threw deliberately (not an engine message). */
export function isDeliberate(e: unknown): boolean {
  if (!(e instanceof TypeError || e instanceof RangeError)) return false;
  return !ENGINE.some((re) => re.test(e.message));
}

/** A parameter kind: how to make good values and how to tell a value that breaks it. */
export interface Kind {
  good: fc.Arbitrary<unknown>;
  /** True when `v` certainly breaks the kind (a call with it must fail). */
  bad(v: unknown): boolean;
}

/** Values of every shape, most of them wrong for any parameter. */
export const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    undefined,
    null,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    -1,
    -1n,
    0,
    0n,
    1,
    1n,
    2 ** 53 - 1,
    2 ** 53,
    2n ** 64n,
    2n ** 64n - 1n,
    2n ** 70n,
    0.5,
    '',
    'x',
    '0x1000',
    true,
    false,
    {},
    [],
    Symbol('junk'),
    () => 0,
    new Uint8Array(0),
    new Uint8Array(4096),
    Object.freeze({}),
    Object.create(null),
  ),
  fc.integer(),
  fc.bigInt({ min: -(2n ** 65n), max: 2n ** 65n }),
  fc.double(),
  fc.string({ maxLength: 8 }),
  fc.array(fc.anything({ maxDepth: 1 }), { maxLength: 3 }),
  fc.object({ maxDepth: 1 }),
);

const isU64 = (v: unknown) => typeof v === 'bigint' && v >= 0n && v < 2n ** 64n;
const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Common parameter kinds. `good` mixes in edge values; `bad` is only what certainly must fail. */
export const K = {
  /** A u64 bigint (GPA, GVA, size). */
  u64: (good?: fc.Arbitrary<bigint>): Kind => ({
    good:
      good ?? fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 0x40_0000n })),
    bad: (v) => !isU64(v),
  }),
  /** A non-negative safe-integer number (length, count, index). */
  count: (max = 1 << 16): Kind => ({ good: fc.integer({ min: 0, max }), bad: (v) => !isCount(v) }),
  /** An integer number in [min, max]. */
  int: (min: number, max: number): Kind => ({
    good: fc.integer({ min, max }),
    bad: (v) => typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max,
  }),
  /** A string. */
  string: (good?: fc.Arbitrary<string>): Kind => ({
    good: good ?? fc.string({ maxLength: 12 }),
    bad: (v) => typeof v !== 'string',
  }),
  /** A Uint8Array. */
  bytes: (maxLength = 64): Kind => ({
    good: fc.uint8Array({ maxLength }),
    bad: (v) => !(v instanceof Uint8Array),
  }),
  /** An options object (undefined allowed). */
  options: (good: fc.Arbitrary<unknown>): Kind => ({
    good,
    bad: (v) => v !== undefined && (typeof v !== 'object' || v === null),
  }),
  /** One of a few values. */
  oneOf: <T>(...values: T[]): Kind => ({
    good: fc.constantFrom(...values),
    bad: (v) => !values.includes(v as T),
  }),
  /** Anything: no value is certainly wrong. */
  any: (good: fc.Arbitrary<unknown>): Kind => ({ good, bad: () => false }),
} as const;

/** One public function under fuzz: its name, its parameters, and how to call it on the state. */
export interface FuzzTarget<S> {
  name: string;
  params: readonly Kind[];
  call(state: S, args: unknown[]): unknown;
}

/** Figures one fuzz run prints and the test asserts on. */
export interface FuzzFigures {
  package: string;
  inputs: number;
  succeeded: number;
  typed: number;
  engine: number;
  wrongSuccesses: number;
  changedAfterRejection: number;
  longestBadCallMs: number;
  longestBadCall: string;
  /** The first few failures of each bad kind, to show in the assertion message. */
  examples: string[];
  /** The fast-check seed of the run (KVMTEST_FC_SEED=<seed> replays it). */
  seed: number;
}

/** Everything a package's fuzz test supplies. */
export interface FuzzSuite<S> {
  package: string;
  /** Fresh state for a sequence of calls. */
  setup(): S;
  /** Releases a state (closes VMs); optional. */
  teardown?(state: S): void;
  /** A value that changes whenever the observable state changes (compared only around rejected calls). */
  snapshot(state: S): unknown;
  /** Recognises the package's own error classes (KvmError is recognised by name everywhere). */
  isPackageError(e: unknown): boolean;
  targets: readonly FuzzTarget<S>[];
  /** Sequences to run, and calls per sequence. */
  runs: number;
  callsPerRun: number;
}

function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'symbol') return 'Symbol()';
  if (typeof v === 'function') return 'fn';
  if (v instanceof Uint8Array) return `Uint8Array(${v.length})`;
  if (typeof v === 'string') return JSON.stringify(v.length > 30 ? `${v.slice(0, 30)}…` : v);
  if (v === null || typeof v !== 'object') return String(v);
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x))?.slice(0, 80) ?? 'object';
  } catch {
    return 'object';
  }
}

function sameSnapshot(a: unknown, b: unknown): boolean {
  return (
    JSON.stringify(a, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x)) ===
    JSON.stringify(b, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x))
  );
}

function isKvmError(e: unknown): boolean {
  return e instanceof Error && e.name === 'KvmError' && typeof (e as { code?: unknown }).code === 'string';
}

/**
 * Runs `suite`: `runs` sequences of `callsPerRun` calls, each to a random target with, per parameter,
 * a good value or junk. Async results are awaited. Prints one summary line and returns the figures.
 */
export async function runFuzz<S>(suite: FuzzSuite<S>): Promise<FuzzFigures> {
  const fig: FuzzFigures = {
    package: suite.package,
    inputs: 0,
    succeeded: 0,
    typed: 0,
    engine: 0,
    wrongSuccesses: 0,
    changedAfterRejection: 0,
    longestBadCallMs: 0,
    longestBadCall: '',
    examples: [],
    seed: 0,
  };
  const seen = new Set<string>();
  const note = (what: string) => {
    // One example per function and outcome, at most 30.
    const key = what.slice(0, what.indexOf('('));
    if (fig.examples.length < 30 && !seen.has(key)) {
      seen.add(key);
      fig.examples.push(what);
    }
  };
  const call = fc
    .integer({ min: 0, max: suite.targets.length - 1 })
    .chain((i) =>
      fc.tuple(
        fc.constant(i),
        fc.tuple(...suite.targets[i]!.params.map((p) => fc.oneof({ weight: 2, arbitrary: p.good }, junk))),
      ),
    );
  const seed = fc.readConfigureGlobal().seed ?? (Date.now() ^ (Math.random() * 2 ** 31)) | 0;
  fig.seed = seed;
  await fc.assert(
    fc.asyncProperty(
      fc.array(call, { minLength: suite.callsPerRun, maxLength: suite.callsPerRun }),
      async (calls) => {
        const state = suite.setup();
        try {
          for (const [i, args] of calls) {
            const t = suite.targets[i]!;
            const bad = t.params.some((p, j) => p.bad(args[j]));
            const label = `${t.name}(${args.map(show).join(', ')})`;
            const before = suite.snapshot(state);
            fig.inputs++;
            const start = performance.now();
            let error: unknown;
            let threw = false;
            try {
              const r = t.call(state, args);
              if (r instanceof Promise) await r;
            } catch (e) {
              threw = true;
              error = e;
            }
            const ms = performance.now() - start;
            if (!threw) {
              fig.succeeded++;
              if (bad) {
                fig.wrongSuccesses++;
                note(`wrong success: ${label}`);
              }
              continue;
            }
            if (ms > fig.longestBadCallMs) {
              fig.longestBadCallMs = ms;
              fig.longestBadCall = label;
            }
            if (suite.isPackageError(error) || isKvmError(error) || isDeliberate(error)) fig.typed++;
            else {
              fig.engine++;
              note(
                `engine error: ${label} → ${error instanceof Error ? `${error.name}: ${error.message}` : show(error)}`,
              );
            }
            if (!sameSnapshot(before, suite.snapshot(state))) {
              fig.changedAfterRejection++;
              note(`state changed after rejection: ${label} → ${(error as Error)?.message ?? show(error)}`);
            }
          }
        } finally {
          suite.teardown?.(state);
        }
      },
    ),
    { numRuns: Number(process.env.KVMTEST_FC_RUNS) || suite.runs, seed },
  );
  console.log(
    `fuzz ${fig.package}: ${fig.inputs} inputs, ${fig.succeeded} succeeded, ${fig.typed} typed errors, ` +
      `${fig.engine} engine errors, ${fig.wrongSuccesses} wrong successes, ` +
      `${fig.changedAfterRejection} state changes after rejection; longest bad call ` +
      `${fig.longestBadCallMs.toFixed(1)} ms (${fig.longestBadCall.slice(0, 120)}); seed ${seed}`,
  );
  return fig;
}
