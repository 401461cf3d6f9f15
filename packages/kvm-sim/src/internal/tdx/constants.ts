// Numbers of the simulated TDX module and of KVM's TDX code (arch/x86/kvm/vmx/tdx.c, tdx_arch.h,
// tdx_errno.h, asm/shared/tdx.h; arch/x86/kvm/vmx/tdx.c). Values, not code: each one says where it comes from.

/** TD life-cycle states (`enum kvm_tdx_state`, arch/x86/kvm/vmx/tdx.h). */
export const TD_STATE = { UNINITIALIZED: 0, INITIALIZED: 1, RUNNABLE: 2 } as const;
/** A TD state number. */
export type TdState = (typeof TD_STATE)[keyof typeof TD_STATE];

/** TD vCPU states (`enum vcpu_tdx_state`, arch/x86/kvm/vmx/tdx.h). */
export const TD_VCPU_STATE = { UNINITIALIZED: 0, INITIALIZED: 1 } as const;

/** TD ATTRIBUTES bits (tdx_arch.h `TDX_TD_ATTR_*`). */
export const TD_ATTR = {
  DEBUG: 1n << 0n,
  SEPT_VE_DISABLE: 1n << 28n,
  PKS: 1n << 30n,
  KL: 1n << 31n,
  PERFMON: 1n << 63n,
} as const;

/**
 * Attributes KVM lets userspace request: tdx.c `KVM_SUPPORTED_TD_ATTRS` is SEPT_VE_DISABLE only
 * (the simulated module's ATTRIBUTES_FIXED0 allows it, FIXED1 is 0), so DEBUG TDs do not exist.
 */
export const TDX_SUPPORTED_ATTRS = TD_ATTR.SEPT_VE_DISABLE;

/** XFAM bits the module forces on (`xfam_fixed1`: x87 and SSE state). */
export const TDX_XFAM_FIXED1 = 0x3n;

/**
 * XFAM KVM reports (tdx_get_supported_xfam: supported XCR0|XSS masked by the module's fixed0):
 * x87, SSE, AVX, AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM), PKRU, AMX (XTILECFG, XTILEDATA).
 */
export const TDX_SUPPORTED_XFAM = 0x0006_02e7n;

/** KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h). */
export const KVM_MAX_CPUID_ENTRIES = 256;

/** CPUID.7.0:EBX HLE (bit 4) and RTM (bit 11): tdx.c `TDX_FEATURE_TSX`, rejected by INIT_VM. */
export const CPUID7_EBX_TSX = (1 << 4) | (1 << 11);
/** CPUID.7.0:ECX WAITPKG (bit 5), rejected by INIT_VM (tdx_unsupported_cpuid). */
export const CPUID7_ECX_WAITPKG = 1 << 5;

/** One leaf the simulated TDX module lets the VMM configure, with the bits it may set (`cpuid_config`). */
export interface CpuidConfigLeaf {
  readonly function: number;
  /** Sub-leaf, or undefined for a leaf without sub-leaves (KVM_TDX_CPUID_NO_SUBLEAF). */
  readonly index: number | undefined;
  readonly eax: number;
  readonly ebx: number;
  readonly ecx: number;
  readonly edx: number;
}

/**
 * The module's configurable CPUID leaves (`td_conf.cpuid_config_leaves/values`) as KVM reports
 * them in KVM_TDX_CAPABILITIES: TSX and WAITPKG already cleared (td_init_cpuid_entry2) and
 * 0x80000008 EAX[23:16] reported as all-ones, the GPAW interface (arch/x86/kvm/vmx/tdx.c: tdx_td_init()).
 */
