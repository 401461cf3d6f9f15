// The watchdog that keeps a synchronous KVM_RUN from hanging the process.
//
// KVM_RUN runs on the main thread and blocks it (and the event loop) until the guest exits. A
// guest that never exits (an endless loop; on PVM any VMCALL) would hang the process, so before
// each run the main thread writes the run's deadline into a SharedArrayBuffer that a worker
// thread watches. Past the deadline the worker sets `kvm_run.immediate_exit` and sends SIGUSR2 to
// the main thread: a signal pending on the vCPU thread makes the kernel leave the guest with
// EINTR (arch/x86/kvm/x86.c: vcpu_run() → kvm_vcpu_exit_request / signal_pending), and
// immediate_exit covers a signal that lands before the thread has entered KVM_RUN.
// SIGUSR1 belongs to Node's inspector; SIGUSR2 gets a handler first, or it would kill us
// (sys.ts: ensureSigusr2Handler). Runs may happen on any JS thread: each thread that runs a vCPU
// has its own watchdog, which signals that thread.
//
// The main thread never notifies the worker per run (a futex wake costs ~1 µs, a tenth of an
// exit); the worker polls every POLL_MS while runs happen and sleeps indefinitely when idle, so
// a kick lands between the deadline and POLL_MS after it.

import { readdirSync, readFileSync } from 'node:fs';
import { getEnvironmentData, isMainThread, setEnvironmentData, Worker } from 'node:worker_threads';
import { ensureSigusr2Handler, gettid, KOFFI_PATH, SIGUSR2, sigusr2Handled, tgkill, viewOf } from './sys.js';

/** Slots of the shared Int32Array / BigInt64Array (see WORKER_SOURCE). */
const I_SEQ = 0; // run sequence number; odd while a run is in progress
const I_FIRED = 1; // the sequence number the worker kicked
const I_SLEEPING = 2; // 1 while the worker waits without a timeout
const I_STOP = 3; // 1 asks the worker to end
const I_TIMEOUT = 4; // deadline of the current run, ms
const B_RUN_ADDR = 3; // BigInt64 index: address of the current kvm_run (byte 1: immediate_exit)

/** How often the worker looks while runs happen; a kick comes at most this much after the deadline. */
const POLL_MS = 10;

