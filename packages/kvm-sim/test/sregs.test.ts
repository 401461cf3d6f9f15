// Segment and descriptor-table state through KVM_GET/SET_SREGS: the RESET values of
// arch/x86/kvm/x86.c: kvm_vcpu_reset() with the vendor's vmx_vcpu_reset() / init_vmcb(), the whole
// struct set at once, and kvm_is_valid_sregs()'s CS.L rule.
import {
  CR,
  codeSegment64,
  dataSegment64,
  type Segment,
  SEGMENT_NAMES,
  segment,
  type Sregs,
  tryKvm,
  tssSegment64,
  unusableSegment,
} from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../src/index.js';
import { vmVcpuAdd } from './helpers.js';

const seg = (type: number, s: number, selector = 0, base = 0n): Segment =>
  segment({ base, limit: 0xffff, selector, type, present: 1, s });

/** KVM_GET_SREGS on a fresh vCPU of a host whose CPUID is Intel's (VMX access rights), as measured on PVM. */
const VMX_RESET: Sregs = {
  cs: seg(11, 1, 0xf000, 0xffff_0000n),
  ds: seg(3, 1),
  es: seg(3, 1),
  fs: seg(3, 1),
  gs: seg(3, 1),
  ss: seg(3, 1),
  tr: seg(11, 0),
  ldt: seg(2, 0),
  gdt: { base: 0n, limit: 0xffff },
  idt: { base: 0n, limit: 0xffff },
  cr0: 0x6000_0010n,
  cr2: 0n,
  cr3: 0n,
  cr4: 0n,
  efer: 0n,
};

const LONG = {
  cr0: CR.CR0_PE | CR.CR0_PG | CR.CR0_ET,
  cr2: 0n,
  cr3: 0x1000n,
  cr4: CR.CR4_PAE,
  efer: CR.EFER_LME | CR.EFER_LMA,
};

describe('kvm_vcpu_reset: segment and descriptor-table state', () => {
  it('kvm_vcpu_reset: CS is f000:ffff0000 limit 0xffff, the other segments 0:0 limit 0xffff, GDTR/IDTR limit 0xffff', () => {
    for (const host of ['mainline-intel', 'pvm'] as const) {
      const v = createSimKvm({ host }).createVm().createVcpu(0);
      expect(v.getSregs(), host).toEqual(VMX_RESET);
    }
    expect(createSimKvm().createVm().createVcpu(3).getSregs()).toEqual(VMX_RESET);
    // PVM reports VMX's values whatever the CPU (measured on an AMD EPYC host).
    expect(createSimKvm({ host: 'pvm', vendor: 'amd' }).createVm().createVcpu(0).getSregs()).toEqual(
      VMX_RESET,
    );
  });
  it('init_vmcb: on an AMD host CS is read/code (type 10), SS a writable data segment (2), TR a busy 16-bit TSS (3)', () => {
    const s = createSimKvm({ host: 'mainline-amd' }).createVm().createVcpu(0).getSregs();
    expect(s).toEqual({ ...VMX_RESET, cs: { ...VMX_RESET.cs, type: 10 }, ss: seg(2, 1), tr: seg(3, 0) });
  });
  it('every vCPU of a VM starts in the RESET state, whatever the others did', () => {
    const vm = createSimKvm().createVm();
    vmVcpuAdd(vm, 0).setSregs({ ...LONG, cs: codeSegment64(8) });
    expect(vm.createVcpu(1).getSregs()).toEqual(VMX_RESET);
  });
});

