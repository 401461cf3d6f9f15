// The suite process: loads one suite module, runs the requested cases in order and reports each
// over IPC. Started by the scheduler with: <module path> <request JSON>. Each case runs under
// testkit's runWithTimeout (a timed-out case is reported from here, then the process exits); the
// parent's kill is the backstop.
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';
import {
  type BackendChoice,
  backendFromEnv,
  CaseTimeoutError,
  caseContext,
  describeFailure,
  failureSummary,
  KsftSkip,
  type MemoryRecording,
  type Observation,
  observeKvm,
  runWithTimeout,
  setDefaultKvm,
  setGuestPrintfSink,
  startMemoryMaps,
  startObservations,
  takeMemoryMaps,
  takeObservations,
} from '@kvmtest/testkit';
import type { ChildMessage, ChildRequest } from './protocol.js';
import { suiteFromModule } from './suite.js';

function send(msg: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) {
      process.stdout.write(`${JSON.stringify(msg)}\n`);
      resolve();
      return;
    }
    process.send(msg, undefined, {}, () => resolve());
  });
}

/**
 * True for the skip signal of testkit's `testRequire` (or an error of that name from another copy
 * of testkit), and for a backend that cannot be opened (no /dev/kvm, no permission, …): a skip
 * that says which and why, never a crash.
 */
function isSkip(e: unknown): e is Error {
  return e instanceof KsftSkip || (e instanceof Error && e.name === 'KsftSkip');
}

function skipReason(e: Error): string {
  return e instanceof KsftSkip ? e.reason : e.message;
}

/** Observations sent per case at most; the rest travel as a count and a digest, which still compares. */
const MAX_OBSERVATIONS = 5000;

function capObservations(all: Observation[]): Observation[] {
  if (all.length <= MAX_OBSERVATIONS) return all;
  const h = createHash('sha256');
  for (const o of all.slice(MAX_OBSERVATIONS)) h.update(`${o.name}\0${o.value}\n`);
  return [
    ...all.slice(0, MAX_OBSERVATIONS),
    { name: `(${all.length - MAX_OBSERVATIONS} more)`, value: h.digest('hex').slice(0, 16) },
  ];
}

/** The running case's memory maps, when recording (HTML report). */
function memoryMaps(): { memory?: MemoryRecording } {
  const memory = takeMemoryMaps();
  return memory === undefined ? {} : { memory };
}

/** Opens the backend KVMTEST_BACKEND names (observed when comparing), or says why it cannot. */
function openBackend(observe: boolean): { choice?: BackendChoice; error?: string } {
  try {
    const choice = backendFromEnv();
    setDefaultKvm(observe ? observeKvm(choice.kvm) : choice.kvm);
    return { choice };
  } catch (e) {
    if (e instanceof KsftSkip)
      return { error: `${process.env.KVMTEST_BACKEND ?? 'sim'} backend unavailable: ${e.reason}` };
    throw e;
  }
}

