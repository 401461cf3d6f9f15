// Guest.readAsync / writeAsync on /dev/kvm: the agent executes the load or store as a real
// instruction; an MMIO access surfaces as the real KVM_EXIT_MMIO from run() and the access
// completes (a read with the host's data) at the next run; RAM is read without an exit.
import type { Exit, GuestProgram } from '@kvmtest/kvm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LinuxKvm, openLinuxKvm } from '../kvm.js';
import { kvmAvailability } from '../probe.js';
import type { LinuxVcpu } from '../vcpu.js';
import { registerGuestAgent } from './index.js';

const availability = kvmAvailability();

describe.skipIf(!availability.ok)('readAsync / writeAsync through the agent on /dev/kvm', () => {
  let kvm: LinuxKvm;
  beforeAll(() => {
    registerGuestAgent();
    kvm = openLinuxKvm({ runTimeoutMs: 2000 });
  });
  afterAll(() => kvm?.close());

  /** 64 KiB of RAM at GPA 0 under 4-level tables that map GPA 0–2 MiB 1:1 (beyond 64 KiB: MMIO). */
  function vmWith(program: GuestProgram): { vcpu: LinuxVcpu; mem: DataView } {
    const vm = kvm.createVm();
    const bytes = kvm.allocateUserMemory(0x10000).bytes;
    const mem = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    mem.setBigUint64(0x1000, 0x2003n, true);
    mem.setBigUint64(0x2000, 0x3003n, true);
    mem.setBigUint64(0x3000, 0x83n, true);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: bytes });
    const vcpu = vm.createVcpu(0);
    vcpu.setCpuid(kvm.getSupportedCpuid());
    const s = vcpu.getSregs();
    s.cr0 |= 0x8000_0011n;
    s.cr4 |= 0x20n;
    s.efer |= 0x500n;
    s.cr3 = 0x1000n;
    vcpu.setSregs(s);
    vcpu.setEntry(program);
    return { vcpu, mem };
  }

  it('surfaces the real MMIO exits and completes the accesses at the next run', async () => {
    let mmio = 0n;
    let ram = 0n;
    const { vcpu, mem } = vmWith(async (g) => {
      mmio = await g.readAsync(0x2_0008n, 8);
      await g.writeAsync(0x2_0000n, 4, 0xbeefn);
      ram = await g.readAsync(0x5000n, 8);
      await g.writeAsync(0x5008n, 2, 0x1234n);
      await g.out(0x1000, 1, 0);
    });
    mem.setBigUint64(0x5000, 0x600d_f00dn, true);
    const r = await vcpu.run();
    expect(r).toMatchObject({ reason: 'mmio', gpa: 0x2_0008n, isWrite: false, len: 8 });
    if (r.reason === 'mmio') r.data.set([1, 2, 3, 4, 5, 6, 7, 8]);
    const w = await vcpu.run();
    expect(w).toMatchObject({ reason: 'mmio', gpa: 0x2_0000n, isWrite: true, len: 4 });
    expect([...(w as Extract<Exit, { reason: 'mmio' }>).data.subarray(0, 4)]).toEqual([0xef, 0xbe, 0, 0]);
    expect((await vcpu.run()).reason).toBe('io');
    expect(mmio).toBe(0x0807_0605_0403_0201n);
    expect(ram).toBe(0x600d_f00dn);
    expect(mem.getUint16(0x5008, true)).toBe(0x1234);
  });
});
