// Host-side TD rules (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl(), tdx_vcpu_ioctl() and the commands; arch/x86/kvm/vmx/main.c: vt_x86_ops; arch/x86/kvm/x86.c: kvm_arch_vm_ioctl()) through the simulator's Kvm/Vm/Vcpu API.

import { TdxMrtd, VM_TYPE_NUMBER } from '@kvmtest/coco';
import {
  CAP,
  type CpuidEntry,
  type Errno,
  MEMORY_ATTRIBUTE,
  TDX_CMD,
  TDX_MEASURE_MEMORY_REGION,
  type TdxInitMemRegionData,
  type TdxInitVmData,
  tryKvm,
  type Vm,
  zeroRegs,
} from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../../index.js';
import type { TdxGetCpuidData } from './commands.js';
import {
  TD_ATTR,
  TDX_CPUID_CONFIG,
  TDX_GUEST_KEYIDS,
  TDX_SUPPORTED_ATTRS,
  TDX_SUPPORTED_XFAM,
} from './constants.js';
import {
  addPrivateSlot,
  capabilities,
  createTdVm,
  finalize,
  gpawCpuid,
  initMemRegion,
  initVcpu,
  initVm,
  launchTd,
  tdVcpuAdd,
  tdxCmd,
} from './harness.test-support.js';
import { tdxReport, tdxVcpuReport } from './report.js';

const P = MEMORY_ATTRIBUTE.PRIVATE;

function td(gpaw = 48) {
  const kvm = createSimKvm();
  const vm = createTdVm(kvm);
  vm.enableCap(CAP.SPLIT_IRQCHIP, [24]);
  initVm(vm, gpaw);
  return { kvm, vm };
}

/** A TD with one initialized vCPU and a PRIVATE guest_memfd slot of `pages` pages at GPA 0. */
function tdWithSlot(pages = 4) {
  const { kvm, vm } = td();
  const vcpu = tdVcpuAdd(vm, 0);
  initVcpu(vcpu);
  const shared = new Uint8Array(pages * 4096);
  addPrivateSlot(vm, 0, 0n, shared);
  vm.setMemoryAttributes({ address: 0n, size: BigInt(shared.length), attributes: P });
  return { kvm, vm, vcpu, shared };
}

function image(pages: number, seed = 1): Uint8Array {
  const b = new Uint8Array(pages * 4096);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

const initVmData = (over: Partial<TdxInitVmData> & Record<string, unknown> = {}) =>
  ({ attributes: 0n, xfam: 0n, cpuid: gpawCpuid(48), ...over }) as TdxInitVmData;
const tryVmOp = (vm: Vm, id: number, data?: unknown, flags = 0): Errno | undefined =>
  tryKvm(() => vm.memEncryptOp(tdxCmd(id, data, flags)));

describe('KVM_MEMORY_ENCRYPT_OP on the VM fd (tdx_vm_ioctl, arch/x86/kvm/vmx/tdx.c)', () => {
  it('a VM that is not a TD answers ENOTTY on an Intel host (arch/x86/kvm/vmx/main.c: vt_mem_enc_ioctl())', () => {
    const vm = createSimKvm({ vendor: 'intel' }).createVm('default');
    expect(tryVmOp(vm, TDX_CMD.CAPABILITIES, {})).toBe('ENOTTY');
  });

  it('a NULL command is EFAULT (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl(), copy_from_user of kvm_tdx_cmd)', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryKvm(() => vm.memEncryptOp(undefined))).toBe('EFAULT');
  });

  it('hw_error set on input is EINVAL, before the id is looked at (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl())', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryKvm(() => vm.memEncryptOp({ id: 99, flags: 0, hwError: 1n }))).toBe('EINVAL');
  });

  it('an unknown id and a vCPU-scoped id are EINVAL on the VM fd (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl())', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, 99)).toBe('EINVAL');
    for (const id of [TDX_CMD.INIT_VCPU, TDX_CMD.INIT_MEM_REGION, TDX_CMD.GET_CPUID])
      expect(tryVmOp(vm, id)).toBe('EINVAL');
  });

  it('hw_error is written back (0) after a VM-scope command (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl())', () => {
    const vm = createTdVm(createSimKvm());
    const cmd = { id: TDX_CMD.CAPABILITIES, flags: 0, data: { nent: 64 }, hwError: 0n };
    vm.memEncryptOp(cmd);
    expect(cmd.hwError).toBe(0n);
  });
});

