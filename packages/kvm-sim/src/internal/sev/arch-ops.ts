// The SEV model behind the core's arch seam (../arch/ops.ts): the ops table of `sev` / `sev-es` VMs
// and the AMD vendor extras every DEFAULT / SW_PROTECTED VM gets (legacy KVM_SEV_INIT, MOVE/COPY,
// REG/UNREG_REGION, the SEV MSRs and VMGEXIT once ES_INIT made it an SEV-ES guest). This file only
// adapts the core's views (ArchVm, ArchVcpu, ArchCpu) to the SEV model's (SevVmView, …).

import { encodeCpuid8000001F, type SevCpuFeature, SEV_MSR, type VmType } from '@kvmtest/coco';
import { copySregs, KvmError, type Regs, type Sregs, VECTOR, zeroRegs } from '@kvmtest/kvm';
import { resetSregs } from '../sregs.js';
import { resetXsaveArea } from '../xsave.js';
import type {
  AccessDecision,
  ArchCpu,
  ArchException,
  ArchKvm,
  ArchOps,
  ArchVcpu,
  ArchVm,
  InterceptEvent,
  MemAccess,
  PageCipher,
} from '../arch/ops.js';
import type { ResolvedConfig } from '../config.js';
import {
  decryptInto,
  deriveKey,
  encryptFrom,
  privateReadU64,
  privateWriteU64,
  type SevKey,
} from './crypto.js';
import { VC_VECTOR, type VcEvent, vcErrorCode } from './es.js';
import { SevPlatform } from './platform.js';
import {
  newSevVcpuState,
  newSevVmState,
  type SevVcpuState,
  type SevVmState,
  sevEsGuest,
  sevGuest,
} from './state.js';
import type { SevGuestCpuView, SevHostView, SevVcpuView, SevVmView, VmFdLookup } from './views.js';

const HOST_KEY = 'sev-platform';

/** The host's SEV platform, created on first use from the simulated CPU's configuration (arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
export function sevPlatform(kvm: ArchKvm): SevPlatform {
  return kvm.hostState(HOST_KEY, () => {
    const cfg = kvm.config;
    const features: SevCpuFeature[] = [];
    const snp = cfg.vmTypes.includes('sev-snp');
    if (cfg.vmTypes.includes('sev') || cfg.vmTypes.includes('sev-es') || snp) features.push('SEV');
    if (cfg.vmTypes.includes('sev-es') || snp) features.push('SEV_ES');
    if (snp) features.push('SEV_SNP');
    const cpuid = encodeCpuid8000001F({
      features,
      otherEaxBits: 0,
      cBit: cfg.cBit,
      physAddrReduction: 0,
      numVmpls: 0,
      maxSevAsid: cfg.maxSevAsid,
      minSevAsid: cfg.minSevAsid,
    });
    return new SevPlatform(new ArchSevHost(kvm), { cpuid, supportedVmsaFeatures: cfg.sevVmsaFeatures });
  });
}

class ArchSevHost implements SevHostView {
  constructor(readonly kvm: ArchKvm) {}
  lookupVmFd(fd: number): VmFdLookup {
    const kind = this.kvm.fdKind(fd);
    if (kind === undefined) return 'not-open';
    const vm = kind === 'vm' ? this.kvm.vmByFd(fd) : undefined;
    if (vm === undefined) return 'not-a-vm';
    // A VM whose ops are not the SEV model's (a TD on the simulator's mixed host) is a VM without SEV.
    return vm.arch instanceof ArchSevVm ? vm.arch : new ArchSevVm(vm, newSevVmState(vm.type));
  }
  isSevDeviceFd(fd: number): boolean {
    return this.kvm.fdKind(fd) === 'sev-device';
  }
}

// ---- view adapters: the object in the core's `arch` slot IS the SEV view (no look-up tables) -----------

/** The SEV view of a core VM; the core keeps it in `vm.arch`. */
class ArchSevVm implements SevVmView {
  readonly fd: number;
  readonly type: VmType;
  constructor(
    readonly vm: ArchVm,
    readonly sev: SevVmState,
  ) {
    this.fd = vm.fd;
    this.type = vm.type;
  }
  get dead(): boolean {
    return this.vm.dead;
  }
  get createdVcpus(): number {
    return this.vm.createdVcpus;
  }
  get onlineVcpus(): number {
    return this.vm.vcpus.length;
  }
  vcpus(): readonly SevVcpuView[] {
    return this.vm.vcpus.map(vcpuView);
  }
  markDead(): void {
    this.vm.markDead();
  }
  get core(): ArchVm {
    return this.vm;
  }
  hostToGpa(buffer: Uint8Array, offset: number): bigint | undefined {
    return this.vm.hostPtrTarget(buffer, offset)?.gpa;
  }
}

