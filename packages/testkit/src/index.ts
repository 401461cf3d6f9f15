// @kvmtest/testkit — write KVM tests: a test names the VM type; the kit lays out memory, page
// tables with the type's tag bit, the guest image and the ucall channel, launches confidential
// VMs before their first run, re-raises guest failures on the host, and runs suites as kselftest
// TAP. The vitest helpers live in the `@kvmtest/testkit/vitest` entry.

export {
  exitObservation,
  firstDifference,
  type Observable,
  type Observation,
  type ObservationDifference,
  observationValue,
  observe,
  observeErrno,
  observeKvm,
  observing,
  startObservations,
  takeObservations,
} from './internal/observe.js';
export {
  describeVmMemory,
  type EncContextEvent,
  MAX_VM_MAPS,
  type MemoryRecording,
  type MemslotMap,
  PAGE_KINDS,
  type PageKind,
  type PageRun,
  recordingMemoryMaps,
  startMemoryMaps,
  type TagBitInfo,
  takeMemoryMaps,
  type VmMemoryMap,
} from './internal/memory-map.js';
export {
  addrGva2Gpa,
  addrGva2Hva,
  readGuestGlobal,
  readGuestGlobalBytes,
  type VmVaddrAllocOptions,
  vmInstallExceptionHandler,
  vmReloadImage,
  vmVaddrAlloc,
  vmVaddrAllocShared,
  writeGuestGlobal,
} from './internal/access.js';
export { type Gpa, type Gva, gpa, gva, type HostOffset, hostOffset } from '@kvmtest/kvm';
export { testAssert, testAssertEq, testFail, testRequire } from './internal/asserts.js';
export {
  BACKENDS,
  type BackendChoice,
  type BackendSpec,
  backendFromEnv,
  backendNamed,
  defaultBackend,
  formatBackendSpec,
  getKvm,
  kvmFromEnv,
  looksLikePvm,
  parseBackendSpec,
  SIM_HOSTS,
  setDefaultKvm,
  simHostFromEnv,
  simHostLike,
} from './internal/backend.js';
export {
  type AssertionInfo,
  assertionBanner,
  KsftSkip,
  type SourceLocation,
  TESTKIT_ERROR,
  TestAssertionError,
  TestkitError,
  type TestkitErrorCode,
} from './internal/errors.js';
export { FORMAT_MAX_WIDTH, type FormatValue, formatString } from './internal/format.js';
export {
  type CaseContext,
  type CaseResult,
  CaseTimeoutError,
  caseContext,
  DEFAULT_CASE_TIMEOUT_MS,
  describeFailure,
  defineSuite,
  type KsftExitCode,
  ksftExitCode,
  type Reporter,
  type RunSuiteOptions,
  runSuite,
  type RunWithTimeoutOptions,
  runWithTimeout,
  seedLine,
  type Suite,
  type SuiteCounts,
  type SuiteResult,
  type TestCase,
  tapReporter,
} from './internal/harness.js';
export { setGuestPrintfSink } from './internal/guest-log.js';
export { type ProgramIo, runSuiteProgram } from './internal/program.js';
export {
  type CaseOutcome,
  type CaseStatus,
  failureSummary,
  isFailure,
  KSFT,
  oneLine,
  type TapCounts,
  tapDescription,
  tapDiagnostics,
  tapResultLine,
  tapTotals,
} from './internal/results.js';
export {
  defineGuest,
  type GlobalDecl,
  type GlobalDecls,
  type GuestCode,
  RUNTIME_GLOBAL,
} from './internal/image.js';
export {
  assertExitReason,
  GuestAssertionError,
  GuestUnhandledError,
  lastUcall,
  type RunUcallOptions,
  runUcall,
  runUcallExpect,
  vcpuRun,
} from './internal/run.js';
export {
  type GuestExceptionHandler,
  guestAssert,
  guestAssertEq,
  guestAssertNe,
  guestDone,
  guestFail,
  guestPrintf,
  guestSync,
} from './internal/runtime.js';
export {
  SEV_MEASUREMENT_LEN,
  type SevLaunchOptions,
  sevEsInit,
  sevFdOf,
  sevGuestStatus,
  sevInit,
  sevInit2,
  sevIoctl,
  sevLaunchFinish,
  sevLaunchMeasure,
  sevLaunchStart,
  sevLaunchUpdate,
  sevMigrateFrom,
  sevMirrorFrom,
  trySevEsInit,
  trySevInit,
  trySevInit2,
  trySevIoctl,
  trySevMigrateFrom,
  trySevMirrorFrom,
  vmSevLaunch,
} from './internal/sev.js';
export { vmLaunch } from './internal/launch.js';
export { adoptVm } from './internal/kit/registry.js';
export { tagPolicyFor } from './internal/kit/tag.js';
export {
  type LaunchPolicy,
  type LaunchStage,
  TestVm,
  type VmLike,
} from './internal/kit-vm.js';
export {
  SNP_DEFAULT_POLICY,
  snpInit,
  snpLaunchFinish,
  snpLaunchStart,
  snpLaunchUpdate,
  trySnpLaunchStart,
  vmSnpLaunch,
} from './internal/snp.js';
export {
  TD_BOOT_PARAMETERS_GPA,
  TD_BOOT_PARAMETERS_SLOT,
  TD_BOOT_PARAMS_LAYOUT,
  tdBootCode,
  tdxCapabilities,
  tdxCmdName,
  tdxFinalize,
  tdxInitMemRegions,
  tdxInitVmCpuid,
  tdxVcpuIoctl,
  tdxVmIoctl,
  tryTdxVmIoctl,
  vmTdxLaunch,
} from './internal/tdx.js';
export { vmCreateMigrationTarget } from './internal/migrate.js';
export {
  type AddedMemslot,
  addrGpa2Hva,
  kvmCpuHas,
  kvmHasDeviceAttr,
  thisCpuHas,
  vcpuArgsSet,
  vcpuCpuidHas,
  type VmMemAddOptions,
  vmMemAdd,
} from './internal/selftest-lib.js';
export {
  BASE_GUEST_PAGES,
  DEFAULT_GUEST_STACK_VADDR_MIN,
  DEFAULT_STACK_PAGES,
  type PagesRequiredOptions,
  ucallPagesRequired,
  vmNrPagesRequired,
} from './internal/sizing.js';
export {
  MIN_UCALL_SLOTS,
  type ShapeLike,
  supportedVmTypes,
  testRequireVmType,
  type VmBaseOptions,
  type VmCreateOptions,
  vmCreate,
  vmCreateBarebones,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
  vmSevCreateWithOneVcpu,
  vmTypeSupported,
} from './internal/vm.js';