describe('KVM_TDX_CAPABILITIES (tdx_get_capabilities, arch/x86/kvm/vmx/tdx.c)', () => {
  it('flags other than 0 are EINVAL', () => {
    expect(tryVmOp(createTdVm(createSimKvm()), TDX_CMD.CAPABILITIES, { nent: 64 }, 1)).toBe('EINVAL');
  });

  it('a NULL or malformed struct is EFAULT (copy_from_user)', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.CAPABILITIES, undefined)).toBe('EFAULT');
    expect(tryVmOp(vm, TDX_CMD.CAPABILITIES, { nent: -1 })).toBe('EFAULT');
  });

  it('cpuid.nent below the number of configurable leaves is E2BIG, and nothing is written', () => {
    const data = { supportedAttrs: 0n, supportedXfam: 0n, nent: TDX_CPUID_CONFIG.length - 1, cpuid: [] };
    expect(tryVmOp(createTdVm(createSimKvm()), TDX_CMD.CAPABILITIES, data)).toBe('E2BIG');
    expect(data.supportedAttrs).toBe(0n);
  });

  it('returns the supported attributes, XFAM and configurable CPUID with GPAW bits 0x80000008 EAX[23:16] all set', () => {
    const caps = capabilities(createTdVm(createSimKvm()));
    expect(caps.supportedAttrs).toBe(TDX_SUPPORTED_ATTRS);
    expect(caps.supportedXfam).toBe(TDX_SUPPORTED_XFAM);
    expect(caps.nent).toBe(TDX_CPUID_CONFIG.length);
    const pa = caps.cpuid.find((e) => e.function === 0x8000_0008)!;
    expect((pa.eax >>> 16) & 0xff).toBe(0xff);
    // td_init_cpuid_entry2 clears TSX and WAITPKG from what it reports.
    const l7 = caps.cpuid.find((e) => e.function === 7 && e.index === 0)!;
    expect(l7.ebx & ((1 << 4) | (1 << 11))).toBe(0);
  });
});

