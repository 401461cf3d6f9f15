import { SEV_CMD, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { FakeHost, launchedVm, ptr } from './fakes.test-support.js';

describe('KVM_MEMORY_ENCRYPT_REG_REGION / UNREG_REGION (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region(), sev_mem_enc_unregister_region())', () => {
  it('a region that cannot be copied → EFAULT before any SEV check (arch/x86/kvm/x86.c: kvm_arch_vm_ioctl())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    expect(tryKvm(() => h.platform.registerRegion(vm, undefined))).toBe('EFAULT');
    expect(tryKvm(() => h.platform.registerRegion(vm, { addr: ptr(new Uint8Array(8)), size: 8 }))).toBe(
      'EFAULT',
    );
    expect(tryKvm(() => h.platform.unregisterRegion(vm, { addr: 5, size: 8n }))).toBe('EFAULT');
  });

  it('REG_REGION: not an SEV guest → ENOTTY (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region())', () => {
    const h = new FakeHost();
    expect(
      tryKvm(() => h.platform.registerRegion(h.createVm(), { addr: ptr(new Uint8Array(8)), size: 8n })),
    ).toBe('ENOTTY');
  });

  it('REG_REGION on a mirror → EINVAL (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region())', () => {
    const h = new FakeHost();
    const owner = launchedVm(h, false);
    const m = h.createVm();
    m.copy(owner);
    expect(tryKvm(() => h.platform.registerRegion(m, { addr: ptr(new Uint8Array(8)), size: 8n }))).toBe(
      'EINVAL',
    );
  });

  it('REG_REGION: size above ULONG_MAX → EINVAL (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false);
    expect(
      tryKvm(() => h.platform.registerRegion(vm, { addr: ptr(new Uint8Array(8)), size: 1n << 64n })),
    ).toBe('EINVAL');
  });

  it('REG_REGION pinning: size 0 or a range that wraps → EINVAL; over the memlock limit or unmapped → ENOMEM (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region())', () => {
    const h = new FakeHost({ memlockLimitPages: 3 });
    const vm = launchedVm(h, false, { memSize: 4096 });
    const mem = new Uint8Array(4 * 4096);
    expect(tryKvm(() => h.platform.registerRegion(vm, { addr: ptr(mem), size: 0n }))).toBe('EINVAL');
    expect(tryKvm(() => h.platform.registerRegion(vm, { addr: ptr(mem), size: (1n << 64n) - 1n }))).toBe(
      'EINVAL',
    );
    expect(tryKvm(() => h.platform.registerRegion(vm, { addr: ptr(mem), size: 4n * 4096n }))).toBe('ENOMEM');
    expect(tryKvm(() => h.platform.registerRegion(vm, { addr: ptr(new Uint8Array(8)), size: 16n }))).toBe(
      'ENOMEM',
    );
    expect(vm.sev.regions).toHaveLength(0);
    expect(vm.sev.pagesLocked).toBe(0);
  });

  it('registered regions pin pages; UNREG needs the exact (addr, size) (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region(), sev_mem_enc_unregister_region())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false);
    const mem = new Uint8Array(3 * 4096);
    h.platform.registerRegion(vm, { addr: ptr(mem, 100), size: 8192n });
    expect(vm.sev.pagesLocked).toBe(3);
    expect(tryKvm(() => h.platform.unregisterRegion(vm, { addr: ptr(mem, 100), size: 4096n }))).toBe(
      'EINVAL',
    );
    expect(tryKvm(() => h.platform.unregisterRegion(vm, { addr: ptr(mem, 0), size: 8192n }))).toBe('EINVAL');
    h.platform.unregisterRegion(vm, { addr: ptr(mem, 100), size: 8192n });
    expect(vm.sev.pagesLocked).toBe(0);
    expect(vm.sev.regions).toHaveLength(0);
  });

  it('UNREG_REGION: the mirror check comes first (EINVAL), then not-SEV → ENOTTY (arch/x86/kvm/svm/sev.c: sev_mem_enc_unregister_region())', () => {
    const h = new FakeHost();
    const owner = launchedVm(h, false);
    const m = h.createVm();
    m.copy(owner);
    expect(tryKvm(() => h.platform.unregisterRegion(m, { addr: ptr(new Uint8Array(8)), size: 8n }))).toBe(
      'EINVAL',
    );
    expect(
      tryKvm(() => h.platform.unregisterRegion(h.createVm(), { addr: ptr(new Uint8Array(8)), size: 8n })),
    ).toBe('ENOTTY');
  });

  it('regions still registered are unpinned when the VM is destroyed (arch/x86/kvm/svm/sev.c: sev_vm_destroy())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false);
    h.platform.registerRegion(vm, { addr: ptr(new Uint8Array(4096)), size: 4096n });
    vm.close();
    expect(vm.sev.regions).toHaveLength(0);
    expect(vm.sev.pagesLocked).toBe(0);
  });

  it('pinned regions count against the memlock limit of later LAUNCH_UPDATE_DATA (arch/x86/kvm/svm/sev.c: sev_launch_update_data(), sev_pin_memory())', () => {
    const h = new FakeHost({ memlockLimitPages: 2 });
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
    h.platform.registerRegion(vm, { addr: ptr(new Uint8Array(4096)), size: 4096n });
    expect(
      tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(new Uint8Array(8192)), len: 8192 })),
    ).toBe('ENOMEM');
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(new Uint8Array(4096)), len: 4096 });
  });
});
