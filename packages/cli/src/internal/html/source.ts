// Source snippets for failures: the first location in a failure message that names a readable file
// outside node_modules and Node's internals, with a few lines around it, read when the report is written.
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A failing line with its neighbours. */
export interface SourceSnippet {
  file: string;
  line: number;
  column?: number;
  /** First line number of `lines`. */
  first: number;
  lines: string[];
}

const LOCATION = /((?:file:\/\/)?(?:[A-Za-z]:)?[\w./@+~-]*\.(?:[cm]?[jt]sx?)):(\d+)(?::(\d+))?/g;

/** Library frames: a location in them is skipped when the user's own file is also named. */
const LIBRARY =
  /node_modules|^node:|[\\/]packages[\\/](cli|testkit|kvm|kvm-sim|kvm-linux|ucall|coco|guest-memory)[\\/](src|dist)[\\/]/;

/**
 * The snippet for the first location in `message` that resolves (absolute, or against one of
 * `roots`) to a readable file — preferring user code over library frames — with `context` lines
 * either side; undefined when none does.
 */
export function sourceSnippet(
  message: string,
  roots: readonly string[],
  context = 4,
): SourceSnippet | undefined {
  const found: { file: string; line: number; column?: number }[] = [];
  for (const m of message.matchAll(LOCATION)) {
    let file = m[1]!;
    if (file.startsWith('file://')) {
      try {
        file = fileURLToPath(file);
      } catch {
        continue;
      }
    }
    const candidates = isAbsolute(file) ? [file] : roots.map((r) => resolve(r, file));
    const hit = candidates.find((c) => existsSync(c));
    if (hit) found.push({ file: hit, line: Number(m[2]), ...(m[3] ? { column: Number(m[3]) } : {}) });
  }
  const pick = found.find((f) => !LIBRARY.test(f.file)) ?? found[0];
  if (!pick) return undefined;
  let text: string;
  try {
    text = readFileSync(pick.file, 'utf8');
  } catch {
    return undefined;
  }
  const all = text.split('\n');
  if (pick.line < 1 || pick.line > all.length) return undefined;
  const first = Math.max(1, pick.line - context);
  const last = Math.min(all.length, pick.line + context);
  return { ...pick, first, lines: all.slice(first - 1, last) };
}