/** The SEV view of a core vCPU; the core keeps it in `vcpu.arch`. */
class ArchSevVcpu implements SevVcpuView {
  readonly id: number;
  readonly sev: SevVcpuState = newSevVcpuState();
  readonly guestDebug = false;
  readonly dr7 = 0x400n;
  constructor(readonly vcpu: ArchVcpu) {
    this.id = vcpu.id;
  }
  adoptFrom(from: SevVcpuView, registers: boolean): void {
    if (from instanceof ArchSevVcpu) this.vcpu.adoptGuest?.(from.vcpu, registers);
  }
  // The core's vCPU keeps `regs` / `sregs` fields (KVM's vcpu->arch.regs); the VMSA is built from them.
  regs(): Regs {
    return { ...((this.vcpu as unknown as { regs?: Regs }).regs ?? zeroRegs()) };
  }
  sregs(): Sregs {
    const s = (this.vcpu as unknown as { sregs?: Sregs }).sregs;
    return copySregs(s ?? resetSregs('svm'));
  }
  msr(index: number): bigint | undefined {
    return (this.vcpu as unknown as { msr?(i: number): bigint | undefined }).msr?.(index);
  }
  xcr0(): bigint {
    return (this.vcpu as unknown as { xcr0?: bigint }).xcr0 ?? 1n;
  }
  fpu(): Uint8Array {
    const f = (this.vcpu as unknown as { fpu?: Uint8Array }).fpu;
    return f === undefined ? resetXsaveArea() : f.slice();
  }
}

/** The SEV model's view of a core VM. */
export function vmView(vm: ArchVm): SevVmView {
  return vm.arch as ArchSevVm;
}

/** The SEV model's view of a core vCPU. */
export function vcpuView(vcpu: ArchVcpu): SevVcpuView {
  return vcpu.arch as ArchSevVcpu;
}

function vmState(vm: ArchVm): SevVmState {
  return (vm.arch as ArchSevVm).sev;
}

// RDMSR of the SEV MSRs (arch/x86/include/asm/msr-index.h: MSR_AMD64_SEV_*): the status MSR of an SEV guest, the GHCB MSR of an SEV-ES guest.
function sevReadMsr(vcpu: ArchVcpu, msr: number): bigint | undefined {
  const p = sevPlatform(vcpu.vm.kvm);
  const s = vmState(vcpu.vm);
  if (msr === SEV_MSR.MSR_AMD64_SEV && sevGuest(s)) return p.sevStatusMsr(vmView(vcpu.vm));
  if (msr === SEV_MSR.MSR_AMD64_SEV_ES_GHCB && sevEsGuest(s)) return p.ghcbMsrRead(vcpuView(vcpu));
  return undefined;
}

// WRMSR of the GHCB MSR of an SEV-ES guest.
function sevWriteMsr(vcpu: ArchVcpu, msr: number, value: bigint): boolean {
  if (msr !== SEV_MSR.MSR_AMD64_SEV_ES_GHCB || !sevEsGuest(vmState(vcpu.vm))) return false;
  sevPlatform(vcpu.vm.kvm).ghcbMsrWrite(vcpuView(vcpu), value);
  return true;
}

/** The SEV model's view of the vCPU that is running a guest operation. */
export function guestCpuView(cpu: ArchCpu): SevGuestCpuView {
  // One view per vCPU, built on first use (every VMGEXIT asks for it); vm and vcpu read the arch
  // state live, so the view stays right if it is replaced.
  let view = cpuViews.get(cpu);
  if (view === undefined) {
    view = newGuestCpuView(cpu);
    cpuViews.set(cpu, view);
  }
  return view;
}

const cpuViews = new WeakMap<ArchCpu, SevGuestCpuView>();

function newGuestCpuView(cpu: ArchCpu): SevGuestCpuView {
  // The VM is read through cpu.vcpu each time: a context move hands the guest to another vCPU.
  return {
    get vm() {
      return vmView(cpu.vcpu.vm);
    },
    get vcpu() {
      return vcpuView(cpu.vcpu);
    },
    resolveGpa(gpa) {
      const slot = cpu.vcpu.vm.memslotAt(gpa);
      if (slot === undefined || slot.userspace.length === 0) return undefined;
      return { buffer: slot.userspace, offset: Number(gpa - slot.gpa) };
    },
    cpuid: (leaf, subleaf) => cpu.cpuidTable(leaf, subleaf),
    // KVM emulates the MSR as for any guest: the arch's own MSRs first, then the vCPU's MSR file.
    rdmsr: (msr) => sevReadMsr(cpu.vcpu, msr) ?? cpu.msr(msr),
    wrmsr: (msr, value) => {
      if (sevWriteMsr(cpu.vcpu, msr, value)) return true;
      if (cpu.msr(msr) === undefined) return false;
      cpu.setMsr(msr, value);
      return true;
    },
  };
}

