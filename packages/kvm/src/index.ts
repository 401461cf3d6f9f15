export type { CapName } from './caps.js';
export {
  CAP,
  DEVICE_ATTR,
  FALLOC_FL,
  KVM_HC,
  KVM_LIMITS,
  MAP_GPA_RANGE,
  MEM_FLAG,
  MEMORY_ATTRIBUTE,
} from './caps.js';
export type {
  HostPtr,
  SevCommand,
  SevDbgData,
  SevGuestStatusData,
  SevInitData,
  SevLaunchMeasureData,
  SevLaunchSecretData,
  SevLaunchStartData,
  SevLaunchUpdateData,
  SnpLaunchFinishData,
  SnpLaunchStartData,
  SnpLaunchUpdateData,
  TdxCapabilitiesData,
  TdxCommand,
  TdxInitMemRegionData,
  TdxInitVmData,
} from './commands.js';
export {
  hostPtr,
  SEV_CMD,
  SEV_GUEST_STATE,
  SEV_RET,
  SNP_PAGE_TYPE,
  TDX_CMD,
  TDX_MEASURE_MEMORY_REGION,
} from './commands.js';
export type { Gpa, Gva, HostOffset } from '@kvmtest/guest-memory';
export { gpa, gva, hostOffset } from '@kvmtest/guest-memory';
export type { Errno } from './errno.js';
export { ERRNO, errnoName, isErrno, isKvmError, KvmError, tryKvm } from './errno.js';
export type {
  Exit,
  ExitReason,
  HltExit,
  HypercallExit,
  InternalErrorExit,
  IntrExit,
  IoExit,
  MemoryFaultExit,
  MmioExit,
  ShutdownExit,
  SystemEventExit,
  SystemEventType,
} from './exit.js';
export { describeExit, EXIT_REASON, exitReasonNumber, INTERNAL_ERROR, SYSTEM_EVENT } from './exit.js';
export type {
  ExceptionFrame,
  ExceptionHandler,
  ExceptionResume,
  AccessSize,
  Guest,
  GuestProgram,
  IoSize,
  ReadableCr,
  SlotSend,
  SlotSendResult,
  TdcallRegs,
  WritableCr,
} from './guest.js';
export { GuestException, PF_ERROR, VECTOR, vectorName } from './guest.js';
export type {
  Backend,
  EncRegion,
  Kvm,
  MemoryAttributes,
  RunInFlight,
  RunOptions,
  RunProbe,
  UserMemory,
  UserMemoryRegion,
  Vcpu,
  Vm,
} from './kvm.js';
export { registerRunProbe, runsInFlight } from './kvm.js';
export type {
  CpuidEntry,
  DescriptorTable,
  Regs,
  Segment,
  SegmentName,
  Sregs,
  SregsInput,
  XcrEntry,
} from './regs.js';
export {
  CPUID_FLAG_SIGNIFICANT_INDEX,
  CR,
  codeSegment64,
  copySregs,
  dataSegment64,
  findCpuid,
  mergeSregs,
  REG_NAMES,
  SEGMENT_FIELDS,
  SEGMENT_NAMES,
  tssSegment64,
  segment,
  unusableSegment,
  XFEATURE,
  XSAVE_LAYOUT,
  zeroRegs,
} from './regs.js';
export type { BinaryStats, StatsEntry, StatsHeader } from './stats.js';
export { KVM_STATS, readBinaryStats } from './stats.js';
export {
  argBigint,
  argInteger,
  argObject,
  argOneOf,
  argSregsInput,
  argString,
  argTypeError,
  argU64,
  describeValue,
} from './validate.js';
