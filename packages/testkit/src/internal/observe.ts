// Observations: what a case saw, as named, canonical, comparable values — errnos, exit fields,
// register values, capability answers. `kvmtest run --backend A,B` runs a case on both backends
// and compares the two lists; outside a recording, observe() costs a check and nothing more.

import { type Errno, type Exit, type Kvm, KvmError, tryKvm, type Vcpu, type Vm } from '@kvmtest/kvm';
import { TestkitError } from './errors.js';

/** A value a case can record: JSON-like, with bigint and bytes. */
export type Observable =
  | bigint
  | number
  | string
  | boolean
  | null
  | undefined
  | Uint8Array
  | readonly Observable[]
  | { readonly [key: string]: Observable };

/** One recorded observation: its name and its value in canonical text. */
export interface Observation {
  readonly name: string;
  readonly value: string;
}

/** Where two observation lists first part: the position, the name, and each side's value (undefined: that side ended). */
export interface ObservationDifference {
  readonly index: number;
  readonly name: string;
  readonly left: string | undefined;
  readonly right: string | undefined;
}

let recording: Observation[] | undefined;

function canonical(v: Observable, depth: number): string {
  if (depth > 32) throw new TestkitError('BAD_ARGUMENT', 'observe: the value is nested more than 32 levels');
  switch (typeof v) {
    case 'bigint':
      return `${v}n`;
    case 'number':
      return Object.is(v, -0) ? '0' : String(v);
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return String(v);
    case 'undefined':
      return 'undefined';
    case 'object': {
      if (v === null) return 'null';
      if (v instanceof Uint8Array)
        return `bytes:${Array.from(v, (b) => b.toString(16).padStart(2, '0')).join('')}`;
      if (Array.isArray(v)) return `[${v.map((x) => canonical(x, depth + 1)).join(',')}]`;
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null)
        throw new TestkitError(
          'BAD_ARGUMENT',
          `observe: a ${proto?.constructor?.name ?? 'foreign'} object is not an observable value (use plain objects, arrays, bigint, bytes)`,
        );
      const rec = v as { readonly [key: string]: Observable };
      return `{${Object.keys(rec)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${canonical(rec[k], depth + 1)}`)
        .join(',')}}`;
    }
    default:
      throw new TestkitError('BAD_ARGUMENT', `observe: a ${typeof v} is not an observable value`);
  }
}

/** The canonical text of a value: sorted keys, `12n` for bigints, `bytes:<hex>` for bytes. */
export function observationValue(value: Observable): string {
  return canonical(value, 0);
}

/** Records `value` under `name` for the running case (a no-op when nothing records). Returns the value. */
export function observe<T extends Observable>(name: string, value: T): T {
  if (recording === undefined) return value;
  if (typeof name !== 'string' || name === '')
    throw new TestkitError('BAD_ARGUMENT', `observe: name must be a non-empty string, got ${String(name)}`);
  recording.push(Object.freeze({ name, value: canonical(value, 0) }));
  return value;
}

/** Runs a kernel-shaped call, records its errno (or 'ok') under `name`, and returns the errno. */
export function observeErrno(name: string, fn: () => unknown): Errno | undefined {
  const errno = tryKvm(fn);
  observe(name, errno ?? 'ok');
  return errno;
}

/**
 * The fields of an exit that a kernel reports and a test may compare: reason, and the reason's
 * fields (port, size, count and OUT data; GPA, length, direction and write data; …). Free-text
 * details (a shutdown's or an internal error's explanation) are left out.
 */
export function exitObservation(exit: Exit): Observable {
  switch (exit.reason) {
    case 'io':
      return {
        reason: 'io',
        direction: exit.direction,
        port: exit.port,
        size: exit.size,
        count: exit.count,
        ...(exit.direction === 'out' ? { data: exit.data } : {}),
      };
    case 'mmio':
      return {
        reason: 'mmio',
        gpa: exit.gpa,
        isWrite: exit.isWrite,
        len: exit.len,
        ...(exit.isWrite ? { data: exit.data } : {}),
      };
    case 'hypercall':
      return { reason: 'hypercall', nr: exit.nr, args: exit.args, longmode: exit.longmode };
    case 'system-event':
      return { reason: 'system-event', type: exit.type, data: exit.data };
    case 'memory-fault':
      return { reason: 'memory-fault', gpa: exit.gpa, size: exit.size, private: exit.private };
    case 'internal-error':
      return { reason: 'internal-error', suberror: exit.suberror };
    case 'hlt':
    case 'shutdown':
    case 'intr':
      return { reason: exit.reason };
  }
}

/** Starts recording observations (for one case); a recording already running is discarded. */
export function startObservations(): void {
  recording = [];
}

/** Stops recording and returns what was recorded (empty when nothing was recording). */
export function takeObservations(): Observation[] {
  const out = recording ?? [];
  recording = undefined;
  return out;
}

/** True while observations are being recorded. */
export function observing(): boolean {
  return recording !== undefined;
}

/** The first position where two observation lists differ (name or value), or undefined when they are equal. */
export function firstDifference(
  left: readonly Observation[],
  right: readonly Observation[],
): ObservationDifference | undefined {
  const n = Math.max(left.length, right.length);
  for (let i = 0; i < n; i++) {
    const a = left[i];
    const b = right[i];
    if (a !== undefined && b !== undefined && a.name === b.name && a.value === b.value) continue;
    return Object.freeze({
      index: i,
      name: a?.name ?? b!.name,
      left: a === undefined ? undefined : a.name === (b?.name ?? a.name) ? a.value : `${a.name} = ${a.value}`,
      right:
        b === undefined ? undefined : b.name === (a?.name ?? b.name) ? b.value : `${b.name} = ${b.value}`,
    });
  }
  return undefined;
}

// ---- automatic observations ------------------------------------------------------------------

const KVM_METHODS = ['checkExtension', 'getDeviceAttr', 'createVm', 'openSevDevice', 'closeFd'] as const;
const VM_METHODS = [
  'setUserMemoryRegion',
  'createGuestMemfd',
  'setMemoryAttributes',
  'createVcpu',
  'enableCap',
  'memEncryptOp',
  'memEncryptRegRegion',
  'memEncryptUnregRegion',
] as const;
const VCPU_METHODS = [
  'getRegs',
  'setRegs',
  'getSregs',
  'setSregs',
  'setCpuid',
  'getMsr',
  'setMsr',
  'memEncryptOp',
] as const;

const instrumented = new WeakSet<object>();

/**
 * Patches `obj[name]` in place; when the object refuses (frozen, read-only method), records that
 * automatic observations are missing, so a comparison shows it instead of a silent gap.
 */
function patch(obj: object, scope: string, name: string, wrapper: (...args: unknown[]) => unknown): void {
  const o = obj as Record<string, unknown>;
  try {
    o[name] = wrapper;
  } catch {}
  if (o[name] !== wrapper)
    observe(
      'automatic observations',
      `unavailable: ${scope}.${name} of ${obj.constructor?.name ?? 'an object'} cannot be wrapped`,
    );
}

/** Replaces `obj[name]` by a wrapper recording the errno of each KvmError it throws as `errno <scope>.<name>`. */
function recordErrors(obj: object, scope: string, name: string, after?: (result: unknown) => unknown): void {
  const o = obj as Record<string, unknown>;
  const orig = o[name];
  if (typeof orig !== 'function') return;
  patch(obj, scope, name, function (this: unknown, ...args: unknown[]) {
    let r: unknown;
    try {
      r = (orig as (...a: unknown[]) => unknown).apply(obj, args);
    } catch (e) {
      if (e instanceof KvmError) observe(`errno ${scope}.${name}`, e.code);
      throw e;
    }
    return after === undefined ? r : after(r);
  });
}

function instrumentVcpu(vcpu: Vcpu): Vcpu {
  if (instrumented.has(vcpu)) return vcpu;
  instrumented.add(vcpu);
  for (const m of VCPU_METHODS) recordErrors(vcpu, 'vcpu', m);
  const run = vcpu.run;
  patch(vcpu, 'vcpu', 'run', (opts) =>
    run.call(vcpu, opts as Parameters<Vcpu['run']>[0]).then(
      (exit) => {
        // Exit fields without data: an OUT's bytes can be register noise (ucall's port), cases observe data themselves.
        const { data: _data, ...fields } = exitObservation(exit) as Record<string, Observable>;
        observe('exit', fields);
        return exit;
      },
      (e: unknown) => {
        if (e instanceof KvmError) observe('errno vcpu.run', e.code);
        throw e;
      },
    ),
  );
  return vcpu;
}

function instrumentVm(vm: Vm): Vm {
  if (instrumented.has(vm)) return vm;
  instrumented.add(vm);
  for (const m of VM_METHODS)
    recordErrors(vm, 'vm', m, m === 'createVcpu' ? (v) => instrumentVcpu(v as Vcpu) : undefined);
  return vm;
}

/**
 * Makes `kvm` record observations automatically while a recording runs: the errno of every
 * KvmError its VMs and vCPUs throw (`errno vm.createVcpu` = `EEXIST`) and every exit `run()`
 * returns (`exit` = reason and fields, without data). Patches the objects in place (their identity
 * stays) and returns `kvm`. Outside a recording the wrappers record nothing.
 */
export function observeKvm(kvm: Kvm): Kvm {
  if (instrumented.has(kvm)) return kvm;
  instrumented.add(kvm);
  for (const m of KVM_METHODS)
    recordErrors(kvm, 'kvm', m, m === 'createVm' ? (vm) => instrumentVm(vm as Vm) : undefined);
  return kvm;
}
