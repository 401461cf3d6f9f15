// VM types and shapes: the one value a test names, and what it implies. Every fact that differs by
// VM type lives in VM_TYPE_TRAITS; the layers above (ucall, the testkit, the simulator) read a
// type's traits and never compare type names (docs/architecture.md, "How to add a VM type").

import { SEV_POLICY_BIT, SNP_POLICY_BIT } from './policy.js';

/** A KVM x86 VM type, by the name kvmtest uses for it. */
export type VmType = 'default' | 'sw-protected' | 'sev' | 'sev-es' | 'sev-snp' | 'tdx';

/** The `type` argument of KVM_CREATE_VM for each VM type (arch/x86/include/uapi/asm/kvm.h). */
export const VM_TYPE_NUMBER = {
  default: 0, // KVM_X86_DEFAULT_VM
  'sw-protected': 1, // KVM_X86_SW_PROTECTED_VM
  sev: 2, // KVM_X86_SEV_VM
  'sev-es': 3, // KVM_X86_SEV_ES_VM
  'sev-snp': 4, // KVM_X86_SNP_VM
  tdx: 5, // KVM_X86_TDX_VM
} as const satisfies Record<VmType, number>;

/** Every VM type, in kernel numeric order. */
export const VM_TYPES: readonly VmType[] = Object.freeze(
  (Object.keys(VM_TYPE_NUMBER) as VmType[]).sort((a, b) => VM_TYPE_NUMBER[a] - VM_TYPE_NUMBER[b]),
);

/** True when `v` names a VM type. */
export function isVmType(v: unknown): v is VmType {
  return typeof v === 'string' && Object.hasOwn(VM_TYPE_NUMBER, v);
}

/** The VM type whose KVM_CREATE_VM number is `n`, or undefined. */
export function vmTypeFromNumber(n: number): VmType | undefined {
  return VM_TYPES.find((t) => VM_TYPE_NUMBER[t] === n);
}

/** How a guest of this type asks the host for a port or MMIO access. */
export type PortRequestKind = 'instruction' | 'ghcb' | 'tdvmcall';

/** Which page-table bit marks a page's encryption status, and what setting it means. */
export type TagBitKind = 'none' | 'c-bit' | 's-bit';

/** Architectural traits of a VM type: what the framework must do differently for it. */
export interface VmTypeTraits {
  /** Guest memory can be private (encrypted or inaccessible to the host). */
  readonly protectedMemory: boolean;
  /** vCPU register state becomes inaccessible to the host (SEV-ES VMSA, SNP, TDX). */
  readonly protectedState: boolean;
  /** Private memory must live in guest_memfd-backed memslots (SNP, TDX; sw-protected optionally). */
  readonly privateMemoryInGuestMemfd: boolean;
  /** C-bit set = private (SEV family); S-bit set = shared (TDX); or no tag. */
  readonly tagBit: TagBitKind;
  /** How the guest makes a port request: plain IN/OUT, GHCB + VMGEXIT, or TDG.VP.VMCALL. */
  readonly portRequest: PortRequestKind;
  /** The VM needs a launch sequence (and a measurement) before its vCPUs can run. */
  readonly needsLaunch: boolean;
  /** Vendor whose hardware implements the type. */
  readonly vendor: 'any' | 'amd' | 'intel';
  /** The transport a guest of this type uses for ucalls unless a test picks MMIO. */
  readonly ucallTransport: NativeUcallTransport;
  /**
   * The guest registers its GHCB's GPA before using it (GHCB MSR protocol REGISTER_GHCB_GPA): KVM
   * refuses an unregistered GHCB of an SNP guest (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit()).
   */
  readonly registersGhcb: boolean;
  /** The launch sequence before the first run ('none' exactly when needsLaunch is false). */
  readonly launchFlow: LaunchFlow;
  /** The launch policy the kit uses when a test gives none (a u32; 0 for types without a launch). */
  readonly defaultPolicy: number;
}

/** How the guest hands a ucall to the host natively: an I/O port write, a GHCB exit, or a TDVMCALL. */
export type NativeUcallTransport = 'pio' | 'ghcb' | 'tdvmcall';

/**
 * The launch sequence a VM type goes through before its first run: none, the SEV flow
 * (LAUNCH_START → UPDATE_DATA [+ UPDATE_VMSA] → MEASURE → FINISH), SNP's (SNP_LAUNCH_START →
 * SNP_LAUNCH_UPDATE → SNP_LAUNCH_FINISH) or a TD's (KVM_TDX_INIT_MEM_REGION → KVM_TDX_FINALIZE_VM).
 */
export type LaunchFlow = 'none' | 'sev' | 'snp' | 'tdx';

