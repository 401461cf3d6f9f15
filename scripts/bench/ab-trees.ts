// Before/after comparison of several checkouts loaded into ONE process: each tree's round is timed
// in CPU time (process.cpuUsage), rounds are interleaved, so a busy shared machine skews every tree
// alike. Used by the packages' bench/ab-trees.ts harnesses (not *.bench.ts: the runner leaves them out).

/** One timed round of a tree: resolves to nanoseconds of CPU time per operation. */
export type AbRound = () => Promise<number>;

/** CPU time of this process (every thread) in nanoseconds. */
export function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

/**
 * Sets up one round per tree (`setup(tree)`), warms each up twice, runs `rounds` interleaved rounds
 * and prints, per tree, the median and minimum ns per operation and every round's figure.
 */
export async function compareTrees(
  label: string,
  trees: string[],
  rounds: number,
  setup: (tree: string) => Promise<AbRound>,
): Promise<void> {
  if (trees.length === 0) trees.push('.');
  const runs: AbRound[] = [];
  for (const t of trees) runs.push(await setup(t));
  for (const r of runs) for (let k = 0; k < 2; k++) await r();
  const figures: number[][] = trees.map(() => []);
  for (let k = 0; k < rounds; k++) for (let j = 0; j < runs.length; j++) figures[j]!.push(await runs[j]!());
  trees.forEach((t, j) => {
    const f = figures[j]!;
    const sorted = [...f].sort((a, b) => a - b);
    console.log(
      `${label} ${t}: median ${sorted[sorted.length >> 1]!.toFixed(1)} ns, min ${sorted[0]!.toFixed(1)} ns [${f.map((x) => x.toFixed(0)).join(' ')}]`,
    );
  });
}
