import { CAP, type Exit, FALLOC_FL, KVM_HC, MAP_GPA_RANGE, MEMORY_ATTRIBUTE, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { privateMemVm, TEST_GPA, TEST_GVA } from './helpers.js';
import { simStats } from '../src/index.js';

const P = MEMORY_ATTRIBUTE.PRIVATE;

/** A sw-protected VM: slot 0 (plain, page tables) + a test slot at 4 GiB mapped at TEST_GVA. */
function setup(gmemSlot: boolean, pages = 4) {
  return privateMemVm({ gmem: gmemSlot, pages });
}

describe('private_mem_kvm_exits_test', () => {
  it('a private access to a memslot without guest_memfd exits with KVM_EXIT_MEMORY_FAULT, flags PRIVATE', async () => {
    const { vm, vcpu } = setup(false);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    const v = vcpu(async (g) => {
      for (;;) g.readU64(TEST_GVA);
    });
    expect(await v.run()).toEqual({
      reason: 'memory-fault',
      gpa: TEST_GPA,
      size: 4096n,
      private: true,
      errno: 'EFAULT',
    });
    const again = await v.run();
    expect(again.reason).toBe('internal-error');
  });
  it('a private access after the memslot was deleted mid-run exits with a private memory fault', async () => {
    const { vm, vcpu, shared } = setup(true);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    const v = vcpu(async (g) => {
      for (;;) {
        g.readU64(TEST_GVA);
        await g.out(0x80, 1, 0);
      }
    });
    expect((await v.run()).reason).toBe('io');
    vm.setUserMemoryRegion({
      slot: 1,
      flags: 0,
      guestPhysAddr: TEST_GPA,
      memorySize: 0n,
      userspace: undefined,
    });
    void shared;
    expect(await v.run()).toEqual({
      reason: 'memory-fault',
      gpa: TEST_GPA,
      size: 4096n,
      private: true,
      errno: 'EFAULT',
    });
  });
  it('mmioRead retries after a memory-fault exit once the host fixed the attribute', async () => {
    const { vm, vcpu, shared } = setup(false);
    new DataView(shared.buffer).setBigUint64(0, 0x55n, true);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    let got = 0n;
    const v = vcpu(async (g) => {
      got = await g.mmioRead(TEST_GPA, 8);
    });
    expect(await v.run()).toMatchObject({ reason: 'memory-fault', private: true });
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: 0n });
    expect((await v.run()).reason).toBe('hlt');
    expect(got).toBe(0x55n);
  });
  it('closing the guest_memfd takes the private backing away (kvm_gmem_release): private accesses fault', async () => {
    const { kvm, vm, vcpu, gmem } = setup(true);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    const v = vcpu(async (g) => {
      g.writeU64(TEST_GVA, 1n);
      await g.out(0x80, 1, 0);
      g.readU64(TEST_GVA);
    });
    expect((await v.run()).reason).toBe('io');
    expect(simStats(kvm).gmemBytes).toBe(4096);
    kvm.closeFd(gmem!);
    expect(simStats(kvm).gmemFiles).toBe(0);
    expect(await v.run()).toMatchObject({ reason: 'memory-fault', private: true, gpa: TEST_GPA });
  });
});

describe('private_mem_conversions_test', () => {
  it('private writes stay in guest_memfd, invisible to the host; shared accesses use the host memory', async () => {
    const { vm, vcpu, shared } = setup(true);
    vm.enableCap(CAP.EXIT_HYPERCALL, [1 << KVM_HC.MAP_GPA_RANGE]);
    const dv = new DataView(shared.buffer);
    dv.setBigUint64(0, 0xaaaan, true);
    const seen: bigint[] = [];
    const v = vcpu(async (g) => {
      seen.push(g.readU64(TEST_GVA)); // shared: host data
      // Ask the host to make the page private.
      await g.hypercall(BigInt(KVM_HC.MAP_GPA_RANGE), [TEST_GPA, 1n, MAP_GPA_RANGE.ENCRYPTED]);
      seen.push(g.readU64(TEST_GVA)); // private: fresh gmem page
      g.writeU64(TEST_GVA, 0xbbbbn);
      await g.hypercall(BigInt(KVM_HC.MAP_GPA_RANGE), [TEST_GPA, 1n, MAP_GPA_RANGE.DECRYPTED]);
      seen.push(g.readU64(TEST_GVA)); // shared again: the host's bytes
      await g.hypercall(BigInt(KVM_HC.MAP_GPA_RANGE), [TEST_GPA, 1n, MAP_GPA_RANGE.ENCRYPTED]);
      seen.push(g.readU64(TEST_GVA)); // private again: what the guest wrote
    });
    let e: Exit;
    for (;;) {
      e = await v.run();
      if (e.reason !== 'hypercall') break;
      const [gpa, npages, attrs] = e.args as [bigint, bigint, bigint];
      vm.setMemoryAttributes({
        address: gpa,
        size: npages * 4096n,
        attributes: (attrs & MAP_GPA_RANGE.ENCRYPTED) !== 0n ? P : 0n,
      });
      e.ret = 0n;
    }
    expect(e.reason).toBe('hlt');
    expect(seen).toEqual([0xaaaan, 0n, 0xaaaan, 0xbbbbn]);
    expect(dv.getBigUint64(0, true)).toBe(0xaaaan);
  });
});