// ---- the ops ------------------------------------------------------------------------------------------

const SHARED: AccessDecision = Object.freeze({ kind: 'shared' });
/**
 * The core's PageCipher plus u64 fast paths (`readU64` / `writeU64` at `host[hostOffset + pageOffset]`)
 * the guest CPU may use for an aligned access inside one page.
 */
export interface SevPageCipher extends PageCipher {
  readU64(host: Uint8Array, hostOffset: number, pageOffset: number): bigint;
  writeU64(host: Uint8Array, hostOffset: number, pageOffset: number, value: bigint): void;
}

const ciphers = new WeakMap<SevVmState, SevPageCipher>();

// SEV's memory-encryption engine as the core's PageCipher. The key is cached and revalidated on every
// access against what guestKey depends on: the VM's ASID binding (changed by ACTIVATE, MOVE — the key
// moves with the context —, COPY and close) and the firmware's key epoch (bumped when a context or an
// ASID binding is added or removed: LAUNCH_START, ACTIVATE, DEACTIVATE, DECOMMISSION). With no key
// bound to the ASID yet the default key of the ASID applies (guestKey never answers undefined for an
// SEV guest).
function cipherFor(p: SevPlatform, s: SevVmState): SevPageCipher {
  let c = ciphers.get(s);
  if (c === undefined) {
    const fw = p.firmware;
    let cached: SevKey | undefined;
    let cachedAsid = -1;
    let cachedActive = false;
    let cachedEpoch = -1;
    const key = (): SevKey => {
      if (
        cached === undefined ||
        s.asid !== cachedAsid ||
        s.active !== cachedActive ||
        fw.keyEpoch !== cachedEpoch
      ) {
        cached = p.guestKey(s) ?? deriveKey(0, 0);
        cachedAsid = s.asid;
        cachedActive = s.active;
        cachedEpoch = fw.keyEpoch;
      }
      return cached;
    };
    c = {
      decrypt(host, hostOffset, pageOffset, out, length) {
        decryptInto(key(), host, hostOffset + pageOffset, out, length);
      },
      encrypt(host, hostOffset, pageOffset, data) {
        encryptFrom(key(), data, host, hostOffset + pageOffset);
      },
      readU64(host, hostOffset, pageOffset) {
        return privateReadU64(key(), host, hostOffset + pageOffset);
      },
      writeU64(host, hostOffset, pageOffset, value) {
        privateWriteU64(key(), host, hostOffset + pageOffset, value);
      },
    };
    ciphers.set(s, c);
  }
  return c;
}

const VC_EVENT: Record<InterceptEvent['kind'], VcEvent | undefined> = {
  io: 'io',
  mmio: 'mmio',
  cpuid: 'cpuid',
  rdmsr: 'msr',
  wrmsr: 'msr',
  hypercall: 'vmmcall',
  hlt: undefined,
  xsetbv: 'xsetbv',
};

