// The JS watchdog: ends a case whose guest program (or body) loops in plain JavaScript without ever
// yielding to the event loop (`for (;;) {}`, `for (;;) await null`), which no timer on the stuck
// thread can do. A worker thread keeps its own clock: runWithTimeout arms it with a deadline before
// it starts the body and disarms it when the body settles or its own timer fires. If the deadline
// passes while still armed, the main thread is stuck, and the worker asks V8, through an inspector
// session connected to the main thread, to terminate the JavaScript running there
// (`Runtime.terminateExecution`). The stuck microtask unwinds (no `finally` runs, its promise stays
// pending), the event loop turns again, runWithTimeout's timer fires and reports the timeout.
//
// Arming and disarming is a few Atomics operations on shared memory, no message per case. Only on
// the process's main thread (an inspector session can connect to the main thread only) and only
// where `node:inspector` exists; elsewhere armWatchdog returns undefined and a plain-JS loop still
// hangs. Terminating JavaScript that runs directly in a macrotask callback (a timer or setImmediate
// callback, not a promise continuation) aborts Node 20 ("async hook stack has become corrupted"),
// so runWithTimeout starts case bodies in a microtask (callInFreshTurn) and the simulator resumes
// guests in promise continuations.

import { isMainThread, Worker } from 'node:worker_threads';

/** Slots of the shared Int32Array. */
const SLOT = {
  /** Odd: armed (the worker may fire once); even: disarmed. Main moves it; the worker only odd → even when it fires. */
  GEN: 0,
  /** Milliseconds from arming to the deadline of the current generation. */
  LIMIT: 1,
  /** Terminations the worker has requested. */
  FIRES: 2,
  /** Terminations that have completed (the inspector answered). */
  DONE: 3,
  /** The worker's state: 0 starting, 1 watching, 2 unavailable (no inspector). */
  STATE: 4,
} as const;

const STATE_UNAVAILABLE = 2;

/** The longest wait for an in-flight termination to land before giving up on absorbing it. */
const ABSORB_LIMIT_MS = 5_000;

// The worker, as CommonJS source (eval), so it loads the same from src/ under vitest and from dist/.
const WORKER_SOURCE = `
'use strict';
const { workerData } = require('node:worker_threads');
const ia = new Int32Array(workerData);
let session;
try {
  const { Session } = require('node:inspector');
  session = new Session();
  session.connectToMainThread();
  Atomics.store(ia, ${SLOT.STATE}, 1);
} catch {
  Atomics.store(ia, ${SLOT.STATE}, ${STATE_UNAVAILABLE});
}
async function watch() {
  for (;;) {
    const gen = Atomics.load(ia, ${SLOT.GEN});
    if ((gen & 1) === 0) {
      const w = Atomics.waitAsync(ia, ${SLOT.GEN}, gen);
      if (w.async) await w.value;
      continue;
    }
    const w = Atomics.waitAsync(ia, ${SLOT.GEN}, gen, Atomics.load(ia, ${SLOT.LIMIT}));
    const r = w.async ? await w.value : w.value;
    if (r !== 'timed-out' || Atomics.compareExchange(ia, ${SLOT.GEN}, gen, gen + 1) !== gen) continue;
    const n = Atomics.add(ia, ${SLOT.FIRES}, 1) + 1;
    try {
      session.post('Runtime.terminateExecution', () => Atomics.store(ia, ${SLOT.DONE}, n));
    } catch {
      Atomics.store(ia, ${SLOT.DONE}, n);
    }
  }
}
if (session) {
  // Atomics.waitAsync holds no handle: without one, the worker's event loop would end.
  setInterval(() => {}, 0x3fffffff);
  watch();
}
`;

/** One armed deadline; release it when the case's body settled or its timer fired. */
export interface WatchdogLease {
  /**
   * Disarms this deadline. Resolves true when the watchdog terminated JavaScript stuck on this
   * thread while the lease was held (the case's body or a guest looped without yielding).
   */
  release(): Promise<boolean>;
  /** Moves this deadline to `ms` milliseconds from now (a case that reported progress). */
  extend(ms: number): void;
}

interface Armed {
  deadline: number;
}

let ia: Int32Array | undefined;
let unavailable = !isMainThread;
const leases = new Set<Armed>();

