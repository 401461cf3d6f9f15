// Running vCPUs the kit's way: launch first if the VM type needs it, run, decode the ucall once,
// and turn a guest ABORT or UNHANDLED into a host failure that shows the guest's message — after
// every run, so a test cannot miss them (selftests' _vcpu_run → assert_on_unhandled_exception).

import { argTypeError } from '@kvmtest/kvm';
import { checkVcpu } from './check.js';
import {
  describeExit,
  type Exit,
  type ExitReason,
  exitReasonNumber,
  type Vcpu,
  vectorName,
} from '@kvmtest/kvm';
import { getUcall, type Ucall, UCALL, ucallCmdName } from '@kvmtest/ucall';
import { callerOf, displayLocation } from './callsite.js';
import { TestAssertionError, TestkitError } from './errors.js';
import { emitGuestPrintf } from './guest-log.js';
import { UNHANDLED_EXPRESSION, UNHANDLED_EXTRA } from './runtime.js';
import { testVmOfVcpu } from './kit/registry.js';
import { vmLaunch } from './launch.js';

/** A guest assertion (GUEST_ASSERT*, GUEST_FAIL) reported through UCALL_ABORT, re-raised on the host. */
export class GuestAssertionError extends TestAssertionError {
  override name = 'GuestAssertionError';
  readonly vcpuId: number;
  /** The decoded ucall. */
  readonly ucall: Ucall;
  constructor(uc: Ucall) {
    super(
      {
        location: uc.file === undefined ? undefined : { file: uc.file, line: uc.line ?? 0 },
        expression: uc.expression,
        userMessage: uc.message,
      },
      { title: `Guest Assertion Failure (vCPU ${uc.vcpuId})` },
    );
    this.vcpuId = uc.vcpuId;
    this.ucall = uc;
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A guest exception no handler took, reported through UCALL_UNHANDLED, re-raised on the host. */
export class GuestUnhandledError extends TestAssertionError {
  override name = 'GuestUnhandledError';
  readonly vcpuId: number;
  /** The exception vector (14 for #PF), or -1 when the ucall did not carry one. */
  readonly vector: number;
  /** The error code the CPU pushed, if any (undefined for a vector that pushes none, e.g. #UD). */
  readonly errorCode: number | undefined;
  readonly ucall: Ucall;
  constructor(uc: Ucall) {
    // The guest runtime sends [vector, errorCode] as the assert ucall's extra args (UNHANDLED_EXTRA).
    const v = uc.extra?.[UNHANDLED_EXTRA.vector];
    const ec = uc.extra?.[UNHANDLED_EXTRA.errorCode];
    const vector = v !== undefined && v <= MAX_SAFE ? Number(v) : -1;
    super(
      {
        location: uc.file === undefined ? undefined : { file: uc.file, line: uc.line ?? 0 },
        expression: uc.expression ?? UNHANDLED_EXPRESSION,
        userMessage: uc.message,
      },
      {
        title:
          `Unhandled Guest Exception ${vector >= 0 ? vectorName(vector) : ''} (vCPU ${uc.vcpuId})`.replace(
            '  ',
            ' ',
          ),
      },
    );
    this.vcpuId = uc.vcpuId;
    this.vector = vector;
    // A u64 above 2^53 can only be a negative number the guest sent (two's complement).
    this.errorCode = ec === undefined ? undefined : Number(ec <= MAX_SAFE ? ec : BigInt.asIntN(64, ec));
    this.ucall = uc;
  }
}

const lastUcalls = new WeakMap<Vcpu, Ucall | undefined>();

/**
 * How a kit run treats a guest's ABORT ucall (a failed GUEST_ASSERT*, GUEST_FAIL): `'throw'` (the
 * default) re-raises it as GuestAssertionError; `'return'` hands it back as data, for hosts that
 * expect failed assertions and run the guest on (upstream's guest_print_test). UNHANDLED always throws.
 */
export interface RunUcallOptions {
  abort?: 'throw' | 'return';
}

/** Throws the host failure for an ABORT (unless `abort: 'return'`) or UNHANDLED ucall; returns the others. */
export function checkUcall(uc: Ucall, opts?: RunUcallOptions): Ucall {
  if (uc.cmd === UCALL.ABORT && opts?.abort !== 'return') throw new GuestAssertionError(uc);
  if (uc.cmd === UCALL.UNHANDLED) throw new GuestUnhandledError(uc);
  return uc;
}

/**
 * _vcpu_run: launches the VM first if its type needs it, runs the vCPU, decodes a ucall exit
 * (kept for lastUcall) and throws GuestAssertionError / GuestUnhandledError for ABORT / UNHANDLED
 * (ABORT only returns with `abort: 'return'`). Returns the exit.
 */
export async function vcpuRun(vcpu: Vcpu, opts?: RunUcallOptions): Promise<Exit> {
  checkVcpu(vcpu, 'vcpuRun');
  checkRunOptions('vcpuRun', opts);
  const vm = testVmOfVcpu(vcpu);
  if (vm.launchPending) vmLaunch(vm);
  const exit = await vcpu.run();
  const uc = vm.ucallPool === undefined ? undefined : getUcall(vcpu);
  lastUcalls.set(vcpu, uc);
  if (uc?.cmd === UCALL.PRINTF) emitGuestPrintf(uc.message);
  if (uc !== undefined) checkUcall(uc, opts);
  return exit;
}

/** The ucall decoded by the vCPU's last kit run, or undefined when that exit was not a ucall. */
export function lastUcall(vcpu: Vcpu): Ucall | undefined {
  checkVcpu(vcpu, 'lastUcall');
  return lastUcalls.get(vcpu);
}

/**
 * Runs the vCPU until its next ucall and returns it: launches first if needed, throws
 * GuestAssertionError / GuestUnhandledError for ABORT / UNHANDLED (with `{ abort: 'return' }` an
 * ABORT is returned instead; the guest goes on from its assertion at the next run), and a
 * NOT_A_UCALL error naming the exit (describeExit) when the vCPU stopped for anything else.
 */
export async function runUcall(vcpu: Vcpu, opts?: RunUcallOptions): Promise<Ucall> {
  checkVcpu(vcpu, 'runUcall');
  checkRunOptions('runUcall', opts);
  const vm = testVmOfVcpu(vcpu);
  if (vm.ucallPool === undefined)
    throw new TestkitError(
      'NO_UCALL',
      `runUcall: this ${vm.type} VM has no ucall pool (${vm.barebones ? 'barebones VM' : 'created with ucall: false'}); use vcpuRun`,
      { type: vm.type },
    );
  if (vm.launchPending) vmLaunch(vm);
  const exit = await vcpu.run();
  const uc = getUcall(vcpu);
  lastUcalls.set(vcpu, uc);
  if (uc?.cmd === UCALL.PRINTF) emitGuestPrintf(uc.message);
  if (uc === undefined)
    throw new TestkitError(
      'NOT_A_UCALL',
      `vCPU ${vcpu.id} of the ${vm.type} VM exited with ${describeExit(exit)} instead of a ucall`,
      { vcpuId: vcpu.id, exit },
    );
  return checkUcall(uc, opts);
}

function checkRunOptions(fn: string, opts: RunUcallOptions | undefined): void {
  if (opts === undefined) return;
  if (typeof opts !== 'object' || opts === null)
    throw new TestkitError('BAD_ARGUMENT', `${fn}: options must be an object, got ${String(opts)}`, {});
  if (opts.abort !== undefined && opts.abort !== 'throw' && opts.abort !== 'return')
    throw new TestkitError(
      'BAD_ARGUMENT',
      `${fn}: abort must be 'throw' or 'return', got ${String(opts.abort)}`,
      { abort: opts.abort },
    );
}

/**
 * Runs until a ucall and asserts its command (e.g. UCALL.DONE); returns it. Expecting UCALL.ABORT
 * receives the guest's failed assertion as data (the guest goes on at the next run).
 */
export async function runUcallExpect(vcpu: Vcpu, cmd: number): Promise<Ucall> {
  checkVcpu(vcpu, 'runUcallExpect');
  ucallCmdName(cmd); // a TypeError for a cmd that is not an integer, before the run
  const uc = await runUcall(vcpu, cmd === UCALL.ABORT ? { abort: 'return' } : undefined);
  if (uc.cmd !== cmd)
    throw new TestAssertionError({
      location: displayLocation(callerOf(runUcallExpect)),
      expression: `ucall == ${ucallCmdName(cmd)}`,
      userMessage: `vCPU ${vcpu.id}: wanted ucall ${ucallCmdName(cmd)}, got ${ucallCmdName(uc.cmd)}${uc.message ? ` (${uc.message})` : ''}`,
    });
  return uc;
}

/** TEST_ASSERT_KVM_EXIT_REASON: the vCPU's last exit had `reason`, else a failure naming both. */
export function assertExitReason(vcpu: Vcpu, reason: ExitReason): void {
  checkVcpu(vcpu, 'assertExitReason');
  if (typeof reason !== 'string')
    throw argTypeError('assertExitReason', 'reason', 'an exit reason name', reason);
  const exit = vcpu.exit;
  if (exit?.reason === reason) return;
  throw new TestAssertionError({
    location: displayLocation(callerOf(assertExitReason)),
    expression: `exit reason == ${reason}`,
    userMessage: `Wanted KVM exit reason: ${exitReasonNumber(reason)} (${reason}), got: ${
      exit === undefined
        ? 'no exit yet'
        : `${exitReasonNumber(exit.reason)} (${exit.reason}): ${describeExit(exit)}`
    }`,
  });
}
