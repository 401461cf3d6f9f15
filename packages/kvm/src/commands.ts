// KVM_MEMORY_ENCRYPT_OP commands: ids, parameter structs and firmware status codes.
// Parameter structs are plain objects the caller owns; like the kernel's user structs they are
// in/out: the backend writes results (handles, lengths, status) back into them.

import type { Gpa, HostOffset } from '@kvmtest/guest-memory';

/** `enum sev_cmd_id` (include/uapi/linux/kvm.h). */
export const SEV_CMD = {
  INIT: 0,
  ES_INIT: 1,
  LAUNCH_START: 2,
  LAUNCH_UPDATE_DATA: 3,
  LAUNCH_UPDATE_VMSA: 4,
  LAUNCH_SECRET: 5,
  LAUNCH_MEASURE: 6,
  LAUNCH_FINISH: 7,
  SEND_START: 8,
  SEND_UPDATE_DATA: 9,
  SEND_UPDATE_VMSA: 10,
  SEND_FINISH: 11,
  RECEIVE_START: 12,
  RECEIVE_UPDATE_DATA: 13,
  RECEIVE_UPDATE_VMSA: 14,
  RECEIVE_FINISH: 15,
  GUEST_STATUS: 16,
  DBG_DECRYPT: 17,
  DBG_ENCRYPT: 18,
  CERT_EXPORT: 19,
  GET_ATTESTATION_REPORT: 20,
  SEND_CANCEL: 21,
  INIT2: 22,
  SNP_LAUNCH_START: 100,
  SNP_LAUNCH_UPDATE: 101,
  SNP_LAUNCH_FINISH: 102,
  /** Sentinel: one past the last id mainline implements (KVM_SEV_NR_MAX). */
  NR_MAX: 103,
} as const;

/** SEV firmware status codes returned in `kvm_sev_cmd.error` (include/uapi/linux/psp-sev.h). */
export const SEV_RET = {
  NO_FW_CALL: -1,
  SUCCESS: 0x00,
  INVALID_PLATFORM_STATE: 0x01,
  INVALID_GUEST_STATE: 0x02,
  INVALID_CONFIG: 0x03,
  INVALID_LEN: 0x04,
  ALREADY_OWNED: 0x05,
  INVALID_CERTIFICATE: 0x06,
  POLICY_FAILURE: 0x07,
  INACTIVE: 0x08,
  INVALID_ADDRESS: 0x09,
  BAD_SIGNATURE: 0x0a,
  BAD_MEASUREMENT: 0x0b,
  ASID_OWNED: 0x0c,
  INVALID_ASID: 0x0d,
  WBINVD_REQUIRED: 0x0e,
  DFFLUSH_REQUIRED: 0x0f,
  INVALID_GUEST: 0x10,
  INVALID_COMMAND: 0x11,
  ACTIVE: 0x12,
  HWSEV_RET_PLATFORM: 0x13,
  HWSEV_RET_UNSAFE: 0x14,
  UNSUPPORTED: 0x15,
  INVALID_PARAM: 0x16,
  RESOURCE_LIMIT: 0x17,
  SECURE_DATA_INVALID: 0x18,
} as const;

/** Firmware guest states reported by KVM_SEV_GUEST_STATUS (arch/x86/kvm/svm/sev.c: sev_guest_status() passes the firmware's state on). */
export const SEV_GUEST_STATE = {
  UNINITIALIZED: 0,
  LAUNCH_UPDATE: 1,
  LAUNCH_SECRET: 2,
  RUNNING: 3,
  RECEIVING: 4,
  SENDING: 5,
} as const;

/** SNP page types for KVM_SEV_SNP_LAUNCH_UPDATE (arch/x86/include/uapi/asm/kvm.h `KVM_SEV_SNP_PAGE_TYPE_*`). */
export const SNP_PAGE_TYPE = {
  NORMAL: 1,
  ZERO: 3,
  UNMEASURED: 4,
  SECRETS: 5,
  CPUID: 6,
} as const;

/** `enum kvm_tdx_cmd_id` (arch/x86/include/uapi/asm/kvm.h). */
export const TDX_CMD = {
  CAPABILITIES: 0,
  INIT_VM: 1,
  INIT_VCPU: 2,
  INIT_MEM_REGION: 3,
  FINALIZE_VM: 4,
  GET_CPUID: 5,
} as const;

/** KVM_TDX_MEASURE_MEMORY_REGION flag of KVM_TDX_INIT_MEM_REGION (arch/x86/include/uapi/asm/kvm.h). */
export const TDX_MEASURE_MEMORY_REGION = 1;

