// Reassembles agent.S with GNU binutils (`as`, `objcopy`) when they are installed; used by the test
// that checks agent-bytes.ts against the source, and run directly to regenerate that file:
//   node_modules/.bin/tsx packages/kvm-linux/src/internal/agent/assemble.ts --write

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
/** Path of the agent's assembler source. */
export const AGENT_SOURCE = join(here, 'agent.S');

/** True when GNU `as` and `objcopy` can be run. */
export function haveBinutils(): boolean {
  try {
    execFileSync('as', ['--version'], { stdio: 'ignore' });
    execFileSync('objcopy', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The flat .text bytes of agent.S, assembled now. */
export function assembleAgent(): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'kvmtest-agent-'));
  try {
    const obj = join(dir, 'agent.o');
    const bin = join(dir, 'agent.bin');
    execFileSync('as', ['--64', '-o', obj, AGENT_SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('objcopy', ['-O', 'binary', '-j', '.text', obj, bin], { stdio: 'ignore' });
    return new Uint8Array(readFileSync(bin));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The text of agent-bytes.ts for `bytes`. */
export function bytesModule(bytes: Uint8Array): string {
  const b64 = Buffer.from(bytes).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 96) lines.push(`  '${b64.slice(i, i + 96)}' +`);
  return [
    '// Generated from agent.S by assemble.ts (GNU as --64; objcopy -O binary -j .text). Do not edit:',
    '// change agent.S and run `node_modules/.bin/tsx packages/kvm-linux/src/internal/agent/assemble.ts --write`.',
    '',
    `/** The guest agent's code (${bytes.length} bytes), loaded at the agent code page. */`,
    'export const AGENT_CODE: Uint8Array = Uint8Array.from(',
    '  atob(',
    ...lines.slice(0, -1),
    lines.at(-1)!.slice(0, -2),
    '  ),',
    '  (c) => c.charCodeAt(0),',
    ');',
    '',
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes('--write')) {
  const bytes = assembleAgent();
  writeFileSync(join(here, 'agent-bytes.ts'), bytesModule(bytes));
  console.log(`agent-bytes.ts: ${bytes.length} bytes`);
}
