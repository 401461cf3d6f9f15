// Benchmarks of the simulated KVM: VM lifetime, the exit round trip and guest memory reads.

import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import { CR, type Exit } from '@kvmtest/kvm';
import { type Bench, nsPerOp, opsPerSecond, opsPerSecondSync } from '../../../scripts/bench/measure.js';
import { createSimKvm } from '../src/index.js';

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
      const vm = kvm.createVm();
      const mem = new Uint8Array(4 << 20);
      vm.setUserMemoryRegion({
        slot: 0,
        flags: 0,
        guestPhysAddr: 0n,
        memorySize: BigInt(mem.length),
        userspace: mem,
      });
      const phys = new PhysicalMemory();
      phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(mem.length), backing: mem });
      let next = 0x10_0000n;
      const pt = new PageTables(phys, { levels: 4, physBits: 52 }, () => {
        const p = next;
        next += 4096n;
        return p;
      });
      for (let i = 0n; i < 16n; i++) pt.map(0x40_0000n + i * 4096n, 0x20_0000n + i * 4096n);
      const vcpu = vm.createVcpu(0);
      vcpu.setSregs({
        cr0: CR.CR0_PE | CR.CR0_PG,
        cr2: 0n,
        cr3: pt.root,
        cr4: CR.CR4_PAE,
        efer: CR.EFER_LME | CR.EFER_LMA,
      });
      let rate = 0;
      vcpu.setEntry(async (g) => {
        const gvas = Array.from({ length: 512 }, (_, i) => 0x40_0000n + BigInt((i * 8 * 17) % 0x10000));
        rate = opsPerSecondSync((i) => g.readU64(gvas[i & 511]!));
        await g.out(0x80, 1, 0);
      });
      await vcpu.run();
      void opsPerSecond;
      return rate;
    },
  },
];

export default benches;
