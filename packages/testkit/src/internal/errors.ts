// The package's error classes: TestkitError for misuse of the library (a code from a table and the
// values involved), TestAssertionError for a failed test (host or guest), KsftSkip for a test that
// cannot run here (kselftest exit code 4).

/** Codes of TestkitError, one per rule the kit enforces. */
export const TESTKIT_ERROR = {
  /** KVMTEST_BACKEND names no known backend. */
  UNKNOWN_BACKEND: 'UNKNOWN_BACKEND',
  /** The operation needs guest memory, an image or ucall, and the VM is barebones. */
  BAREBONES: 'BAREBONES',
  /** The operation needs a ucall pool and the VM was created with `ucall: false`. */
  NO_UCALL: 'NO_UCALL',
  /** The operation must happen before the confidential VM is launched. */
  LAUNCHED: 'LAUNCHED',
  /** The guest page tables are protected (launched CoCo VM); they cannot be walked. */
  PT_PROTECTED: 'PT_PROTECTED',
  /** A vCPU with this id already exists on the VM. */
  VCPU_EXISTS: 'VCPU_EXISTS',
  /** The VM (or its vCPU) is closed. */
  CLOSED: 'CLOSED',
  /** A run ended with an exit that is not a ucall where one was required. */
  NOT_A_UCALL: 'NOT_A_UCALL',
  /** The backend does not support this VM type (KVM_CAP_VM_TYPES). */
  UNSUPPORTED_VM_TYPE: 'UNSUPPORTED_VM_TYPE',
  /** The launch flow of this VM type is not implemented by the kit yet. */
  LAUNCH_NOT_IMPLEMENTED: 'LAUNCH_NOT_IMPLEMENTED',
  /** The backend's CPUID lacks what the VM type needs (C-bit leaf, GPA width). */
  CPUID: 'CPUID',
  /** A guest global is not declared in this VM's image. */
  UNKNOWN_GLOBAL: 'UNKNOWN_GLOBAL',
  /** A plain argument mistake the kit can name precisely. */
  BAD_ARGUMENT: 'BAD_ARGUMENT',
  /** A contract VM the kit did not make (nor adopt) was passed where a kit VM is needed. */
  NOT_A_KIT_VM: 'NOT_A_KIT_VM',
  /** The vCPU object does not belong to a VM created by the kit. */
  FOREIGN_VCPU: 'FOREIGN_VCPU',
  /** The operation needs a vCPU and the VM has none (a TD's KVM_TDX_INIT_MEM_REGION is a vCPU ioctl). */
  NO_VCPU: 'NO_VCPU',
  /** The operation belongs to another VM type's flow (SEV launch commands on a TD, TDX commands on an SEV VM). */
  WRONG_VM_TYPE: 'WRONG_VM_TYPE',
} as const;

/** One of the TESTKIT_ERROR codes. */
export type TestkitErrorCode = keyof typeof TESTKIT_ERROR;

/** A testkit rule was broken: `code` names the rule, `details` holds the values involved. */
export class TestkitError extends Error {
  override readonly name = 'TestkitError';
  readonly code: TestkitErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: TestkitErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.code = code;
    this.details = Object.freeze({ ...details });
  }
}

/** Where a failed assertion was written: file (relative to the working directory when inside it) and line. */
export interface SourceLocation {
  readonly file: string;
  readonly line: number;
}

/** Fields of a TestAssertionError. */
export interface AssertionInfo {
  /** Source location of the assertion, when known. */
  readonly location?: SourceLocation | undefined;
  /** Text of the asserted expression (`#e` in TEST_ASSERT), when known. */
  readonly expression?: string | undefined;
  /** The formatted user message. */
  readonly userMessage: string;
}

/** The selftests' banner: `==== Test Assertion Failure ====`, `  file:line: expr`, `  message`. */
export function assertionBanner(info: AssertionInfo, title = 'Test Assertion Failure'): string {
  const where = info.location ? `${info.location.file}:${info.location.line}` : '<unknown location>';
  const lines = [`==== ${title} ====`, `  ${where}: ${info.expression ?? '<expression unavailable>'}`];
  for (const l of info.userMessage.split('\n')) if (l !== '') lines.push(`  ${l}`);
  return lines.join('\n');
}

/** A failed test assertion (TEST_ASSERT): the message is the selftests' failure banner. */
export class TestAssertionError extends Error {
  override name = 'TestAssertionError';
  /** File and line of the assertion, when known. */
  readonly file: string | undefined;
  readonly line: number | undefined;
  readonly expression: string | undefined;
  /** The formatted message alone, without the banner. */
  readonly userMessage: string;

  constructor(info: AssertionInfo, options?: ErrorOptions & { title?: string }) {
    super(assertionBanner(info, options?.title), options);
    this.file = info.location?.file;
    this.line = info.location?.line;
    this.expression = info.expression;
    this.userMessage = info.userMessage;
  }
}

/** A requirement of the test is not met here (TEST_REQUIRE): the test is skipped, exit code 4. */
export class KsftSkip extends Error {
  override readonly name = 'KsftSkip';
  /** Why the test cannot run. */
  readonly reason: string;
  constructor(reason: string) {
    super(`SKIP ${reason}`);
    this.reason = reason;
  }
}
