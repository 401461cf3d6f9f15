// Capability numbers, ioctl-adjacent constants and VM-scope flags (include/uapi/linux/kvm.h).

/** KVM_CAP_* numbers understood by kvmtest (include/uapi/linux/kvm.h). */
export const CAP = {
  USER_MEMORY: 3,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  XSAVE: 55,
  XCRS: 56,
  MAX_VCPUS: 66,
  SPLIT_IRQCHIP: 121,
  MAX_VCPU_ID: 128,
  IMMEDIATE_EXIT: 136,
  VM_COPY_ENC_CONTEXT_FROM: 197,
  EXIT_HYPERCALL: 201,
  BINARY_STATS_FD: 203,
  VM_MOVE_ENC_CONTEXT_FROM: 206,
  USER_MEMORY2: 231,
  MEMORY_FAULT_INFO: 232,
  MEMORY_ATTRIBUTES: 233,
  GUEST_MEMFD: 234,
  VM_TYPES: 235,
  PRE_FAULT_MEMORY: 236,
} as const;

/** A capability name from CAP. */
export type CapName = keyof typeof CAP;

/** Memslot flags (`kvm_userspace_memory_region2.flags`). */
export const MEM_FLAG = {
  LOG_DIRTY_PAGES: 1 << 0,
  READONLY: 1 << 1,
  GUEST_MEMFD: 1 << 2,
} as const;

/** Memory attributes for KVM_SET_MEMORY_ATTRIBUTES. */
export const MEMORY_ATTRIBUTE = {
  PRIVATE: 1n << 3n,
} as const;

/** KVM hypercall numbers (include/uapi/linux/kvm_para.h). */
export const KVM_HC = {
  VAPIC_POLL_IRQ: 1,
  KICK_CPU: 5,
  SEND_IPI: 10,
  SCHED_YIELD: 11,
  MAP_GPA_RANGE: 12,
} as const;

/** Attribute bits of KVM_HC_MAP_GPA_RANGE (include/uapi/linux/kvm_para.h `KVM_MAP_GPA_RANGE_*`). */
export const MAP_GPA_RANGE = {
  PAGE_SZ_4K: 0n,
  PAGE_SZ_2M: 1n,
  PAGE_SZ_1G: 2n,
  DECRYPTED: 0n,
  ENCRYPTED: 1n << 4n,
} as const;

/** Device-attribute groups and attributes readable with KVM_GET_DEVICE_ATTR on /dev/kvm (arch/x86/kvm/x86.c: kvm_x86_dev_get_attr()). */
export const DEVICE_ATTR = {
  X86_GRP_SEV: 1,
  X86_SEV_VMSA_FEATURES: 0,
} as const;

/** Limits the selftest library assumes (KVM_MAX_VCPUS, memslots per address space). */
export const KVM_LIMITS = {
  MAX_VCPUS: 512,
  MEMSLOTS_PER_AS: 32764,
  ADDRESS_SPACES: 2,
} as const;

/**
 * fallocate(2) mode bits (include/uapi/linux/falloc.h). guest_memfd takes KEEP_SIZE alone (allocate)
 * or KEEP_SIZE | PUNCH_HOLE (free the range); virt/kvm/guest_memfd.c: kvm_gmem_fallocate().
 */
export const FALLOC_FL = {
  KEEP_SIZE: 0x01,
  PUNCH_HOLE: 0x02,
  NO_HIDE_STALE: 0x04,
  COLLAPSE_RANGE: 0x08,
  ZERO_RANGE: 0x10,
  INSERT_RANGE: 0x20,
  UNSHARE_RANGE: 0x40,
  WRITE_ZEROES: 0x80,
} as const;