/** SNP's default guest policy (the selftests' snp_default_policy()): RSVD_MBO | SMT. */
const SNP_DEFAULT_POLICY_U32 = (1 << SNP_POLICY_BIT.RSVD_MBO) | (1 << SNP_POLICY_BIT.SMT);

/**
 * Traits of each VM type. The has_protected_state / has_private_mem split follows
 * arch/x86/kvm/x86.c: kvm_arch_init_vm() and the vendors' VM-init hooks (svm/sev.c: sev_vm_init(),
 * vmx/tdx.c: tdx_vm_init()).
 */
export const VM_TYPE_TRAITS: Readonly<Record<VmType, VmTypeTraits>> = Object.freeze({
  default: {
    protectedMemory: false,
    protectedState: false,
    privateMemoryInGuestMemfd: false,
    tagBit: 'none',
    portRequest: 'instruction',
    needsLaunch: false,
    vendor: 'any',
    ucallTransport: 'pio',
    registersGhcb: false,
    launchFlow: 'none',
    defaultPolicy: 0,
  },
  'sw-protected': {
    protectedMemory: true,
    protectedState: false,
    privateMemoryInGuestMemfd: true,
    tagBit: 'none',
    portRequest: 'instruction',
    needsLaunch: false,
    vendor: 'any',
    ucallTransport: 'pio',
    registersGhcb: false,
    launchFlow: 'none',
    defaultPolicy: 0,
  },
  sev: {
    protectedMemory: true,
    protectedState: false,
    privateMemoryInGuestMemfd: false,
    tagBit: 'c-bit',
    portRequest: 'instruction',
    needsLaunch: true,
    vendor: 'amd',
    ucallTransport: 'pio',
    registersGhcb: false,
    launchFlow: 'sev',
    defaultPolicy: 0,
  },
  'sev-es': {
    protectedMemory: true,
    protectedState: true,
    privateMemoryInGuestMemfd: false,
    tagBit: 'c-bit',
    portRequest: 'ghcb',
    needsLaunch: true,
    vendor: 'amd',
    ucallTransport: 'ghcb',
    registersGhcb: false,
    launchFlow: 'sev',
    defaultPolicy: 1 << SEV_POLICY_BIT.ES,
  },
  'sev-snp': {
    protectedMemory: true,
    protectedState: true,
    privateMemoryInGuestMemfd: true,
    tagBit: 'c-bit',
    portRequest: 'ghcb',
    needsLaunch: true,
    vendor: 'amd',
    ucallTransport: 'ghcb',
    registersGhcb: true,
    launchFlow: 'snp',
    defaultPolicy: SNP_DEFAULT_POLICY_U32,
  },
  tdx: {
    protectedMemory: true,
    protectedState: true,
    privateMemoryInGuestMemfd: true,
    tagBit: 's-bit',
    portRequest: 'tdvmcall',
    needsLaunch: true,
    vendor: 'intel',
    ucallTransport: 'tdvmcall',
    registersGhcb: false,
    launchFlow: 'tdx',
    defaultPolicy: 0,
  },
});

/** Paging mode of a guest: 4-level paging with 48-bit virtual addresses, or 5-level with 57-bit. */
export type GuestMode = '4-level' | '5-level';

/** Page-table levels and virtual-address width of each guest mode. */
export const GUEST_MODE_PARAMS = {
  '4-level': { levels: 4, vaBits: 48, pageSize: 4096 },
  '5-level': { levels: 5, vaBits: 57, pageSize: 4096 },
} as const satisfies Record<GuestMode, { levels: number; vaBits: number; pageSize: number }>;

/** What a test asks for: a VM type and a guest paging mode (selftests' `struct vm_shape`). */
export interface VmShape {
  readonly type: VmType;
  readonly mode: GuestMode;
}

/** The default shape: a `default` VM with 4-level paging (VM_SHAPE_DEFAULT). */
export const VM_SHAPE_DEFAULT: VmShape = Object.freeze({ type: 'default', mode: '4-level' });

/**
 * Builds a shape from a partial one, validating both fields.
 * Throws TypeError naming the bad value when the type or mode is not known.
 */
export function vmShape(shape: Partial<VmShape> = {}): VmShape {
  const type = shape.type ?? 'default';
  const mode = shape.mode ?? '4-level';
  if (!isVmType(type))
    throw new TypeError(`unknown VM type ${JSON.stringify(type)} (known: ${VM_TYPES.join(', ')})`);
  if (!Object.hasOwn(GUEST_MODE_PARAMS, mode))
    throw new TypeError(`unknown guest mode ${JSON.stringify(mode)} (known: 4-level, 5-level)`);
  return Object.freeze({ type, mode });
}
