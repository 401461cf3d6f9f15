// The plain x86 ops tables: DEFAULT VMs and KVM_X86_SW_PROTECTED_VM, on the simulated host's vendor.

import { DEVICE_ATTR, KvmError, MEMORY_ATTRIBUTE } from '@kvmtest/kvm';
import type { ResolvedConfig } from '../config.js';
import type { AccessDecision, ArchOps, ArchVm, MemAccess } from './ops.js';

const SHARED: AccessDecision = Object.freeze({ kind: 'shared' });
const PRIVATE: AccessDecision = Object.freeze({ kind: 'private' });

/**
 * Vendor-level behaviour every VM of the host sees (the parts of svm_x86_ops / vt_x86_ops that are
 * not about a confidential type). An AMD host reports the SEV device attribute group; an Intel host
 * answers a vCPU-scope KVM_MEMORY_ENCRYPT_OP on a non-TD vCPU with EINVAL (arch/x86/kvm/vmx/main.c: vt_vcpu_mem_enc_ioctl()), an AMD host has
 * no such op (ENOTTY).
 */
export function vendorBase(cfg: ResolvedConfig): Partial<ArchOps> {
  if (cfg.vendor === 'intel') {
    return {
      vcpuMemEncryptOp(vcpu) {
        // arch/x86/kvm/vmx/main.c: vt_vcpu_mem_enc_ioctl(): VMX's vCPU mem_enc op rejects a vCPU that is not a TD vCPU.
        throw new KvmError('EINVAL', 'KVM_MEMORY_ENCRYPT_OP', `vCPU ${vcpu.id} is not a TD vCPU`);
      },
    };
  }
  return {
    deviceAttr(kvm, group, attr) {
      if (group !== DEVICE_ATTR.X86_GRP_SEV) return undefined;
      // arch/x86/kvm/svm/sev.c: sev_dev_get_attr(): unknown attribute -> ENXIO.
      if (attr !== DEVICE_ATTR.X86_SEV_VMSA_FEATURES)
        throw new KvmError(
          'ENXIO',
          'KVM_GET_DEVICE_ATTR',
          `attribute ${attr} is not in group KVM_X86_GRP_SEV`,
        );
      // sev_hardware_setup: VMSA features (DEBUG_SWAP) are only offered when SEV-ES is usable.
      return kvm.typeAvailable('sev-es') && sevEsUsable(kvm.config) ? kvm.config.sevVmsaFeatures : 0n;
    },
  };
}

/** SEV-ES needs a non-empty ES ASID range (arch/x86/kvm/svm/sev.c: sev_hardware_setup(): min_sev_asid == 1 disables SEV-ES). */
function sevEsUsable(cfg: ResolvedConfig): boolean {
  return cfg.minSevAsid > 1 && cfg.maxSevAsid > 0;
}

/** KVM_X86_DEFAULT_VM: no private memory, no protected state; every access is a plain shared access. */
export function defaultOps(cfg: ResolvedConfig, vendorExtras: Partial<ArchOps> = {}): ArchOps {
  return {
    ...vendorBase(cfg),
    ...vendorExtras,
    name: cfg.vendor === 'intel' ? 'vmx' : 'svm',
    available: true,
    vmInit(vm: ArchVm) {
      vm.hasPrivateMem = false;
      vm.hasProtectedState = false;
      vendorExtras.vmInit?.(vm);
    },
  };
}

/**
 * KVM_X86_SW_PROTECTED_VM: private memory without encryption (a test vehicle for guest_memfd).
 * The private-ness of an access is the page's PRIVATE memory attribute (x86 mmu.c: for
 * SW_PROTECTED VMs the fault is private iff kvm_mem_is_private), so the guest cannot disagree with
 * the attribute; private pages come from guest_memfd (the core turns "no gmem" into a memory-fault
 * exit, private_mem_kvm_exits_test).
 */
export function swProtectedOps(cfg: ResolvedConfig, vendorExtras: Partial<ArchOps> = {}): ArchOps {
  return {
    ...vendorBase(cfg),
    ...vendorExtras,
    name: 'sw-protected',
    available: true,
    vmInit(vm: ArchVm) {
      vm.hasPrivateMem = true;
      vm.hasProtectedState = false;
      vendorExtras.vmInit?.(vm);
    },
    classifyAccess(_vm: ArchVm, a: MemAccess): AccessDecision {
      return (a.attributes & MEMORY_ATTRIBUTE.PRIVATE) !== 0n ? PRIVATE : SHARED;
    },
  };
}