describe('KVM_TDX_INIT_VM (tdx_td_init / setup_tdparams, arch/x86/kvm/vmx/tdx.c)', () => {
  it('a second INIT_VM is EINVAL (state is no longer UNINITIALIZED)', () => {
    const { vm } = td();
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData())).toBe('EINVAL');
  });

  it('flags other than 0 are EINVAL, checked before the struct is copied', () => {
    expect(tryVmOp(createTdVm(createSimKvm()), TDX_CMD.INIT_VM, undefined, 1)).toBe('EINVAL');
  });

  it('a NULL struct or a malformed field or CPUID entry is EFAULT', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, undefined)).toBe('EFAULT');
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ attributes: 1 as unknown as bigint }))).toBe('EFAULT');
    const bad = [...gpawCpuid(48), { function: 1 } as CpuidEntry];
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: bad }))).toBe('EFAULT');
  });

  it('more than KVM_MAX_CPUID_ENTRIES (256) entries is E2BIG', () => {
    const many = Array.from({ length: 257 }, () => gpawCpuid(48)[0]!);
    expect(tryVmOp(createTdVm(createSimKvm()), TDX_CMD.INIT_VM, initVmData({ cpuid: many }))).toBe('E2BIG');
  });

  it('non-zero reserved bytes or cpuid padding are EINVAL', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ reserved: new Uint8Array([0, 1]) }))).toBe('EINVAL');
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuidPadding: 1 }))).toBe('EINVAL');
  });

  it('attributes or XFAM outside what KVM supports are EINVAL (DEBUG TDs do not exist)', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ attributes: TD_ATTR.DEBUG }))).toBe('EINVAL');
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ xfam: 1n << 40n }))).toBe('EINVAL');
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ attributes: TD_ATTR.SEPT_VE_DISABLE }))).toBeUndefined();
    expect(tdxReport(vm)?.attributes).toBe(TD_ATTR.SEPT_VE_DISABLE);
  });

  it('GPAW from CPUID 0x80000008 EAX[23:16] must be present and 48 or 52 (setup_tdparams_eptp_controls)', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: [] }))).toBe('EINVAL');
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: gpawCpuid(50) }))).toBe('EINVAL');
    const host48 = createTdVm(createSimKvm({ cpu: { tdxMaxGpaw: 48 } }));
    expect(tryVmOp(host48, TDX_CMD.INIT_VM, initVmData({ cpuid: gpawCpuid(52) }))).toBe('EINVAL');
  });

  it('TSX or WAITPKG in CPUID.7.0, or a leaf the module cannot configure, is EINVAL (setup_tdparams_cpuids)', () => {
    const vm = createTdVm(createSimKvm());
    const leaf = (fn: number, e: Partial<CpuidEntry>): CpuidEntry => ({
      function: fn,
      index: 0,
      flags: 1,
      eax: 0,
      ebx: 0,
      ecx: 0,
      edx: 0,
      ...e,
    });
    expect(
      tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: [...gpawCpuid(48), leaf(7, { ebx: 1 << 11 })] })),
    ).toBe('EINVAL');
    expect(
      tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: [...gpawCpuid(48), leaf(7, { ecx: 1 << 5 })] })),
    ).toBe('EINVAL');
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: [...gpawCpuid(48), leaf(2, {})] }))).toBe(
      'EINVAL',
    );
    expect(
      tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: [...gpawCpuid(48), leaf(7, { ebx: 1 })] })),
    ).toBeUndefined();
  });

  it('a rejected INIT_VM changes nothing: the TD stays UNINITIALIZED and a correct retry succeeds', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.INIT_VM, initVmData({ cpuid: gpawCpuid(50) }))).toBe('EINVAL');
    expect(tdxReport(vm)).toMatchObject({ state: 'uninitialized', hkid: -1, gpaw: undefined });
    initVm(vm, 52);
    expect(tdxReport(vm)).toMatchObject({ state: 'initialized', gpaw: 52, sharedBit: 51 });
    expect(tdxReport(vm)!.hkid).toBeGreaterThan(0);
  });

  it('GPAW 48 puts the shared bit at 47, GPAW 52 at 51 (kvm->arch.gfn_direct_bits)', () => {
    expect(tdxReport(td(48).vm)?.sharedBit).toBe(47);
    expect(tdxReport(td(52).vm)?.sharedBit).toBe(51);
  });

  it('KeyIDs are finite: INIT_VM beyond the pool is ENOSPC, and closing a TD frees its KeyID (tdx_guest_keyid_alloc)', () => {
    const kvm = createSimKvm();
    const vms = Array.from({ length: TDX_GUEST_KEYIDS }, () => {
      const vm = createTdVm(kvm);
      initVm(vm);
      return vm;
    });
    const extra = createTdVm(kvm);
    expect(tryVmOp(extra, TDX_CMD.INIT_VM, initVmData())).toBe('ENOSPC');
    expect(tdxReport(extra)?.state).toBe('uninitialized');
    vms[3]!.close();
    expect(tryVmOp(extra, TDX_CMD.INIT_VM, initVmData())).toBeUndefined();
  });
});

describe('KVM_CREATE_VCPU on a TD (tdx_vcpu_create, arch/x86/kvm/vmx/tdx.c)', () => {
  it('before INIT_VM is EIO', () => {
    const vm = createTdVm(createSimKvm());
    vm.enableCap(CAP.SPLIT_IRQCHIP, [24]);
    expect(tryKvm(() => vm.createVcpu(0))).toBe('EIO');
  });

  it('without KVM_CAP_SPLIT_IRQCHIP is EINVAL', () => {
    const vm = createTdVm(createSimKvm());
    initVm(vm);
    expect(tryKvm(() => vm.createVcpu(0))).toBe('EINVAL');
    expect(vm.vcpus.length).toBe(0);
  });

  it('after FINALIZE is EIO (the TD is no longer INITIALIZED)', () => {
    const { vm } = launchTd(createSimKvm(), image(1));
    expect(tryKvm(() => vm.createVcpu(1))).toBe('EIO');
  });

  it('a TD has at most min(KVM_MAX_VCPUS, online CPUs) vCPUs, which KVM_CAP_MAX_VCPUS reports (tdx_vm_init)', () => {
    const kvm = createSimKvm({ onlineCpus: 2 });
    const vm = createTdVm(kvm);
    expect(vm.checkExtension(CAP.MAX_VCPUS)).toBe(2);
    vm.enableCap(CAP.SPLIT_IRQCHIP, [24]);
    initVm(vm);
    vm.createVcpu(0);
    vm.createVcpu(1);
    expect(tryKvm(() => vm.createVcpu(2))).toBe('EINVAL');
  });
});

