// A small SEV-SNP VM builder for the SNP tests: slot 0 is guest_memfd-backed, its first pages hold the
// guest's page tables and data (launched with SNP_LAUNCH_UPDATE NORMAL), some private pages are left
// unlaunched (the guest must PVALIDATE them), and the last pages are shared (GHCB, conversion window).

import { encodeGhcbMsr, GHCB_MSR_INFO_MASK, GHCB_MSR_CODE, SEV_MSR } from '@kvmtest/coco';
import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import {
  CAP,
  CR,
  type Guest,
  type GuestProgram,
  type Kvm,
  MEM_FLAG,
  MEMORY_ATTRIBUTE,
  SEV_CMD,
  type SevCommand,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import type { ArchKvm } from '../arch/ops.js';
import { createSimKvm } from '../sim.js';
import { sevPlatform } from './arch-ops.js';
import type { SevLeakReport } from './platform.js';

/** SNP default policy of the selftests: RSVD_MBO (bit 17) | SMT (bit 16). */
export const SNP_POLICY = (1n << 17n) | (1n << 16n);
/** C-bit of the default simulated host. */
export const CBIT = 51;
/** Pages of slot 0. */
export const SLOT_PAGES = 64;
/** GPA of the data page (launched, validated). */
export const DATA_GPA = 0x2_0000n;
/** First private page that is NOT launched (the guest must PVALIDATE it). */
export const PEND_GPA = 0x3_0000n;
/** First shared page (GHCB at SHARED_GPA, a PSC buffer page after it). */
export const SHARED_GPA = 0x3_8000n;
/** End of the launched range. */
export const LAUNCH_END = 0x3_0000n;
export const DATA_GVA = 0x40_0000n;
export const SHARED_GVA = 0x50_0000n;
export const PEND_GVA = 0x60_0000n;
/** A shared (no C-bit) alias of the pending pages, for conversions. */
export const PEND_SHARED_GVA = 0x70_0000n;
/** The data page's first u64 as launched. */
export const DATA_VALUE = 0x1122_3344_5566_7788n;

/** An SNP VM before launch, with helpers. */
export interface SnpVm {
  readonly kvm: Kvm;
  readonly vm: Vm;
  readonly sevFd: number;
  readonly gmemFd: number;
  /** The VMM's userspace buffer of slot 0 (the shared backing). */
  readonly userspace: Uint8Array;
  /** The staging copy the launch reads private contents from. */
  readonly image: Uint8Array;
  readonly pt: PageTables;
  /** KVM_MEMORY_ENCRYPT_OP with this VM's /dev/sev fd; returns the command (error field filled). */
  op(id: number, data?: unknown): SevCommand;
}

/** sev-snp VM with INIT2 done, slot 0 and attributes set up, page tables in the staging image. No vCPU. */
export function snpVm(
  kvm: Kvm = createSimKvm(),
  opts: { init2?: boolean; exitHypercall?: boolean } = {},
): SnpVm {
  const vm = kvm.createVm('sev-snp');
  const sevFd = kvm.openSevDevice();
  const op = (id: number, data?: unknown): SevCommand => {
    const cmd: SevCommand = { id, data, sevFd, error: 0 };
    vm.memEncryptOp(cmd);
    return cmd;
  };
  if (opts.init2 !== false) op(SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
  if (opts.exitHypercall !== false) vm.enableCap(CAP.EXIT_HYPERCALL, [1n << 12n]);
  const size = BigInt(SLOT_PAGES * 4096);
  const userspace = new Uint8Array(SLOT_PAGES * 4096);
  const gmemFd = vm.createGuestMemfd(size);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: MEM_FLAG.GUEST_MEMFD,
    guestPhysAddr: 0n,
    memorySize: size,
    userspace,
    guestMemfd: gmemFd,
    guestMemfdOffset: 0n,
  });
  vm.setMemoryAttributes({ address: 0n, size: SHARED_GPA, attributes: MEMORY_ATTRIBUTE.PRIVATE });
  const image = new Uint8Array(SLOT_PAGES * 4096);
  const phys = new PhysicalMemory();
  phys.addRegion({ slot: 0, gpa: 0n, size, backing: image });
  let next = 0x1_0000n;
  const pt = new PageTables(phys, { levels: 4, physBits: 52, tagBit: CBIT }, () => {
    const p = next;
    next += 4096n;
    return p;
  });
  pt.map(DATA_GVA, DATA_GPA, 4096n, { tagged: true });
  for (let i = 0n; i < 8n; i++) {
    pt.map(PEND_GVA + i * 4096n, PEND_GPA + i * 4096n, 4096n, { tagged: true });
    pt.map(PEND_SHARED_GVA + i * 4096n, PEND_GPA + i * 4096n, 4096n);
    pt.map(SHARED_GVA + i * 4096n, SHARED_GPA + i * 4096n, 4096n);
  }
  new DataView(image.buffer).setBigUint64(Number(DATA_GPA), DATA_VALUE, true);
  return { kvm, vm, sevFd, gmemFd, userspace, image, pt, op };
}

/** vCPU `id` with 64-bit paging on the SNP VM's page tables, entering `program`. */
export function snpVcpu(s: SnpVm, program: GuestProgram, id = s.vm.vcpus.length): Vcpu {
  const v = s.vm.createVcpu(id);
  // vm_vcpu_add() -> vcpu_init_cpuid(): a new vCPU has no CPUID until the VMM sets one.
  v.setCpuid(s.kvm.getSupportedCpuid());
  v.setSregs({
    cr0: CR.CR0_PE | CR.CR0_PG | CR.CR0_WP,
    cr2: 0n,
    cr3: s.pt.root,
    cr4: CR.CR4_PAE,
    efer: CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE,
  });
  v.setEntry(program);
  return v;
}

/** SNP_LAUNCH_START → SNP_LAUNCH_UPDATE NORMAL over [0, LAUNCH_END) from the image → SNP_LAUNCH_FINISH. */
export function snpLaunch(s: SnpVm, policy = SNP_POLICY): void {
  s.op(SEV_CMD.SNP_LAUNCH_START, { policy, flags: 0 });
  s.op(SEV_CMD.SNP_LAUNCH_UPDATE, {
    gfnStart: 0n,
    uaddr: { buffer: s.image, offset: 0 },
    len: LAUNCH_END,
    type: 1,
    flags: 0,
  });
  s.op(SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0 });
}

/** The SEV platform's leak report of a simulated host. */
export function leakReport(kvm: Kvm): SevLeakReport {
  return sevPlatform(kvm as unknown as ArchKvm).leakReport();
}

/** Guest side: registers the GHCB at SHARED_GPA with the MSR protocol (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol() REG_GPA). */
export async function registerGhcb(g: Guest, gpa = SHARED_GPA): Promise<void> {
  g.wrmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB, encodeGhcbMsr({ kind: 'reg-gpa-req', gfn: gpa >> 12n }));
  await g.vmgexit();
  const r = g.rdmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB);
  if ((r & GHCB_MSR_INFO_MASK) !== BigInt(GHCB_MSR_CODE.REG_GPA_RESP))
    throw new Error(`REG_GPA failed: ${r}`);
}
