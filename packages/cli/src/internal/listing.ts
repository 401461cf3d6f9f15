// `kvmtest list`: asks a suite process for its case names without running any.
import { fork } from 'node:child_process';
import type { ChildMessage, ChildRequest } from './protocol.js';
import { type SuiteRef, suiteRunner } from './suite.js';

/** The case names of a suite, read by loading it in a child process. */
export function runSuiteListing(ref: SuiteRef): Promise<string[]> {
  let runner: ReturnType<typeof suiteRunner>;
  try {
    runner = suiteRunner(ref);
  } catch (e) {
    return Promise.reject(new Error(`cannot list suite ${ref.name}: ${(e as Error).message}`));
  }
  const request: ChildRequest = { suiteRef: ref.name, indices: [] };
  const child = fork(runner.childEntry, [runner.entry, JSON.stringify(request)], {
    cwd: ref.dir,
    execArgv: [...runner.execArgv],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    let names: string[] | undefined;
    let fatal: string | undefined;
    child.on('message', (m) => {
      const msg = m as ChildMessage;
      if (msg.type === 'suite') names = msg.cases;
      if (msg.type === 'fatal') fatal = msg.message;
    });
    child.on('close', (code) =>
      names
        ? resolve(names)
        : reject(new Error(`cannot list suite ${ref.name}: ${fatal ?? `exit ${code} ${stderr.trim()}`}`)),
    );
  });
}