describe('KVM_MEMORY_ENCRYPT_OP on the vCPU fd (tdx_vcpu_ioctl, arch/x86/kvm/vmx/tdx.c)', () => {
  it('a vCPU that is not a TD vCPU is EINVAL on an Intel host and ENOTTY on an AMD host (arch/x86/kvm/vmx/main.c: vt_vcpu_mem_enc_ioctl(); arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl())', () => {
    const intel = createSimKvm({ vendor: 'intel' }).createVm('default').createVcpu(0);
    expect(tryKvm(() => intel.memEncryptOp(tdxCmd(TDX_CMD.INIT_VCPU)))).toBe('EINVAL');
    const amd = createSimKvm({ vendor: 'amd' }).createVm('default').createVcpu(0);
    expect(tryKvm(() => amd.memEncryptOp(tdxCmd(TDX_CMD.INIT_VCPU)))).toBe('ENOTTY');
  });

  it('once the TD is RUNNABLE every vCPU command is EINVAL, even a NULL one (checked before the copy)', () => {
    const { vcpu } = launchTd(createSimKvm(), image(1));
    expect(tryKvm(() => vcpu.memEncryptOp(undefined))).toBe('EINVAL');
    expect(tryKvm(() => vcpu.memEncryptOp(tdxCmd(TDX_CMD.GET_CPUID, { nent: 256 })))).toBe('EINVAL');
  });

  it('a NULL command is EFAULT, hw_error set is EINVAL, an unknown or VM-scoped id is EINVAL', () => {
    const { vm } = td();
    const vcpu = vm.createVcpu(0);
    expect(tryKvm(() => vcpu.memEncryptOp(undefined))).toBe('EFAULT');
    expect(tryKvm(() => vcpu.memEncryptOp({ id: TDX_CMD.INIT_VCPU, flags: 0, hwError: 5n }))).toBe('EINVAL');
    expect(tryKvm(() => vcpu.memEncryptOp(tdxCmd(42)))).toBe('EINVAL');
    expect(tryKvm(() => vcpu.memEncryptOp(tdxCmd(TDX_CMD.CAPABILITIES, { nent: 64 })))).toBe('EINVAL');
    expect(tdxVcpuReport(vcpu)?.initialized).toBe(false);
  });
});