// virt/kvm/guest_memfd.c: kvm_gmem_fallocate() (after fs/open.c: vfs_fallocate()).
describe('kvm_gmem_fallocate: guest_memfd fallocate and PUNCH_HOLE', () => {
  const KEEP = FALLOC_FL.KEEP_SIZE;
  const PUNCH = FALLOC_FL.KEEP_SIZE | FALLOC_FL.PUNCH_HOLE;

  it('a punched private page reads back as zeroes in the guest; the other pages keep their data', async () => {
    const { vm, kvm, gmem, vcpu } = setup(true);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4n * 4096n, attributes: P });
    const seen: bigint[] = [];
    const v = vcpu(async (g) => {
      g.writeU64(TEST_GVA, 0x1111n);
      g.writeU64(TEST_GVA + 4096n, 0x2222n);
      await g.hlt();
      seen.push(g.readU64(TEST_GVA), g.readU64(TEST_GVA + 4096n));
    });
    expect((await v.run()).reason).toBe('hlt');
    kvm.fallocate(gmem!, PUNCH, 0n, 4096n);
    expect((await v.run()).reason).toBe('hlt');
    expect(seen).toEqual([0n, 0x2222n]);
  });

  it('allocation and punching work after the VM is closed (the file holds its own reference)', () => {
    const { vm, kvm, gmem } = setup(true);
    vm.close();
    expect(kvm.isFdOpen(gmem!)).toBe(true);
    kvm.fallocate(gmem!, KEEP, 0n, 4n * 4096n);
    expect(simStats(kvm).gmemBytes).toBe(4 * 4096);
    kvm.fallocate(gmem!, PUNCH, 4096n, 2n * 4096n);
    expect(simStats(kvm).gmemBytes).toBe(2 * 4096);
    kvm.closeFd(gmem!);
  });

  it('fails as vfs_fallocate and kvm_gmem_fallocate do', () => {
    const { vm, kvm, gmem } = setup(true);
    const fd = gmem!;
    const tryF = (f: number, mode: number, off: bigint, len: bigint) =>
      tryKvm(() => kvm.fallocate(f, mode, off, len));
    expect(tryF(9999, KEEP, 0n, 4096n)).toBe('EBADF');
    expect(tryF(fd, KEEP, -4096n, 4096n)).toBe('EINVAL');
    expect(tryF(fd, KEEP, 0n, 0n)).toBe('EINVAL');
    expect(tryF(fd, 0x100, 0n, 4096n)).toBe('EOPNOTSUPP');
    expect(tryF(fd, FALLOC_FL.PUNCH_HOLE, 0n, 4096n)).toBe('EOPNOTSUPP');
    expect(tryF(vm.fd, KEEP, 0n, 4096n)).toBe('ENODEV');
    expect(tryF(fd, KEEP, 1n << 62n, 1n << 62n)).toBe('EFBIG');
    expect(tryF(fd, 0, 0n, 4096n)).toBe('EOPNOTSUPP');
    expect(tryF(fd, KEEP | FALLOC_FL.ZERO_RANGE, 0n, 4096n)).toBe('EOPNOTSUPP');
    expect(tryF(fd, KEEP, 0n, 100n)).toBe('EINVAL');
    expect(tryF(fd, KEEP, 0n, 5n * 4096n)).toBe('EINVAL');
    // Punching past the end frees what there is and succeeds.
    expect(tryF(fd, PUNCH, 0n, 64n * 4096n)).toBeUndefined();
    expect(tryF(fd, KEEP, 0n, 4n * 4096n)).toBeUndefined();
  });
});
