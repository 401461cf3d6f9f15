// Simulated host shapes (issue 12 items 7 and 11): defaults of a default-config kernel, features
// that can be switched off, named presets, and configurations no host can have.

import { CAP, MEM_FLAG, MEMORY_ATTRIBUTE, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import {
  createSimKvm,
  resolveConfig,
  SIM_HOST_PRESETS,
  simHostMatching,
  simHostPreset,
} from '../src/index.js';

const CAP_X86_SMM = 117;
const CAP_MULTI_ADDRESS_SPACE = 118;
const PAGE = 4096n;

function slot(
  vm: ReturnType<ReturnType<typeof createSimKvm>['createVm']>,
  id: number,
  gpa: bigint,
  asId = 0,
) {
  return tryKvm(() =>
    vm.setUserMemoryRegion({
      slot: (asId << 16) | id,
      flags: 0,
      guestPhysAddr: gpa,
      memorySize: PAGE,
      userspace: new Uint8Array(4096),
    }),
  );
}

describe('defaults follow a default-config kernel (CONFIG_KVM_MAX_NR_VCPUS=1024)', () => {
  it('KVM_CAP_MAX_VCPUS is 1024 and KVM_CAP_MAX_VCPU_ID 4096 (KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO)', () => {
    const kvm = createSimKvm();
    expect(kvm.checkExtension(CAP.MAX_VCPUS)).toBe(1024);
    expect(kvm.checkExtension(CAP.MAX_VCPU_ID)).toBe(4096);
    expect(tryKvm(() => kvm.createVm().createVcpu(4096))).toBe('EINVAL');
  });
  it('a host with CONFIG_KVM_SMM has two address spaces: KVM_CAP_MULTI_ADDRESS_SPACE 2, KVM_CAP_X86_SMM 1', () => {
    const kvm = createSimKvm();
    expect(kvm.checkExtension(CAP_MULTI_ADDRESS_SPACE)).toBe(2);
    expect(kvm.checkExtension(CAP_X86_SMM)).toBe(1);
    const vm = kvm.createVm('default');
    expect(vm.checkExtension(CAP_MULTI_ADDRESS_SPACE)).toBe(2);
    expect(slot(vm, 0, 0n, 1)).toBeUndefined();
  });
});

describe('kvm_arch_nr_memslot_as_ids: SMM is unsupported for VMs with private memory', () => {
  for (const type of ['sw-protected', 'sev-snp', 'tdx'] as const)
    it(`a ${type} VM has one address space: a slot in address space 1 is EINVAL`, () => {
      const vm = createSimKvm().createVm(type);
      expect(vm.checkExtension(CAP_MULTI_ADDRESS_SPACE)).toBe(1);
      expect(slot(vm, 0, 0n, 1)).toBe('EINVAL');
      expect(slot(vm, 0, 0n, 0)).toBeUndefined();
    });
  it('SEV-ES VMs cannot enter SMM: KVM_CAP_X86_SMM is 0 on them (svm_has_emulated_msr(SMBASE))', () => {
    expect(createSimKvm().createVm('sev-es').checkExtension(CAP_X86_SMM)).toBe(0);
    expect(createSimKvm().createVm('sev').checkExtension(CAP_X86_SMM)).toBe(1);
  });
});

describe('host features switched off', () => {
  it('without guest_memfd: KVM_CAP_GUEST_MEMFD 0 and KVM_CREATE_GUEST_MEMFD is ENOTTY', () => {
    const kvm = createSimKvm({ features: { guestMemfd: false, memoryAttributes: false } });
    expect(kvm.checkExtension(CAP.GUEST_MEMFD)).toBe(0);
    expect(tryKvm(() => kvm.createVm().createGuestMemfd(PAGE))).toBe('ENOTTY');
    // The private-memory VM types are not advertised (kvm_arch_init_vm has no way to back them).
    expect(kvm.checkExtension(CAP.VM_TYPES)).toBe(0b1101);
  });
  it('without memory attributes: KVM_CAP_MEMORY_ATTRIBUTES 0 and KVM_SET_MEMORY_ATTRIBUTES is ENOTTY', () => {
    const kvm = createSimKvm({ features: { memoryAttributes: false }, vmTypes: ['default', 'sev'] });
    expect(kvm.checkExtension(CAP.MEMORY_ATTRIBUTES)).toBe(0);
    const vm = kvm.createVm();
    expect(
      tryKvm(() => vm.setMemoryAttributes({ address: 0n, size: PAGE, attributes: MEMORY_ATTRIBUTE.PRIVATE })),
    ).toBe('ENOTTY');
    // guest_memfd alone stays: a default VM still cannot bind one (no private memory).
    expect(kvm.checkExtension(CAP.GUEST_MEMFD)).toBe(1);
  });
  it('without SMM: one address space, KVM_CAP_X86_SMM and KVM_CAP_MULTI_ADDRESS_SPACE 0, address space 1 EINVAL', () => {
    const kvm = createSimKvm({ features: { smm: false } });
    expect(kvm.checkExtension(CAP_X86_SMM)).toBe(0);
    expect(kvm.checkExtension(CAP_MULTI_ADDRESS_SPACE)).toBe(0);
    const vm = kvm.createVm();
    expect(slot(vm, 0, 0n, 1)).toBe('EINVAL');
    expect(slot(vm, 0, 0n, 0)).toBeUndefined();
  });
  it('kvm_mmu_max_gfn: with TDP the memslot limit is MAXPHYADDR, without TDP 52 bits whatever CPUID says', () => {
    const beyond40 = 1n << 45n;
    const tdp = createSimKvm({ cpu: { maxPhysAddr: 40 } }).createVm();
    expect(slot(tdp, 0, beyond40)).toBe('EINVAL');
    expect(slot(tdp, 1, (1n << 40n) - PAGE)).toBeUndefined();
    const shadow = createSimKvm({ cpu: { maxPhysAddr: 40 }, features: { tdp: false } }).createVm();
    expect(slot(shadow, 0, beyond40)).toBeUndefined();
    expect(slot(shadow, 1, (1n << 52n) - PAGE)).toBeUndefined();
    expect(slot(shadow, 2, 1n << 52n)).toBe('EINVAL');
  });
  it('without TDP no SEV, SW_PROTECTED or TDX type is advertised (they need NPT / the TDP MMU / EPT)', () => {
    expect(createSimKvm({ features: { tdp: false } }).checkExtension(CAP.VM_TYPES)).toBe(1);
  });
});

describe('named presets (createSimKvm({ host }))', () => {
  it('pvm answers what the PVM hosts measure: DEFAULT only, no guest_memfd, no SMM, 1024/4096/32764, GenuineIntel', () => {
    const kvm = createSimKvm({ host: 'pvm' });
    expect(kvm.checkExtension(CAP.VM_TYPES)).toBe(1);
    expect(kvm.checkExtension(CAP.GUEST_MEMFD)).toBe(0);
    expect(kvm.checkExtension(CAP.MEMORY_ATTRIBUTES)).toBe(0);
    expect(kvm.checkExtension(CAP_X86_SMM)).toBe(0);
    expect(kvm.checkExtension(CAP.MAX_VCPUS)).toBe(1024);
    expect(kvm.checkExtension(CAP.MAX_VCPU_ID)).toBe(4096);
    expect(kvm.checkExtension(CAP.NR_MEMSLOTS)).toBe(32764);
    const leaf0 = kvm.getSupportedCpuid().find((e) => e.function === 0)!;
    expect(Buffer.from(new Uint32Array([leaf0.ebx, leaf0.edx, leaf0.ecx]).buffer).toString()).toBe(
      'GenuineIntel',
    );
    expect(tryKvm(() => kvm.createVm('sev'))).toBe('EINVAL');
    expect(() => kvm.openSevDevice()).toThrow(/no SEV/);
  });
  it('mainline-amd has DEFAULT, SEV, SEV-ES and SNP; mainline-intel DEFAULT and TDX (no SW_PROTECTED: EXPERT-only)', () => {
    expect(createSimKvm({ host: 'mainline-amd' }).checkExtension(CAP.VM_TYPES)).toBe(0b1_1101);
    expect(createSimKvm({ host: 'mainline-intel' }).checkExtension(CAP.VM_TYPES)).toBe(0b10_0001);
  });
  it('fields given beside a preset override it', () => {
    const kvm = createSimKvm({ host: 'pvm', maxVcpus: 8, maxVcpuId: 32 });
    expect(kvm.checkExtension(CAP.MAX_VCPUS)).toBe(8);
    expect(resolveConfig({ host: 'pvm' }).host).toBe('pvm');
  });
  it('every preset resolves, and simHostPreset hands out copies', () => {
    for (const p of SIM_HOST_PRESETS) expect(resolveConfig({ host: p }).host).toBe(p);
    const a = simHostPreset('pvm');
    (a.vmTypes as string[]).push('tdx');
    expect(simHostPreset('pvm').vmTypes).toEqual(['default']);
  });
});

describe('invalid configurations are rejected at creation, naming the rule', () => {
  it.each([
    [{ host: 'nosuch' }, /unknown simulated host "nosuch" \(presets: mainline-amd, mainline-intel, pvm\)/],
    [{ cpu: { minSevAsid: 600, maxSevAsid: 509 } }, /minSevAsid 600 is above cpu.maxSevAsid 509/],
    [{ features: { guestMemfd: false } }, /memoryAttributes needs guestMemfd/],
    [
      { features: { tdp: false }, vmTypes: ['default', 'sev'] },
      /sev VMs cannot exist on a host without two-dimensional paging/,
    ],
    [
      { features: { guestMemfd: false, memoryAttributes: false }, vmTypes: ['default', 'tdx'] },
      /tdx VMs cannot exist on a host without guest_memfd/,
    ],
    [
      { host: 'pvm', vmTypes: ['default', 'sw-protected'] },
      /sw-protected VMs cannot exist on a host without guest_memfd/,
    ],
    [{ vmTypes: ['sev'] }, /must include default/],
    [{ maxVcpus: 64, maxVcpuId: 32 }, /maxVcpuId 32 is below maxVcpus 64/],
    [{ features: { smm: 'yes' } }, /features.smm must be a boolean/],
    [{ host: 'mainline-intel', vmTypes: ['default', 'sev'] }, /sev needs a amd host, not intel/],
  ])('%j', (config, message) => {
    expect(() => createSimKvm(config as never)).toThrow(message);
  });
});

describe('simHostMatching: a simulated host answering like a given Kvm', () => {
  it('finds the preset of a host built from it, with nothing to note', () => {
    for (const host of ['mainline-amd', 'mainline-intel'] as const) {
      const m = simHostMatching(createSimKvm({ host }));
      expect(m.preset).toBe(host);
      expect(m.notes).toEqual([]);
    }
    const pvm = simHostMatching(createSimKvm({ host: 'pvm' }), { pvm: true });
    expect(pvm.preset).toBe('pvm');
    expect(pvm.notes).toEqual([]);
  });
  it('carries the measured limits and notes where the host departs from the preset', () => {
    const real = createSimKvm({
      host: 'mainline-amd',
      maxVcpus: 288,
      maxVcpuId: 1152,
      cpu: { maxPhysAddr: 48 },
    });
    const m = simHostMatching(real);
    expect(m.notes).toEqual(['maxPhysAddr 48', 'maxVcpus 288', 'maxVcpuId 1152']);
    expect(m.config.cpu).toEqual({ maxPhysAddr: 48 });
    const sim = createSimKvm(m.config);
    for (const cap of [
      CAP.MAX_VCPUS,
      CAP.MAX_VCPU_ID,
      CAP.VM_TYPES,
      CAP.GUEST_MEMFD,
      CAP_X86_SMM,
      CAP.NR_MEMSLOTS,
    ])
      expect(sim.checkExtension(cap)).toBe(real.checkExtension(cap));
  });
  it('a host without guest_memfd read without the PVM hint still gets a valid config', () => {
    const m = simHostMatching(createSimKvm({ host: 'pvm' }));
    expect(m.preset).toBe('mainline-intel');
    expect(() => createSimKvm(m.config)).not.toThrow();
    expect(createSimKvm(m.config).checkExtension(CAP.GUEST_MEMFD)).toBe(0);
  });
});

it('MEM_FLAG.GUEST_MEMFD stays invalid on a default VM whatever the features (check_memory_region_flags)', () => {
  const vm = createSimKvm().createVm();
  expect(
    tryKvm(() =>
      vm.setUserMemoryRegion({
        slot: 0,
        flags: MEM_FLAG.GUEST_MEMFD,
        guestPhysAddr: 0n,
        memorySize: PAGE,
        userspace: new Uint8Array(4096),
      }),
    ),
  ).toBe('EINVAL');
});
