// Benchmarks of the simulated KVM: VM lifetime, the exit round trip and guest memory reads.

import type { Exit } from '@kvmtest/kvm';
import { type Bench, nsPerOp, opsPerSecondSync } from '../../../scripts/bench/measure.js';
import { createSimKvm } from '../src/index.js';
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
];

export default benches;
