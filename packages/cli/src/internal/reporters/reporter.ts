// The reporter interface: run events in, text out.
import type { ResolvedBackend } from '../backends.js';
import type { Paint } from '../colors.js';
import type { CaseResult } from '../protocol.js';
import type { RunListener } from '../scheduler.js';
import type { Summary } from '../summary.js';

/** Where a reporter writes. */
export interface Sink {
  write(text: string): void;
  /** True when the sink is an interactive terminal (progress lines). */
  readonly isTTY: boolean;
}

/** A reporter: listens to the run and writes its format; `finish` writes whatever comes last. */
export interface Reporter extends RunListener {
  /** The run starts on these backends (two: a comparison), each with its note (auto's choice, …). */
  runStart?(backends: readonly ResolvedBackend[]): void;
  finish(all: readonly CaseResult[], summary: Summary): void;
}

/** What a reporter is created with. */
export interface ReporterContext {
  /**
   * Standard output, or the file the user named (`--reporter NAME=FILE`). A folder reporter's `out`
   * is for its note of where it wrote: standard error when a TAP, JUnit or JSON report holds stdout.
   */
  readonly out: Sink;
  /** The path named with `NAME=FILE`, if any (a reporter writing a folder uses it instead of `out`). */
  readonly path?: string;
  /** Colours (NO_COLOR / FORCE_COLOR / terminal decided). */
  readonly paint: Paint;
  /** `--verbose`: show passing cases' output too. */
  readonly verbose: boolean;
  /** Folders a relative file location resolves against: the working directory, then each suite's. */
  readonly roots?: readonly string[];
  /** Another reporter writes to standard output as well (a folder reporter then only says where it wrote). */
  readonly sharedStdout?: boolean;
}
