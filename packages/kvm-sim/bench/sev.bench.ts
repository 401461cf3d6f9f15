import { CAP, SEV_CMD, type SevCommand, type Vm } from '@kvmtest/kvm';
import { type Bench, nsPerOpSync, opsPerSecondSync } from '../../../scripts/bench/measure.js';
import { DATA_GVA, guestVm } from '../test/helpers.js';
import { createSimKvm } from '../src/index.js';

function op(vm: Vm, sevFd: number, id: number, data?: unknown): void {
  const c: SevCommand = { id, data, sevFd };
  vm.memEncryptOp(c);
}

const benches: Bench[] = [
  {
    name: 'kvm-sim.sev-migrate',
    unit: 'ops/s',
    goal: '>= 200k/s',
    reference: 'real KVM: sev_migrate_tests moves 4-vCPU SEV VMs in tens of µs each',
    run() {
      const kvm = createSimKvm({ vendor: 'amd' });
      const sevFd = kvm.openSevDevice();
      let src = kvm.createVm('default');
      op(src, sevFd, SEV_CMD.INIT);
      for (let i = 0; i < 4; i++) src.createVcpu(i);
      op(src, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
      op(src, sevFd, SEV_CMD.LAUNCH_FINISH);
      // Fresh 4-vCPU destinations are made (and dead sources closed) outside the timed moves.
      const fresh = () => {
        const d = kvm.createVm('default');
        for (let i = 0; i < 4; i++) d.createVcpu(i);
        return d;
      };
      let moves = 0;
      let ns = 0n;
      const until = process.hrtime.bigint() + 600_000_000n;
      while (process.hrtime.bigint() < until) {
        const batch = Array.from({ length: 512 }, fresh);
        const dead: Vm[] = [];
        // Collect the garbage of the untimed creation first, so its GC does not land in the timed moves.
        (globalThis as { gc?: () => void }).gc?.();
        const t0 = process.hrtime.bigint();
        for (const dst of batch) {
          dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src]);
          dead.push(src);
          src = dst;
        }
        ns += process.hrtime.bigint() - t0;
        moves += batch.length;
        for (const d of dead) d.close();
      }
      if (!src.vcpus.length) throw new Error('lost the vCPUs');
      return (moves * 1e9) / Number(ns);
    },
  },
  {
    name: 'kvm-sim.sev-launch',
    unit: 'ns/op',
    goal: '<= 2 ms',
    reference: 'real SEV: LAUNCH_UPDATE_DATA of 1 MiB takes the PSP tens of ms',
    run() {
      const kvm = createSimKvm({ vendor: 'amd' });
      const sevFd = kvm.openSevDevice();
      const mem = new Uint8Array(1 << 20);
      return nsPerOpSync(() => {
        const vm = kvm.createVm('sev');
        vm.setUserMemoryRegion({
          slot: 0,
          flags: 0,
          guestPhysAddr: 0n,
          memorySize: BigInt(mem.length),
          userspace: mem,
        });
        op(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
        vm.createVcpu(0);
        op(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
        op(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: mem.length });
        op(vm, sevFd, SEV_CMD.LAUNCH_MEASURE, { uaddr: { buffer: new Uint8Array(48), offset: 0 }, len: 48 });
        op(vm, sevFd, SEV_CMD.LAUNCH_FINISH);
        vm.close();
      }, 1000);
    },
  },
  {
    name: 'kvm-sim.sev-private-readU64',
    unit: 'ops/s',
    goal: '>= 5M/s',
    async run() {
      const kvm = createSimKvm({ vendor: 'amd', runBudget: Number.MAX_SAFE_INTEGER });
      const sevFd = kvm.openSevDevice();
      const { vm, mem, vcpu: addVcpu } = guestVm(kvm, 'sev', 4 << 20, { tagBit: 51 });
      op(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
      op(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
      op(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: 3 << 20 });
      op(vm, sevFd, SEV_CMD.LAUNCH_FINISH);
      let rate = 0;
      const vcpu = addVcpu(async (g) => {
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