export const TDX_CPUID_CONFIG: readonly CpuidConfigLeaf[] = Object.freeze([
  { function: 0x1, index: undefined, eax: 0, ebx: 0x00ff_0000, ecx: 0xffff_ffff, edx: 0xffff_ffff },
  {
    function: 0x7,
    index: 0,
    eax: 0,
    ebx: ~CPUID7_EBX_TSX >>> 0,
    ecx: ~CPUID7_ECX_WAITPKG >>> 0,
    edx: 0xffff_ffff,
  },
  { function: 0x7, index: 1, eax: 0xffff_ffff, ebx: 0, ecx: 0, edx: 0xffff_ffff },
  { function: 0xd, index: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  { function: 0xd, index: 1, eax: 0xffff_ffff, ebx: 0, ecx: 0, edx: 0 },
  { function: 0x8000_0001, index: undefined, eax: 0, ebx: 0, ecx: 0xffff_ffff, edx: 0xffff_ffff },
  { function: 0x8000_0008, index: undefined, eax: 0x00ff_0000, ebx: 0, ecx: 0, edx: 0 },
]);

/** TDX private KeyIDs the simulated platform has (tdx_guest_keyid_alloc draws from them; arch/x86/kvm/vmx/tdx.c: tdx_td_init() "HKID"). */
export const TDX_GUEST_KEYIDS = 64;

/** TDX module completion status codes (RAX of TDCALL; arch/x86/kvm/vmx/tdx_errno.h). */
export const TDX_STATUS = {
  SUCCESS: 0n,
  /** An operand is invalid; the low 32 bits name the operand (RAX 0, RCX 1). */
  OPERAND_INVALID: 0xc000_0100_0000_0000n,
  NO_VALID_VE_INFO: 0xc000_0704_0000_0000n,
  PAGE_ALREADY_ACCEPTED: 0x0000_0b0a_0000_0000n,
  PAGE_SIZE_MISMATCH: 0xc000_0b0b_0000_0000n,
} as const;

/** Operand ids in the low bits of TDX_STATUS.OPERAND_INVALID. */
export const TDX_OPERAND_ID = { RAX: 0n, RCX: 1n } as const;

/** VMX basic exit reasons a TD's #VE and TDVMCALL use (arch/x86/include/uapi/asm/vmx.h). */
export const VMX_EXIT_REASON = {
  CPUID: 10,
  HLT: 12,
  VMCALL: 18,
  IO_INSTRUCTION: 30,
  MSR_READ: 31,
  MSR_WRITE: 32,
  EPT_VIOLATION: 48,
  TDCALL: 77,
} as const;

/** EPT-violation exit-qualification bits (data read, data write). */
export const EPT_VIOLATION_QUAL = { READ: 1n, WRITE: 2n } as const;

/** TDVMCALL<MapGPA> splits a request into chunks of at most this many bytes (tdx.c TDX_MAP_GPA_MAX_LEN). */
export const TDX_MAP_GPA_MAX_LEN = 2n * 1024n * 1024n;

/**
 * Bits of TDG.VP.VMCALL's RCX the module refuses (RAX, RCX and RSP cannot be passed to the VMM;
 * bits 63:32 are reserved).
 */
export const TDVMCALL_RCX_INVALID = 0b1_0011n | (0xffff_ffffn << 32n);

/** The RCX bitmap a guest that omits RCX gets: R10–R15 exposed, as Linux's TDVMCALL helpers pass. */
export const TDVMCALL_DEFAULT_RCX = 0xfc00n;

/** GetTdVmCallInfo leaf-1 R11 bit: TDG.VP.VMCALL<GetQuote> (KVM_TDX_CAPABILITIES `user_tdvmcallinfo_1_r11`). */
export const TDVMCALLINFO_GET_QUOTE = 1n;

/** Negative KVM hypercall return values (include/uapi/linux/kvm_para.h), as u64. */
export const KVM_HC_RET = {
  ENOSYS: BigInt.asUintN(64, -1000n),
  EINVAL: BigInt.asUintN(64, -22n),
  EOPNOTSUPP: BigInt.asUintN(64, -95n),
} as const;

/** x2APIC APIC_BASE value KVM_TDX_INIT_VCPU installs: base 0xfee00000, EN (bit 11), EXTD (bit 10), BSP (bit 8) for vCPU 0. */
export function tdxApicBase(vcpuId: number): bigint {
  return 0xfee0_0000n | (1n << 11n) | (1n << 10n) | (vcpuId === 0 ? 1n << 8n : 0n);
}

/** MSR_IA32_APICBASE. */
export const MSR_APIC_BASE = 0x1b;

/** RIP of a TD vCPU after TDH.VP.INIT: the reset vector, 16 bytes below 4 GiB. */
export const TD_RESET_VECTOR = 0xffff_fff0n;

/**
 * Control state of a TD vCPU after TDH.VP.INIT (TDX module ABI, "TD vCPU initial state"): 32-bit
 * protected mode with paging off — CR0 = PE | NE (and ET), CR3 = 0, CR4 = MCE (VMXE is set in the
 * real VMCS but hidden from the guest), EFER = LME | NXE, which the module owns (a TD cannot change
 * them; tdx_is_read_only_msr refuses a TDVMCALL<WRMSR> of EFER). The guest's boot code turns paging on
 * with MOV to CR4 / CR3 / CR0, which activates long mode.
 */
export const TD_INITIAL_CONTROL = {
  cr0: 0x31n,
  cr2: 0n,
  cr3: 0n,
  cr4: 0x40n,
  efer: (1n << 8n) | (1n << 11n),
} as const;
