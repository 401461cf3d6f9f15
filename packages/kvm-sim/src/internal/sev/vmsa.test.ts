// The VMSA LAUNCH_UPDATE_VMSA hands the firmware (arch/x86/kvm/svm/sev.c: sev_es_sync_vmsa()), field
// by field at the `struct sev_es_save_area` offsets (arch/x86/include/asm/svm.h), and how it travels
// with the vCPU through KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM (sev_migrate_from()).

import {
  CAP,
  type Kvm,
  type Regs,
  type Segment,
  segment,
  SEV_CMD,
  type SevCommand,
  type Sregs,
  type Vcpu,
  type Vm,
  XSAVE_LAYOUT,
  zeroRegs,
} from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import type { ArchKvm } from '../arch/ops.js';
import { createSimKvm } from '../sim.js';
import { resetSregs } from '../sregs.js';
import { resetXsaveArea } from '../xsave.js';
import { sevPlatform } from './arch-ops.js';
import { decryptCopy } from './crypto.js';
import { FakeHost, type FakeVm, POLICY, ptr } from './fakes.test-support.js';
import type { SevVcpuState } from './views.js';
import { buildVmsa, SEV_ES_SAVE_AREA_SIZE, VMSA_OFFSET, vmcbSegmentAttrib } from './vmsa.js';

/** A decoded `struct vmcb_seg`. */
interface VmcbSeg {
  selector: number;
  attrib: number;
  limit: number;
  base: bigint;
}

function seg(page: Uint8Array, off: number): VmcbSeg {
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  return {
    selector: dv.getUint16(off, true),
    attrib: dv.getUint16(off + 2, true),
    limit: dv.getUint32(off + 4, true),
    base: dv.getBigUint64(off + 8, true),
  };
}

const u64 = (page: Uint8Array, off: number) =>
  new DataView(page.buffer, page.byteOffset, page.byteLength).getBigUint64(off, true);
const u32 = (page: Uint8Array, off: number) =>
  new DataView(page.buffer, page.byteOffset, page.byteLength).getUint32(off, true);
const u16 = (page: Uint8Array, off: number) =>
  new DataView(page.buffer, page.byteOffset, page.byteLength).getUint16(off, true);

const flatSeg = (over: Partial<Segment>): Segment =>
  segment({ limit: 0xffffffff, type: 3, present: 1, db: 1, s: 1, g: 1, ...over });

/** Long-mode segments as the selftests' vcpu_init_sregs() loads them, with distinct values everywhere. */
function longModeSregs(): Sregs {
  return {
    ...resetSregs('svm'),
    cs: flatSeg({ selector: 0x8, type: 11, l: 1, db: 0 }),
    ds: flatSeg({ selector: 0x10, base: 0x1000n }),
    es: flatSeg({ selector: 0x18, base: 0x2000n }),
    fs: flatSeg({ selector: 0x20, base: 0x7fff_0000_1000n }),
    gs: flatSeg({ selector: 0x28, base: 0xffff_8880_0000_0000n }),
    ss: flatSeg({ selector: 0x30, dpl: 0 }),
    tr: flatSeg({ selector: 0x38, type: 11, s: 0, db: 0, g: 0, limit: 0x67, base: 0x3000n }),
    ldt: flatSeg({ selector: 0, type: 2, s: 0, db: 0, g: 0, limit: 0xffff, present: 0, unusable: 1 }),
    gdt: { base: 0x4000n, limit: 0x47 },
    idt: { base: 0x5000n, limit: 0xfff },
    cr0: 0x8005_0033n,
    cr3: 0x9000n,
    cr4: 0x620n,
    efer: 0x500n,
  };
}

const SEGS = [
  ['es', VMSA_OFFSET.es],
  ['cs', VMSA_OFFSET.cs],
  ['ss', VMSA_OFFSET.ss],
  ['ds', VMSA_OFFSET.ds],
  ['fs', VMSA_OFFSET.fs],
  ['gs', VMSA_OFFSET.gs],
  ['ldt', VMSA_OFFSET.ldtr],
  ['tr', VMSA_OFFSET.tr],
] as const;

