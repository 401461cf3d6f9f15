// The MSRs that hold addresses: MSR_FS_BASE / MSR_GS_BASE are the FS/GS segment bases
// (arch/x86/kvm/vmx/vmx.c: vmx_get_msr()/vmx_set_msr(), svm/svm.c alike), and __kvm_set_msr()
// (arch/x86/kvm/x86.c) refuses a non-canonical FS/GS/KERNEL_GS base, LSTAR or CSTAR, with the
// address width of the vCPU's CPUID (is_noncanonical_msr_address(): 57 bits with LA57, else 48).
import { type CpuidEntry, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../src/index.js';
import { vmVcpuAdd } from './helpers.js';

const FS_BASE = 0xc000_0100;
const GS_BASE = 0xc000_0101;
const KERNEL_GS_BASE = 0xc000_0102;
const LSTAR = 0xc000_0082;
const CSTAR = 0xc000_0083;
const ADDRESS_MSRS = [FS_BASE, GS_BASE, KERNEL_GS_BASE, LSTAR, CSTAR];

/** Canonical with 57 address bits, not with 48. */
const ONLY_57 = 0x00ff_8000_0000_0000n;
/** Canonical with neither width (bit 56 set, 57..63 clear). */
const NEITHER = 0x0100_0000_0000_0000n;

function la57(cpuid: CpuidEntry[]): boolean {
  return ((cpuid.find((e) => e.function === 7 && e.index === 0)?.ecx ?? 0) & (1 << 16)) !== 0;
}

describe('vmx_get_msr/vmx_set_msr: MSR_FS_BASE and MSR_GS_BASE are the FS/GS segment bases', () => {
  it('a base written through KVM_SET_MSRS reads back in KVM_GET_SREGS, and the other way round', () => {
    using vm = createSimKvm().createVm();
    const vcpu = vm.createVcpu(0);
    vcpu.setMsr(FS_BASE, 0x1234_5000n);
    expect(vcpu.getSregs().fs.base).toBe(0x1234_5000n);
    const s = vcpu.getSregs();
    vcpu.setSregs({ ...s, gs: { ...s.gs, base: 0xffff_8880_0000_0000n } });
    expect(vcpu.getMsr(GS_BASE)).toBe(0xffff_8880_0000_0000n);
    expect(vcpu.getMsr(FS_BASE)).toBe(0x1234_5000n);
  });
});

describe('__kvm_set_msr: a non-canonical address in FS/GS/KERNEL_GS base, LSTAR or CSTAR is refused', () => {
  it('with 48 address bits (no LA57 in the vCPU CPUID): EINVAL, nothing changed', () => {
    const kvm = createSimKvm({ features: { la57: false } });
    using vm = kvm.createVm();
    const vcpu = vmVcpuAdd(vm, 0);
    expect(la57(vcpu.getCpuid())).toBe(false);
    for (const msr of ADDRESS_MSRS) {
      vcpu.setMsr(msr, 0x7fff_ffff_f000n);
      expect(tryKvm(() => vcpu.setMsr(msr, ONLY_57))).toBe('EINVAL');
      expect(vcpu.getMsr(msr)).toBe(0x7fff_ffff_f000n);
    }
  });

  it('with LA57 in the vCPU CPUID a 57-bit canonical address is accepted, a 58-bit one is not', () => {
    using vm = createSimKvm().createVm();
    const vcpu = vmVcpuAdd(vm, 0);
    expect(la57(vcpu.getCpuid())).toBe(true);
    for (const msr of ADDRESS_MSRS) {
      expect(tryKvm(() => vcpu.setMsr(msr, ONLY_57))).toBeUndefined();
      expect(vcpu.getMsr(msr)).toBe(ONLY_57);
      expect(tryKvm(() => vcpu.setMsr(msr, NEITHER))).toBe('EINVAL');
      expect(vcpu.getMsr(msr)).toBe(ONLY_57);
    }
  });

  it('the width follows the CPUID the VMM set on the vCPU, not the host', () => {
    using vm = createSimKvm().createVm();
    const vcpu = vmVcpuAdd(vm, 0);
    vcpu.setCpuid(vcpu.getCpuid().map((e) => (e.function === 7 && e.index === 0 ? { ...e, ecx: 0 } : e)));
    expect(tryKvm(() => vcpu.setMsr(LSTAR, ONLY_57))).toBe('EINVAL');
  });

  it('with no CPUID set (a new vCPU) the width is 48 bits', () => {
    using vm = createSimKvm().createVm();
    const vcpu = vm.createVcpu(0);
    expect(vcpu.getCpuid()).toEqual([]);
    expect(tryKvm(() => vcpu.setMsr(LSTAR, 0xffff_8000_0000_0000n))).toBeUndefined();
    expect(tryKvm(() => vcpu.setMsr(LSTAR, ONLY_57))).toBe('EINVAL');
  });

  it('a guest WRMSR of a non-canonical base takes #GP', async () => {
    using vm = createSimKvm({ features: { la57: false } }).createVm();
    const vcpu = vmVcpuAdd(vm, 0);
    let vector: number | undefined;
    vcpu.setEntry(async (g) => {
      g.setExceptionHandler((frame) => {
        vector = frame.vector;
        return 'skip';
      });
      g.wrmsr(FS_BASE, ONLY_57);
    });
    expect((await vcpu.run()).reason).toBe('hlt');
    expect(vector).toBe(13);
    expect(vcpu.getSregs().fs.base).toBe(0n);
  });
});

describe('SimFeatures.la57: 5-level paging in the supported CPUID', () => {
  it('on by default (leaf 7 ECX.LA57, 57 linear bits in 0x80000008); off in the pvm preset, as the PVM hosts answer', () => {
    const on = createSimKvm().getSupportedCpuid();
    expect(la57(on)).toBe(true);
    expect(((on.find((e) => e.function === 0x8000_0008)?.eax ?? 0) >> 8) & 0xff).toBe(57);
    const pvm = createSimKvm({ host: 'pvm' }).getSupportedCpuid();
    expect(la57(pvm)).toBe(false);
    expect(((pvm.find((e) => e.function === 0x8000_0008)?.eax ?? 0) >> 8) & 0xff).toBe(48);
  });
});
