// The process's default Kvm: the embedded simulator unless KVMTEST_BACKEND says otherwise, or
// whatever setDefaultKvm installed. Every creation helper also takes a Kvm explicitly.
//
// A backend spec names what to run on: `sim` (KVMTEST_SIM_HOST may name a preset or hold a JSON
// SimConfig), `sim:<preset>` (mainline-amd, mainline-intel, pvm), `linux` (/dev/kvm) or `auto`
// (linux when /dev/kvm opens, else sim, saying why).

import { existsSync, readFileSync } from 'node:fs';
import { argTypeError, isKvmError, type Kvm } from '@kvmtest/kvm';
import { openLinuxKvm } from '@kvmtest/kvm-linux';
import {
  createSimKvm,
  isSimHostPreset,
  SIM_HOST_PRESETS,
  type SimConfig,
  type SimHostMatch,
  type SimHostPreset,
  simHostMatching,
} from '@kvmtest/kvm-sim';
import { KsftSkip, TestkitError } from './errors.js';

/** Backends KVMTEST_BACKEND may name (besides `auto` and `sim:<preset>`). */
export const BACKENDS = ['sim', 'linux'] as const;

/** The simulated hosts `sim:<preset>` and KVMTEST_SIM_HOST may name. */
export const SIM_HOSTS: readonly string[] = SIM_HOST_PRESETS;

/** A parsed backend spec. */
export type BackendSpec = { kind: 'sim'; host?: SimHostPreset } | { kind: 'linux' } | { kind: 'auto' };

/** The Kvm a spec gave, the concrete backend's name (`sim`, `sim:pvm`, `linux`) and, for `auto`, why. */
export interface BackendChoice {
  readonly kvm: Kvm;
  readonly name: string;
  readonly reason?: string;
}

/**
 * Why /dev/kvm cannot be used, in the words of the selftests' open_path_or_exit(), for the errors
 * that mean "not on this host" (ENOENT, EACCES, ENOTTY); undefined for any other failure.
 */
export function kvmDeviceSkipReason(e: unknown, path = '/dev/kvm'): string | undefined {
  if (!isKvmError(e)) return undefined;
  switch (e.code) {
    case 'ENOENT':
      return `- Cannot open ${path}: No such file or directory (ENOENT). Is KVM loaded and enabled?`;
    case 'EACCES':
      return `- Cannot open ${path}: Permission denied (EACCES). Root required? (or membership of the group that owns ${path})`;
    case 'ENOTTY':
      return `- ${path} is not a KVM device: KVM_GET_API_VERSION failed with ENOTTY (Inappropriate ioctl for device)`;
    default:
      return undefined;
  }
}

/**
 * Opens /dev/kvm. A device that is missing, forbidden or not KVM is a KsftSkip saying which, as
 * the selftests skip (open_path_or_exit → ksft_exit_skip); any other failure propagates.
 */
function linuxKvm(): Kvm {
  try {
    return openLinuxKvm();
  } catch (e) {
    const why = kvmDeviceSkipReason(e);
    if (why !== undefined) throw new KsftSkip(why);
    throw e;
  }
}

function unknown(text: string): never {
  throw new TestkitError(
    'UNKNOWN_BACKEND',
    `KVMTEST_BACKEND=${JSON.stringify(text)} names no backend (known: ${BACKENDS.join(', ')}); also auto, and sim:<preset> with preset ${SIM_HOST_PRESETS.join(', ')}`,
    { backend: text },
  );
}

/** Parses a backend spec (`sim`, `sim:<preset>`, `linux`, `auto`); throws UNKNOWN_BACKEND naming the known ones. */
export function parseBackendSpec(text: string): BackendSpec {
  const t = text.trim();
  if (t === 'sim') return { kind: 'sim' };
  if (t === 'linux') return { kind: 'linux' };
  if (t === 'auto') return { kind: 'auto' };
  if (t.startsWith('sim:')) {
    const host = t.slice(4);
    if (isSimHostPreset(host)) return { kind: 'sim', host };
  }
  return unknown(t);
}

/** The spec as text (`sim`, `sim:pvm`, `linux`, `auto`). */
export function formatBackendSpec(spec: BackendSpec): string {
  return spec.kind === 'sim' && spec.host !== undefined ? `sim:${spec.host}` : spec.kind;
}