function expectSegmentsIn(page: Uint8Array, s: Sregs): void {
  for (const [name, off] of SEGS) {
    const g = s[name];
    expect(seg(page, off), name).toEqual({
      selector: g.selector,
      attrib: vmcbSegmentAttrib(g),
      limit: g.limit,
      base: g.base,
    });
  }
  expect(seg(page, VMSA_OFFSET.gdtr)).toEqual({
    selector: 0,
    attrib: 0,
    limit: s.gdt.limit,
    base: s.gdt.base,
  });
  expect(seg(page, VMSA_OFFSET.idtr)).toEqual({
    selector: 0,
    attrib: 0,
    limit: s.idt.limit,
    base: s.idt.base,
  });
}

describe('sev_es_sync_vmsa (arch/x86/kvm/svm/sev.c): the VMSA is the VMCB save area plus vcpu->arch', () => {
  it('sev_es_sync_vmsa: the VMSA carries CS/DS/ES/FS/GS/SS/LDTR/TR as struct vmcb_seg, and GDTR, IDTR', () => {
    const s = longModeSregs();
    const page = buildVmsa(zeroRegs(), s, 0x400n, 0n);
    expectSegmentsIn(page, s);
    // The packed attributes, spelled out (svm/svm.c: svm_set_segment()).
    expect(seg(page, VMSA_OFFSET.cs).attrib).toBe(0xa9b); // G | L | P | S | type 11
    expect(seg(page, VMSA_OFFSET.ds).attrib).toBe(0xc93); // G | D/B | P | S | type 3
    expect(seg(page, VMSA_OFFSET.tr).attrib).toBe(0x08b); // P | busy 32-bit TSS
    expect(seg(page, VMSA_OFFSET.ldtr).attrib).toBe(0x002); // unusable: P clear
    expect(seg(page, VMSA_OFFSET.fs).base).toBe(0x7fff_0000_1000n);
    expect(seg(page, VMSA_OFFSET.gs).base).toBe(0xffff_8880_0000_0000n);
  });

  it('svm_set_segment: attrib packs type 0-3, S 4, DPL 5-6, P 7 (present and usable), AVL 8, L 9, D/B 10, G 11', () => {
    const base = flatSeg({ type: 0, s: 0, dpl: 0, present: 0, avl: 0, l: 0, db: 0, g: 0, unusable: 1 });
    expect(vmcbSegmentAttrib(base)).toBe(0);
    expect(vmcbSegmentAttrib({ ...base, type: 0xf })).toBe(0xf);
    expect(vmcbSegmentAttrib({ ...base, s: 1 })).toBe(1 << 4);
    expect(vmcbSegmentAttrib({ ...base, dpl: 3 })).toBe(3 << 5);
    expect(vmcbSegmentAttrib({ ...base, present: 1 })).toBe(0); // still unusable
    expect(vmcbSegmentAttrib({ ...base, present: 1, unusable: 0 })).toBe(1 << 7);
    expect(vmcbSegmentAttrib({ ...base, avl: 1 })).toBe(1 << 8);
    expect(vmcbSegmentAttrib({ ...base, l: 1 })).toBe(1 << 9);
    expect(vmcbSegmentAttrib({ ...base, db: 1 })).toBe(1 << 10);
    expect(vmcbSegmentAttrib({ ...base, g: 1 })).toBe(1 << 11);
  });

  it('sev_es_sync_vmsa: a vCPU at RESET gives the VMCB values init_vmcb() and the svm_set_* hooks leave', () => {
    const regs: Regs = { ...zeroRegs(), rip: 0xfff0n, rflags: 2n, rdx: 0x800f12n };
    const page = buildVmsa(regs, resetSregs('svm'), 0x400n, 0n);
    expect(seg(page, VMSA_OFFSET.cs)).toEqual({
      selector: 0xf000,
      attrib: 0x9a,
      limit: 0xffff,
      base: 0xffff0000n,
    });
    // The simulator keeps DS..GS as svm_get_segment() reports them: with the accessed bit.
    for (const off of [VMSA_OFFSET.ds, VMSA_OFFSET.es, VMSA_OFFSET.fs, VMSA_OFFSET.gs])
      expect(seg(page, off)).toEqual({ selector: 0, attrib: 0x93, limit: 0xffff, base: 0n });
    expect(seg(page, VMSA_OFFSET.ss)).toEqual({ selector: 0, attrib: 0x92, limit: 0xffff, base: 0n });
    expect(seg(page, VMSA_OFFSET.tr).attrib).toBe(0x83); // init_sys_seg(SEG_TYPE_BUSY_TSS16)
    expect(seg(page, VMSA_OFFSET.ldtr).attrib).toBe(0x82); // init_sys_seg(SEG_TYPE_LDT)
    expect(seg(page, VMSA_OFFSET.gdtr)).toEqual({ selector: 0, attrib: 0, limit: 0xffff, base: 0n });
    expect(seg(page, VMSA_OFFSET.idtr)).toEqual({ selector: 0, attrib: 0, limit: 0xffff, base: 0n });
    expect(page[VMSA_OFFSET.cpl]).toBe(0);
    expect(u64(page, VMSA_OFFSET.efer)).toBe(0x1000n); // svm_set_efer(): EFER.SVME
    expect(u64(page, VMSA_OFFSET.cr0)).toBe(0x10n); // svm_set_cr0(): CD/NW cleared (KVM_X86_QUIRK_CD_NW_CLEARED)
    expect(u64(page, VMSA_OFFSET.cr4)).toBe(0x40n); // svm_set_cr4(): the host's CR4.MCE
    expect(u64(page, VMSA_OFFSET.dr7)).toBe(0x400n);
    expect(u64(page, VMSA_OFFSET.dr6)).toBe(0xffff0ff0n);
    expect(u64(page, VMSA_OFFSET.rflags)).toBe(2n);
    expect(u64(page, VMSA_OFFSET.rip)).toBe(0xfff0n);
    expect(u64(page, VMSA_OFFSET.rdx)).toBe(0x800f12n);
    expect(u64(page, VMSA_OFFSET.gPat)).toBe(0x0007040600070406n);
    expect(u64(page, VMSA_OFFSET.xcr0)).toBe(1n);
    // Without FPU state (KVM_SEV_ES_INIT) the floating-point area stays zero, as does the page past the struct.
    expect(page.subarray(VMSA_OFFSET.x87Dp, SEV_ES_SAVE_AREA_SIZE).every((b) => b === 0)).toBe(true);
    expect(page.subarray(SEV_ES_SAVE_AREA_SIZE).every((b) => b === 0)).toBe(true);
  });

  it('svm_set_segment: loading SS sets the VMCB CPL to SS.DPL, which the VMSA carries', () => {
    const s = longModeSregs();
    s.ss = { ...s.ss, dpl: 3 };
    expect(buildVmsa(zeroRegs(), s, 0x400n, 0n)[VMSA_OFFSET.cpl]).toBe(3);
  });

  it('sev_es_sync_vmsa: EFER, CR0, CR2, CR3, CR4 are the VMCB copies (SVME set, CD/NW clear, MCE set)', () => {
    const s = longModeSregs();
    s.cr0 = 0xe005_0033n; // with CD | NW
    s.cr2 = 0xdead_b000n;
    const page = buildVmsa(zeroRegs(), s, 0x400n, 0n);
    expect(u64(page, VMSA_OFFSET.efer)).toBe(0x1500n);
    expect(u64(page, VMSA_OFFSET.cr0)).toBe(0x8005_0033n);
    expect(u64(page, VMSA_OFFSET.cr2)).toBe(0xdead_b000n);
    expect(u64(page, VMSA_OFFSET.cr3)).toBe(0x9000n);
    expect(u64(page, VMSA_OFFSET.cr4)).toBe(0x660n);
  });

  it('sev_es_sync_vmsa: STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_CS/ESP/EIP and G_PAT come from the MSRs', () => {
    const msrs = new Map<number, bigint>([
      [0xc0000081, 0x0023_0010_0000_0000n],
      [0xc0000082, 0xffff_ffff_8100_0000n],
      [0xc0000083, 0xffff_ffff_8100_1000n],
      [0xc0000084, 0x4700n],
      [0xc0000102, 0xffff_8880_1234_0000n],
      [0x174, 0x10n],
      [0x175, 0xffff_c900_0000_0000n],
      [0x176, 0xffff_ffff_8100_2000n],
      [0x277, 0x0007_0406_0007_0406n],
    ]);
    const page = buildVmsa(zeroRegs(), resetSregs('svm'), 0x400n, 0n, { msr: (i) => msrs.get(i), xcr0: 7n });
    expect(u64(page, VMSA_OFFSET.star)).toBe(0x0023_0010_0000_0000n);
    expect(u64(page, VMSA_OFFSET.lstar)).toBe(0xffff_ffff_8100_0000n);
    expect(u64(page, VMSA_OFFSET.cstar)).toBe(0xffff_ffff_8100_1000n);
    expect(u64(page, VMSA_OFFSET.sfmask)).toBe(0x4700n);
    expect(u64(page, VMSA_OFFSET.kernelGsBase)).toBe(0xffff_8880_1234_0000n);
    expect(u64(page, VMSA_OFFSET.sysenterCs)).toBe(0x10n);
    expect(u64(page, VMSA_OFFSET.sysenterEsp)).toBe(0xffff_c900_0000_0000n);
    expect(u64(page, VMSA_OFFSET.sysenterEip)).toBe(0xffff_ffff_8100_2000n);
    expect(u64(page, VMSA_OFFSET.gPat)).toBe(0x0007_0406_0007_0406n);
    expect(u64(page, VMSA_OFFSET.xcr0)).toBe(7n);
  });

  it('sev_es_sync_vmsa: the FPU (non-DEFAULT VM types) goes in split x87 form, XMM, and YMM only when XSTATE_BV has AVX', () => {
    const area = resetXsaveArea();
    const dv = new DataView(area.buffer);
    dv.setUint16(XSAVE_LAYOUT.fsw, 0x3800, true);
    dv.setUint16(XSAVE_LAYOUT.ftw, 0x80, true);
    dv.setUint16(XSAVE_LAYOUT.fop, 0x1d9, true);
    dv.setBigUint64(XSAVE_LAYOUT.fip, 0x401000n, true);
    dv.setBigUint64(XSAVE_LAYOUT.fdp, 0x602000n, true);
    for (let i = 0; i < 8; i++) for (let b = 0; b < 10; b++) area[XSAVE_LAYOUT.st + i * 16 + b] = i * 16 + b;
    for (let i = 0; i < 256; i++) area[XSAVE_LAYOUT.xmm + i] = i ^ 0x5a;
    for (let i = 0; i < 256; i++) area[XSAVE_LAYOUT.ymmHi + i] = i ^ 0xa5;
    let page = buildVmsa(zeroRegs(), resetSregs('svm'), 0x400n, 0n, { fpu: area });
    expect(u16(page, VMSA_OFFSET.x87Fcw)).toBe(0x37f);
    expect(u32(page, VMSA_OFFSET.mxcsr)).toBe(0x1f80);
    expect(u16(page, VMSA_OFFSET.x87Fsw)).toBe(0x3800);
    expect(u16(page, VMSA_OFFSET.x87Ftw)).toBe(0x80);
    expect(u16(page, VMSA_OFFSET.x87Fop)).toBe(0x1d9);
    expect(u64(page, VMSA_OFFSET.x87Rip)).toBe(0x401000n);
    expect(u64(page, VMSA_OFFSET.x87Dp)).toBe(0x602000n);
    for (let i = 0; i < 8; i++) {
      for (let b = 0; b < 8; b++) expect(page[VMSA_OFFSET.fpregX87 + i * 8 + b]).toBe(i * 16 + b);
      expect(page[VMSA_OFFSET.fpregX87 + 64 + i * 2]).toBe(i * 16 + 8);
      expect(page[VMSA_OFFSET.fpregX87 + 64 + i * 2 + 1]).toBe(i * 16 + 9);
    }
    expect([...page.subarray(VMSA_OFFSET.fpregXmm, VMSA_OFFSET.fpregXmm + 256)]).toEqual([
      ...area.subarray(XSAVE_LAYOUT.xmm, XSAVE_LAYOUT.xmm + 256),
    ]);
    // XSTATE_BV without AVX: get_xsave_addr() is NULL and the YMM field is zeroed.
    expect(page.subarray(VMSA_OFFSET.fpregYmm, VMSA_OFFSET.fpregYmm + 256).every((b) => b === 0)).toBe(true);
    dv.setBigUint64(XSAVE_LAYOUT.xstateBv, 7n, true);
    page = buildVmsa(zeroRegs(), resetSregs('svm'), 0x400n, 0n, { fpu: area });
    expect([...page.subarray(VMSA_OFFSET.fpregYmm, VMSA_OFFSET.fpregYmm + 256)]).toEqual([
      ...area.subarray(XSAVE_LAYOUT.ymmHi, XSAVE_LAYOUT.ymmHi + 256),
    ]);
  });
});

