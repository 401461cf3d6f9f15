// Benchmarks of the simulated KVM: VM lifetime, the exit round trip and guest memory reads.

import type { Exit } from '@kvmtest/kvm';
import { type Bench, nsPerOp, opsPerSecondSync } from '../../../scripts/bench/measure.js';
import { createSimKvm, setSimSeed } from '../src/index.js';
import { DATA_GVA, guestVm } from '../test/helpers.js';

const benches: Bench[] = [
  {
    name: 'kvm-sim.create-vm',
    unit: 'ops/s',
    goal: '>= 200k/s',
    reference: 'real KVM: ~530 µs per create+close (~1.9k/s)',
    run() {
      const kvm = createSimKvm();
      return opsPerSecondSync(() => kvm.createVm().close());
    },
  },
  {
    name: 'kvm-sim.exit-roundtrip',
    unit: 'ns/op',
    goal: '<= 300 ns',
    reference: 'real KVM: ~13 µs per port-I/O round trip with a register read',
    async run() {
      const kvm = createSimKvm({ runBudget: Number.MAX_SAFE_INTEGER });
      const vm = kvm.createVm();
      const vcpu = vm.createVcpu(0);
      vcpu.setEntry(async (g) => {
        for (let i = 0; ; i++) await g.out(0x80, 1, i & 0xff);
      });
      let last: Exit | undefined;
      const ns = await nsPerOp(async () => {
        last = await vcpu.run();
      });
      if (last?.reason !== 'io') throw new Error(`unexpected exit ${last?.reason}`);
      return ns;
    },
  },
  {
    name: 'kvm-sim.guest-readU64',
    unit: 'ops/s',
    goal: '>= 10M/s',
    async run() {
      const kvm = createSimKvm({ runBudget: Number.MAX_SAFE_INTEGER });
      const t = guestVm(kvm);
      let rate = 0;
      const vcpu = t.vcpu(async (g) => {
        const gvas = Array.from({ length: 512 }, (_, i) => DATA_GVA + BigInt((i * 8 * 17) % 0x10000));
        rate = opsPerSecondSync((i) => g.readU64(gvas[i & 511]!));
        await g.out(0x80, 1, 0);
      });
      await vcpu.run();
      return rate;
    },
  },
  {
    name: 'kvm-sim.preempt-latency',
    unit: 'ns/op',
    goal: '<= 50 µs',
    reference:
      'ns from a host task asking for its turn (setImmediate) to its kick taking effect (run() fails with EINTR) in a guest looping on readAsync',
    async run() {
      setSimSeed(1);
      const kvm = createSimKvm({ runBudget: Number.MAX_SAFE_INTEGER });
      const t = guestVm(kvm);
      const vcpu = t.vcpu(async (g) => {
        for (;;) await g.readAsync(DATA_GVA, 8);
      });
      const times: number[] = [];
      for (let i = 0; i < 400; i++) {
        const run = vcpu.run().then(
          () => 'exit',
          (e: { code?: string }) => e.code,
        );
        // Let the guest get going, then time one host task from its request to the kick's effect.
        for (let k = 0; k < 3; k++) await new Promise((r) => setImmediate(r));
        const t0 = performance.now();
        await new Promise((r) => setImmediate(r));
        vcpu.kick!();
        const how = await run;
        times.push(performance.now() - t0);
        if (how !== 'EINTR') throw new Error(`the kick ended the run with ${how}`);
      }
      times.sort((a, b) => a - b);
      return times[times.length >> 1]! * 1e6;
    },
  },
  {
    name: 'kvm-sim.interleave.2vcpu',
    unit: 'ops/s',
    goal: 'figure only',
    reference:
      'exits/s with two vCPUs of one VM ping-ponging a turn flag through shared memory (readAsync / writeAsync), each exiting once per turn',
    async run() {
      setSimSeed(2);
      const kvm = createSimKvm({ runBudget: Number.MAX_SAFE_INTEGER });
      const t = guestVm(kvm);
      const player = (me: bigint) => async (g: Parameters<Parameters<typeof t.vcpu>[0]>[0]) => {
        for (;;) {
          while ((await g.readAsync(DATA_GVA, 8)) !== me) {}
          await g.out(0x80, 1, Number(me));
          await g.writeAsync(DATA_GVA, 8, 1n - me);
        }
      };
      const a = t.vcpu(player(0n), 0);
      const b = t.vcpu(player(1n), 1);
      let exits = 0;
      let stop = false;
      const host = async (v: typeof a) => {
        while (!stop) {
          await v.run();
          exits++;
        }
      };
      const hosts = [host(a), host(b)];
      await new Promise((r) => setTimeout(r, 100)); // warm-up
      const e0 = exits;
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 400));
      const rate = ((exits - e0) * 1000) / (performance.now() - t0);
      stop = true;
      a.kick!();
      b.kick!();
      await Promise.allSettled(hosts);
      return rate;
    },
  },
];

export default benches;
