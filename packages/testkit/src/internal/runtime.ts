// The guest runtime: what a guest program calls to talk to its host (GUEST_SYNC, GUEST_DONE,
// GUEST_PRINTF, GUEST_ASSERT*, GUEST_FAIL) and the exception entry every kit guest gets.
//
// A guest only uses `g`, its locals and its VM's globals. Exception handlers live in this VM's
// `exception_handlers` table (one u64 handler address per vector, in the guest image); a handler
// "address" names a function in the process-wide handler registry — the stand-in for code that
// sits at the same address in every VM's image. The wrapper installed as each vCPU's entry point
// sets one dispatcher with g.setExceptionHandler that routes by vector through that table; an
// exception with no handler unwinds the guest program and is reported as UCALL_UNHANDLED with the
// vector and error code (in the assert ucall's extra args, see UNHANDLED_EXTRA) and the guest source
// line where it happened.

import {
  type ExceptionFrame,
  type ExceptionResume,
  type Guest,
  GuestException,
  type GuestProgram,
  vectorName,
} from '@kvmtest/kvm';
import { fileURLToPath } from 'node:url';
import { UCALL, ucall, ucallAssert, ucallFmt } from '@kvmtest/ucall';
import { type CallSite, callArguments, callerOf, displayLocation, firstFrame } from './callsite.js';
import { type FormatValue, hex64 } from './format.js';
import { NUM_VECTORS, RUNTIME_GLOBAL } from './image.js';

/** A guest exception handler: runs inside the faulting operation; returns how to resume. */
export type GuestExceptionHandler = (frame: ExceptionFrame, g: Guest) => ExceptionResume;

/**
 * Functions given stable code-like "addresses" (the n-th registered sits at base + 16 n), the way
 * guest code has link addresses a guest can store in memory and jump through.
 */
class CodeTable<F> {
  private readonly fns: F[] = [];
  private readonly ids = new Map<F, bigint>();
  constructor(private readonly base: bigint) {}

  /** The address of `fn`, registering it on first use. */
  addressOf(fn: F): bigint {
    let id = this.ids.get(fn);
    if (id === undefined) {
      this.fns.push(fn);
      id = this.base + BigInt(this.fns.length - 1) * 16n;
      this.ids.set(fn, id);
    }
    return id;
  }

  /** The function registered at `address`, or undefined. */
  at(address: bigint): F | undefined {
    if (address < this.base || (address - this.base) % 16n !== 0n) return undefined;
    return this.fns[Number((address - this.base) / 16n)];
  }
}

const handlerTable = new CodeTable<GuestExceptionHandler>(0xffff_ffff_8100_0000n);
const programTable = new CodeTable<GuestProgram>(0xffff_ffff_8200_0000n);

/** @internal the handler address of `fn` (registering it on first use). */
export function handlerAddress(fn: GuestExceptionHandler): bigint {
  return handlerTable.addressOf(fn);
}

/**
 * @internal the "address" of guest program `fn` (registering it on first use): what a TD's boot
 * parameters name as a vCPU's entry point, as the selftests store `guest_code` there.
 */
export function guestCodeAddress(fn: GuestProgram): bigint {
  return programTable.addressOf(fn);
}

/** @internal the guest program at `address`, or undefined when nothing was registered there. */
export function guestCodeAt(address: bigint): GuestProgram | undefined {
  return programTable.at(address);
}

function handlerAt(address: bigint): GuestExceptionHandler | undefined {
  return handlerTable.at(address);
}

/** Where an unhandled exception happened, captured by the dispatcher while the faulting frame is live. */
const unhandledSite = new WeakMap<Guest, { frame: ExceptionFrame; site: CallSite | undefined }>();

// The folder holding the library packages, found from this file's own place
// (<packages>/testkit/{src,dist}/internal/runtime.*): any package's src/ or dist/ there (the kit, ucall,
// the contract, whichever backend runs the guest) and anything under node_modules is library code.
const PACKAGES_DIR = fileURLToPath(new URL('../../../', import.meta.url)).replaceAll('\\', '/');
const LIBRARY_FILE = /^[^/]+\/(?:src|dist)\//;