describe('KVM_SET_SREGS with segments', () => {
  it('round-trips segments, GDTR and IDTR as given', () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    const s: Sregs = {
      ...LONG,
      cs: codeSegment64(8),
      ds: dataSegment64(0x10),
      es: dataSegment64(0x10),
      fs: { ...dataSegment64(0x10), base: 0x7fff_0000_1000n },
      gs: { ...dataSegment64(0x10), base: 0xffff_8000_0000_2000n },
      ss: dataSegment64(0x10),
      tr: tssSegment64(0x5000n, 0x18),
      ldt: unusableSegment(),
      gdt: { base: 0x6000n, limit: 0xfff },
      idt: { base: 0x7000n, limit: 0xfff },
    };
    v.setSregs(s);
    expect(v.getSregs()).toEqual(s);
  });
  it('a set without segments keeps the current ones (get-modify-set is the same as setting the whole struct)', () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    v.setSregs({ ...LONG, cs: codeSegment64(8), gdt: { base: 0x6000n, limit: 0x17 } });
    v.setSregs({ ...LONG, cr2: 0x1234n });
    const got = v.getSregs();
    expect(got.cs).toEqual(codeSegment64(8));
    expect(got.gdt).toEqual({ base: 0x6000n, limit: 0x17 });
    expect(got.cr2).toBe(0x1234n);
    expect(got.ds).toEqual(VMX_RESET.ds);
  });
  it('getSregs hands out copies: changing one does not change the vCPU', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    const s = v.getSregs();
    s.cs.selector = 0x1234;
    s.gdt.limit = 7;
    expect(v.getSregs()).toEqual(VMX_RESET);
  });
  // arch/x86/kvm/x86.c: kvm_is_valid_sregs(): "Not in 64-bit mode: EFER.LMA is clear and the code
  // segment cannot be 64-bit."
  it('kvm_is_valid_sregs: CS.L without long-mode paging is EINVAL, changing nothing', () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    expect(tryKvm(() => v.setSregs({ ...VMX_RESET, cs: { ...VMX_RESET.cs, l: 1 } }))).toBe('EINVAL');
    expect(tryKvm(() => v.setSregs({ ...VMX_RESET, cr0: 0x11n, cs: codeSegment64(8) }))).toBe('EINVAL');
    expect(v.getSregs()).toEqual(VMX_RESET);
    // In long mode CS.L is fine; leaving long mode while the current CS is 64-bit is refused too.
    v.setSregs({ ...LONG, cs: codeSegment64(8) });
    expect(tryKvm(() => v.setSregs({ ...VMX_RESET }))).toBeUndefined();
    v.setSregs({ ...LONG, cs: codeSegment64(8) });
    expect(tryKvm(() => v.setSregs({ cr0: 0x11n, cr2: 0n, cr3: 0n, cr4: 0n, efer: 0n }))).toBe('EINVAL');
  });
  it('no other segment check: attributes the CPU would refuse at entry are accepted', () => {
    for (const host of ['mainline-amd', 'mainline-intel', 'pvm'] as const) {
      const v = createSimKvm({ host }).createVm().createVcpu(0);
      const before = v.getSregs();
      const odd = { ...before.ss, type: 0x1a, present: 0, dpl: 3, unusable: 1 };
      expect(
        tryKvm(() => v.setSregs({ ...before, ss: odd, ds: { ...before.ds, l: 1 } })),
        host,
      ).toBeUndefined();
    }
  });
  it('PVM keeps segments exactly as set (measured on /dev/kvm)', () => {
    const v = createSimKvm({ host: 'pvm' }).createVm().createVcpu(0);
    const odd = { ...VMX_RESET.ss, type: 0x1a, present: 3, dpl: 7, db: 2, s: 2, g: 2, avl: 1, unusable: 2 };
    v.setSregs({ ...VMX_RESET, ss: odd, tr: { ...VMX_RESET.tr, type: 9 } });
    expect(v.getSregs().ss).toEqual(odd);
    expect(v.getSregs().tr.type).toBe(9);
  });
  // vmx/vmx.c: __vmx_set_segment(), vmx_segment_access_rights(), vmx_get_segment().
  it('vmx_segment_access_rights: low bits kept, accessed bit set (not LDTR), an unusable or absent segment is only "unusable"', () => {
    const v = createSimKvm({ host: 'mainline-intel' }).createVm().createVcpu(0);
    const odd = {
      ...VMX_RESET.ss,
      type: 0x1a,
      present: 0,
      dpl: 3,
      unusable: 0,
      selector: 0x2b,
      base: 0x1000n,
    };
    v.setSregs({
      ...VMX_RESET,
      ss: odd,
      ds: { ...VMX_RESET.ds, type: 0x12, dpl: 7, db: 3, g: 2, avl: 1 },
      ldt: { ...VMX_RESET.ldt, type: 2 },
    });
    const got = v.getSregs();
    expect(got.ss).toEqual({ ...unusableSegment(), selector: 0x2b, base: 0x1000n, limit: 0xffff });
    expect(got.ds).toEqual({ ...VMX_RESET.ds, type: 3, dpl: 3, db: 1, g: 0, avl: 1 });
    expect(got.ldt.type).toBe(2);
  });
  // svm/svm.c: svm_set_segment(), svm_get_segment().
  it('svm_get_segment: G from the limit, unusable = !present, TR busy, DS/ES/FS/GS accessed, SS.DPL is the CPL', () => {
    const v = createSimKvm({ host: 'mainline-amd' }).createVm().createVcpu(0);
    const before = v.getSregs();
    v.setSregs({
      ...before,
      ds: { ...before.ds, type: 2, g: 0, limit: 0xffff_ffff },
      es: { ...before.es, type: 2, present: 0 },
      ss: { ...before.ss, dpl: 3, unusable: 1, db: 1 },
      tr: { ...before.tr, type: 9 },
      cs: { ...before.cs, g: 1 },
    });
    const got = v.getSregs();
    expect(got.ds).toMatchObject({ type: 3, g: 1, present: 1, unusable: 0 });
    expect(got.es).toMatchObject({ type: 2, present: 0, unusable: 1 });
    expect(got.ss).toMatchObject({ dpl: 3, present: 0, unusable: 1, db: 0 });
    expect(got.tr.type).toBe(11);
    expect(got.cs.g).toBe(0); // limit 0xffff: G is synthesised, not stored
  });
  it("the kit's flat 64-bit segments round-trip on every host", () => {
    for (const host of ['mainline-amd', 'mainline-intel', 'pvm'] as const) {
      const v = vmVcpuAdd(createSimKvm({ host }).createVm(), 0);
      const s = {
        ...LONG,
        cs: codeSegment64(8),
        ds: dataSegment64(0x10),
        es: dataSegment64(0x10),
        gs: dataSegment64(0x10),
        ldt: unusableSegment(),
      };
      v.setSregs(s);
      expect(v.getSregs(), host).toMatchObject(s);
    }
  });
  it('throws TypeError/RangeError for a segment field of the wrong type or outside its uapi width', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    expect(() => v.setSregs({ ...VMX_RESET, cs: { ...VMX_RESET.cs, base: 1 as never } })).toThrow(TypeError);
    expect(() => v.setSregs({ ...VMX_RESET, cs: { ...VMX_RESET.cs, selector: 0x10000 } })).toThrow(
      RangeError,
    );
    expect(() => v.setSregs({ ...VMX_RESET, ds: { ...VMX_RESET.ds, type: 256 } })).toThrow(/sregs\.ds\.type/);
    expect(() => v.setSregs({ ...VMX_RESET, gdt: { base: 0n, limit: 0x10000 } })).toThrow(RangeError);
    expect(() => v.setSregs({ ...VMX_RESET, ldt: null as never })).toThrow(TypeError);
    expect(v.getSregs()).toEqual(VMX_RESET);
    for (const n of SEGMENT_NAMES) expect(v.getSregs()[n]).toEqual(VMX_RESET[n]);
  });
});