function shared(): Int32Array | undefined {
  if (unavailable) return undefined;
  if (ia === undefined) {
    try {
      const sab = new SharedArrayBuffer(8 * Int32Array.BYTES_PER_ELEMENT);
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: sab, name: 'kvmtest-watchdog' });
      worker.unref();
      // The worker cannot fail once running; an error here (out of resources) leaves the limit.
      worker.on('error', () => {
        unavailable = true;
      });
      ia = new Int32Array(sab);
    } catch {
      unavailable = true;
      return undefined;
    }
  }
  if (Atomics.load(ia, SLOT.STATE) === STATE_UNAVAILABLE) {
    unavailable = true;
    return undefined;
  }
  return ia;
}

/** Moves the shared generation to match `leases`: disarmed, or armed with the earliest deadline. */
function publish(a: Int32Array): void {
  let gen = Atomics.load(a, SLOT.GEN);
  if (gen & 1) {
    // Fails only if the worker fired this generation meanwhile; it then moved GEN to gen + 1 too.
    Atomics.compareExchange(a, SLOT.GEN, gen, gen + 1);
    gen++;
  }
  if (leases.size === 0) return;
  let first = Number.POSITIVE_INFINITY;
  for (const l of leases) first = Math.min(first, l.deadline);
  const ms = Math.max(1, Math.min(0x7fff_ffff, Math.ceil(first - performance.now())));
  Atomics.store(a, SLOT.LIMIT, ms);
  Atomics.store(a, SLOT.GEN, gen + 1);
  Atomics.notify(a, SLOT.GEN);
}

const macrotask: (f: () => void) => void =
  typeof setImmediate === 'function' ? (f) => setImmediate(f) : (f) => setTimeout(f, 0);

/**
 * Calls `f` in a microtask of a fresh event-loop turn, alone in the microtask queue. A termination
 * unwinds the JavaScript call it lands in and V8 then drops every microtask still queued behind
 * it (MicrotaskQueue::RunMicrotasks): started this way, a body that loops takes nobody else's
 * continuations with it. Not in the macrotask callback itself: terminating JavaScript that runs
 * directly in a timer or immediate callback aborts Node 20.
 */
export function callInFreshTurn<T>(f: () => T): Promise<Awaited<T>> {
  return new Promise<Awaited<T>>((resolve, reject) =>
    macrotask(() => {
      Promise.resolve()
        .then(f)
        .then((v) => resolve(v as Awaited<T>), reject);
    }),
  );
}

/**
 * If a termination is on its way to this thread, lets it land in a microtask of its own (a loop
 * that waits for the inspector's answer) instead of in whatever JavaScript runs next; resolves in
 * the turn after, so no continuation of ours is queued behind that loop.
 */
function absorb(a: Int32Array): Promise<void> {
  if (Atomics.load(a, SLOT.DONE) === Atomics.load(a, SLOT.FIRES)) return Promise.resolve();
  return new Promise<void>((resolve) =>
    macrotask(() => {
      queueMicrotask(() => {
        const until = performance.now() + ABSORB_LIMIT_MS;
        while (Atomics.load(a, SLOT.DONE) !== Atomics.load(a, SLOT.FIRES) && performance.now() < until);
      });
      macrotask(resolve);
    }),
  );
}

/**
 * Arms the watchdog: if this thread is still running JavaScript without a break `ms` milliseconds
 * from now and the lease is held, that JavaScript is terminated. Undefined where the watchdog cannot
 * work (a worker thread, no `node:inspector`).
 */
export function armWatchdog(ms: number): WatchdogLease | undefined {
  const a = shared();
  if (a === undefined) return undefined;
  const armed: Armed = { deadline: performance.now() + ms };
  const fires = Atomics.load(a, SLOT.FIRES);
  leases.add(armed);
  publish(a);
  let released = false;
  return {
    extend(ms) {
      if (released) return;
      armed.deadline = performance.now() + ms;
      publish(a);
    },
    async release() {
      if (!released) {
        released = true;
        leases.delete(armed);
        publish(a);
      }
      await absorb(a);
      return Atomics.load(a, SLOT.FIRES) !== fires;
    },
  };
}

/** The grace the watchdog leaves past a case's timeout, so the case's own timer wins when it can fire. */
export function watchdogGraceMs(timeoutMs: number): number {
  return Math.min(1_000, Math.max(250, timeoutMs / 10));
}
