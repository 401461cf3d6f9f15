// `--logs DIR`: one log file per case, as kvm-unit-tests keeps logs/<test>.log: DIR/<suite>/<case>.log
// with the result, the backend, the case's output (logs and guest printf) and the failure.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CaseResult } from './protocol.js';
import type { RunListener } from './scheduler.js';

/** A file-name-safe form of a suite or case name. */
export function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\.+/, '_') || '_';
}

/** The log file of a result under `dir`. */
export function logPath(dir: string, r: CaseResult): string {
  return join(
    dir,
    safeName(r.suite),
    `${safeName(r.name)}${r.repeat === undefined ? '' : `.${r.repeat}`}.log`,
  );
}

/** A listener writing each finished case's log file under `dir`. */
export function logWriter(dir: string): RunListener {
  return {
    caseEnd(r) {
      const file = logPath(dir, r);
      mkdirSync(join(file, '..'), { recursive: true });
      const head = [
        `case: ${r.suite}:${r.name}${r.repeat === undefined ? '' : ` (repeat ${r.repeat})`}`,
        `result: ${r.status}`,
        `duration: ${(r.durationMs / 1000).toFixed(3)} s`,
        ...(r.backend ? [`backend: ${r.backend}`] : []),
      ];
      const parts = [
        head.join('\n'),
        r.output.trimEnd() ? `--- output\n${r.output.trimEnd()}` : '',
        r.reason ? `--- ${r.status === 'skip' ? 'reason' : 'failure'}\n${r.reason}` : '',
      ];
      writeFileSync(file, `${parts.filter(Boolean).join('\n')}\n`);
    },
  };
}
