// The reporter interface: run events in, text out.
import type { ResolvedBackend } from '../backends.js';
import type { CaseResult } from '../protocol.js';
import type { RunListener } from '../scheduler.js';
import type { Summary } from '../summary.js';

/** Where a reporter writes. */
export interface Sink {
  write(text: string): void;
  /** True when the sink is an interactive terminal (progress lines, colours). */
  readonly isTTY: boolean;
}

/** A reporter: listens to the run and writes its format; `finish` writes whatever comes last. */
export interface Reporter extends RunListener {
  /** The run starts on these backends (two: a comparison), each with its note (auto's choice, …). */
  runStart?(backends: readonly ResolvedBackend[]): void;
  finish(all: readonly CaseResult[], summary: Summary): void;
}
