// The JS watchdog: ends a case whose guest program (or body) loops in plain JavaScript without ever
// yielding to the event loop (`for (;;) {}`, `for (;;) await null`), which no timer on the stuck
// thread can do. A worker thread keeps its own clock: runWithTimeout arms it with a deadline before
// it starts the body and disarms it when the body settles or its own timer fires. If the deadline
// passes while still armed, the main thread is stuck, and the worker, through an inspector session
// connected to the main thread, pauses it to note where it loops (the top frames, mapped through
// their source maps) and has V8 terminate the JavaScript running there
// (`Runtime.terminateExecution`). The stuck microtask unwinds (no `finally` runs, its promise stays
// pending), the event loop turns again, runWithTimeout's timer fires and reports the timeout.
//
// Arming and disarming is a few Atomics operations on shared memory, no message per case (and no
// wake-up of the worker unless the new deadline is earlier than the one it sleeps until). Only on
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
  /** The deadline of the armed generation: milliseconds since the main thread's performance.timeOrigin. */
  DEADLINE: 1,
  /** Until when the worker sleeps (same clock; NEVER while disarmed): main wakes it only for an earlier deadline. */
  WAIT_UNTIL: 2,
  /** Terminations the worker has requested. */
  FIRES: 3,
  /** Terminations that have completed (the inspector answered). */
  DONE: 4,
  /** The worker's state: 0 starting, 1 watching, 2 unavailable (no inspector). */
  STATE: 5,
  /** The fire whose stuck location the text area holds. */
  WHERE_FIRE: 6,
  /** Bytes of that text (UTF-8). */
  WHERE_LEN: 7,
} as const;

/** The text area (where the main thread was stuck) after the slots, in bytes. */
const WHERE_OFFSET = 8 * Int32Array.BYTES_PER_ELEMENT;
const WHERE_BYTES = 1024;

const STATE_UNAVAILABLE = 2;
/** WAIT_UNTIL of a worker that sleeps until notified. */
const NEVER = 0x7fff_ffff;

/** The longest wait for an in-flight termination to land before giving up on absorbing it. */
const ABSORB_LIMIT_MS = 5_000;

