// The SEV / SEV-ES model of the simulated kernel: what the arch seam imports.

export {
  type SevPageCipher,
  sevArchOps,
  sevPlatform,
  sevTypeAvailable,
  sevVendorExtras,
  vcpuView,
  vmView,
} from './arch-ops.js';
export { type AsidAllocFailure, AsidPool } from './asid.js';
export {
  MIRROR_ALLOWED_CMDS,
  type SevAttestationReportData,
  type SevReceiveStartData,
  type SevReceiveUpdateData,
  type SevSendStartData,
  type SevSendUpdateData,
} from './commands.js';
export {
  bufferId,
  cryptRange,
  decryptCopy,
  decryptInto,
  deriveKey,
  encryptCopy,
  encryptFrom,
  privateReadBytes,
  privateReadU64,
  privateWriteBytes,
  privateWriteU64,
  type SevKey,
} from './crypto.js';
export { lockTwoVms, type MoveStep, unlockTwoVms } from './enc-context.js';
export { sevInfoResponse, VC_VECTOR, type VcEvent, type VmgexitOutcome } from './es.js';
export { type GuestContext, SEV_MEASURE_LEN, SevFirmware, SIM_SEV_API } from './firmware.js';
export { DEFAULT_SEV_CPUID, type SevLeakReport, SevPlatform, type SevPlatformOptions } from './platform.js';
export {
  INVALID_PAGE,
  isMirror,
  newSevVcpuState,
  newSevVmState,
  type SevVcpuState,
  type SevVmState,
  sevEsGuest,
  sevGuest,
  sevSnpGuest,
} from './state.js';
export { uaddrOf } from './uaccess.js';
export type {
  HostLocation,
  SevGuestCpuView,
  SevHostView,
  SevVcpuView,
  SevVmView,
  VmFdLookup,
} from './views.js';
export { buildVmsa, DR7_FIXED_1, VMSA_OFFSET } from './vmsa.js';
