export type { AsidRange, CpuidRegs, SevCpuFeature, SevCpuInfo, TdxGpaw } from './cpuid.js';
export {
  CPUID_LEAF_SEV,
  cBitFromCpuid,
  cBitMask,
  decodeCpuid8000001F,
  encodeCpuid8000001F,
  hasSevCpuFeature,
  SEV_CPUID_FEATURE_BIT,
  sevAsidRanges,
  tdxSharedBit,
  tdxSharedMask,
} from './cpuid.js';
export type { CocoErrorCode } from './error.js';
export { COCO_ERROR_CODE, CocoError } from './error.js';
export type { GhcbField } from './ghcb.js';
export {
  GHCB_DEFAULT_USAGE,
  GHCB_ERR,
  GHCB_EXIT_RESULT,
  GHCB_FIELD,
  GHCB_FIELDS,
  GHCB_LAYOUT,
  GHCB_PROTOCOL_VERSION,
  Ghcb,
  ghcbValidBit,
  isKnownSvmExitCode,
  SVM_EXIT,
  SVM_VMGEXIT,
  SVM_VMGEXIT_AP,
  svmExitCodeName,
} from './ghcb.js';
export type { GhcbCpuidReg, GhcbMsrDecodeOptions, GhcbMsrKind, GhcbMsrMessage } from './ghcb-msr.js';
export {
  decodeGhcbMsr,
  encodeGhcbMsr,
  GHCB_HV_FEATURE_BIT,
  GHCB_MSR_CODE,
  GHCB_MSR_INFO_MASK,
  GHCB_MSR_PREF_GPA_NONE,
  GHCB_MSR_PSC_RESP_ERROR,
  ghcbMsrCode,
  isKnownGhcbMsrCode,
  PSC_OP,
  SEV_TERM_REASON,
  SEV_TERM_SET,
} from './ghcb-msr.js';
export type { IoioInfo } from './ioio.js';
export {
  decodeIoioExitInfo,
  encodeIoioExitInfo,
  IOIO_SEGMENT,
  SVM_IOIO,
  SVM_IOIO_RESERVED_MASK,
} from './ioio.js';
export type { SevMeasureContext, SnpPageInfoOptions, SnpPageType } from './launch-digest.js';
export {
  SEV_LAUNCH_RECORD,
  SevLaunchDigest,
  SNP_PAGE_INFO_LAYOUT,
  SNP_PAGE_TYPE,
  SNP_VMSA_GPA,
  SnpLaunchDigest,
  sevLaunchMeasureBlob,
  sevLaunchMeasurement,
  TDX_MRTD,
  TdxMrtd,
} from './launch-digest.js';
export type { SevStatusFlag } from './msr.js';
export {
  decodeSevStatus,
  encodeSevStatus,
  SEV_MSR,
  SEV_STATUS_BIT,
  SEV_STATUS_RESERVED_MASK,
  SVM_SEV_FEATURE_BIT,
  sevStatusFor,
} from './msr.js';
export type { PscDesc, PscEntry } from './psc.js';
export {
  decodePscDesc,
  decodePscEntry,
  encodePscDesc,
  encodePscEntry,
  PSC_DESC_SIZE,
  VMGEXIT_PSC_ERROR,
  VMGEXIT_PSC_MAX_ENTRY,
} from './psc.js';
export type { SevPolicy, SnpPolicy, SnpPolicyCheckOptions, SnpPolicyProblem } from './policy.js';
export {
  decodeSevPolicy,
  decodeSnpPolicy,
  encodeSevPolicy,
  encodeSnpPolicy,
  KVM_SNP_POLICY_MASK_VALID,
  SEV_POLICY_API_MAJOR_SHIFT,
  SEV_POLICY_API_MINOR_SHIFT,
  SEV_POLICY_BIT,
  SEV_POLICY_RESERVED_MASK,
  SNP_POLICY_ABI_MAJOR_MASK,
  SNP_POLICY_ABI_MINOR_MASK,
  SNP_POLICY_BIT,
  SNP_POLICY_RESERVED_MASK,
  snpPolicyProblems,
  validateSevPolicy,
  validateSnpPolicy,
} from './policy.js';
export type {
  TdvmcallDecodeOptions,
  TdvmcallRegs,
  TdxIoRequest,
  TdxMmioRequest,
  VmxIoQualification,
} from './tdx.js';
export {
  decodeTdxIoRequest,
  decodeTdxMmioRequest,
  decodeVmxIoQualification,
  EXCEPTION_VECTOR,
  encodeTdxIoRequest,
  encodeTdxMmioRequest,
  encodeVmxIoQualification,
  TDCALL_LEAF,
  TDVMCALL_STANDARD,
  TDVMCALL_STATUS,
  TDVMCALL_SUBFUNCTION,
  tdvmcallStatusName,
} from './tdx.js';
export type {
  GuestMode,
  LaunchFlow,
  NativeUcallTransport,
  PortRequestKind,
  TagBitKind,
  VmShape,
  VmType,
  VmTypeTraits,
} from './vm-type.js';
export {
  GUEST_MODE_PARAMS,
  isVmType,
  VM_SHAPE_DEFAULT,
  VM_TYPE_NUMBER,
  VM_TYPE_TRAITS,
  VM_TYPES,
  vmShape,
  vmTypeFromNumber,
} from './vm-type.js';
export type { CpuidLookupEntry, CpuidReg, X86Feature, X86FeatureName } from './x86-features.js';
export { cpuidHas, X86_FEATURE } from './x86-features.js';
export { hex } from './internal/bits.js';
