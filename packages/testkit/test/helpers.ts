// Shared by the integration tests: the VM types to try, and a skip that vitest understands.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VM_TYPES, type VmType } from '@kvmtest/coco';
import type { TestContext } from 'vitest';
import { KsftSkip, testRequireVmType } from '../src/index.js';

/** Every VM type; tests skip the ones the backend or the kit cannot run. */
export const ALL_TYPES: readonly VmType[] = VM_TYPES;

/** Skips the vitest test unless the kit can create and launch `type` on the default backend. */
export function requireType(ctx: TestContext, type: VmType): void {
  try {
    testRequireVmType(type);
  } catch (e) {
    if (e instanceof KsftSkip) ctx.skip(e.reason);
    throw e;
  }
}

/** 1-based line of the first line of `file` containing `marker` (so tests need no hard-coded line numbers). */
export function lineOf(file: string, marker: string): number {
  const lines = readFileSync(fileURLToPath(file), 'utf8').split('\n');
  const i = lines.findIndex((l) => l.includes(marker));
  if (i < 0) throw new Error(`marker ${marker} not found in ${file}`);
  return i + 1;
}