// ---- through the SEV model (fakes) ----------------------------------------------------------------

function plainVmsa(h: FakeHost, vm: FakeVm, vmsa: Uint8Array | undefined): Uint8Array {
  const ctx = h.platform.firmware.context(vm.sev.handle);
  if (ctx === undefined || vmsa === undefined) throw new Error('no launched VMSA');
  return decryptCopy(ctx.key, vmsa, 0, vmsa.length);
}

function esVmWithSegments(h: FakeHost, sregs: Sregs[]): FakeVm {
  const vm = h.createVm('default');
  vm.addSlot(0n, 0x1000);
  vm.cmd(SEV_CMD.ES_INIT);
  sregs.forEach((s, i) => {
    Object.assign(vm.addVcpu(i).s, s);
  });
  vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY.ES });
  vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA);
  return vm;
}

describe('LAUNCH_UPDATE_VMSA and MOVE carry the segments (arch/x86/kvm/svm/sev.c)', () => {
  it('sev_launch_update_vmsa: the page the firmware measures and encrypts carries each vCPU own segments', () => {
    const h = new FakeHost();
    const a = longModeSregs();
    const b = { ...longModeSregs(), cs: flatSeg({ selector: 0x50, type: 11, l: 1, db: 0, base: 0n }) };
    const vm = esVmWithSegments(h, [a, b]);
    const [v0, v1] = vm.list;
    const p0 = plainVmsa(h, vm, v0!.sev.vmsa);
    const p1 = plainVmsa(h, vm, v1!.sev.vmsa);
    expectSegmentsIn(p0, a);
    expectSegmentsIn(p1, b);
    expect(p0).toEqual(buildVmsa(v0!.regs(), a, 0x400n, 0n));
  });

  it('sev_migrate_from: the destination vCPU holds the source VMSA, so its segments are the source ones', () => {
    const h = new FakeHost();
    const s = longModeSregs();
    const src = esVmWithSegments(h, [s]);
    const before = plainVmsa(h, src, src.list[0]!.sev.vmsa);
    const dst = h.createVm('default');
    dst.addVcpu(0); // reset segments of its own
    dst.move(src);
    const moved = plainVmsa(h, dst, dst.list[0]!.sev.vmsa);
    expect(moved).toEqual(before);
    expectSegmentsIn(moved, s);
    expect(src.list[0]!.sev.vmsa).toBeUndefined();
  });
});

