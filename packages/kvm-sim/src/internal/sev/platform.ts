// The host's SEV support as KVM sets it up (`sev_hardware_setup`, arch/x86/kvm/svm/sev.c): what CPUID 0x8000001F and
// the module parameters enable, the ASID bitmaps, the PSP firmware, and the per-VM lifecycle
// (`sev_vm_destroy`, arch/x86/kvm/svm/sev.c). The arch seam holds one SevPlatform per simulated host and forwards
// the SEV-related ioctls and guest events to it.

import {
  CPUID_LEAF_SEV,
  type CpuidRegs,
  decodeCpuid8000001F,
  hasSevCpuFeature,
  type SevCpuInfo,
  SVM_SEV_FEATURE_BIT,
  type VmType,
} from '@kvmtest/coco';
import type { EncRegion, Exit } from '@kvmtest/kvm';
import { AsidPool } from './asid.js';
import { memEncryptOp, registerRegion, unregisterRegion } from './commands.js';
import { deriveKey, type SevKey } from './crypto.js';
import { copyEncContextFrom, type MoveStep, moveEncContextFrom, moveEncContextSteps } from './enc-context.js';
import {
  completeVmgexit,
  ghcbMsrRead,
  ghcbMsrWrite,
  sevStatusMsr,
  type VcEvent,
  type VmgexitOutcome,
  vcErrorCode,
  vcpuReset,
  vmgexit,
} from './es.js';
import { SevFirmware } from './firmware.js';
import { SnpFirmware } from './snp-firmware.js';
import { SnpRmp, snpVm } from './snp-state.js';
import type { SevPlatformCore } from './types.js';
import {
  isMirror,
  newSevVcpuState,
  newSevVmState,
  type SevVcpuState,
  type SevVmState,
  sevSnpGuest,
} from './state.js';
import type { SevGuestCpuView, SevHostView, SevVcpuView, SevVmView } from './views.js';

/** Host configuration of the simulated SEV platform. */
export interface SevPlatformOptions {
  /** CPUID 0x8000001F of the host (default {@link DEFAULT_SEV_CPUID}: SEV + SEV-ES, C-bit 51, ASIDs 1–15 ES, 16–63 SEV). */
  readonly cpuid?: CpuidRegs;
  /** kvm_amd `sev` module parameter (default true). */
  readonly sevEnabled?: boolean;
  /** kvm_amd `sev_es` module parameter (default true). */
  readonly sevEsEnabled?: boolean;
  /** CPU has DebugSwap and NoNestedDataBp, so SEV-ES may use DEBUG_SWAP (default true). */
  readonly debugSwap?: boolean;
  /** `sev_supported_vmsa_features` before the SEV-ES check (overrides `debugSwap` when given). */
  readonly supportedVmsaFeatures?: bigint;
  /** RLIMIT_MEMLOCK in pages for SEV pinning (default: unlimited, as with CAP_IPC_LOCK). */
  readonly memlockLimitPages?: number;
}

/** CPUID 0x8000001F the simulated host reports by default: SME, SEV, SEV-ES; C-bit 51; max ASID 63; min SEV ASID 16. */
export const DEFAULT_SEV_CPUID: CpuidRegs = Object.freeze({
  eax: (1 << 0) | (1 << 1) | (1 << 3),
  ebx: 51 | (1 << 6),
  ecx: 63,
  edx: 16,
});

/** Things a test can check after closing every VM: all should be empty or zero. */
export interface SevLeakReport {
  /** ASIDs still held (not in the reclaim bitmap). */
  readonly ownedAsids: readonly number[];
  /** Firmware guest contexts not decommissioned. */
  readonly firmwareContexts: readonly number[];
  /** ASIDs still bound to a firmware context (SEV and SNP). */
  readonly boundAsids: number;
  /** SNP guest contexts not decommissioned. */
  readonly snpContexts: readonly number[];
  /** RMP entries still assigned to a guest. */
  readonly rmpAssigned: number;
  /** VM states the platform still tracks as alive. */
  readonly liveVms: number;
}

/** One simulated host's SEV support: configuration, ASIDs, firmware and the SEV ioctls. */
export class SevPlatform implements SevPlatformCore {
  readonly info: SevCpuInfo;
  /** `sev_enabled` after hardware setup (arch/x86/kvm/svm/sev.c: sev_hardware_setup(); checked first in sev_mem_enc_ioctl()). */
  readonly sevEnabled: boolean;
  /** `sev_es_enabled` after hardware setup (arch/x86/kvm/svm/sev.c: sev_hardware_setup(); ES_INIT checks it in sev_mem_enc_ioctl()). */
  readonly sevEsEnabled: boolean;
  /** `sev_supported_vmsa_features` (KVM_X86_SEV_VMSA_FEATURES). */
  readonly supportedVmsaFeatures: bigint;
  readonly memlockLimitPages: number;
  readonly asids: AsidPool;
  readonly firmware: SevFirmware;
  /** `sev_snp_enabled`: SNP in CPUID 0x8000001F and SEV-ES usable (SNP guests take SEV-ES ASIDs). */
  readonly snpEnabled: boolean;
  /** The SNP half of the firmware (guest contexts, SNP launch). */
  readonly snp: SnpFirmware;
  /** The host's Reverse Map Table. */
  readonly rmp = new SnpRmp();
  readonly host: SevHostView;
  readonly #live = new Set<SevVmState>();