/**
 * A pointer into host (VMM) memory, the stand-in for a `__u64 uaddr` field: `buffer` is the
 * user memory and `offset` the byte inside it. Memslot backings are such buffers, so a pointer
 * into one addresses the memory a guest sees through that slot.
 */
export interface HostPtr {
  readonly buffer: Uint8Array;
  readonly offset: HostOffset;
}

/** Builds a HostPtr, checking the offset lies inside the buffer. */
export function hostPtr(buffer: Uint8Array, offset: HostOffset = 0): HostPtr {
  if (!(buffer instanceof Uint8Array)) throw new TypeError('hostPtr: buffer must be a Uint8Array');
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > buffer.length)
    throw new RangeError(`hostPtr: offset ${offset} is outside the buffer (0..${buffer.length})`);
  return { buffer, offset };
}

/** `struct kvm_sev_init` (KVM_SEV_INIT2). */
export interface SevInitData {
  vmsaFeatures: bigint;
  flags: number;
  ghcbVersion: number;
}
/** `struct kvm_sev_launch_start`: `handle` is in/out. */
export interface SevLaunchStartData {
  handle: number;
  policy: number;
  dh?: Uint8Array | undefined;
  session?: Uint8Array | undefined;
}
/** `struct kvm_sev_launch_update_data`. */
export interface SevLaunchUpdateData {
  uaddr: HostPtr | undefined;
  len: number;
}
/** `struct kvm_sev_launch_measure`: `len` is in/out; the measurement lands at `uaddr`. */
export interface SevLaunchMeasureData {
  uaddr: HostPtr | undefined;
  len: number;
}
/** `struct kvm_sev_launch_secret`. */
export interface SevLaunchSecretData {
  hdr: Uint8Array;
  guest: HostPtr | undefined;
  guestLen: number;
  trans: Uint8Array;
}
/** `struct kvm_sev_guest_status`: all fields are outputs. */
export interface SevGuestStatusData {
  handle: number;
  policy: number;
  state: number;
}
/** `struct kvm_sev_dbg` (DBG_DECRYPT / DBG_ENCRYPT). */
export interface SevDbgData {
  src: HostPtr | undefined;
  dst: HostPtr | undefined;
  len: number;
}
/** `struct kvm_sev_snp_launch_start`. */
export interface SnpLaunchStartData {
  policy: bigint;
  gosvw?: Uint8Array;
  flags: number;
}
/** `struct kvm_sev_snp_launch_update`: `gfnStart`, `uaddr` and `len` advance as pages are done. */
export interface SnpLaunchUpdateData {
  gfnStart: bigint;
  uaddr: HostPtr | undefined;
  len: bigint;
  type: number;
  flags: number;
}
/** `struct kvm_sev_snp_launch_finish`. */
export interface SnpLaunchFinishData {
  idBlock?: Uint8Array;
  idAuth?: Uint8Array;
  hostData?: Uint8Array;
  flags: number;
}

/**
 * `struct kvm_sev_cmd`: `data` is the command's parameter struct (`undefined` = NULL pointer),
 * `error` receives the firmware status, `sevFd` names an open /dev/sev descriptor.
 */
export interface SevCommand {
  id: number;
  data?: unknown;
  error?: number;
  sevFd?: number;
}

/** `struct kvm_tdx_init_vm` (the parts kvmtest models). */
export interface TdxInitVmData {
  attributes: bigint;
  xfam: bigint;
  /** CPUID entries configuring the TD; leaf 0x80000008 EAX[23:16] gives the GPA width (48 or 52). */
  cpuid: readonly import('./regs.js').CpuidEntry[];
}
/** `struct kvm_tdx_capabilities` (outputs). */
export interface TdxCapabilitiesData {
  supportedAttrs: bigint;
  supportedXfam: bigint;
  /** Capacity the caller offers for CPUID entries (`cpuid.nent` on input). */
  nent: number;
  cpuid: import('./regs.js').CpuidEntry[];
}
/** `struct kvm_tdx_init_mem_region`: fields advance as pages are added. */
export interface TdxInitMemRegionData {
  source: HostPtr | undefined;
  gpa: Gpa;
  nrPages: bigint;
}

/** `struct kvm_tdx_cmd`: `hwError` must be 0 on input and receives the TDX module status. */
export interface TdxCommand {
  id: number;
  flags: number;
  data?: unknown;
  hwError: bigint;
}
