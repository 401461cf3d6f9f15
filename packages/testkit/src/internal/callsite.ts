// Where an assertion was written, and the text of its arguments: the TypeScript stand-ins for
// __FILE__, __LINE__ and the preprocessor's #expr. The location comes from a stack trace captured
// at the call (source-mapped under vitest and tsx); the expression text is read back from the
// source file at that line, by splitting the call's argument list. Both are best effort: with no
// source file at hand the expression is simply unknown.

import { readFileSync } from 'node:fs';
import { isAbsolute, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SourceLocation } from './errors.js';

/** A call site: absolute path as the stack names it, 1-based line and column. */
export interface CallSite {
  readonly path: string;
  readonly line: number;
  readonly column: number;
}

const FRAME = /^\s*at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/;

/**
 * The first stack frame above `fn` (the public function that was called), or undefined when
 * stack traces are unavailable.
 */
export function callerOf(fn: Function): CallSite | undefined {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 3;
  try {
    Error.captureStackTrace(holder, fn);
  } finally {
    Error.stackTraceLimit = limit;
  }
  return firstFrame(holder.stack, () => true);
}

/** Parses the first frame of `stack` that `accept` keeps. */
export function firstFrame(
  stack: string | undefined,
  accept: (path: string) => boolean,
): CallSite | undefined {
  if (!stack) return undefined;
  for (const line of stack.split('\n')) {
    const m = FRAME.exec(line);
    if (!m) continue;
    let path = m[1]!;
    if (path.startsWith('file://')) {
      try {
        path = fileURLToPath(path);
      } catch {
        continue;
      }
    }
    if (path.startsWith('node:') || path.startsWith('internal/')) continue;
    if (!accept(path)) continue;
    return { path, line: Number(m[2]), column: Number(m[3]) };
  }
  return undefined;
}

/** The location to show for a call site: the path relative to the working directory when inside it. */
export function displayLocation(site: CallSite | undefined): SourceLocation | undefined {
  if (!site) return undefined;
  let file = site.path;
  if (isAbsolute(file)) {
    const rel = relative(process.cwd(), file);
    if (rel !== '' && !rel.startsWith('..') && !isAbsolute(rel)) file = rel.split(sep).join('/');
  }
  return { file, line: site.line };
}

const sources = new Map<string, readonly string[] | undefined>();

function sourceLines(path: string): readonly string[] | undefined {
  if (sources.has(path)) return sources.get(path);
  let lines: readonly string[] | undefined;
  try {
    lines = readFileSync(path, 'utf8').split('\n');
  } catch {
    lines = undefined;
  }
  if (sources.size > 256) sources.clear();
  sources.set(path, lines);
  return lines;
}

/**
 * The top-level argument texts of the call to `callee` written at `site` (the call may span
 * lines), or undefined when the source or the call cannot be found. `callee` is matched as
 * `callee(`; the occurrence nearest the reported column wins.
 */
export function callArguments(site: CallSite | undefined, callee: string): string[] | undefined {
  if (!site) return undefined;
  const lines = sourceLines(site.path);
  const first = lines?.[site.line - 1];
  if (!lines || first === undefined) return undefined;
  const needle = `${callee}(`;
  let best = -1;
  for (let at = first.indexOf(needle); at >= 0; at = first.indexOf(needle, at + 1)) {
    const before = at === 0 ? '' : first[at - 1]!;
    if (/[\w$]/.test(before)) continue;
    if (best < 0 || Math.abs(at - (site.column - 1)) < Math.abs(best - (site.column - 1))) best = at;
  }
  if (best < 0) return undefined;
  const text = [first.slice(best + needle.length), ...lines.slice(site.line, site.line + 40)].join('\n');
  return splitArguments(text);
}

/**
 * Splits the text after an opening parenthesis into top-level, trimmed arguments up to the
 * matching closing parenthesis; undefined when it is not closed. Strings, template literals and
 * comments are skipped over.
 */
export function splitArguments(text: string): string[] | undefined {
  const args: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"' || c === "'" || c === '`') {
      const end = skipString(text, i, c);
      cur += text.slice(i, end + 1);
      i = end;
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl - 1;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? text.length : end + 1;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      if (depth === 0) {
        const last = clean(cur);
        if (last !== '') args.push(last);
        return args;
      }
      depth--;
    } else if (c === ',' && depth === 0) {
      args.push(clean(cur));
      cur = '';
      continue;
    }
    cur += c;
  }
  return undefined;
}

function skipString(text: string, i: number, quote: string): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text[j];
    if (c === '\\') j++;
    else if (c === quote) return j;
  }
  return text.length;
}

function clean(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

/** True for paths inside this package's own sources (frames to skip when looking for the user's code). */
export function isTestkitSource(path: string): boolean {
  return (
    path.includes(`${sep}testkit${sep}src${sep}`) ||
    path.includes('/testkit/src/') ||
    path.includes('/testkit/dist/')
  );
}
