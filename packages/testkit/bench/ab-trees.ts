// Before/after harness for the ucall round trip (guest SYNC -> run() -> getUcall, the loop of
// ucall.roundtrip.default): loads testkit from two or more checkouts into ONE process and times them
// in interleaved rounds, in CPU time (process.cpuUsage), so a busy shared machine skews every tree
// alike. Not a *.bench.ts file: the bench runner leaves it out. See packages/kvm-sim/bench/ab-trees.ts
// for the exit path.
//
//   node --conditions=@kvmtest/source --import tsx packages/testkit/bench/ab-trees.ts 10 100000 /tmp/base .
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Guest } from '@kvmtest/kvm';

type Testkit = typeof import('../src/index.js');

function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

async function setup(tree: string, n: number): Promise<() => Promise<number>> {
  const tk = (await import(pathToFileURL(resolve(tree, 'packages/testkit/src/index.ts')).href)) as Testkit;
  const vm = tk.vmCreateWithOneVcpu(async (g: Guest) => {
    for (;;) await tk.guestSync(g, 1n);
  }, 'default');
  const vcpu = vm.vcpus[0]!;
  return async () => {
    const t0 = cpuNs();
    for (let i = 0; i < n; i++) await tk.runUcall(vcpu);
    return (cpuNs() - t0) / n;
  };
}

async function main(): Promise<void> {
  const [rounds = '10', perRound = '100000', ...trees] = process.argv.slice(2);
  if (trees.length === 0) trees.push('.');
  const runs: (() => Promise<number>)[] = [];
  for (const t of trees) runs.push(await setup(t, Number(perRound)));
  for (const r of runs) for (let k = 0; k < 2; k++) await r(); // warm-up
  const figures: number[][] = trees.map(() => []);
  for (let k = 0; k < Number(rounds); k++)
    for (let j = 0; j < runs.length; j++) figures[j]!.push(await runs[j]!());
  trees.forEach((t, j) => {
    const f = figures[j]!;
    const sorted = [...f].sort((a, b) => a - b);
    console.log(
      `ucall ${t}: median ${sorted[sorted.length >> 1]!.toFixed(1)} ns, min ${sorted[0]!.toFixed(1)} ns [${f.map((x) => x.toFixed(0)).join(' ')}]`,
    );
  });
}

await main();
