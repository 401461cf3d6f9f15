// The KVM uapi: ioctl numbers, struct sizes and field offsets, x86-64.
//
// Classic structs and ioctls: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (they
// are in every uapi since Linux 2.6.x; test/uapi-layout.test.ts compiles a C program against the
// installed <linux/kvm.h> and checks each number below that the header has).
// Newer ones, checked against the kernel source only (the installed 6.1 header lacks them):
//   KVM_SET_USER_MEMORY_REGION2 / struct kvm_userspace_memory_region2 (Linux 6.8),
//   KVM_CREATE_GUEST_MEMFD / struct kvm_create_guest_memfd (6.8),
//   KVM_SET_MEMORY_ATTRIBUTES / struct kvm_memory_attributes (6.8),
//   kvm_run.memory_fault and KVM_EXIT_MEMORY_FAULT (6.8), KVM_CAP_VM_TYPES (6.8).

import { io, ior, iow, iowr } from './sys.js';

/** The ioctl type byte of KVM (`KVMIO`). */
export const KVMIO = 0xae;

/** Struct sizes in bytes (sizeof in C). */
export const SIZE = {
  kvm_regs: 144,
  kvm_segment: 24,
  kvm_dtable: 16,
  kvm_sregs: 312,
  kvm_cpuid2: 8,
  kvm_cpuid_entry2: 40,
  kvm_msrs: 8,
  kvm_msr_entry: 16,
  kvm_userspace_memory_region: 32,
  kvm_userspace_memory_region2: 160,
  kvm_create_guest_memfd: 64,
  kvm_memory_attributes: 32,
  kvm_enable_cap: 104,
  kvm_enc_region: 16,
  kvm_device_attr: 24,
  kvm_xsave: 4096,
  kvm_xcr: 16,
  kvm_xcrs: 392,
  kvm_stats_header: 24,
} as const;

/** KVM_CAP_XSAVE2 (include/uapi/linux/kvm.h, Linux 5.17): answers the vCPU's XSAVE buffer size for KVM_GET_XSAVE2. */
export const CAP_XSAVE2 = 208;

/** KVM_MAX_XCRS: the entries `struct kvm_xcrs` holds (arch/x86/include/uapi/asm/kvm.h). */
export const MAX_XCRS = 16;

/** ioctl request numbers. */
export const IOCTL = {
  // System ioctls on /dev/kvm.
  KVM_GET_API_VERSION: io(KVMIO, 0x00),
  KVM_CREATE_VM: io(KVMIO, 0x01),
  KVM_CHECK_EXTENSION: io(KVMIO, 0x03),
  KVM_GET_VCPU_MMAP_SIZE: io(KVMIO, 0x04),
  KVM_GET_SUPPORTED_CPUID: iowr(KVMIO, 0x05, SIZE.kvm_cpuid2),
  // VM ioctls.
  KVM_CREATE_VCPU: io(KVMIO, 0x41),
  KVM_SET_USER_MEMORY_REGION: iow(KVMIO, 0x46, SIZE.kvm_userspace_memory_region),
  KVM_SET_USER_MEMORY_REGION2: iow(KVMIO, 0x49, SIZE.kvm_userspace_memory_region2),
  KVM_ENABLE_CAP: iow(KVMIO, 0xa3, SIZE.kvm_enable_cap),
  KVM_MEMORY_ENCRYPT_OP: iowr(KVMIO, 0xba, 8),
  KVM_MEMORY_ENCRYPT_REG_REGION: ior(KVMIO, 0xbb, SIZE.kvm_enc_region),
  KVM_MEMORY_ENCRYPT_UNREG_REGION: ior(KVMIO, 0xbc, SIZE.kvm_enc_region),
  KVM_SET_MEMORY_ATTRIBUTES: iow(KVMIO, 0xd2, SIZE.kvm_memory_attributes),
  KVM_CREATE_GUEST_MEMFD: iowr(KVMIO, 0xd4, SIZE.kvm_create_guest_memfd),
  KVM_GET_DEVICE_ATTR: iow(KVMIO, 0xe2, SIZE.kvm_device_attr),
  // VM and vCPU ioctl (include/uapi/linux/kvm.h, Linux 5.14).
  KVM_GET_STATS_FD: io(KVMIO, 0xce),
  // vCPU ioctls.
  KVM_RUN: io(KVMIO, 0x80),
  KVM_GET_REGS: ior(KVMIO, 0x81, SIZE.kvm_regs),
  KVM_SET_REGS: iow(KVMIO, 0x82, SIZE.kvm_regs),
  KVM_GET_SREGS: ior(KVMIO, 0x83, SIZE.kvm_sregs),
  KVM_SET_SREGS: iow(KVMIO, 0x84, SIZE.kvm_sregs),
  KVM_GET_MSRS: iowr(KVMIO, 0x88, SIZE.kvm_msrs),
  KVM_SET_MSRS: iow(KVMIO, 0x89, SIZE.kvm_msrs),
  KVM_SET_CPUID2: iow(KVMIO, 0x90, SIZE.kvm_cpuid2),
  KVM_GET_CPUID2: iowr(KVMIO, 0x91, SIZE.kvm_cpuid2),
  KVM_GET_XSAVE: ior(KVMIO, 0xa4, SIZE.kvm_xsave),
  KVM_SET_XSAVE: iow(KVMIO, 0xa5, SIZE.kvm_xsave),
  KVM_GET_XCRS: ior(KVMIO, 0xa6, SIZE.kvm_xcrs),
  KVM_SET_XCRS: iow(KVMIO, 0xa7, SIZE.kvm_xcrs),
  KVM_GET_XSAVE2: ior(KVMIO, 0xcf, SIZE.kvm_xsave),
} as const;

