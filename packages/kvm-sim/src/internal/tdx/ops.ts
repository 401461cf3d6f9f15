// The TDX ops table: what `vt_x86_ops` does for a KVM_X86_TDX_VM (arch/x86/kvm/vmx/main.c `vt_*`
// dispatching to tdx.c), expressed as the simulator's ArchOps (arch/x86/kvm/vmx/main.c: vt_x86_ops).

import { hex } from '@kvmtest/coco';
import { CAP, KvmError, type TdxCommand } from '@kvmtest/kvm';
import type { ArchOps, ArchVcpu, ArchVm } from '../arch/ops.js';
import type { ResolvedConfig } from '../config.js';
import { tdxVcpuIoctl, tdxVmIoctl } from './commands.js';
import { MSR_APIC_BASE, TD_STATE, TD_VCPU_STATE } from './constants.js';
import { tdxClassifyAccess, tdxGuestCpuid, tdxIntercept, tdxTdcall } from './guest.js';
import { freeKeyId, newTdxVcpuState, newTdxVmState, tagState, tdOf, tdVcpuOf } from './state.js';
import { splitIrqchip } from './views.js';

function must<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`tdx: ${what} has no TD state`);
  return v;
}

/**
 * The ops table of `tdx` VMs. COPY/MOVE_ENC_CONTEXT_FROM and REG/UNREG_REGION are left out on
 * purpose: vt_x86_ops has no such ops, so the core answers EINVAL / ENOTTY (arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(), kvm_arch_vm_ioctl(); arch/x86/kvm/vmx/main.c: vt_x86_ops).
 */
export function tdxArchOps(cfg: ResolvedConfig): ArchOps {
  return {
    name: 'tdx',
    available: true,

    vmInit(vm: ArchVm) {
      // tdx_vm_init: private memory and protected state; max_vcpus capped to the present CPUs.
      vm.hasPrivateMem = true;
      vm.hasProtectedState = true;
      vm.arch = tagState(newTdxVmState(Math.min(cfg.maxVcpus, cfg.onlineCpus)));
    },

    vmDestroy(vm: ArchVm) {
      // tdx_mmu_release_hkid + tdx_vm_destroy: the KeyID goes back to the pool.
      const td = tdOf(vm);
      if (td === undefined) return;
      if (td.hkid > 0) freeKeyId(vm.kvm, td.hkid);
      td.hkid = -1;
      td.state = TD_STATE.UNINITIALIZED;
      td.mapped.clear();
    },

    checkExtension(vm: ArchVm | undefined, cap: number) {
      // x86.c: KVM_CAP_MAX_VCPUS on a VM answers kvm->max_vcpus, which tdx_vm_init lowered.
      if (vm !== undefined && cap === CAP.MAX_VCPUS) return tdOf(vm)?.maxVcpus;
      return undefined;
    },

    memEncryptOp(vm, cmd) {
      // tdx_vm_ioctl reads whatever it is given as a kvm_tdx_cmd (a kvm_sev_cmd shape fails the copy).
      tdxVmIoctl(vm, cmd as TdxCommand | undefined);
    },

    prepareMemoryRegion(vm: ArchVm, gpa: bigint, size: bigint) {
      // x86.c kvm_arch_prepare_memory_region: a memslot may not reach the GFNs that alias through
      // the shared bit (kvm_is_gfn_alias on the last GFN).
      const td = tdOf(vm);
      if (td === undefined || td.sharedMask === 0n) return;
      const last = gpa + size - 1n;
      if ((last & td.sharedMask) !== 0n)
        throw new KvmError(
          'EINVAL',
          'KVM_SET_USER_MEMORY_REGION2',
          `the slot ends at ${hex(last)}, at or above the TD's shared bit ${hex(td.sharedMask)}`,
        );
    },

    vcpuPrecreate(vm: ArchVm, id: number) {
      const td = must(tdOf(vm), `VM ${vm.fd}`);
      const op = 'KVM_CREATE_VCPU';
      // kvm_vm_ioctl_create_vcpu: created_vcpus >= kvm->max_vcpus (the TD's lowered limit).
      if (vm.createdVcpus >= td.maxVcpus)
        throw new KvmError('EINVAL', op, `the TD already has its maximum of ${td.maxVcpus} vCPUs`, { id });
      // tdx_vcpu_create (arch/x86/kvm/vmx/tdx.c): TD not INITIALIZED -> EIO; no split irqchip -> EINVAL.
      if (td.state !== TD_STATE.INITIALIZED)
        throw new KvmError(
          'EIO',
          op,
          td.state === TD_STATE.UNINITIALIZED
            ? 'KVM_TDX_INIT_VM has not run: a TD vCPU needs an initialized TD'
            : 'the TD is finalized (RUNNABLE): no vCPUs can be added',
          { id },
        );
      if (splitIrqchip(vm) === false)
        throw new KvmError(
          'EINVAL',
          op,
          'a TD vCPU needs KVM_CAP_SPLIT_IRQCHIP (the TDX module mandates APICv)',
          {
            id,
          },
        );
    },

    vcpuCreated(vcpu: ArchVcpu) {
      vcpu.arch = tagState(newTdxVcpuState(vcpu.id));
    },

    vcpuMemEncryptOp(vcpu, cmd) {
      tdxVcpuIoctl(vcpu, cmd);
    },

    stateProtected() {
      // guest_state_protected = !(attributes & DEBUG); KVM does not support DEBUG TDs.
      return true;
    },

    runCheck(vcpu: ArchVcpu) {
      // tdx_vcpu_pre_run (arch/x86/kvm/vmx/tdx.c).
      const td = must(tdOf(vcpu.vm), `VM ${vcpu.vm.fd}`);
      const tv = must(tdVcpuOf(vcpu), `vCPU ${vcpu.id}`);
      if (tv.state !== TD_VCPU_STATE.INITIALIZED)
        throw new KvmError('EINVAL', 'KVM_RUN', `vCPU ${vcpu.id} is not initialized (KVM_TDX_INIT_VCPU)`);
      if (td.state !== TD_STATE.RUNNABLE)
        throw new KvmError('EINVAL', 'KVM_RUN', 'the TD is not finalized (KVM_TDX_FINALIZE_VM)');
    },

    readMsr(vcpu: ArchVcpu, msr: number) {
      // KVM_TDX_INIT_VCPU switched the APIC to x2APIC mode.
      return msr === MSR_APIC_BASE ? tdVcpuOf(vcpu)?.apicBase : undefined;
    },

    classifyAccess: tdxClassifyAccess,
    tagBit(vm: ArchVm) {
      const gpaw = tdOf(vm)?.gpaw;
      return gpaw === undefined ? undefined : gpaw - 1;
    },
    intercept: tdxIntercept,
    guestCpuid: tdxGuestCpuid,
    tdcall: tdxTdcall,
  };
}
