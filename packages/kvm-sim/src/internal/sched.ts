// The simulator's scheduler: where a running guest gives the event loop back, and in which order
// the guests and host tasks waiting to go on are resumed.
//
// A guest program runs on the host's one JavaScript thread. At every async guest operation it may
// yield: after a quantum of operations (drawn from the seeded PRNG, 1 … 2 × SimConfig.yieldQuantum)
// the operation waits in this queue, and a macrotask resumes one waiter, chosen by the PRNG. So host
// tasks (timers, other vCPUs' runs, a task deleting a memslot or kicking the vCPU) run beside a
// busy guest, vCPUs of one VM interleave at operation granularity, and the order comes from one
// seed: KVMTEST_SEED (a u32, decimal or 0x…) when set, else a random one. The same seed and the
// same program replay the same interleaving, as long as no other macrotask source (a real timer,
// I/O) decides the order.

/** A u32 seed: KVMTEST_SEED if set and valid, else random. */
function initialSeed(): number {
  const env = typeof process === 'object' ? process.env?.KVMTEST_SEED : undefined;
  if (env !== undefined && env.trim() !== '') {
    const n = Number(env.trim());
    if (Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff) return n;
    throw new RangeError(`KVMTEST_SEED ${JSON.stringify(env)} must be a u32 (decimal or 0x…)`);
  }
  return (Math.random() * 0x1_0000_0000) >>> 0;
}

let seed = initialSeed();
let state = seed;

/** mulberry32: a small, fast, seedable u32 PRNG. */
function next(): number {
  state = (state + 0x6d2b79f5) | 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** The seed of the current interleaving (print it with a failure; KVMTEST_SEED=<seed> replays it). */
export function simSeed(): number {
  return seed;
}

/** Restarts the interleaving from `s` (a u32), as KVMTEST_SEED=<s> would at process start. */
export function setSimSeed(s: number): void {
  if (!Number.isInteger(s) || s < 0 || s > 0xffff_ffff)
    throw new RangeError(`setSimSeed: seed ${String(s)} must be a u32`);
  seed = s;
  state = s;
}

/** A PRNG draw that is true once in `n` on average (whether a task is preempted at a lock point). */
export function simPreempt(n: number): boolean {
  return next() % n === 0;
}

/** A PRNG draw in 1 … 2 × `mean` (a guest's next quantum of operations). */
export function drawQuantum(mean: number): number {
  return 1 + (next() % (2 * mean));
}

const waiters: (() => void)[] = [];
let armed = false;
const macrotask: (f: () => void) => void =
  typeof setImmediate === 'function' ? (f) => setImmediate(f) : (f) => setTimeout(f, 0);

function drain(): void {
  armed = false;
  if (waiters.length === 0) return;
  const i = waiters.length === 1 ? 0 : next() % waiters.length;
  const w = waiters[i]!;
  waiters[i] = waiters[waiters.length - 1]!;
  waiters.pop();
  if (waiters.length > 0) {
    armed = true;
    macrotask(drain);
  }
  w();
}

/**
 * Waits for the scheduler: resolves in a later macrotask, after every waiter the PRNG picks first.
 * Guests yield here; host tasks that want a seeded place in the interleaving await it too.
 */
export function simYield(): Promise<void> {
  return new Promise<void>((r) => {
    waiters.push(r);
    if (!armed) {
      armed = true;
      macrotask(drain);
    }
  });
}

/** How many tasks wait for the scheduler (for tests and the timeout report). */
export function simWaiting(): number {
  return waiters.length;
}