describe('KVM_TDX_INIT_VCPU (tdx_vcpu_init, arch/x86/kvm/vmx/tdx.c)', () => {
  it('flags other than 0 are EINVAL; a second INIT_VCPU is EINVAL', () => {
    const { vm } = td();
    const vcpu = tdVcpuAdd(vm, 0);
    expect(tryKvm(() => vcpu.memEncryptOp(tdxCmd(TDX_CMD.INIT_VCPU, 0n, 1)))).toBe('EINVAL');
    initVcpu(vcpu);
    expect(tryKvm(() => initVcpu(vcpu))).toBe('EINVAL');
  });

  // tdx_vcpu_init() -> kvm_apic_set_base(X2APIC_ENABLE): reserved unless the vCPU's CPUID has x2APIC.
  it('a vCPU whose CPUID lacks x2APIC (a new vCPU has none) is EINVAL and stays uninitialized; with it, INIT_VCPU succeeds', () => {
    const { vm } = td();
    const vcpu = vm.createVcpu(0);
    expect(vcpu.getCpuid()).toEqual([]);
    expect(tryKvm(() => initVcpu(vcpu))).toBe('EINVAL');
    const data: TdxGetCpuidData = { nent: 256, cpuid: [] };
    vcpu.memEncryptOp(tdxCmd(TDX_CMD.GET_CPUID, data));
    const leaf1 = data.cpuid.find((e) => e.function === 1)!;
    expect(leaf1.ecx & (1 << 21)).toBe(1 << 21);
    vcpu.setCpuid(data.cpuid.map((e) => (e.function === 1 ? { ...e, ecx: (e.ecx & ~(1 << 21)) >>> 0 } : e)));
    expect(tryKvm(() => initVcpu(vcpu))).toBe('EINVAL');
    vcpu.setCpuid(data.cpuid);
    expect(tryKvm(() => initVcpu(vcpu))).toBeUndefined();
  });

  it('data becomes the initial RCX, vCPUs are numbered in INIT order, and the APIC is in x2APIC mode', () => {
    const { vm } = td();
    const a = tdVcpuAdd(vm, 3);
    const b = tdVcpuAdd(vm, 0);
    initVcpu(b, 0x1234n);
    initVcpu(a, 7n);
    expect(tdxVcpuReport(b)).toEqual({ initialized: true, index: 0, initialRcx: 0x1234n });
    expect(tdxVcpuReport(a)).toEqual({ initialized: true, index: 1, initialRcx: 7n });
    expect(b.getMsr(0x1b) & (1n << 10n)).toBe(1n << 10n);
    expect(b.getMsr(0x1b) & (1n << 8n)).toBe(1n << 8n);
  });
});

describe('KVM_TDX_INIT_MEM_REGION (tdx_vcpu_init_mem_region + kvm_gmem_populate, arch/x86/kvm/vmx/tdx.c)', () => {
  const region = (gpa: bigint, nrPages: bigint, src = image(4), offset = 0): TdxInitMemRegionData => ({
    source: { buffer: src, offset },
    gpa,
    nrPages,
  });
  const tryRegion = (
    vcpu: { memEncryptOp: Vm['memEncryptOp'] },
    data: unknown,
    flags = TDX_MEASURE_MEMORY_REGION,
  ) => tryKvm(() => vcpu.memEncryptOp(tdxCmd(TDX_CMD.INIT_MEM_REGION, data, flags)));

  it('on a vCPU that is not initialized is EINVAL', () => {
    const { vm } = td();
    const vcpu = vm.createVcpu(0);
    expect(tryRegion(vcpu, region(0n, 1n))).toBe('EINVAL');
  });

  it('flags other than KVM_TDX_MEASURE_MEMORY_REGION are EINVAL; a NULL struct is EFAULT', () => {
    const { vcpu } = tdWithSlot();
    expect(tryRegion(vcpu, region(0n, 1n), 2)).toBe('EINVAL');
    expect(tryRegion(vcpu, undefined)).toBe('EFAULT');
  });

  it('unaligned source or GPA, zero pages, a wrapping range or a shared GPA is EINVAL', () => {
    const { vcpu } = tdWithSlot();
    expect(tryRegion(vcpu, region(0n, 1n, image(4), 8))).toBe('EINVAL');
    expect(tryRegion(vcpu, region(0x800n, 1n))).toBe('EINVAL');
    expect(tryRegion(vcpu, region(0n, 0n))).toBe('EINVAL');
    expect(tryRegion(vcpu, region((1n << 64n) - 4096n, 2n))).toBe('EINVAL');
    expect(tryRegion(vcpu, region(1n << 47n, 1n))).toBe('EINVAL');
  });

  it('a GPA outside any guest_memfd slot, or without the PRIVATE attribute, is EINVAL', () => {
    const { vm, vcpu } = tdWithSlot();
    expect(tryRegion(vcpu, region(0x10_0000n, 1n))).toBe('EINVAL');
    vm.setMemoryAttributes({ address: 0n, size: 4096n, attributes: 0n });
    expect(tryRegion(vcpu, region(0n, 1n))).toBe('EINVAL');
  });

  it('populating a page twice is EEXIST (the guest_memfd folio is already prepared)', () => {
    const { vcpu } = tdWithSlot();
    initMemRegion(vcpu, 0n, image(1));
    expect(tryRegion(vcpu, region(0n, 1n))).toBe('EEXIST');
  });

  it('a NULL source is EFAULT (get_user_pages_fast of address 0)', () => {
    const { vcpu } = tdWithSlot();
    expect(tryRegion(vcpu, { source: undefined, gpa: 0n, nrPages: 1n })).toBe('EFAULT');
  });

  it('writes its progress back; a failure after some pages keeps them added and reports where it stopped', () => {
    const { vm, vcpu } = tdWithSlot();
    const src = image(3);
    const data = region(0n, 3n, src);
    vcpu.memEncryptOp(tdxCmd(TDX_CMD.INIT_MEM_REGION, data, TDX_MEASURE_MEMORY_REGION));
    expect(data).toMatchObject({ gpa: 0x3000n, nrPages: 0n, source: { buffer: src, offset: 0x3000 } });
    // Page 3 is fine, page 4 lies outside the 4-page slot: one page is added, then EINVAL.
    const more = region(0x3000n, 2n, image(2));
    expect(tryRegion(vcpu, more)).toBe('EINVAL');
    expect(more).toMatchObject({ gpa: 0x4000n, nrPages: 1n, source: { offset: 0x1000 } });
    expect(tdxReport(vm)?.pagesAdded).toBe(4);
  });

  it("copies the source into guest_memfd: the slot's userspace memory does not show it", () => {
    const { vm, vcpu, shared } = tdWithSlot();
    initMemRegion(vcpu, 0n, image(2));
    expect(shared.every((b) => b === 0)).toBe(true);
    expect(tdxReport(vm)?.pagesAdded).toBe(2);
  });

  it('extends the MRTD by TDH.MEM.PAGE.ADD per page and TDH.MR.EXTEND only when measured', () => {
    const { vm, vcpu } = tdWithSlot();
    const a = image(2, 3);
    const b = image(1, 9);
    initMemRegion(vcpu, 0n, a);
    initMemRegion(vcpu, 0x2000n, b, false);
    const ref = new TdxMrtd();
    ref.addPage(0n).extendPage(0n, a.subarray(0, 4096));
    ref.addPage(0x1000n).extendPage(0x1000n, a.subarray(4096));
    ref.addPage(0x2000n);
    finalize(vm);
    expect(tdxReport(vm)).toMatchObject({
      mrtd: ref.digest(),
      pagesAdded: 3,
      pagesMeasured: 2,
      finalized: true,
    });
  });
});

