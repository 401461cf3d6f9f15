// Replays each suite's events in the planned order: with several suites at once (--jobs N) a suite's
// events wait until the suites before it are done, so that every case prints under its own suite
// header and TAP numbers are the same from run to run. The head suite reports live.
import type { CaseResult } from './protocol.js';
import type { RunListener } from './scheduler.js';

/** Listeners that forward to `target` in slot order. */
export interface OrderedListeners {
  /** The listener of slot `i` (a suite in one repetition). */
  listenerFor(i: number): RunListener;
  /** Slot `i` will report nothing more. */
  complete(i: number): void;
  /** Forwards whatever is still held (a stopped run), in slot order. */
  flush(): void;
}

/** Orders the events of `slots` suites for `target`. */
export function orderedListeners(target: RunListener, slots: number): OrderedListeners {
  let head = 0;
  const held: (() => void)[][] = Array.from({ length: slots }, () => []);
  const done: boolean[] = new Array(slots).fill(false);
  const advance = () => {
    while (head < slots && done[head]) {
      head++;
      if (head < slots) for (const e of held[head]!.splice(0)) e();
    }
  };
  return {
    listenerFor(i) {
      const emit = (e: () => void, live = true) => {
        if (i === head) e();
        else if (live) held[i]!.push(e);
      };
      return {
        suiteStart: (s, cases, backend) => emit(() => target.suiteStart?.(s, cases, backend)),
        caseStart: (s, name) => emit(() => target.caseStart?.(s, name)),
        // A progress line for a suite that is not shown yet would be stale when replayed.
        caseProgress: (s, name, d, t) => emit(() => target.caseProgress?.(s, name, d, t), false),
        caseEnd: (r: CaseResult) => emit(() => target.caseEnd?.(r)),
        suiteEnd: (s, rs) => emit(() => target.suiteEnd?.(s, rs)),
      };
    },
    complete(i) {
      done[i] = true;
      advance();
    },
    flush() {
      for (; head < slots; head++) for (const e of held[head]!.splice(0)) e();
    },
  };
}

/** One listener calling each of `listeners` in turn. */
export function tee(...listeners: RunListener[]): RunListener {
  return {
    suiteStart: (s, c, b) => {
      for (const l of listeners) l.suiteStart?.(s, c, b);
    },
    caseStart: (s, n) => {
      for (const l of listeners) l.caseStart?.(s, n);
    },
    caseProgress: (s, n, d, t) => {
      for (const l of listeners) l.caseProgress?.(s, n, d, t);
    },
    caseEnd: (r) => {
      for (const l of listeners) l.caseEnd?.(r);
    },
    suiteEnd: (s, rs) => {
      for (const l of listeners) l.suiteEnd?.(s, rs);
    },
  };
}