async function main(): Promise<void> {
  const [entry, requestJson] = process.argv.slice(2);
  if (!entry || !requestJson) throw new Error('suite process: usage: child <module> <request JSON>');
  const request = JSON.parse(requestJson) as ChildRequest;
  const suite = suiteFromModule(await import(pathToFileURL(entry).href), entry);
  const names = suite.cases.map((c) => c.name);
  const filter = request.filter === undefined ? undefined : new RegExp(request.filter);
  const indices =
    request.indices ??
    names.flatMap((name, i) =>
      (request.names?.length && !request.names.includes(name)) ||
      (filter && !filter.test(`${request.suiteRef}:${name}`))
        ? []
        : [i],
    );
  const observe = request.observe === true;
  // A listing runs no case and needs no backend.
  const backend = indices.length > 0 ? openBackend(observe) : {};
  await send({
    type: 'suite',
    name: suite.name,
    cases: names,
    selected: indices,
    timeouts: suite.cases.map((c) =>
      typeof c.timeoutMs === 'number' && c.timeoutMs > 0 ? c.timeoutMs : null,
    ),
    backend: backend.choice?.name ?? (process.env.KVMTEST_BACKEND || 'sim'),
    ...(backend.error === undefined ? {} : { backendError: backend.error }),
  });

  let current = -1;
  // Everything the suite prints belongs to the running case.
  const capture = (chunk: unknown): boolean => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    if (current >= 0) void send({ type: 'case-log', index: current, text });
    return true;
  };
  process.stdout.write = capture as typeof process.stdout.write;
  process.stderr.write = capture as typeof process.stderr.write;

  for (const index of indices) {
    const c = suite.cases[index];
    if (!c) throw new Error(`suite ${suite.name} has no case ${index}`);
    current = index;
    await send({ type: 'case-start', index });
    const t0 = performance.now();
    if (backend.error !== undefined) {
      await send({ type: 'case-end', index, status: 'skip', durationMs: 0, reason: backend.error });
      current = -1;
      continue;
    }
    let lastProgress = 0;
    const ctx = caseContext(
      suite.name,
      c.name,
      (line) => void send({ type: 'case-log', index, text: `${line}\n` }),
      (done, total) => {
        const now = performance.now();
        if (now - lastProgress < 100 && done < total) return;
        lastProgress = now;
        void send({ type: 'case-progress', index, done, total });
      },
    );
    // The guest's printf lines (PRINTF ucalls the kit decodes) belong to the case's output.
    const restoreSink = setGuestPrintfSink(
      (line) => void send({ type: 'case-log', index, text: `${line}\n` }),
    );
    if (observe) startObservations();
    if (request.memoryMaps) startMemoryMaps();
    const observed = () => ({
      ...(observe ? { observations: capObservations(takeObservations()) } : {}),
      ...memoryMaps(),
    });
    // The case's own timeoutMs wins over the run's. The case is ended here, with what its guests
    // were doing (and a plain-JS loop ended by testkit's watchdog), before the parent's kill.
    const limitMs = typeof c.timeoutMs === 'number' && c.timeoutMs > 0 ? c.timeoutMs : request.timeoutMs;
    try {
      const timedOut =
        limitMs === undefined
          ? await c.run(ctx)
          : await runWithTimeout(c, ctx, limitMs, { progressExtends: true });
      if (timedOut instanceof CaseTimeoutError) {
        const own = limitMs === request.timeoutMs ? 'the run timeout' : "the case's own timeoutMs";
        const detail = timedOut.detail === '' ? '' : `: ${timedOut.detail}`;
        await send({
          type: 'case-end',
          index,
          status: 'timeout',
          durationMs: performance.now() - t0,
          reason: `${request.suiteRef}:${c.name} timed out after ${limitMs! / 1000} s (${own})${detail}`,
          ...observed(),
        });
        // The timed-out body may still hold timers or loop again: the rest of the suite runs in
        // a fresh process, as kselftest forks one per test.
        restoreSink();
        return;
      }
      await send({
        type: 'case-end',
        index,
        status: 'pass',
        durationMs: performance.now() - t0,
        ...observed(),
      });
    } catch (e) {
      const skip = isSkip(e);
      await send({
        type: 'case-end',
        index,
        status: skip ? 'skip' : 'fail',
        durationMs: performance.now() - t0,
        reason: skip ? skipReason(e) : describeFailure(e).join('\n'),
        ...(skip ? {} : { summary: failureSummary(e) }),
        ...observed(),
      });
    }
    restoreSink();
    current = -1;
  }
}

// Ctrl-C reaches the whole process group: the parent decides (it reports the running case as
// interrupted and stops this process), so the suite process does not die on its own.
process.on('SIGINT', () => {});

main().then(
  () => process.exit(0),
  async (e) => {
    await send({ type: 'fatal', message: describeFailure(e).join('\n') });
    process.exit(3);
  },
);
