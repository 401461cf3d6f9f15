// What both kvm-linux benches share: the real-mode OUT loop their C baselines also run, the C
// compiler that builds those baselines, and the median of interleaved rounds.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LinuxKvm, LinuxVcpu } from '../src/index.js';
import { realModeGuest } from '../test/helpers.js';

/** The host's C compiler for the baselines, or undefined when none is on PATH. */
export const cc: string | undefined = ['gcc', 'cc', 'clang'].find(
  (c) => spawnSync(c, ['--version']).status === 0,
);

/** The middle value of a round's figures. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** `out 0x80, al; jmp $-2`: the loop the C baselines run too. */
const OUT_LOOP = [0xe6, 0x80, 0xeb, 0xfc];

/** A real-mode vCPU at 0x1000 looping on `out 0x80, al` (a VM of `kvm`, or of a new Kvm). */
export function outLoopVcpu(kvm?: LinuxKvm): LinuxVcpu {
  return realModeGuest(OUT_LOOP, kvm === undefined ? {} : { kvm }).vcpu;
}

/**
 * The C program `bench/<name>.c`, compiled once into a temporary directory (removed at exit);
 * calling the result runs it with `args` and returns the number it prints (ns per operation).
 */
export function cBaseline(name: string): (...args: string[]) => number {
  let bin: string | undefined;
  return (...args) => {
    if (bin === undefined) {
      const dir = mkdtempSync(join(tmpdir(), `kvm-linux-${name}-`));
      process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
      bin = join(dir, name);
      execFileSync(cc!, ['-O2', '-o', bin, join(import.meta.dirname, `${name}.c`)]);
    }
    return Number(execFileSync(bin, args, { encoding: 'utf8' }).trim());
  };
}