  constructor(host: SevHostView, opts: SevPlatformOptions = {}) {
    this.host = host;
    this.info = decodeCpuid8000001F(opts.cpuid ?? DEFAULT_SEV_CPUID);
    const hw = hasSevCpuFeature(this.info, 'SEV') && this.info.maxSevAsid > 0;
    this.sevEnabled = (opts.sevEnabled ?? true) && hw;
    this.sevEsEnabled =
      this.sevEnabled &&
      (opts.sevEsEnabled ?? true) &&
      hasSevCpuFeature(this.info, 'SEV_ES') &&
      this.info.minSevAsid > 1;
    const features =
      opts.supportedVmsaFeatures ??
      ((opts.debugSwap ?? true) ? 1n << BigInt(SVM_SEV_FEATURE_BIT.DEBUG_SWAP) : 0n);
    this.supportedVmsaFeatures = this.sevEsEnabled ? features : 0n;
    this.memlockLimitPages = opts.memlockLimitPages ?? Number.POSITIVE_INFINITY;
    this.asids = new AsidPool(this.info.minSevAsid, this.sevEnabled ? this.info.maxSevAsid : 0);
    this.firmware = new SevFirmware(this.info.minSevAsid, this.info.maxSevAsid);
    this.snpEnabled = this.sevEsEnabled && hasSevCpuFeature(this.info, 'SEV_SNP');
    this.snp = new SnpFirmware(this.info.minSevAsid);
  }

  /** The CPUID leaf 0x8000001F this platform was built from. */
  get cpuidLeaf(): number {
    return CPUID_LEAF_SEV;
  }

  /** SEV VM types this host offers (`sev_set_cpu_caps`; arch/x86/kvm/svm/sev.c). */
  supportedVmTypes(): VmType[] {
    const out: VmType[] = [];
    if (this.sevEnabled) out.push('sev');
    if (this.sevEsEnabled) out.push('sev-es');
    if (this.snpEnabled) out.push('sev-snp');
    return out;
  }

  /** A fresh SEV slot for a new VM (call from KVM_CREATE_VM). */
  newVmState(type: VmType): SevVmState {
    const s = newSevVmState(type);
    this.#live.add(s);
    return s;
  }

  /** A fresh SEV-ES slot for a new vCPU (call from KVM_CREATE_VCPU). */
  newVcpuState(): SevVcpuState {
    return newSevVcpuState();
  }

  /** KVM_MEMORY_ENCRYPT_OP on the VM fd, SEV flavour (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl()). `cmd` undefined = NULL argument. */
  memEncryptOp(vm: SevVmView, cmd: unknown): void {
    memEncryptOp(this, vm, cmd);
  }

  /** KVM_MEMORY_ENCRYPT_REG_REGION (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region()). */
  registerRegion(vm: SevVmView, region: EncRegion | unknown): void {
    registerRegion(this, vm, region);
  }

  /** KVM_MEMORY_ENCRYPT_UNREG_REGION (arch/x86/kvm/svm/sev.c: sev_mem_enc_unregister_region()). */
  unregisterRegion(vm: SevVmView, region: EncRegion | unknown): void {
    unregisterRegion(this, vm, region);
  }

  /** KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM on `dst` with `args[0] = srcFd` (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from()), after the generic gates. */
  moveEncContextFrom(dst: SevVmView, srcFd: number): void {
    moveEncContextFrom(this, dst, srcFd);
  }

  /** The same MOVE as a sequence of lock steps a scheduler can interleave (yields while holding the locks). */
  moveEncContextSteps(dst: SevVmView, srcFd: number): Generator<MoveStep, void, void> {
    return moveEncContextSteps(this, dst, srcFd);
  }

  /** KVM_CAP_VM_COPY_ENC_CONTEXT_FROM on `dst` with `args[0] = srcFd` (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from()), after the generic gates. */
  copyEncContextFrom(dst: SevVmView, srcFd: number): void {
    copyEncContextFrom(this, dst, srcFd);
  }

  /**
   * The VM fd was closed. The VM is destroyed now, or — while mirrors still hold a reference — when
   * the last mirror goes (arch/x86/kvm/svm/sev.c: sev_vm_destroy()).
   */
  vmClosed(vm: SevVmView): void {
    const s = vm.sev;
    if (s.fdClosed) return;
    s.fdClosed = true;
    if (s.refs === 0) this.destroyVm(vm);
  }

