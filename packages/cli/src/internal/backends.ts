// Which backends a run uses: `--backend` specs resolved once in the CLI process (auto decided,
// linux probed, a simulator matched to a real host when comparing with it), then handed to every
// suite process as KVMTEST_BACKEND (and KVMTEST_SIM_HOST).
import {
  type BackendSpec,
  backendNamed,
  parseBackendSpec as parseSpec,
  SIM_HOSTS,
  simHostLike,
  KsftSkip,
  TestkitError,
} from '@kvmtest/testkit';

export { SIM_HOSTS };

/** A backend as the suite processes get it and the reports name it. */
export interface ResolvedBackend {
  /** What was asked for (`auto`, `sim`, `linux`, `sim:pvm`). */
  readonly requested: string;
  /** KVMTEST_BACKEND for the suite processes (never `auto`). */
  readonly spec: string;
  /** The name reports use: `sim`, `sim:pvm`, `linux`. */
  readonly label: string;
  /** More environment for the suite processes. */
  readonly env: Readonly<Record<string, string>>;
  /** Why this backend (auto's choice, a simulator matched to linux, linux unavailable). */
  readonly note?: string;
}

/** The parsed spec, or undefined when `text` names no backend. */
export function parseBackendSpec(text: string): BackendSpec | undefined {
  try {
    return parseSpec(text);
  } catch (e) {
    if (e instanceof TestkitError) return undefined;
    throw e;
  }
}

function unavailable(e: unknown): string {
  if (e instanceof KsftSkip) return e.reason;
  throw e;
}

/**
 * Resolves the requested backends: `auto` becomes linux or sim (with the reason), linux is probed
 * (unavailable: its cases will skip with the reason), and when a plain `sim` is compared with a
 * linux that opens, the simulator takes the shape of that host (vendor, VM types, limits, features;
 * `pvm` when the device is PVM), so that differences are real ones.
 */
export function resolveBackends(
  requested: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
): ResolvedBackend[] {
  const out: ResolvedBackend[] = [];
  let linux: ReturnType<typeof backendNamed> | undefined;
  const opened: object[] = [];
  for (const r of requested) {
    const spec = parseSpec(r);
    if (spec.kind === 'linux') {
      try {
        linux = backendNamed(spec, env);
        opened.push(linux.kvm);
        out.push({ requested: r, spec: 'linux', label: 'linux', env: {} });
      } catch (e) {
        out.push({
          requested: r,
          spec: 'linux',
          label: 'linux',
          env: {},
          note: `unavailable: ${unavailable(e)}`,
        });
      }
    } else if (spec.kind === 'auto') {
      const choice = backendNamed(spec, env);
      if (choice.name === 'linux') {
        linux = choice;
        opened.push(choice.kvm);
      }
      out.push({
        requested: r,
        spec: choice.name === 'linux' ? 'linux' : 'sim',
        label: choice.name,
        env: {},
        ...(choice.reason === undefined ? {} : { note: choice.reason }),
      });
    } else {
      const choice = backendNamed(spec, env);
      out.push({ requested: r, spec: r, label: choice.name, env: {} });
    }
  }
  try {
    shapeSimLikeLinux(out, linux, env);
  } finally {
    for (const k of opened) release(k);
  }
  return out;
}

/**
 * Lets go of a Kvm this process opened only to look at it: the suites open their own. The contract
 * has no close for /dev/kvm; a backend that offers one (`close()` or `Symbol.dispose`) gets it
 * called, so nothing it holds (a descriptor, a watchdog) outlives the probe.
 */
function release(kvm: object): void {
  const k = kvm as { close?: () => void; [Symbol.dispose]?: () => void };
  if (typeof k[Symbol.dispose] === 'function') k[Symbol.dispose]!();
  else if (typeof k.close === 'function') k.close();
}

/** Comparing a plain simulator with a real host: the simulator takes the shape of that host. */
function shapeSimLikeLinux(
  out: ResolvedBackend[],
  linux: ReturnType<typeof backendNamed> | undefined,
  env: Readonly<Record<string, string | undefined>>,
): void {
  if (out.length === 2 && linux !== undefined && !(env.KVMTEST_SIM_HOST ?? '').trim()) {
    const i = out.findIndex((b) => b.spec === 'sim');
    if (i >= 0) {
      const m = simHostLike(linux.kvm);
      out[i] = {
        requested: out[i]!.requested,
        spec: `sim:${m.preset}`,
        label: `sim:${m.preset}`,
        env: { KVMTEST_SIM_HOST: JSON.stringify(m.config) },
        note: `shaped like this linux host${m.notes.length ? ` (${m.notes.join(', ')})` : ''}`,
      };
    }
  }
}
