export type {
  BackendName,
  Command,
  CommandName,
  ReporterName,
  ReporterSpec,
  Shard,
} from './internal/args.js';
export { helpText, parseCommand, parseReporterSpec, parseShard, USAGE, UsageError } from './internal/args.js';
export { colorEnabled, painter } from './internal/colors.js';
export type { HtmlReporterOptions } from './internal/html/reporter.js';
export { htmlReporter } from './internal/html/reporter.js';
export type { CliIo } from './internal/main.js';
export { EXIT_USAGE, runCli, shardSelection } from './internal/main.js';
export { mergeReports, readJunit, readReport } from './internal/merge.js';
export type { CaseResult, CaseStatus } from './internal/protocol.js';
export type { JsonReport } from './internal/reporters/json.js';
export { jsonReporter } from './internal/reporters/json.js';
export { junitReporter, junitXml, xmlEscape } from './internal/reporters/junit.js';
export { prettyReporter } from './internal/reporters/pretty.js';
export type { ReporterEntry } from './internal/reporters/registry.js';
export { DEFAULT_HTML_DIR, REPORTER_NAMES, REPORTERS } from './internal/reporters/registry.js';
export type { Reporter, ReporterContext, Sink } from './internal/reporters/reporter.js';
export { tapReporter } from './internal/reporters/tap.js';
export type { CaseSelection, RunListener, SchedulerOptions } from './internal/scheduler.js';
export { runSuite, runSuites } from './internal/scheduler.js';
export type { Project, SuiteRef } from './internal/suite.js';
export {
  discoverSuites,
  findProject,
  findWorkspaceRoot,
  globToRegExp,
  suiteFromModule,
} from './internal/suite.js';
export type { Summary } from './internal/summary.js';
export { EXIT_INTERRUPTED, exitCodeFor, KSFT_EXIT, summarize, summaryLine } from './internal/summary.js';