  /** `sev_vm_destroy` (arch/x86/kvm/svm/sev.c). Called by `vmClosed` once no reference is left. */
  destroyVm(vm: SevVmView): void {
    const s = vm.sev;
    if (s.destroyed) return;
    s.destroyed = true;
    this.#live.delete(s);
    // sev_gmem_invalidate: the VM's guest_memfd pages go back to the hypervisor whatever its SEV state.
    this.rmp.release(s);
    if (!s.active) return;
    if (s.mirrors.length !== 0)
      throw new Error('internal: SEV owner destroyed while mirrors remain (kernel WARN)');
    if (isMirror(s)) {
      const owner = s.owner!;
      const list = owner.sev.mirrors;
      const i = list.findIndex((m) => m.sev === s);
      if (i >= 0) list.splice(i, 1);
      s.owner = undefined;
      s.active = false;
      owner.sev.refs--;
      if (owner.sev.refs === 0 && owner.sev.fdClosed) this.destroyVm(owner);
      return;
    }
    for (const r of s.regions) s.pagesLocked -= r.npages;
    s.regions = [];
    const snp = sevSnpGuest(s) ? snpVm(s) : undefined;
    if (snp !== undefined) {
      // SNP: SNP_DECOMMISSION of the guest context (arch/x86/kvm/svm/sev.c: sev_vm_destroy()); it cannot fail in the simulator.
      if (snp.gctx !== 0) this.snp.decommission(snp.gctx);
      snp.gctx = 0;
    } else if (s.handle !== 0) {
      // sev_unbind_asid: DEACTIVATE then DECOMMISSION, errors ignored as the kernel does.
      this.firmware.deactivate(s.handle);
      this.firmware.decommission(s.handle);
      s.handle = 0;
    }
    this.freeAsid(s);
    s.active = false;
  }

  /** `sev_asid_new` (arch/x86/kvm/svm/sev.c, recycling through __sev_recycle_asids()); a recycle runs DF_FLUSH in the firmware. */
  allocateAsid(es: boolean): number | 'ENOTTY' | 'EBUSY' {
    const before = this.asids.stats.recycles;
    const r = this.asids.allocate(es);
    if (this.asids.stats.recycles !== before) this.firmware.dfFlush();
    return r;
  }

  /** `sev_asid_free` (arch/x86/kvm/svm/sev.c). */
  freeAsid(s: SevVmState): void {
    if (s.asid !== 0) this.asids.free(s.asid);
    s.asid = 0;
  }

  /** True once LAUNCH_UPDATE_VMSA protected this vCPU's state: KVM_GET/SET_REGS must then fail with EINVAL. */
  isGuestStateProtected(vcpu: SevVcpuView): boolean {
    return vcpu.sev.guestStateProtected;
  }

  /**
   * The memory-encryption key a guest access with the C-bit uses: the key the firmware loaded for the
   * VM's ASID (it moves with the ASID), else the ASID's unkeyed default. Undefined for non-SEV VMs.
   */
  guestKey(s: SevVmState): SevKey | undefined {
    if (!s.active || s.asid === 0) return undefined;
    return this.firmware.keyForAsid(s.asid) ?? deriveKey(s.asid, 0xa51d);
  }

  /** RDMSR 0xC0010131 (SEV status) as this VM's guest reads it (arch/x86/include/asm/msr-index.h: MSR_AMD64_SEV_*). */
  sevStatusMsr(vm: SevVmView): bigint {
    return sevStatusMsr(vm.sev);
  }

  /** RDMSR 0xC0010130 (GHCB MSR). */
  ghcbMsrRead(vcpu: SevVcpuView): bigint {
    return ghcbMsrRead(vcpu);
  }

  /** WRMSR 0xC0010130 (GHCB MSR): a GHCB GPA or an MSR-protocol request. */
  ghcbMsrWrite(vcpu: SevVcpuView, value: bigint): void {
    ghcbMsrWrite(vcpu, value);
  }

  /** The #VC error code (SVM exit code) an SEV-ES guest gets for `event`, or undefined when it does not trap. */
  vcErrorCode(vm: SevVmView, event: VcEvent): number | undefined {
    return vcErrorCode(vm.sev, event);
  }

  /** vCPU reset for SEV-ES (`sev_es_vcpu_reset`): the GHCB MSR starts with the SEV_INFO response. */
  vcpuReset(vm: SevVmView, vcpu: SevVcpuView): void {
    vcpuReset(this, vm.sev, vcpu);
  }

  /** VMGEXIT from an SEV-ES guest (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol(), sev_handle_vmgexit(); arch/x86/kvm/svm/svm.c: io_interception()). */
  vmgexit(cpu: SevGuestCpuView): VmgexitOutcome {
    return vmgexit(this, cpu);
  }

  /** Completes a VMGEXIT exit after userspace handled it (IN data into RAX / the scratch area). */
  completeVmgexit(cpu: SevGuestCpuView, exit: Exit): void {
    completeVmgexit(cpu, exit);
  }

  /** What is still allocated: after every VM is closed, everything here is empty. */
  leakReport(): SevLeakReport {
    return {
      ownedAsids: this.asids.ownedAsids(),
      firmwareContexts: this.firmware.handles(),
      boundAsids: this.firmware.boundAsidCount + this.snp.boundAsidCount,
      snpContexts: this.snp.handles(),
      rmpAssigned: this.rmp.assignedCount,
      liveVms: this.#live.size,
    };
  }
}