/** Offsets in `struct kvm_sregs` (arch/x86/include/uapi/asm/kvm.h). */
export const SREGS = {
  cs: 0,
  ds: 24,
  es: 48,
  fs: 72,
  gs: 96,
  ss: 120,
  tr: 144,
  ldt: 168,
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apic_base: 272,
  interrupt_bitmap: 280,
} as const;

/** Offsets in `struct kvm_segment`. */
export const SEGMENT = {
  base: 0,
  limit: 8,
  selector: 12,
  type: 14,
  present: 15,
  dpl: 16,
  db: 17,
  s: 18,
  l: 19,
  g: 20,
  avl: 21,
  unusable: 22,
} as const;

/** Offsets in `struct kvm_run` and its exit union (include/uapi/linux/kvm.h). */
export const RUN = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  /** Start of the exit union (256 bytes). */
  exit: 32,
  // io
  io_direction: 32,
  io_size: 33,
  io_port: 34,
  io_count: 36,
  io_data_offset: 40,
  // mmio
  mmio_phys_addr: 32,
  mmio_data: 40,
  mmio_len: 48,
  mmio_is_write: 52,
  // hypercall
  hypercall_nr: 32,
  hypercall_args: 40,
  hypercall_ret: 88,
  hypercall_longmode: 96,
  // internal error
  internal_suberror: 32,
  internal_ndata: 36,
  internal_data: 40,
  // system event
  system_event_type: 32,
  system_event_ndata: 36,
  system_event_data: 40,
  // memory fault (Linux 6.8)
  memory_fault_flags: 32,
  memory_fault_gpa: 40,
  memory_fault_size: 48,
  // fail entry
  fail_entry_reason: 32,
  fail_entry_cpu: 40,
  kvm_valid_regs: 288,
  kvm_dirty_regs: 296,
} as const;

/** Offsets in `struct kvm_xcrs` { __u32 nr_xcrs; __u32 flags; struct kvm_xcr xcrs[16]; __u64 padding[16]; } and `struct kvm_xcr` { __u32 xcr; __u32 reserved; __u64 value; }. */
export const XCRS = {
  nr_xcrs: 0,
  flags: 4,
  xcrs: 8,
  xcr_xcr: 0,
  xcr_value: 8,
} as const;

/** KVM_EXIT_IO_* directions. */
export const EXIT_IO_IN = 0;
export const EXIT_IO_OUT = 1;
/** KVM_MEMORY_EXIT_FLAG_PRIVATE. */
export const MEMORY_EXIT_FLAG_PRIVATE = 1n << 3n;
/** kvm_userspace_memory_region2 fields only REGION2 carries (KVM_MEM_GUEST_MEMFD). */
export const MEM_GUEST_MEMFD = 1 << 2;
