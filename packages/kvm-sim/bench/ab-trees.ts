// Before/after harness for the exit path: loads kvm-sim from two or more checkouts into ONE process
// and times them in interleaved rounds, in CPU time (process.cpuUsage), so a busy shared machine
// skews every tree alike. Not a *.bench.ts file: the bench runner leaves it out.
//
//   git worktree add /tmp/base <commit> && (cd /tmp/base && node scripts/bootstrap.mjs lint)
//   node --conditions=@kvmtest/source --import tsx packages/kvm-sim/bench/ab-trees.ts \
//     exit 15 200000 /tmp/base .
//
// Modes: `exit` (guest OUT -> run() resolves -> run() again, the direct loop of
// kvm-sim.exit-roundtrip) and `create` (createVm().close(), kvm-sim.create-vm). Prints, per tree,
// the median and minimum ns per operation over the rounds and every round's figure.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Guest, Kvm } from '@kvmtest/kvm';
import { type AbRound, compareTrees, cpuNs } from '../../../scripts/bench/ab-trees.js';

async function simOf(tree: string): Promise<(opts?: { runBudget?: number }) => Kvm> {
  const url = pathToFileURL(resolve(tree, 'packages/kvm-sim/src/index.ts')).href;
  const mod = (await import(url)) as { createSimKvm: (opts?: { runBudget?: number }) => Kvm };
  return mod.createSimKvm;
}

async function setup(mode: string, tree: string, n: number): Promise<AbRound> {
  const createSimKvm = await simOf(tree);
  if (mode === 'exit') {
    const vcpu = createSimKvm({ runBudget: Number.MAX_SAFE_INTEGER }).createVm().createVcpu(0);
    vcpu.setEntry(async (g: Guest) => {
      for (let i = 0; ; i++) await g.out(0x80, 1, i & 0xff);
    });
    return async () => {
      const t0 = cpuNs();
      for (let i = 0; i < n; i++) await vcpu.run();
      return (cpuNs() - t0) / n;
    };
  }
  if (mode === 'create') {
    const kvm = createSimKvm();
    return async () => {
      const t0 = cpuNs();
      for (let i = 0; i < n; i++) kvm.createVm().close();
      return (cpuNs() - t0) / n;
    };
  }
  throw new Error(`mode ${mode} is not exit or create`);
}

async function main(): Promise<void> {
  const [mode = 'exit', rounds = '15', perRound = '200000', ...trees] = process.argv.slice(2);
  await compareTrees(mode, trees, Number(rounds), (t) => setup(mode, t, Number(perRound)));
}

await main();