function isGuestCode(path: string): boolean {
  const p = path.replaceAll('\\', '/');
  if (p.includes('/node_modules/')) return false;
  const at = p.indexOf(PACKAGES_DIR);
  return at < 0 || !LIBRARY_FILE.test(p.slice(at + PACKAGES_DIR.length));
}

function guestSite(): CallSite | undefined {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 60;
  try {
    Error.captureStackTrace(holder);
  } finally {
    Error.stackTraceLimit = limit;
  }
  return firstFrame(holder.stack, isGuestCode);
}

function dispatch(g: Guest, frame: ExceptionFrame): ExceptionResume {
  const table = g.global(RUNTIME_GLOBAL.exceptionHandlers);
  const handler =
    frame.vector < NUM_VECTORS ? handlerAt(g.readU64(table + BigInt(frame.vector) * 8n)) : undefined;
  if (handler) return handler(frame, g);
  unhandledSite.set(g, { frame, site: guestSite() });
  throw new GuestException(frame);
}

/**
 * Wraps a guest program as a vCPU entry point: installs the exception dispatcher, runs the
 * program and reports an exception nobody handled as UCALL_UNHANDLED.
 */
export function wrapGuest(program: GuestProgram): GuestProgram {
  return async (g: Guest) => {
    g.setExceptionHandler((frame) => dispatch(g, frame));
    try {
      await program(g);
    } catch (e) {
      if (e instanceof GuestException) {
        await reportUnhandled(g, e);
        return;
      }
      throw e;
    }
  };
}

/** Expression of an UNHANDLED ucall. */
export const UNHANDLED_EXPRESSION = 'Unhandled exception in guest';
/**
 * Where an UNHANDLED ucall carries its numbers: `Ucall.extra[vector]` is the vector, `Ucall.extra[errorCode]`
 * the error code the CPU pushed — absent (undefined) for a vector without one. The message text only
 * repeats them for people; the host never parses it.
 */
export const UNHANDLED_EXTRA = { vector: 0, errorCode: 1 } as const;

async function reportUnhandled(g: Guest, e: GuestException): Promise<void> {
  const captured = unhandledSite.get(g);
  unhandledSite.delete(g);
  const frame = e.frame;
  const loc = displayLocation(captured?.frame === frame ? captured.site : firstFrame(e.stack, isGuestCode));
  const ec = frame.errorCode === undefined ? 'none' : `0x${frame.errorCode.toString(16)}`;
  const cr2 = frame.cr2 === undefined ? '' : ` at ${hex64(frame.cr2)}`;
  await ucallAssert(
    g,
    UCALL.UNHANDLED,
    {
      expression: UNHANDLED_EXPRESSION,
      file: loc?.file ?? '<unknown>',
      line: loc?.line ?? 0,
      // [UNHANDLED_EXTRA.vector, UNHANDLED_EXTRA.errorCode]; undefined = no error code pushed.
      extra: [BigInt(frame.vector), frame.errorCode === undefined ? undefined : BigInt(frame.errorCode)],
    },
    '%s',
    `Unhandled exception ${vectorName(frame.vector)} (vector ${frame.vector}) error code ${ec}${cr2} in ${frame.operation}: ${frame.detail}`,
  );
}

function u64(v: bigint | number, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (Number.isSafeInteger(v)) return BigInt(v);
  throw new TypeError(`${what} must be a bigint or a safe integer, got ${String(v)}`);
}

/** GUEST_SYNC: reports `stage` and up to 6 more values to the host (UCALL_SYNC, args = [stage, ...args]). */
export function guestSync(g: Guest, stage: bigint | number, ...args: (bigint | number)[]): Promise<void> {
  if (args.length > 6)
    throw new RangeError(`guestSync carries a stage and at most 6 args, got ${args.length}`);
  const st = u64(stage, 'guestSync stage');
  // Per arity, without an intermediate array or spread (args converted in order).
  switch (args.length) {
    case 0:
      return ucall(g, UCALL.SYNC, st);
    case 1:
      return ucall(g, UCALL.SYNC, st, syncArg(args, 0));
    case 2:
      return ucall(g, UCALL.SYNC, st, syncArg(args, 0), syncArg(args, 1));
    case 3:
      return ucall(g, UCALL.SYNC, st, syncArg(args, 0), syncArg(args, 1), syncArg(args, 2));
    default: {
      const all: bigint[] = [st];
      for (let i = 0; i < args.length; i++) all.push(syncArg(args, i));
      return ucall(g, UCALL.SYNC, ...all);
    }
  }
}