// ---- through the simulator API ----------------------------------------------------------------------

function sevCmd(vm: Vm, sevFd: number, id: number, data?: unknown): SevCommand {
  const c: SevCommand = { id, data, sevFd, error: 0 };
  vm.memEncryptOp(c);
  return c;
}

/** The core vCPU behind a Vcpu: its register file (the guest's state) and its SEV-ES slot. */
const core = (v: Vcpu) => v as unknown as { sregs: Sregs; arch: { sev: SevVcpuState } };

function simVmsa(kvm: Kvm, vm: Vm, v: Vcpu, handle: number): Uint8Array {
  const ctx = sevPlatform(kvm as unknown as ArchKvm).firmware.context(handle);
  const vmsa = core(v).arch.sev.vmsa;
  if (ctx === undefined || vmsa === undefined) throw new Error(`vm ${vm.fd}: no launched VMSA`);
  return decryptCopy(ctx.key, vmsa, 0, vmsa.length);
}

function simEsVm(kvm: Kvm, sevFd: number, sregs: Sregs): { vm: Vm; handle: number } {
  const vm = kvm.createVm('default');
  const mem = new Uint8Array(0x1000);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x1000n, userspace: mem });
  sevCmd(vm, sevFd, SEV_CMD.ES_INIT);
  const v = vm.createVcpu(0);
  // vm_vcpu_add() -> vcpu_init_cpuid(): long-mode sregs need CPUID LM (a new vCPU has no CPUID).
  v.setCpuid(kvm.getSupportedCpuid());
  v.setSregs(sregs);
  const start = { handle: 0, policy: POLICY.ES };
  sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, start);
  sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: mem.length });
  sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
  return { vm, handle: start.handle };
}