/** The SEV model's ops, shared by the SEV VM types and the AMD vendor extras. */
function sevOps(kind: VmType): Partial<ArchOps> {
  return {
    sevDevice: true,
    vmInit(vm) {
      const p = sevPlatform(vm.kvm);
      vm.arch = new ArchSevVm(
        vm,
        p.newVmState(kind === 'default' || kind === 'sw-protected' ? vm.type : kind),
      );
    },
    vmDestroy(vm) {
      sevPlatform(vm.kvm).vmClosed(vmView(vm));
    },
    memEncryptOp(vm, cmd) {
      sevPlatform(vm.kvm).memEncryptOp(vmView(vm), cmd);
      // A new context or ASID binding changes what encrypted accesses decrypt with.
      vm.flushTlbs();
    },
    memEncryptRegRegion(vm, buffer, offset, size) {
      sevPlatform(vm.kvm).registerRegion(vmView(vm), { addr: { buffer, offset }, size });
    },
    memEncryptUnregRegion(vm, buffer, offset, size) {
      sevPlatform(vm.kvm).unregisterRegion(vmView(vm), { addr: { buffer, offset }, size });
    },
    vmCopyEncContextFrom(dst, sourceFd) {
      sevPlatform(dst.kvm).copyEncContextFrom(vmView(dst), sourceFd);
    },
    vmMoveEncContextFrom(dst, sourceFd) {
      sevPlatform(dst.kvm).moveEncContextFrom(vmView(dst), sourceFd);
    },
    vmMoveEncContextSteps(dst, sourceFd) {
      return sevPlatform(dst.kvm).moveEncContextSteps(vmView(dst), sourceFd);
    },
    vcpuCreated(vcpu) {
      vcpu.arch = new ArchSevVcpu(vcpu);
      sevPlatform(vcpu.vm.kvm).vcpuReset(vmView(vcpu.vm), vcpuView(vcpu));
    },
    stateProtected(vcpu) {
      return (vcpu.arch as ArchSevVcpu).sev.guestStateProtected;
    },
    tagBit(vm) {
      // The SEV VM types always run with SEV enabled in the VMCB (their vCPUs come after INIT2, or get
      // sev_init_vmcb on MOVE); a DEFAULT VM only once legacy INIT made it an SEV guest.
      const s = vmState(vm);
      return sevGuest(s) || s.vmType === 'sev' || s.vmType === 'sev-es' || s.vmType === 'sev-snp'
        ? vm.kvm.config.cBit
        : undefined;
    },
    classifyAccess(vm, a: MemAccess): AccessDecision {
      const s = vmState(vm);
      if (!sevGuest(s)) return SHARED;
      // C-bit set, and page-table walks (always private under SEV): through the VM's key.
      if (a.tagged || a.implicit) return { kind: 'encrypted', cipher: cipherFor(sevPlatform(vm.kvm), s) };
      return SHARED;
    },
    intercept(cpu, event): ArchException | undefined {
      const s = vmState(cpu.vcpu.vm);
      if (!sevEsGuest(s)) return undefined;
      const ev = VC_EVENT[event.kind];
      if (ev === undefined) return undefined;
      const code = vcErrorCode(
        s,
        ev,
        event.kind === 'rdmsr' || event.kind === 'wrmsr' ? event.msr : undefined,
      );
      if (code === undefined) return undefined;
      return {
        vector: VC_VECTOR,
        errorCode: code,
        detail: `SEV-ES guest: ${event.kind} is intercepted (#VC 0x${code.toString(16)})`,
      };
    },
    readMsr: sevReadMsr,
    writeMsr: sevWriteMsr,
    async vmgexit(cpu) {
      const s = vmState(cpu.vcpu.vm);
      // Without SEV-ES, VMGEXIT is `rep vmmcall`; the simulator has no such hypercall path: #UD.
      if (!sevEsGuest(s))
        cpu.raise({ vector: VECTOR.UD, errorCode: undefined, detail: 'VMGEXIT outside an SEV-ES guest' });
      const p = sevPlatform(cpu.vcpu.vm.kvm);
      const view = guestCpuView(cpu);
      const out = p.vmgexit(view);
      if (out.kind === 'resume') return;
      if (out.kind === 'error') throw new KvmError(out.errno, 'KVM_RUN', out.reason);
      const done = await cpu.exitToHost(out.exit);
      p.completeVmgexit(view, done);
    },
  };
}

/** Whether the host offers SEV VMs of `type` (arch/x86/kvm/svm/sev.c: sev_set_cpu_caps(), sev_hardware_setup(): SEV-ES and SNP need ES ASIDs). */
export function sevTypeAvailable(type: 'sev' | 'sev-es' | 'sev-snp', cfg: ResolvedConfig): boolean {
  if (!cfg.vmTypes.includes(type) || cfg.maxSevAsid === 0) return false;
  return type === 'sev' || cfg.minSevAsid > 1;
}

/**
 * The ops of an `sev` / `sev-es` VM (replaces the core's stub), and the SEV base of `sev-snp` VMs that
 * ./snp-arch-ops.ts extends. `base` is the core's vendor base table.
 */
export function sevArchOps(
  type: 'sev' | 'sev-es' | 'sev-snp',
  cfg: ResolvedConfig,
  base: Partial<ArchOps> = {},
): ArchOps {
  return {
    ...base,
    ...sevOps(type),
    name: type,
    available: sevTypeAvailable(type, cfg),
    vmInit(vm: ArchVm) {
      // arch/x86/kvm/svm/svm.c: svm_vm_init(): has_private_mem = (type == SNP_VM); has_protected_state = (type != SEV_VM).
      vm.hasPrivateMem = type === 'sev-snp';
      vm.hasProtectedState = type !== 'sev';
      vm.arch = new ArchSevVm(vm, sevPlatform(vm.kvm).newVmState(type));
    },
  };
}

/**
 * The AMD vendor extras for DEFAULT and SW_PROTECTED VMs (svm_x86_ops' SEV hooks): legacy INIT/ES_INIT,
 * MOVE/COPY, REG/UNREG_REGION and, once initialised, the SEV guest behaviour. Empty when the host has
 * no SEV (the core's missing-op answers then apply).
 */
export function sevVendorExtras(cfg: ResolvedConfig): Partial<ArchOps> {
  if (!cfg.vmTypes.includes('sev') && !cfg.vmTypes.includes('sev-es')) return {};
  if (cfg.maxSevAsid === 0) return {};
  return sevOps('default');
}
