// The kit table of the types without a launch (default, sw-protected): no page-table tag, nothing
// besides slot 0, no post-create step; a vCPU starts in 64-bit mode on the kit's page tables.

import { cpuidHas, X86_FEATURE } from '@kvmtest/coco';
import {
  CAP,
  CR,
  type CpuidEntry,
  codeSegment64,
  dataSegment64,
  findCpuid,
  type Kvm,
  unusableSegment,
} from '@kvmtest/kvm';
import { supportedCpuid } from '../host-cpuid.js';
import { kitState, type TestVm } from '../kit-vm.js';
import { wrapGuest } from '../runtime.js';
import type { KitOps } from './ops.js';

/** The selftests' GDT selectors (processor.h KERNEL_CS, KERNEL_DS): entries 1 and 2. */
const KERNEL_SELECTOR = { cs: 0x08, ds: 0x10 } as const;

/**
 * kvm_cpu_supported_xcr0(): the XCR0 a kit vCPU starts with when KVM has XSAVE (CPUID XSAVE and
 * KVM_CAP_XCRS), i.e. CPUID.(0xD,0) EDX:EAX; undefined without XSAVE.
 */
function xsaveXcr0(kvm: Kvm, cpuid: readonly CpuidEntry[]): bigint | undefined {
  if (!cpuidHas(cpuid, X86_FEATURE.XSAVE) || kvm.checkExtension(CAP.XCRS) <= 0) return undefined;
  const d = findCpuid(cpuid, 0xd, 0);
  return d === undefined ? undefined : (BigInt(d.edx) << 32n) | BigInt(d.eax);
}

/**
 * vm_vcpu_add's x86 part for a vCPU whose registers the host sets: KVM's supported CPUID, 64-bit
 * paging state (CR0.PG|PE|WP, CR4.PAE[|LA57][|OSXSAVE], EFER.LME|LMA|NXE, CR3 = the page-table
 * root, 64-bit code and data segments, XCR0 with XSAVE), RSP at the stack top and the guest program as entry point. Shared by
 * every table whose vCPU state is the host's until launch (default, SEV family, SNP).
 */
export const x86AddVcpu: KitOps<TestVm>['addVcpu'] = (vm, vcpu, stackTop, guest) => {
  const cpuid = kitState(vm).cpuid ?? supportedCpuid(vm.kvm);
  vcpu.setCpuid(cpuid);
  // vcpu_init_sregs / vcpu_init_xcrs: with XSAVE, CR4.OSXSAVE and XCR0 = every feature KVM supports.
  const xcr0 = xsaveXcr0(vm.kvm, cpuid);
  const sregs = vcpu.getSregs();
  sregs.cr0 |= CR.CR0_PE | CR.CR0_PG | CR.CR0_WP;
  sregs.cr4 |=
    CR.CR4_PAE |
    (vm.shape.mode === '5-level' ? CR.CR4_LA57 : 0n) |
    (xcr0 !== undefined ? CR.CR4_OSXSAVE : 0n);
  sregs.efer |= CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE;
  sregs.cr3 = vm.space.pageTables.root;
  // vcpu_init_sregs()'s segments (tools/testing/selftests/kvm/lib/x86/processor.c): a flat 64-bit
  // code segment at KERNEL_CS, flat data at KERNEL_DS in DS/ES/GS, LDTR unusable. FS, SS, TR and
  // the descriptor tables keep their RESET values: the kit has no GDT, IDT or TSS in guest memory
  // (guest exceptions are routed by the guest runtime), and the reset TR is already a busy TSS.
  sregs.ldt = unusableSegment();
  sregs.cs = codeSegment64(KERNEL_SELECTOR.cs);
  sregs.ds = dataSegment64(KERNEL_SELECTOR.ds);
  sregs.es = dataSegment64(KERNEL_SELECTOR.ds);
  sregs.gs = dataSegment64(KERNEL_SELECTOR.ds);
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.rsp = stackTop;
  regs.rflags |= 2n;
  vcpu.setRegs(regs);
  if (xcr0 !== undefined) vcpu.setXcrs([{ xcr: 0, value: xcr0 }]);
  if (guest !== undefined) vcpu.setEntry(wrapGuest(guest));
};

/** The table of default and sw-protected VMs. */
export const defaultKitOps: KitOps<TestVm> = Object.freeze<KitOps<TestVm>>({
  name: 'default',
  tagPolicy: () => undefined,
  bootRegions: () => {},
  postCreate: () => {},
  addVcpu: x86AddVcpu,
  launch: () => {},
});
