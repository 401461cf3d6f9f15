// SEV-SNP launch in the selftests' idiom (lib/x86/sev.c `snp_vm_launch_start`, `snp_vm_launch_update`,
// `snp_vm_launch_finish`, `vm_sev_launch` for SNP): KVM_CAP_EXIT_HYPERCALL for KVM_HC_MAP_GPA_RANGE,
// SNP_LAUNCH_START with the default policy (RSVD_MBO | SMT), then for every range of private pages the
// PRIVATE memory attribute and SNP_LAUNCH_UPDATE type NORMAL from the host's staging copy (the firmware
// validates those pages, so the guest needs no PVALIDATE for them), then SNP_LAUNCH_FINISH, which
// measures and protects every vCPU's VMSA. From then on the private pages are guest_memfd's.

import { SNP_POLICY_BIT } from '@kvmtest/coco';
import {
  CAP,
  type Errno,
  hostPtr,
  KVM_HC,
  MEMORY_ATTRIBUTE,
  SEV_CMD,
  SNP_PAGE_TYPE,
  type SnpLaunchFinishData,
  type SnpLaunchStartData,
  type SnpLaunchUpdateData,
  tryKvm,
} from '@kvmtest/kvm';
import { TestkitError } from './errors.js';
import { asTestVm, kitState, type LaunchPolicy, policyValue, type TestVm, type VmLike } from './kit-vm.js';
import { kvmAssert } from './kvm-assert.js';
import { sevFdOf, sevIoctl } from './sev.js';

/** snp_default_policy(): RSVD_MBO (bit 17) | SMT (bit 16; the simulated host has SMT on). */
export const SNP_DEFAULT_POLICY: bigint =
  (1n << BigInt(SNP_POLICY_BIT.RSVD_MBO)) | (1n << BigInt(SNP_POLICY_BIT.SMT));

function requireSnp(vm: TestVm, what: string): void {
  if (vm.traits.launchFlow !== 'snp')
    throw new TestkitError('WRONG_VM_TYPE', `${what} is for sev-snp VMs, not ${vm.type}`, { type: vm.type });
}

/** snp_vm_init: KVM_SEV_INIT2 (the only init of an SNP VM: svm/sev.c sev_guest_init() refuses the legacy INIT for it). */
export function snpInit(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireSnp(vm, 'snpInit');
  sevIoctl(vm, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
}

/** SNP_LAUNCH_START with `policy` (default: the VM's, RSVD_MBO | SMT); enables the MAP_GPA_RANGE exit first. */
export function snpLaunchStart(vmLike: VmLike, policy?: LaunchPolicy): void {
  const vm = asTestVm(vmLike);
  requireSnp(vm, 'snpLaunchStart');
  // vm_sev_launch for SNP: page-state changes must reach userspace as KVM_HC_MAP_GPA_RANGE exits
  // (svm/sev.c: snp_begin_psc_msr() / snp_begin_psc() forward them only when the VM enabled it).
  kvmAssert('KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)', () =>
    vm.raw.enableCap(CAP.EXIT_HYPERCALL, [1n << BigInt(KVM_HC.MAP_GPA_RANGE)]),
  );
  const p = policy === undefined ? BigInt(vm.policy) : policyValue(policy, 64);
  const data: SnpLaunchStartData = { policy: p, flags: 0 };
  sevIoctl(vm, SEV_CMD.SNP_LAUNCH_START, data);
  kitState(vm).launchStarted(Number(p & 0xffff_ffffn));
}

/** The try form of snpLaunchStart (no EXIT_HYPERCALL step): the errno name, or undefined on success. */
export function trySnpLaunchStart(vmLike: VmLike, data: SnpLaunchStartData): Errno | undefined {
  const vm = asTestVm(vmLike);
  return tryKvm(() =>
    vm.raw.memEncryptOp({ id: SEV_CMD.SNP_LAUNCH_START, data, sevFd: sevFdOf(vm), error: 0 }),
  );
}

/**
 * snp_vm_launch_update: for every range of private pages of every memslot, the PRIVATE attribute, then
 * SNP_LAUNCH_UPDATE NORMAL from the staging copy (re-issued until the whole range is taken). Stage → updated;
 * the page tables are out of the host's reach from here.
 */
export function snpLaunchUpdate(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireSnp(vm, 'snpLaunchUpdate');
  const mem = kitState(vm).mem;
  if (mem) {
    const { space } = mem;
    for (const region of space.memory.regions()) {
      for (const r of space.allocator.protectedRanges(region.slot)) {
        const size = BigInt(r.pages) * 4096n;
        kvmAssert('KVM_SET_MEMORY_ATTRIBUTES', () =>
          vm.raw.setMemoryAttributes({ address: r.gpa, size, attributes: MEMORY_ATTRIBUTE.PRIVATE }),
        );
        const data: SnpLaunchUpdateData = {
          gfnStart: r.gpa >> 12n,
          uaddr: hostPtr(region.backing, region.offsetOf(r.gpa)),
          len: size,
          type: SNP_PAGE_TYPE.NORMAL,
          flags: 0,
        };
        // Partial progress advances the struct and returns 0; issue again for the rest (a page that
        // fails first in its call is EIO, which asserts).
        while (data.len !== 0n) sevIoctl(vm, SEV_CMD.SNP_LAUNCH_UPDATE, data);
      }
    }
  }
  kitState(vm).launchUpdated();
}

/** snp_vm_launch_finish: SNP_LAUNCH_FINISH (every vCPU's VMSA measured and protected). Stage → finished. */
export function snpLaunchFinish(vmLike: VmLike, data: Partial<SnpLaunchFinishData> = {}): void {
  const vm = asTestVm(vmLike);
  requireSnp(vm, 'snpLaunchFinish');
  sevIoctl(vm, SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0, ...data });
  kitState(vm).launchFinished();
}

/** vm_sev_launch for SNP: the launch from the VM's current stage on (START, UPDATE, FINISH). */
export function vmSnpLaunch(vmLike: VmLike, opts: { policy?: LaunchPolicy } = {}): void {
  const vm = asTestVm(vmLike);
  requireSnp(vm, 'vmSnpLaunch');
  if (vm.launchStage === 'none') snpLaunchStart(vm, opts.policy);
  if (vm.launchStage === 'started') snpLaunchUpdate(vm);
  if (vm.launchStage !== 'finished') snpLaunchFinish(vm);
}