describe('KVM_TDX_GET_CPUID (tdx_vcpu_get_cpuid, arch/x86/kvm/vmx/tdx.c)', () => {
  it('a buffer that is too small is E2BIG and reports the needed count in nent', () => {
    const { vm } = td();
    const vcpu = vm.createVcpu(0);
    const data: TdxGetCpuidData = { nent: 1, cpuid: [] };
    expect(tryKvm(() => vcpu.memEncryptOp(tdxCmd(TDX_CMD.GET_CPUID, data)))).toBe('E2BIG');
    expect(data.nent).toBeGreaterThan(1);
    expect(data.cpuid).toEqual([]);
  });

  it('returns the TD CPUID with the GPAW in 0x80000008 EAX[23:16]', () => {
    const { vm } = td(48);
    const vcpu = vm.createVcpu(0);
    const data: TdxGetCpuidData = { nent: 256, cpuid: [] };
    vcpu.memEncryptOp(tdxCmd(TDX_CMD.GET_CPUID, data));
    expect(data.nent).toBe(data.cpuid.length);
    expect((data.cpuid.find((e) => e.function === 0x8000_0008)!.eax >>> 16) & 0xff).toBe(48);
  });
});

describe('KVM_TDX_FINALIZE_VM (tdx_td_finalize, arch/x86/kvm/vmx/tdx.c)', () => {
  it('before INIT_VM (no HKID) is EINVAL; a second FINALIZE is EINVAL', () => {
    const vm = createTdVm(createSimKvm());
    expect(tryVmOp(vm, TDX_CMD.FINALIZE_VM)).toBe('EINVAL');
    initVm(vm);
    finalize(vm);
    expect(tdxReport(vm)?.state).toBe('runnable');
    expect(tryVmOp(vm, TDX_CMD.FINALIZE_VM)).toBe('EINVAL');
  });
});