/** The simulated host KVMTEST_SIM_HOST describes: a preset name or a JSON SimConfig; undefined when unset. */
export function simHostFromEnv(
  env: Readonly<Record<string, string | undefined>> = process.env,
): SimConfig | undefined {
  const host = env.KVMTEST_SIM_HOST;
  if (host !== undefined && typeof host !== 'string')
    throw argTypeError('simHostFromEnv', 'env.KVMTEST_SIM_HOST', 'a string or undefined', host);
  const v = (host ?? '').trim();
  if (v === '') return undefined;
  if (v.startsWith('{')) {
    try {
      return JSON.parse(v) as SimConfig;
    } catch (e) {
      throw new TestkitError('BAD_ARGUMENT', `KVMTEST_SIM_HOST is not valid JSON: ${(e as Error).message}`);
    }
  }
  if (!isSimHostPreset(v))
    throw new TestkitError(
      'UNKNOWN_BACKEND',
      `KVMTEST_SIM_HOST=${JSON.stringify(v)} names no simulated host (presets: ${SIM_HOST_PRESETS.join(', ')})`,
      { host: v },
    );
  return { host: v };
}

/**
 * Creates the Kvm a spec names. `sim:<preset>` wins over a preset in KVMTEST_SIM_HOST; a JSON
 * SimConfig there adds its fields. `auto` opens linux when it can and otherwise falls back to sim,
 * with the reason.
 */
export function backendNamed(
  spec: string | BackendSpec,
  env: Readonly<Record<string, string | undefined>> = process.env,
): BackendChoice {
  const s = typeof spec === 'string' ? parseBackendSpec(spec) : spec;
  switch (s.kind) {
    case 'sim': {
      const fromEnv = simHostFromEnv(env);
      const config: SimConfig = { ...fromEnv, ...(s.host === undefined ? {} : { host: s.host }) };
      const kvm = createSimKvm(config);
      const host = config.host;
      return { kvm, name: host === undefined ? 'sim' : `sim:${host}` };
    }
    case 'linux':
      return { kvm: linuxKvm(), name: 'linux' };
    case 'auto':
      try {
        return { kvm: linuxKvm(), name: 'linux', reason: 'auto: /dev/kvm opened' };
      } catch (e) {
        if (!(e instanceof KsftSkip)) throw e;
        const sim = backendNamed({ kind: 'sim' }, env);
        return { ...sim, reason: `auto: linux unavailable (${e.reason})` };
      }
  }
}

/** Builds the Kvm KVMTEST_BACKEND names (`sim` when unset or empty). */
export function kvmFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): Kvm {
  return backendFromEnv(env).kvm;
}

/** Like kvmFromEnv, with the concrete backend's name and (for auto) why it was chosen. */
export function backendFromEnv(
  env: Readonly<Record<string, string | undefined>> = process.env,
): BackendChoice {
  if (typeof env !== 'object' || env === null) throw argTypeError('backendFromEnv', 'env', 'an object', env);
  const raw = env.KVMTEST_BACKEND;
  if (raw !== undefined && typeof raw !== 'string')
    throw argTypeError('backendFromEnv', 'env.KVMTEST_BACKEND', 'a string or undefined', raw);
  return backendNamed(raw?.trim() || 'sim', env);
}

/** True when this machine's /dev/kvm looks like the out-of-tree PVM module (kvm_pvm loaded, or no vmx/svm). */
export function looksLikePvm(): boolean {
  try {
    if (existsSync('/sys/module/kvm_pvm')) return true;
    const flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1];
    return flags !== undefined && !/\b(vmx|svm)\b/.test(flags);
  } catch {
    return false;
  }
}

/**
 * The simulated host answering like `kvm` (vendor from CPUID, VM types, limits, features; `pvm`
 * when the device looks like PVM), for comparing the simulator with a real host.
 */
export function simHostLike(
  kvm: Kvm,
  pvm: boolean = kvm.backend === 'linux' && looksLikePvm(),
): SimHostMatch {
  return simHostMatching(kvm, { pvm });
}

let defaultChoice: BackendChoice | undefined;
let defaultKvm: Kvm | undefined;

/** The process's default Kvm, created on first use from KVMTEST_BACKEND (the simulator by default). */
export function getKvm(): Kvm {
  if (defaultKvm === undefined) {
    defaultChoice = backendFromEnv();
    defaultKvm = defaultChoice.kvm;
  }
  return defaultKvm;
}

/** Name (and auto's reason) of the default Kvm's backend, once getKvm created it; undefined before. */
export function defaultBackend(): { name: string; reason?: string } | undefined {
  if (defaultKvm === undefined) return undefined;
  if (defaultChoice?.kvm === defaultKvm)
    return { name: defaultChoice.name, ...(defaultChoice.reason ? { reason: defaultChoice.reason } : {}) };
  return { name: defaultKvm.backend };
}

/** Replaces the process's default Kvm (undefined: back to KVMTEST_BACKEND on next use); returns the previous one. */
export function setDefaultKvm(kvm: Kvm | undefined): Kvm | undefined {
  const prev = defaultKvm;
  defaultKvm = kvm;
  return prev;
}
