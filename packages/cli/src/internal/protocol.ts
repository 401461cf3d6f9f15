// Messages between the CLI and a suite process (over the Node IPC channel).
import type {
  CaseOutcome,
  CaseStatus,
  MemoryRecording,
  Observation,
  ObservationDifference,
} from '@kvmtest/testkit';

/** How a case ended (testkit's statuses; `interrupted`, and a `timeout` the suite process could not report, are decided by the parent). */
export type { CaseStatus };

/** Child → parent messages. */
export type ChildMessage =
  | {
      type: 'suite';
      name: string;
      cases: string[];
      selected: number[];
      /** Each case's own timeoutMs (null: the run's). */
      timeouts: (number | null)[];
      /** The backend the process opened (`sim`, `sim:pvm`, `linux`), or why it could not. */
      backend: string;
      backendError?: string;
    }
  | { type: 'case-start'; index: number }
  | { type: 'case-log'; index: number; text: string }
  | { type: 'case-progress'; index: number; done: number; total: number }
  | {
      type: 'case-end';
      index: number;
      /** `timeout`: the suite process ended the case itself (runWithTimeout) and exits after reporting it. */
      status: 'pass' | 'fail' | 'skip' | 'timeout';
      durationMs: number;
      reason?: string;
      /** The failure's one-line summary (an assertion's text), for report headlines. */
      summary?: string;
      /** What the case observed (only when the request asked for observations). */
      observations?: Observation[];
      /** The case's VMs' memory maps (only when the request asked for them: the HTML report). */
      memory?: MemoryRecording;
    }
  | { type: 'fatal'; message: string };

/** The result of one case as reporters see it: testkit's CaseOutcome and where it ran. */
export interface CaseResult extends CaseOutcome {
  suite: string;
  /** A failure's one-line summary (an assertion's text): JUnit's failure message. */
  summary?: string;
  /** 1-based repetition (`--repeat N`, N > 1). */
  repeat?: number;
  /** Output the case produced (logs, guest printf lines). */
  output: string;
  /** The backend the case ran on (`sim`, `sim:pvm`, `linux`; both, comma-separated, when compared). */
  backend?: string;
  /** What the case observed (comparison runs). */
  observations?: Observation[];
  /** The comparison of the case's two runs (`--backend A,B`). */
  comparison?: Comparison;
  /** The memory maps of the VMs the case made (HTML report). */
  memory?: MemoryRecording;
}

/** How a case compared on two backends. */
export interface Comparison {
  /** `same`: equal outcomes and observations; `differs`; `skipped`: skipped on one side or both. */
  verdict: 'same' | 'differs' | 'skipped';
  /** The two backends, left then right. */
  backends: [string, string];
  /** Each side's outcome. */
  runs: [{ status: CaseStatus; reason?: string }, { status: CaseStatus; reason?: string }];
  /** Where the observations first part (differs), if they do. */
  difference?: ObservationDifference;
  /** One line for reports: `same`, `differs at …`, `skipped on linux: …`. */
  summary: string;
}

/** What the parent asks a suite process to run: explicit indices, or a selection it applies itself. */
export interface ChildRequest {
  indices?: number[];
  names?: string[];
  /** Source of a regular expression tested against "<suite>:<case>". */
  filter?: string;
  /** The suite's name on the command line (its app folder), for the filter. */
  suiteRef: string;
  /**
   * The run's per-case timeout in milliseconds (a case's own timeoutMs wins): the suite process
   * ends a case that outlives it and reports what its guests were doing; the parent's kill is the
   * backstop.
   */
  timeoutMs?: number;
  /** Record observations for each case and send them with its result. */
  observe?: boolean;
  /** Record the memory maps of each case's VMs and send them with its result (HTML report). */
  memoryMaps?: boolean;
}