describe('the simulator: KVM_SET_SREGS → LAUNCH_UPDATE_VMSA → MOVE', () => {
  it('sev_es_sync_vmsa: segments set with KVM_SET_SREGS reach the VMSA of a KVM_SEV_ES_INIT vCPU', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const s = longModeSregs();
    const { vm, handle } = simEsVm(kvm, sevFd, s);
    const v = vm.vcpus[0]!;
    const page = simVmsa(kvm, vm, v, handle);
    // What svm_set_segment() keeps of each segment is what the VMSA carries.
    expectSegmentsIn(page, core(v).sregs);
    expect(seg(page, VMSA_OFFSET.cs)).toEqual({ selector: 0x8, attrib: 0xa9b, limit: 0xffffffff, base: 0n });
    expect(seg(page, VMSA_OFFSET.gdtr)).toEqual({ selector: 0, attrib: 0, limit: 0x47, base: 0x4000n });
    expect(seg(page, VMSA_OFFSET.idtr)).toEqual({ selector: 0, attrib: 0, limit: 0xfff, base: 0x5000n });
    // KVM_SEV_ES_INIT: no FPU state in the VMSA.
    expect(u16(page, VMSA_OFFSET.x87Fcw)).toBe(0);
    vm.close();
  });

  it('sev_migrate_from: after MOVE the destination vCPU runs on the source VMSA, segments included', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const s = longModeSregs();
    const { vm: src, handle } = simEsVm(kvm, sevFd, s);
    const launched = simVmsa(kvm, src, src.vcpus[0]!, handle);
    const dst = kvm.createVm('default');
    const dv = dst.createVcpu(0);
    expect(dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src])).toBeUndefined();
    const moved = simVmsa(kvm, dst, dv, handle);
    expect(moved).toEqual(launched);
    // The guest state the destination vCPU runs with is the VMSA's.
    expectSegmentsIn(moved, core(dv).sregs);
    expect(core(dv).sregs.cs).toMatchObject({ selector: 0x8, l: 1 });
    expect(core(dv).sregs.gdt).toEqual({ base: 0x4000n, limit: 0x47 });
    dst.close();
    src.close();
  });

  it('sev_es_sync_vmsa: KVM_SET_MSRS and KVM_SET_XCRS values before the launch reach the VMSA', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const vm = kvm.createVm('default');
    const mem = new Uint8Array(0x1000);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x1000n, userspace: mem });
    sevCmd(vm, sevFd, SEV_CMD.ES_INIT);
    const v = vm.createVcpu(0);
    // vm_vcpu_add() -> vcpu_init_cpuid(): XCR0 beyond x87 needs CPUID leaf 0xD (a new vCPU has no CPUID).
    v.setCpuid(kvm.getSupportedCpuid());
    v.setMsr(0xc0000082, 0xffff_ffff_8100_0000n); // LSTAR
    v.setMsr(0x175, 0xffff_c900_0000_0000n); // SYSENTER_ESP
    v.setMsr(0x277, 0x0007_0406_0007_0406n); // PAT
    v.setXcrs([{ xcr: 0, value: 7n }]);
    const start = { handle: 0, policy: POLICY.ES };
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, start);
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    const page = simVmsa(kvm, vm, v, start.handle);
    expect(u64(page, VMSA_OFFSET.lstar)).toBe(0xffff_ffff_8100_0000n);
    expect(u64(page, VMSA_OFFSET.sysenterEsp)).toBe(0xffff_c900_0000_0000n);
    expect(u64(page, VMSA_OFFSET.gPat)).toBe(0x0007_0406_0007_0406n);
    expect(u64(page, VMSA_OFFSET.xcr0)).toBe(7n);
    vm.close();
  });

  it('an SEV-ES VM type (KVM_SEV_INIT2) puts the FPU in the VMSA too: FCW 0x37F, MXCSR 0x1F80 at RESET', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const vm = kvm.createVm('sev-es');
    const mem = new Uint8Array(0x1000);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x1000n, userspace: mem });
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const v = vm.createVcpu(0);
    const start = { handle: 0, policy: POLICY.ES };
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, start);
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    const page = simVmsa(kvm, vm, v, start.handle);
    expect(u16(page, VMSA_OFFSET.x87Fcw)).toBe(0x37f);
    expect(u32(page, VMSA_OFFSET.mxcsr)).toBe(0x1f80);
    expectSegmentsIn(page, resetSregs('svm'));
    vm.close();
  });
});

