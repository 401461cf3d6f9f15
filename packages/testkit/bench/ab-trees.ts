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
import { type AbRound, compareTrees, cpuNs } from '../../../scripts/bench/ab-trees.js';

type Testkit = typeof import('../src/index.js');

async function setup(tree: string, n: number): Promise<AbRound> {
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
  await compareTrees('ucall', trees, Number(rounds), (t) => setup(t, Number(perRound)));
}

await main();