describe('KVM_RUN and registers of a TD vCPU (tdx_vcpu_pre_run, guest_state_protected; arch/x86/kvm/vmx/tdx.c)', () => {
  it('KVM_RUN before FINALIZE is EINVAL; on a vCPU never initialized it is EINVAL', async () => {
    const { vm } = td();
    const a = tdVcpuAdd(vm, 0);
    const b = tdVcpuAdd(vm, 1);
    initVcpu(a);
    a.setEntry(async () => {});
    await expect(a.run()).rejects.toMatchObject({ code: 'EINVAL' });
    finalize(vm);
    b.setEntry(async () => {});
    await expect(b.run()).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('KVM_GET/SET_REGS and KVM_GET_SREGS are EINVAL: the register state is protected', () => {
    const { vm } = td();
    const v = vm.createVcpu(0);
    expect(tryKvm(() => v.getRegs())).toBe('EINVAL');
    expect(tryKvm(() => v.setRegs(zeroRegs()))).toBe('EINVAL');
    expect(tryKvm(() => v.getSregs())).toBe('EINVAL');
  });
});

describe('VM-wide TD rules', () => {
  it('KVM_CAP_VM_COPY/MOVE_ENC_CONTEXT_FROM are EINVAL on a TD though CHECK_EXTENSION says 1 (arch/x86/kvm/vmx/main.c: vt_x86_ops)', () => {
    const kvm = createSimKvm();
    const { vm } = td();
    const other = createTdVm(kvm);
    expect(vm.checkExtension(CAP.VM_MOVE_ENC_CONTEXT_FROM)).toBe(1);
    expect(tryKvm(() => vm.enableCap(CAP.VM_COPY_ENC_CONTEXT_FROM, [other]))).toBe('EINVAL');
    expect(tryKvm(() => vm.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [other]))).toBe('EINVAL');
  });

  it('KVM_MEMORY_ENCRYPT_REG_REGION has no TDX op: ENOTTY (arch/x86/kvm/x86.c: kvm_arch_vm_ioctl())', () => {
    const { vm } = td();
    expect(
      tryKvm(() =>
        vm.memEncryptRegRegion({ addr: { buffer: new Uint8Array(4096), offset: 0 }, size: 4096n }),
      ),
    ).toBe('ENOTTY');
  });

  it('a memslot reaching the shared bit is EINVAL once the TD is initialized (kvm_is_gfn_alias)', () => {
    const { vm } = td(48);
    const mem = new Uint8Array(8192);
    const fail = tryKvm(() =>
      vm.setUserMemoryRegion({
        slot: 1,
        flags: 0,
        guestPhysAddr: (1n << 47n) - 4096n,
        memorySize: 8192n,
        userspace: mem,
      }),
    );
    expect(fail).toBe('EINVAL');
  });

  it('closing a launched TD frees everything: no fds, VMs, guest_memfd bytes or KeyIDs left', () => {
    const kvm = createSimKvm();
    const a = launchTd(kvm, image(4));
    const b = launchTd(kvm, image(2));
    for (const t of [a, b]) {
      t.vm.close();
      kvm.closeFd(t.gmemFd);
    }
    expect(simStats(kvm)).toMatchObject({ liveVms: 0, liveVcpus: 0, gmemFiles: 0, gmemBytes: 0, openFds: 1 });
    // All KeyIDs are free again: a full pool of TDs can be initialized.
    for (let i = 0; i < TDX_GUEST_KEYIDS; i++) initVm(createTdVm(kvm));
  });

  it('KVM_CAP_VM_TYPES advertises tdx once the TDX ops are wired (kvm_caps.supported_vm_types, arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension())', () => {
    const kvm = createSimKvm();
    const wired = (kvm.checkExtension(CAP.VM_TYPES) & (1 << VM_TYPE_NUMBER.tdx)) !== 0;
    if (wired) expect(kvm.createVm('tdx').type).toBe('tdx');
    else expect(tryKvm(() => kvm.createVm('tdx'))).toBe('EINVAL');
  });
});