// The worker, as CommonJS source (eval), so it loads the same from src/ under vitest and from
// dist/. It sleeps until the armed deadline; arming a later deadline (the usual next case) needs no
// wake-up: the worker finds the new generation when it wakes and sleeps on until its deadline.
const WORKER_SOURCE = `
'use strict';
const { workerData } = require('node:worker_threads');
const ia = new Int32Array(workerData.sab);
const now = () => performance.timeOrigin + performance.now() - workerData.origin;
let session;
try {
  const { Session } = require('node:inspector');
  session = new Session();
  session.connectToMainThread();
  Atomics.store(ia, ${SLOT.STATE}, 1);
} catch {
  Atomics.store(ia, ${SLOT.STATE}, ${STATE_UNAVAILABLE});
}
async function sleep(gen, until) {
  Atomics.store(ia, ${SLOT.WAIT_UNTIL}, until);
  const w = Atomics.waitAsync(ia, ${SLOT.GEN}, gen, until === ${NEVER} ? Infinity : Math.max(1, until - now()));
  if (w.async) await w.value;
}
async function watch() {
  for (;;) {
    const gen = Atomics.load(ia, ${SLOT.GEN});
    if ((gen & 1) === 0) {
      await sleep(gen, ${NEVER});
      continue;
    }
    const deadline = Atomics.load(ia, ${SLOT.DEADLINE});
    if (now() < deadline) {
      await sleep(gen, deadline);
      continue;
    }
    // Past the deadline and still armed: the main thread has not come back to disarm it.
    if (Atomics.compareExchange(ia, ${SLOT.GEN}, gen, gen + 1) !== gen) continue;
    fire(Atomics.add(ia, ${SLOT.FIRES}, 1) + 1);
  }
}
// file:line:column of a paused location, through the script's source map when it has one (tsx
// and vitest transform TypeScript with inline maps), else of the code V8 runs.
function base(url) {
  return String(url).split('?')[0].split('#')[0].split('/').pop();
}
const { SourceMap } = require('node:module');
const maps = new Map();
function sourceMap(script) {
  if (!script.sourceMapURL) return undefined;
  if (maps.has(script.scriptId)) return maps.get(script.scriptId);
  let map;
  try {
    const u = script.sourceMapURL;
    const at = u.indexOf('base64,');
    if (u.startsWith('data:') && at >= 0) map = JSON.parse(Buffer.from(u.slice(at + 7), 'base64').toString('utf8'));
    else if (u.startsWith('data:')) map = JSON.parse(decodeURIComponent(u.slice(u.indexOf(',') + 1)));
    else {
      const { fileURLToPath } = require('node:url');
      const path = require('node:path');
      const from = script.url.startsWith('file:') ? fileURLToPath(script.url) : script.url;
      const file = u.startsWith('file:') ? fileURLToPath(u) : path.resolve(path.dirname(from), u);
      map = JSON.parse(require('node:fs').readFileSync(file, 'utf8'));
    }
    map = new SourceMap(map);
  } catch {
    map = undefined;
  }
  maps.set(script.scriptId, map);
  return map;
}
function place(script, loc) {
  const line = loc.lineNumber;
  const col = loc.columnNumber || 0;
  // node:module's SourceMap decodes the mappings (findEntry: the closest one at or before the column).
  const entry = sourceMap(script)?.findEntry(line, col);
  if (entry && entry.originalSource !== undefined)
    return base(entry.originalSource) + ':' + (entry.originalLine + 1) + ':' + (entry.originalColumn + 1);
  return base(script.url) + ':' + (line + 1) + ':' + (col + 1);
}
// Pauses the main thread in the debugger to note where it is stuck (the top frames), then
// terminates the JavaScript running there; without a pause within a second, terminates anyway.
function fire(n) {
  let terminated = false;
  const terminate = () => {
    if (terminated) return;
    terminated = true;
    try {
      session.post('Runtime.terminateExecution', () => Atomics.store(ia, ${SLOT.DONE}, n));
    } catch {
      Atomics.store(ia, ${SLOT.DONE}, n);
    }
  };
  const fallback = setTimeout(terminate, 1000);
  const scripts = new Map();
  const onScript = (m) => scripts.set(m.params.scriptId, m.params);
  const onPaused = (m) => {
    session.removeListener('Debugger.scriptParsed', onScript);
    try {
      // Paused too late (the fallback already terminated the loop): this is not where it was stuck.
      if (terminated) throw new Error('late');
      const frames = m.params.callFrames
        .map((f) => ({ f, script: scripts.get(f.location.scriptId) || { url: f.url || '' } }))
        .filter(({ script }) => !script.url.startsWith('node:'))
        .slice(0, 3)
        .map(({ f, script }) => (f.functionName || '<anonymous>') + ' (' + place(script, f.location) + ')');
      const bytes = new Uint8Array(workerData.sab, ${WHERE_OFFSET}, ${WHERE_BYTES});
      const { written } = new TextEncoder().encodeInto(frames.join(' < '), bytes);
      Atomics.store(ia, ${SLOT.WHERE_LEN}, written);
      Atomics.store(ia, ${SLOT.WHERE_FIRE}, n);
    } catch {}
    clearTimeout(fallback);
    // Resume before terminating: a thread that was stuck loops on until the termination lands in
    // the loop; one that was not (it came back just as the deadline passed) paused in the next
    // callback it ran, which must not be the one terminated.
    session.post('Debugger.resume', () => {
      session.post('Debugger.disable', () => {});
      terminate();
    });
  };
  try {
    session.on('Debugger.scriptParsed', onScript);
    session.once('Debugger.paused', onPaused);
    session.post('Debugger.enable', (err) => {
      if (err) terminate();
      else session.post('Debugger.pause', (e) => e && terminate());
    });
  } catch {
    terminate();
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
      const sab = new SharedArrayBuffer(WHERE_OFFSET + WHERE_BYTES);
      Atomics.store(new Int32Array(sab), SLOT.WAIT_UNTIL, NEVER);
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { sab, origin: performance.timeOrigin },
        name: 'kvmtest-watchdog',
      });
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
  const deadline = Math.min(NEVER - 1, Math.ceil(first));
  Atomics.store(a, SLOT.DEADLINE, deadline);
  Atomics.store(a, SLOT.GEN, gen + 1);
  // A worker that sleeps past this deadline (or until notified) must look again now.
  if (deadline < Atomics.load(a, SLOT.WAIT_UNTIL)) Atomics.notify(a, SLOT.GEN);
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
 * Where the main thread was stuck when the watchdog last fired (its top frames, innermost first,
 * as `function (file:line:column) < caller …`), or undefined if it could not pause it.
 */
export function watchdogStuckAt(): string | undefined {
  if (ia === undefined) return undefined;
  const fire = Atomics.load(ia, SLOT.FIRES);
  if (fire === 0 || Atomics.load(ia, SLOT.WHERE_FIRE) !== fire) return undefined;
  const len = Atomics.load(ia, SLOT.WHERE_LEN);
  const text = new TextDecoder().decode(new Uint8Array(ia.buffer, WHERE_OFFSET, len).slice());
  return text === '' ? undefined : text;
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
