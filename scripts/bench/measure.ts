// Timing helpers shared by the benchmark files under packages/*/bench and apps/*/bench.
// A benchmark file default-exports a list of `Bench` entries; scripts/bench.ts runs each file in a
// fresh process, prints every figure and writes them all to bench/results.json.

/** Unit of a benchmark figure as it appears in bench/results.json. */
export type BenchUnit = 'ops/s' | 'ns/op' | 'MiB';

/** One benchmark: `run` returns the figure in `unit`; `goal` and `reference` are printed beside it. */
export interface Bench {
  name: string;
  unit: BenchUnit;
  goal?: string;
  reference?: string;
  run(): number | Promise<number>;
}

function now(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Runs `op` in batches until `minMs` of wall time has passed (after a warm-up) and returns the
 * achieved rate. `op` receives the iteration index and may return a promise.
 */
export async function opsPerSecond(op: (i: number) => unknown, minMs = 400): Promise<number> {
  let i = 0;
  const warmEnd = now() + Math.min(100, minMs / 4);
  while (now() < warmEnd) for (let k = 0; k < 64; k++) await op(i++);
  let ops = 0;
  const start = now();
  let elapsed = 0;
  let batch = 64;
  while (elapsed < minMs) {
    for (let k = 0; k < batch; k++) await op(i++);
    ops += batch;
    elapsed = now() - start;
    if (batch < 1 << 16) batch *= 2;
  }
  return (ops * 1000) / elapsed;
}

/** Synchronous variant of opsPerSecond for operations that never await (no promise overhead). */
export function opsPerSecondSync(op: (i: number) => unknown, minMs = 400): number {
  let i = 0;
  const warmEnd = now() + Math.min(100, minMs / 4);
  while (now() < warmEnd) for (let k = 0; k < 256; k++) op(i++);
  let ops = 0;
  const start = now();
  let elapsed = 0;
  let batch = 256;
  while (elapsed < minMs) {
    for (let k = 0; k < batch; k++) op(i++);
    ops += batch;
    elapsed = now() - start;
    if (batch < 1 << 20) batch *= 2;
  }
  return (ops * 1000) / elapsed;
}

/** Nanoseconds per operation of `op`, from opsPerSecond. */
export async function nsPerOp(op: (i: number) => unknown, minMs = 400): Promise<number> {
  return 1e9 / (await opsPerSecond(op, minMs));
}

/** Nanoseconds per operation of a synchronous `op`. */
export function nsPerOpSync(op: (i: number) => unknown, minMs = 400): number {
  return 1e9 / opsPerSecondSync(op, minMs);
}

/** Resident set size of this process in MiB, after a full GC when the process allows it. */
export function residentMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss / 2 ** 20;
}
