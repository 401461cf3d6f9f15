// Binary statistics (virt/kvm/binary_stats.c: kvm_stats_read(); virt/kvm/kvm_main.c:
// kvm_vm_ioctl_get_stats_fd(), kvm_vcpu_ioctl_get_stats_fd()), checked the way upstream's
// kvm_binary_stats_test checks them, plus the exit counters.
import { CAP, FALLOC_FL, KVM_STATS, readBinaryStats, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../src/index.js';
import { guestVm } from './helpers.js';

describe('KVM_CAP_BINARY_STATS_FD', () => {
  it('answers 1; VM and vCPU stats files have a valid header, unique well-formed descriptors and data', () => {
    const kvm = createSimKvm();
    expect(kvm.checkExtension(CAP.BINARY_STATS_FD)).toBe(1);
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(3);
    for (const [fd, idRe] of [
      [vm.getStatsFd(), /^kvm-\d+$/],
      [vcpu.getStatsFd(), /^kvm-\d+\/vcpu-3$/],
    ] as const) {
      const s = readBinaryStats(kvm, fd);
      const h = s.header;
      expect(h.flags).toBe(0);
      expect(h.nameSize).toBe(48);
      expect(s.id).toMatch(idRe);
      // The id, the descriptors and the data follow each other without overlap.
      expect(h.idOffset).toBe(24);
      expect(h.descOffset).toBeGreaterThanOrEqual(h.idOffset + h.nameSize);
      expect(h.dataOffset).toBeGreaterThanOrEqual(h.descOffset + h.numDesc * (16 + h.nameSize));
      expect(new Set(s.stats.map((e) => e.name)).size).toBe(h.numDesc);
      let end = 0;
      for (const e of s.stats) {
        expect(e.name.length, e.name).toBeGreaterThan(0);
        expect(e.flags & KVM_STATS.TYPE_MASK, e.name).toBeLessThanOrEqual(KVM_STATS.TYPE_LOG_HIST);
        expect(e.flags & KVM_STATS.UNIT_MASK, e.name).toBeLessThanOrEqual(KVM_STATS.UNIT_BOOLEAN);
        expect(e.size, e.name).toBeGreaterThan(0);
        expect(e.offset % 8).toBe(0);
        expect(e.values).toHaveLength(e.size);
        if ((e.flags & KVM_STATS.TYPE_MASK) === KVM_STATS.TYPE_LINEAR_HIST)
          expect(e.bucketSize).toBeGreaterThan(0);
        else expect(e.bucketSize).toBe(0);
        end = Math.max(end, e.offset + e.size * 8);
      }
      // Reading past the end returns nothing; a short read returns what is there.
      expect(kvm.pread(fd, 64, h.dataOffset + end).length).toBe(0);
      expect(kvm.pread(fd, 10, 0).length).toBe(10);
      kvm.closeFd(fd);
    }
  });

  it('counts exits as they reach the host: exits, io_exits, mmio_exits, halt_exits', async () => {
    const kvm = createSimKvm();
    const { vcpu } = guestVm(kvm);
    const v = vcpu(async (g) => {
      await g.out(0x80, 1, 1);
      await g.out(0x80, 1, 2);
      await g.mmioWrite(0xfee0_0000n, 4, 1n);
    });
    const fd = v.getStatsFd();
    const value = (name: string) => readBinaryStats(kvm, fd).stats.find((e) => e.name === name)!.values[0];
    expect(value('exits')).toBe(0n);
    while ((await v.run()).reason !== 'hlt') {}
    expect([value('exits'), value('io_exits'), value('mmio_exits'), value('halt_exits')]).toEqual([
      4n,
      2n,
      1n,
      1n,
    ]);
    kvm.closeFd(fd);
  });

  it('a stats fd keeps the VM alive after close; other descriptors cannot be read', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    const fd = vm.getStatsFd();
    vm.close();
    expect(simStats(kvm).liveVms).toBe(1);
    expect(readBinaryStats(kvm, fd).stats.length).toBeGreaterThan(0);
    expect(tryKvm(() => kvm.pread(fd, 8, -1))).toBe('EINVAL');
    kvm.closeFd(fd);
    expect(simStats(kvm).liveVms).toBe(0);
    const vm2 = kvm.createVm();
    // ksys_pread64(): VM files lack FMODE_PREAD (ESPIPE, as the real kernel answers); a negative
    // offset is EINVAL before the descriptor is looked up.
    expect(tryKvm(() => kvm.pread(vm2.fd, 8, 0))).toBe('ESPIPE');
    expect(tryKvm(() => kvm.pread(9999, 8, 0))).toBe('EBADF');
    expect(tryKvm(() => kvm.pread(9999, 8, -1))).toBe('EINVAL');
    // vfs_fallocate(): the stats file is read-only, EBADF before the not-a-file ENODEV.
    const sfd = vm2.getStatsFd();
    expect(tryKvm(() => kvm.fallocate(sfd, FALLOC_FL.KEEP_SIZE, 0n, 4096n))).toBe('EBADF');
    expect(tryKvm(() => kvm.fallocate(vm2.fd, FALLOC_FL.KEEP_SIZE, 0n, 4096n))).toBe('ENODEV');
    kvm.closeFd(sfd);
    vm2.close();
    expect(tryKvm(() => vm2.getStatsFd())).toBe('EBADF');
  });
});
