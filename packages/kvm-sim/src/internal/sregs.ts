// The segment, descriptor-table and control-register state of a vCPU at RESET (KVM_GET_SREGS on a
// fresh vCPU), and what the vendor module keeps of a segment KVM_SET_SREGS hands it. A leaf module:
// the vCPU and the SEV model's views both use it.

import { type Segment, type SegmentName, type Sregs, segment } from '@kvmtest/kvm';

/**
 * The vendor module behind a host's segment state: `vmx` (vmx/vmx.c), `svm` (svm/svm.c), or `pvm`,
 * the out-of-tree PVM module, which reports VMX's reset values and keeps set segments verbatim.
 */
export type SegmentModule = 'vmx' | 'svm' | 'pvm';

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
export function resetSregs(module: SegmentModule): Sregs {
  const svm = module === 'svm';
  const seg = (type: number, s: number, selector = 0, base = 0n): Segment =>
    segment({ base, limit: 0xffff, selector, type, present: 1, s });
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

/** The vendor module of a simulated host: PVM for the `pvm` preset, SVM on AMD hosts, VMX otherwise. */
export function segmentModule(config: { readonly host: string; readonly vendor: string }): SegmentModule {
  if (config.host === 'pvm') return 'pvm';
  return config.vendor === 'amd' ? 'svm' : 'vmx';
}

/**
 * The segment KVM_GET_SREGS reports after KVM_SET_SREGS stored `seg` in register `name`: what the
 * vendor module's set_segment keeps and its get_segment rebuilds.
 *
 * vmx/vmx.c: __vmx_set_segment() sets the accessed bit of every register but LDTR (with unrestricted
 * guest), vmx_segment_access_rights() packs the low bits of each attribute, or only "unusable" for a
 * segment that is unusable or not present; vmx_get_segment() unpacks them with present = !unusable.
 *
 * svm/svm.c: svm_set_segment() packs the low bits (present only when usable) and takes SS.DPL as the
 * CPL; svm_get_segment() synthesises G from the limit (> 0xfffff), unusable = !present, the busy bit
 * of TR's type, the accessed bit of a usable DS/ES/FS/GS, and clears D/B of an unusable SS.
 *
 * PVM keeps the struct as given (measured: odd values in every field read back unchanged).
 */
export function storedSegment(module: SegmentModule, name: SegmentName, seg: Segment): Segment {
  const { base, limit, selector } = seg;
  if (module === 'pvm') return { ...seg };
  if (module === 'vmx') {
    const type = name === 'ldt' ? seg.type : seg.type | 1;
    if (seg.unusable !== 0 || seg.present === 0) return segment({ base, limit, selector, unusable: 1 });
    return {
      base,
      limit,
      selector,
      type: type & 15,
      present: 1,
      dpl: seg.dpl & 3,
      db: seg.db & 1,
      s: seg.s & 1,
      l: seg.l & 1,
      g: seg.g & 1,
      avl: seg.avl & 1,
      unusable: 0,
    };
  }
  const present = (seg.present & 1) === 1 && seg.unusable === 0 ? 1 : 0;
  const out: Segment = {
    base,
    limit,
    selector,
    type: seg.type & 15,
    present,
    dpl: seg.dpl & 3,
    db: seg.db & 1,
    s: seg.s & 1,
    l: seg.l & 1,
    g: limit > 0xfffff ? 1 : 0,
    avl: seg.avl & 1,
    unusable: present === 1 ? 0 : 1,
  };
  if (name === 'tr') out.type |= 2;
  else if (name === 'ds' || name === 'es' || name === 'fs' || name === 'gs') {
    if (present === 1) out.type |= 1;
  } else if (name === 'ss' && present === 0) out.db = 0;
  return out;
}

/**
 * What KVM_GET_SREGS reports for a vCPU whose guest state is protected on a VM without
 * `has_protected_state` (an SEV-ES guest made by KVM_SEV_ES_INIT, after LAUNCH_UPDATE_VMSA or a MOVE):
 * arch/x86/kvm/regs.c (x86.c in older trees): __get_sregs_common() skips the segments, GDTR, IDTR,
 * CR2 and CR3, which stay zero in the zeroed struct, and reports CR0, CR4 and EFER as KVM tracks them.
 */
export function protectedSregs(s: Sregs): Sregs {
  return {
    cs: segment(),
    ds: segment(),
    es: segment(),
    fs: segment(),
    gs: segment(),
    ss: segment(),
    tr: segment(),
    ldt: segment(),
    gdt: { base: 0n, limit: 0 },
    idt: { base: 0n, limit: 0 },
    cr0: s.cr0,
    cr2: 0n,
    cr3: 0n,
    cr4: s.cr4,
    efer: s.efer,
  };
}