describe('KVM_GET/SET_SREGS once the VMSA holds the state (arch/x86/kvm/regs.c)', () => {
  const zero: Segment = segment();
  const hidden = (s: Sregs): Sregs => ({
    cs: zero,
    ds: zero,
    es: zero,
    fs: zero,
    gs: zero,
    ss: zero,
    tr: zero,
    ldt: zero,
    gdt: { base: 0n, limit: 0 },
    idt: { base: 0n, limit: 0 },
    cr0: s.cr0,
    cr2: 0n,
    cr3: 0n,
    cr4: s.cr4,
    efer: s.efer,
  });

  it('__get_sregs_common: a launched KVM_SEV_ES_INIT vCPU reads zero segments, GDTR, IDTR, CR2, CR3; CR0, CR4, EFER as KVM tracks them', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const s = { ...longModeSregs(), cr2: 0x1234n };
    const { vm } = simEsVm(kvm, sevFd, s);
    const v = vm.vcpus[0]!;
    expect(v.getSregs()).toEqual(hidden(s));
    // The guest's own state is untouched: it is in the VMSA.
    expect(core(v).sregs.cs).toMatchObject({ selector: 0x8, l: 1 });
    expect(core(v).sregs.cr3).toBe(0x9000n);
    vm.close();
  });

  it('__set_sregs_common: on a launched KVM_SEV_ES_INIT vCPU the struct is still validated (EINVAL), then nothing is set', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const s = longModeSregs();
    const { vm } = simEsVm(kvm, sevFd, s);
    const v = vm.vcpus[0]!;
    const before = structuredClone(core(v).sregs);
    // Long mode (LME + PG) without CR4.PAE: kvm_is_valid_sregs() fails first.
    expect(() => v.setSregs({ ...s, cr4: 0n })).toThrow(/EINVAL/);
    // A valid struct returns 0 and changes neither the segments nor CR0/CR3/CR4/EFER.
    v.setSregs({ ...resetSregs('svm') });
    expect(core(v).sregs).toEqual(before);
    expect(v.getSregs()).toEqual(hidden(s));
    vm.close();
  });

  it('sev_migrate_from: the destination vCPU is protected too; KVM_GET_SREGS on it hides the segments it now runs with', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const { vm: src } = simEsVm(kvm, sevFd, longModeSregs());
    const dst = kvm.createVm('default');
    const dv = dst.createVcpu(0);
    dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src]);
    const got = dv.getSregs();
    expect([got.cs, got.ds, got.ss, got.tr, got.ldt]).toEqual([zero, zero, zero, zero, zero]);
    expect([got.gdt, got.idt]).toEqual([
      { base: 0n, limit: 0 },
      { base: 0n, limit: 0 },
    ]);
    expect(core(dv).sregs.cs).toMatchObject({ selector: 0x8, l: 1 });
    dst.close();
    src.close();
  });

  it('kvm_arch_vcpu_ioctl_get_sregs: an SEV-ES VM type (has_protected_state) refuses KVM_GET_SREGS after launch with EINVAL', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const vm = kvm.createVm('sev-es');
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const v = vm.createVcpu(0);
    expect(v.getSregs().cs.selector).toBe(0xf000);
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY.ES });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    expect(() => v.getSregs()).toThrow(/EINVAL/);
    vm.close();
  });
});
