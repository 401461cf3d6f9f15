// The guest image of a kit VM: the test's declared globals, the ucall globals and the guest
// runtime's own globals (the exception-handler table), in one GuestImage. Globals are declared
// on the guest program (defineGuest) or in the creation options; each VM gets its own copy.

import { type GuestGlobal, GuestImage } from '@kvmtest/guest-memory';
import { describeValue, type GuestProgram } from '@kvmtest/kvm';
import { UCALL_GUEST_GLOBALS } from '@kvmtest/ucall';
import { TestkitError } from './errors.js';

/** Vectors in the guest's exception-handler table (NUM_INTERRUPTS). */
export const NUM_VECTORS = 256;

/** The guest runtime's globals: the per-VM exception-handler table, one u64 handler address per vector. */
export const RUNTIME_GLOBAL = {
  exceptionHandlers: 'exception_handlers',
} as const;

/** Globals the guest runtime declares in every image. */
export const RUNTIME_GUEST_GLOBALS: readonly GuestGlobal[] = Object.freeze([
  Object.freeze({ name: RUNTIME_GLOBAL.exceptionHandlers, size: NUM_VECTORS * 8 }),
]);

/**
 * A global a test declares: a bigint is a u64 with that initial value; an object gives the size
 * in bytes and optional initial bytes (or a u64 initial value for globals of at least 8 bytes).
 */
export type GlobalDecl = bigint | { readonly size: number; readonly init?: Uint8Array | bigint };

/** The globals of a test: name → declaration. */
export type GlobalDecls = Readonly<Record<string, GlobalDecl>>;

const GLOBALS = Symbol.for('kvmtest.testkit.guestGlobals');

/** A guest program carrying the globals its image declares (see defineGuest). */
export type GuestCode = GuestProgram & { readonly [GLOBALS]?: GlobalDecls };

/**
 * Attaches global declarations to a guest program, as globals are linked with the guest code in
 * an ELF image: every VM that runs the program declares them in its image.
 */
export function defineGuest(program: GuestProgram, decl: { globals?: GlobalDecls } = {}): GuestCode {
  if (typeof program !== 'function')
    throw new TypeError('defineGuest: program must be a function (g) => Promise<void>');
  if (typeof decl !== 'object' || decl === null)
    throw new TypeError(`defineGuest: decl must be an object { globals }, got ${describeValue(decl)}`);
  const globals = { ...(decl.globals ?? {}) };
  toGuestGlobals(globals, 'defineGuest'); // validate now, where the mistake is written
  const code = (g: Parameters<GuestProgram>[0]) => program(g);
  Object.defineProperty(code, GLOBALS, { value: Object.freeze(globals) });
  Object.defineProperty(code, 'name', { value: program.name || 'guest' });
  return code as GuestCode;
}

/** The globals a guest program declared with defineGuest (empty when none). */
export function guestGlobalsOf(program: GuestProgram | undefined): GlobalDecls {
  return (program as GuestCode | undefined)?.[GLOBALS] ?? {};
}

function u64Bytes(v: bigint, what: string): Uint8Array {
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn)
    throw new TestkitError('BAD_ARGUMENT', `${what} initial value ${v} does not fit a u64`, { value: v });
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v, true);
  return out;
}

/** Turns declarations into GuestGlobals, checking names and sizes. */
export function toGuestGlobals(decls: GlobalDecls, where: string): GuestGlobal[] {
  const out: GuestGlobal[] = [];
  for (const [name, d] of Object.entries(decls)) {
    const what = `${where}: global ${JSON.stringify(name)}`;
    if (typeof d === 'bigint') {
      out.push({ name, size: 8, init: u64Bytes(d, what) });
      continue;
    }
    if (typeof d !== 'object' || d === null || typeof d.size !== 'number')
      throw new TestkitError('BAD_ARGUMENT', `${what} must be a bigint or { size, init? }`, { name });
    if (!Number.isSafeInteger(d.size) || d.size <= 0)
      throw new TestkitError('BAD_ARGUMENT', `${what} has size ${d.size}; sizes must be positive integers`, {
        name,
        size: d.size,
      });
    let init: Uint8Array | undefined;
    if (typeof d.init === 'bigint') {
      if (d.size < 8)
        throw new TestkitError(
          'BAD_ARGUMENT',
          `${what} has ${d.size} bytes, too small for a u64 initial value`,
          {
            name,
          },
        );
      init = u64Bytes(d.init, what);
    } else init = d.init;
    out.push(init === undefined ? { name, size: d.size } : { name, size: d.size, init });
  }
  return out;
}

const RESERVED = new Set([...UCALL_GUEST_GLOBALS, ...RUNTIME_GUEST_GLOBALS].map((g) => g.name));

/**
 * The image of a kit VM: the test's globals (from the guest program and the options), then the
 * ucall globals, then the runtime globals. A test global may not reuse a reserved name.
 */
export function buildGuestImage(name: string, ...decls: GlobalDecls[]): GuestImage {
  const merged: Record<string, GlobalDecl> = {};
  for (const d of decls)
    for (const [k, v] of Object.entries(d)) {
      if (RESERVED.has(k))
        throw new TestkitError(
          'BAD_ARGUMENT',
          `global ${JSON.stringify(k)} is reserved for ucall or the guest runtime`,
          {
            name: k,
          },
        );
      if (Object.hasOwn(merged, k) && merged[k] !== v)
        throw new TestkitError(
          'BAD_ARGUMENT',
          `global ${JSON.stringify(k)} is declared twice with different values`,
          {
            name: k,
          },
        );
      merged[k] = v;
    }
  return new GuestImage(name, [
    ...toGuestGlobals(merged, name),
    ...UCALL_GUEST_GLOBALS,
    ...RUNTIME_GUEST_GLOBALS,
  ]);
}
