// Several VMs of different types, several vCPUs each, all running and ucalling at once: each host
// sees only its own VM's messages. A barebones VM beside them never gets a pool.
import type { VmType } from '@kvmtest/coco';
import type { Vcpu } from '@kvmtest/kvm';
import { UCALL, ucallPoolOf } from '@kvmtest/ucall';
import { expect, test } from 'vitest';
import {
  defineGuest,
  guestDone,
  guestSync,
  runUcall,
  supportedVmTypes,
  type TestVm,
  TestkitError,
  vmCreateBarebones,
  vmCreateWithVcpus,
  writeGuestGlobal,
} from '../src/index.js';

const ROUNDS = 5;
const VCPUS = 3;

// Each VM's guests send (vm tag, vCPU id, round); the tag is a per-VM global the host writes.
const guest = defineGuest(
  async (g) => {
    const tag = g.readU64(g.global('vm_tag'));
    for (let i = 0; i < ROUNDS; i++) await guestSync(g, tag, BigInt(g.vcpuId), BigInt(i));
    await guestDone(g);
  },
  { globals: { vm_tag: 0n } },
);

async function drive(vm: TestVm, tag: bigint, vcpu: Vcpu): Promise<bigint[][]> {
  const seen: bigint[][] = [];
  for (;;) {
    const uc = await runUcall(vcpu);
    if (uc.cmd === UCALL.DONE) return seen;
    expect(uc.cmd).toBe(UCALL.SYNC);
    expect(uc.vcpuId).toBe(vcpu.id);
    expect(uc.args[0]).toBe(tag);
    seen.push(uc.args.slice(0, 3));
    expect(vm.closed).toBe(false);
  }
}

test('VMs of every usable type run several vCPUs concurrently and each host sees only its own messages', async () => {
  const types: VmType[] = supportedVmTypes();
  // Two VMs per type, so that two VMs of the same type also stay apart.
  const vms = types.flatMap((t) => [vmCreateWithVcpus(VCPUS, guest, t), vmCreateWithVcpus(VCPUS, guest, t)]);
  using bare = vmCreateBarebones(types.at(-1));
  try {
    vms.forEach((vm, i) => {
      writeGuestGlobal(vm, 'vm_tag', BigInt(0x100 + i));
    });
    const runs = vms.flatMap((vm, i) => vm.vcpus.map((vcpu) => drive(vm, BigInt(0x100 + i), vcpu)));
    const results = await Promise.all(runs);
    let k = 0;
    vms.forEach((vm, i) => {
      for (const vcpu of vm.vcpus) {
        const expected = Array.from({ length: ROUNDS }, (_, r) => [
          BigInt(0x100 + i),
          BigInt(vcpu.id),
          BigInt(r),
        ]);
        expect(results[k++]).toEqual(expected);
      }
    });
    expect(bare.ucallPool).toBeUndefined();
    expect(ucallPoolOf(bare.raw)).toBeUndefined();
    expect(() => bare.space).toThrow(TestkitError);
    expect(() => bare.image).toThrow(/vmCreateBarebones\(\) \(no memory, image or ucall\)/);
  } finally {
    for (const vm of vms) vm.close();
  }
});
