// The segment, descriptor-table and control-register state of a vCPU at RESET (KVM_GET_SREGS on a
// fresh vCPU). A leaf module: the vCPU and the SEV model's views both start from it.

import type { Segment, Sregs } from '@kvmtest/kvm';

/** Architectural reset CR0: CD | NW | ET. */
const CR0_RESET = 0x60000010n;

/**
 * The segment and descriptor-table state of a vCPU at RESET, as KVM_GET_SREGS reports it right
 * after KVM_CREATE_VCPU. Every segment has limit 0xffff, is present and has DPL 0; CS is
 * f000:ffff0000 (with RIP 0xfff0 the first fetch is at 0xfffffff0), the others selector 0 base 0;
 * GDTR and IDTR are base 0 limit 0xffff. The attribute types differ by vendor module:
 * vmx/vmx.c: vmx_vcpu_reset() -> seg_setup() writes access rights 0x93 (data, type 3) and 0x9b for
 * CS (code, type 11), TR 0x8b (busy 32-bit TSS, type 11), LDTR 0x82 (type 2); svm/svm.c:
 * init_vmcb() gives CS read|code (type 10), data segments write (type 2; svm_get_segment() reports
 * DS/ES/FS/GS with the accessed bit, type 3), TR a busy 16-bit TSS (type 3) and LDTR type 2.
 * The out-of-tree PVM module reports the VMX values on AMD and Intel CPUs alike (measured on an
 * AMD EPYC host), so the flavour follows the vendor module, not the CPUID vendor.
 */
export function resetSregs(module: 'vmx' | 'svm'): Sregs {
  const svm = module === 'svm';
  const seg = (type: number, s: number, selector = 0, base = 0n): Segment => ({
    base,
    limit: 0xffff,
    selector,
    type,
    present: 1,
    dpl: 0,
    db: 0,
    s,
    l: 0,
    g: 0,
    avl: 0,
    unusable: 0,
  });
  return {
    cs: seg(svm ? 10 : 11, 1, 0xf000, 0xffff_0000n),
    ds: seg(3, 1),
    es: seg(3, 1),
    fs: seg(3, 1),
    gs: seg(3, 1),
    ss: seg(svm ? 2 : 3, 1),
    tr: seg(svm ? 3 : 11, 0),
    ldt: seg(2, 0),
    gdt: { base: 0n, limit: 0xffff },
    idt: { base: 0n, limit: 0xffff },
    cr0: CR0_RESET,
    cr2: 0n,
    cr3: 0n,
    cr4: 0n,
    efer: 0n,
  };
}

/** The vendor module whose RESET segments a host reports: SVM on AMD hosts, VMX elsewhere and on PVM. */
export function resetModule(config: { readonly host: string; readonly vendor: string }): 'vmx' | 'svm' {
  return config.host !== 'pvm' && config.vendor === 'amd' ? 'svm' : 'vmx';
}