// The worker, not the main thread, times a run: it notes when it first saw a run's sequence
// number and kicks once that run has lasted the run's timeout (so a run costs the main thread two
// atomic adds, no clock read).
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const koffi = require(workerData.koffiPath);
const libc = koffi.load('libc.so.6');
const tgkill = libc.func('int syscall(long nr, int tgid, int tid, int sig)');
const SYS_tgkill = 234, SIGUSR2 = 12;
const i32 = new Int32Array(workerData.sab);
const b64 = new BigInt64Array(workerData.sab);
const pid = workerData.pid, tid = workerData.tid;
const now = () => performance.now();
let idleSince = now(), watched = 0, since = 0;
for (;;) {
  if (Atomics.load(i32, ${I_STOP})) break;
  const seq = Atomics.load(i32, ${I_SEQ});
  if ((seq & 1) === 0) {
    if (now() - idleSince > 1000) {
      Atomics.store(i32, ${I_SLEEPING}, 1);
      if (Atomics.load(i32, ${I_SEQ}) === seq) Atomics.wait(i32, ${I_SEQ}, seq);
      Atomics.store(i32, ${I_SLEEPING}, 0);
      idleSince = now();
    } else Atomics.wait(i32, ${I_SEQ}, seq, ${POLL_MS});
    continue;
  }
  const t = now();
  idleSince = t;
  if (seq !== watched) { watched = seq; since = t; }
  const left = since + Atomics.load(i32, ${I_TIMEOUT}) - t;
  if (left > 0) { Atomics.wait(i32, ${I_SEQ}, seq, Math.min(left, ${POLL_MS})); continue; }
  if (Atomics.load(i32, ${I_SEQ}) !== seq) continue;
  // Past the deadline and still in the same run: kick, and keep kicking every ms until it ends.
  Atomics.store(i32, ${I_FIRED}, seq);
  const addr = b64[${B_RUN_ADDR}];
  if (addr !== 0n) new Uint8Array(koffi.view(addr, 2))[1] = 1;
  tgkill(SYS_tgkill, pid, tid, SIGUSR2);
  Atomics.wait(i32, ${I_SEQ}, seq, 1);
}
`;

let worker: Worker | undefined;
let i32: Int32Array;
let b64: BigInt64Array;
let lastAddr = 0n;
let lastTimeout = -1;

function start(): void {
  const sab = new SharedArrayBuffer(64);
  i32 = new Int32Array(sab);
  b64 = new BigInt64Array(sab);
  // An unhandled SIGUSR2 terminates the process: make sure it has a handler before the first kick.
  ensureSigusr2Handler();
  worker = new Worker(WORKER_SOURCE, {
    eval: true,
    // The thread that runs KVM_RUN is the one that loaded this module (one watchdog per JS thread).
    workerData: { sab, pid: process.pid, tid: gettid(), koffiPath: KOFFI_PATH },
  });
  worker.unref();
  process.once('exit', stopWatchdog);
}

// One flag for the whole process, set when the main thread exits. It reaches worker threads
// through Node's environment data (a SharedArrayBuffer is shared, not copied, into every Worker
// created after this module loaded), so a worker's run loop stops re-entering KVM_RUN after the
// exit-time kick instead of taking it for a stray signal.
const EXITING_KEY = 'kvmtest.kvm-linux.exiting';
const exiting: Int32Array = (() => {
  const inherited = getEnvironmentData(EXITING_KEY);
  if (inherited instanceof SharedArrayBuffer) return new Int32Array(inherited);
  const sab = new SharedArrayBuffer(4);
  setEnvironmentData(EXITING_KEY, sab);
  return new Int32Array(sab);
})();

/** True once the main thread is exiting: no vCPU may (re-)enter KVM_RUN. */
export function processExiting(): boolean {
  return Atomics.load(exiting, 0) === 1;
}

/** Start addresses of every vCPU's `kvm_run` mapping in this process (any thread's). */
function vcpuRunMappings(): bigint[] {
  const out: bigint[] = [];
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n'))
    if (line.includes('anon_inode:kvm-vcpu')) out.push(BigInt(`0x${line.slice(0, line.indexOf('-'))}`));
  return out;
}

/**
 * At process exit, a vCPU run on another thread (a worker of the user's) would hold the process
 * until its deadline. Every vCPU's kvm_run gets `immediate_exit` (a thread about to enter KVM_RUN
 * then returns EINTR at once: arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl_run()) and every other thread
 * a SIGUSR2 (a thread already inside returns EINTR; the handler is installed, so it is harmless
 * elsewhere); the exiting flag, set first, keeps run loops from entering again. Three rounds a few
 * milliseconds apart close the window where a thread clears immediate_exit for its own run just
 * after it was set. Nothing happens when no vCPU is mapped.
 */
function kickOtherThreads(): void {
  Atomics.store(exiting, 0, 1);
  if (!sigusr2Handled()) return; // a kick would kill the process: no vCPU can be running anyway
  try {
    const runs = vcpuRunMappings();
    if (runs.length === 0) return;
    const self = gettid();
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let round = 0; round < 3; round++) {
      for (const addr of runs) new Uint8Array(viewOf(addr, 2))[1] = 1;
      for (const t of readdirSync('/proc/self/task')) {
        const tid = Number(t);
        if (tid !== self) tgkill(process.pid, tid, SIGUSR2);
      }
      if (round < 2) Atomics.wait(pause, 0, 0, 5);
    }
  } catch {
    // Exiting anyway.
  }
}

// Registered when the main thread loads kvm-linux, whether or not it runs vCPUs itself.
if (isMainThread) process.once('exit', kickOtherThreads);

/** Ends the watchdog worker (the process exits without it anyway: it is unref'd). */
export function stopWatchdog(): void {
  if (!worker) return;
  Atomics.store(i32, I_STOP, 1);
  Atomics.add(i32, I_SEQ, 2);
  Atomics.notify(i32, I_SEQ);
  void worker.terminate();
  worker = undefined;
}

/**
 * Marks the start of a run on the main thread with kvm_run at `runAddr`, to be kicked after
 * `timeoutMs`. Returns the run's sequence number for `endRun`.
 */
export function beginRun(runAddr: bigint, timeoutMs: number): number {
  if (!worker) start();
  if (timeoutMs !== lastTimeout) {
    lastTimeout = timeoutMs;
    Atomics.store(i32, I_TIMEOUT, Math.min(Math.ceil(timeoutMs), 0x7fff_ffff));
  }
  if (runAddr !== lastAddr) {
    lastAddr = runAddr;
    Atomics.store(b64, B_RUN_ADDR, runAddr);
  }
  const seq = Atomics.add(i32, I_SEQ, 1) + 1; // now odd
  if (Atomics.load(i32, I_SLEEPING)) Atomics.notify(i32, I_SEQ);
  return seq;
}

/** True when the watchdog has kicked run `seq` (still in progress). */
export function wasKicked(seq: number): boolean {
  return Atomics.load(i32, I_FIRED) === seq;
}

/** Marks the end of run `seq`; true when the watchdog kicked that run. */
export function endRun(seq: number): boolean {
  Atomics.add(i32, I_SEQ, 1); // now even
  return Atomics.load(i32, I_FIRED) === seq;
}
