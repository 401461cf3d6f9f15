// Messages between the CLI and a suite process (over the Node IPC channel).

/** How a case ended. `timeout` is decided by the parent, which killed the process. */
export type CaseStatus = 'pass' | 'fail' | 'skip' | 'timeout';

/** Child → parent messages. */
export type ChildMessage =
  | { type: 'suite'; name: string; cases: string[]; selected: number[] }
  | { type: 'case-start'; index: number }
  | { type: 'case-log'; index: number; text: string }
  | { type: 'case-progress'; index: number; done: number; total: number }
  | {
      type: 'case-end';
      index: number;
      status: 'pass' | 'fail' | 'skip';
      durationMs: number;
      message?: string;
    }
  | { type: 'fatal'; message: string };

/** The result of one case as reporters see it. */
export interface CaseResult {
  suite: string;
  name: string;
  status: CaseStatus;
  durationMs: number;
  /** Failure or skip reason. */
  message?: string;
  /** Output the case produced (logs, guest printf lines). */
  output: string;
}

/** What the parent asks a suite process to run: explicit indices, or a selection it applies itself. */
export interface ChildRequest {
  indices?: number[];
  names?: string[];
  /** Source of a regular expression tested against "<suite>:<case>". */
  filter?: string;
  /** The suite's name on the command line (its app folder), for the filter. */
  suiteRef: string;
}