function syncArg(args: readonly (bigint | number)[], i: number): bigint {
  const a = args[i]!;
  return typeof a === 'bigint' ? a : u64(a, `guestSync arg ${i}`);
}

/** GUEST_DONE: tells the host the guest finished (UCALL_DONE). */
export function guestDone(g: Guest): Promise<void> {
  return ucall(g, UCALL.DONE);
}

/** GUEST_PRINTF: a formatted message for the host (UCALL_PRINTF; an overlong one arrives as ABORT). */
export function guestPrintf(g: Guest, fmt: string, ...values: FormatValue[]): Promise<void> {
  return ucallFmt(g, UCALL.PRINTF, fmt, ...values);
}

// tools/testing/selftests/kvm/lib/ucall_common.c: ucall_assert() makes the ABORT ucall and returns:
// the guest goes on after a failed assertion, and the host decides whether the test ends (runUcall
// throws on ABORT unless asked to return it).
async function abort(
  g: Guest,
  expression: string,
  site: CallSite | undefined,
  fmt: string,
  values: readonly unknown[],
): Promise<void> {
  const loc = displayLocation(site);
  await ucallAssert(
    g,
    UCALL.ABORT,
    { expression, file: loc?.file ?? '<unknown>', line: loc?.line ?? 0 },
    fmt,
    ...values,
  );
}

/**
 * GUEST_ASSERT / __GUEST_ASSERT: unless `cond`, reports ABORT with this call's file:line, the text
 * of the condition (read from the source at that line) and the formatted message, then returns (as
 * upstream's ucall_assert does) once the host runs the vCPU again.
 */
export async function guestAssert(
  g: Guest,
  cond: unknown,
  fmt = '',
  ...values: FormatValue[]
): Promise<void> {
  if (cond) return;
  const site = callerOf(guestAssert);
  const expression = callArguments(site, 'guestAssert')?.[1] ?? '<guest assertion>';
  return abort(g, expression, site, fmt, values);
}

function eqMessage(a: bigint | number, b: bigint | number, ea: string, eb: string, op: '!=' | '=='): string {
  return `${hex64(a)} ${op} ${hex64(b)} (${ea} ${op} ${eb})`;
}

/** GUEST_ASSERT_EQ: unless `a === b`, ABORT with `%#lx != %#lx (a != b)` and the optional message. */
export async function guestAssertEq(
  g: Guest,
  a: bigint | number,
  b: bigint | number,
  fmt = '',
  ...values: FormatValue[]
): Promise<void> {
  if (BigInt(a) === BigInt(b)) return;
  const site = callerOf(guestAssertEq);
  const args = callArguments(site, 'guestAssertEq');
  const ea = args?.[1] ?? 'a';
  const eb = args?.[2] ?? 'b';
  const extra = fmt === '' ? '' : `\n${fmt}`;
  return abort(g, `${ea} == ${eb}`, site, `%s${extra}`, [eqMessage(a, b, ea, eb, '!='), ...values]);
}

/** GUEST_ASSERT_NE: unless `a !== b`, ABORT with `%#lx == %#lx (a == b)` and the optional message. */
export async function guestAssertNe(
  g: Guest,
  a: bigint | number,
  b: bigint | number,
  fmt = '',
  ...values: FormatValue[]
): Promise<void> {
  if (BigInt(a) !== BigInt(b)) return;
  const site = callerOf(guestAssertNe);
  const args = callArguments(site, 'guestAssertNe');
  const ea = args?.[1] ?? 'a';
  const eb = args?.[2] ?? 'b';
  const extra = fmt === '' ? '' : `\n${fmt}`;
  return abort(g, `${ea} != ${eb}`, site, `%s${extra}`, [eqMessage(a, b, ea, eb, '=='), ...values]);
}

/** GUEST_FAIL: reports ABORT ("Unconditional guest failure") with the formatted message, then returns. */
export async function guestFail(g: Guest, fmt: string, ...values: FormatValue[]): Promise<void> {
  return abort(g, 'Unconditional guest failure', callerOf(guestFail), fmt, values);
}
