import type { Guest } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../src/index.js';
import { guestVm } from './helpers.js';

/** Runs `op` as a guest program and returns the guest-crash detail of the run that ends it. */
async function crashDetail(op: (g: Guest) => unknown): Promise<string> {
  const t = guestVm(createSimKvm());
  const exit = await t
    .vcpu(async (g) => {
      await op(g);
    })
    .run();
  if (exit.reason !== 'internal-error') throw new Error(`expected a guest crash, got ${exit.reason}`);
  return exit.detail;
}

describe('a guest operation given a bad operand crashes the guest with a message naming the value', () => {
  it.each([
    ['cpuid leaf', (g: Guest) => g.cpuid(1.5), 'cpuid: leaf must be an integer, got 1.5'],
    ['rdmsr index', (g: Guest) => g.rdmsr(Number.NaN), 'rdmsr: msr must be an integer, got NaN'],
    [
      'wrmsr value',
      (g: Guest) => g.wrmsr(0x10, 5 as unknown as bigint),
      'wrmsr: value must be a bigint, got number',
    ],
    ['out value', (g: Guest) => g.out(0x80, 1, 0.5), 'out: value must be an integer, got 0.5'],
    [
      'out value past the access size (io-value-fits-size)',
      (g: Guest) => g.out(0x1000, 4, 2 ** 53),
      'out: value 9007199254740992 does not fit a 4-byte port access (0..0xffffffff)',
    ],
    [
      'out value of 64 one bits (io-value-fits-size)',
      (g: Guest) => g.out(0x1000, 4, Number(0xffff_ffff_ffff_ffffn)),
      'does not fit a 4-byte port access',
    ],
    [
      'out negative value (io-value-fits-size)',
      (g: Guest) => g.out(0x80, 2, -1),
      'out: value -1 does not fit',
    ],
    ['out byte past 0xff (io-value-fits-size)', (g: Guest) => g.out(0x80, 1, 0x100), 'does not fit a 1-byte'],
    [
      'readBytes of a huge length (guest-sizes-bounded)',
      (g: Guest) => g.readBytes(0x40_0000n, 2 ** 40),
      'readBytes: length 1099511627776 is more than 67108864 bytes',
    ],
    ['out port symbol', (g: Guest) => g.out(Symbol('p') as unknown as number, 1, 0), 'out: port must be'],
    [
      'hypercall nr',
      (g: Guest) => g.hypercall(12 as unknown as bigint),
      'hypercall: nr must be a bigint, got number',
    ],
    ['MMIO gpa', (g: Guest) => g.mmioWrite(-1n, 8, 0n), 'mmioWrite: gpa must be a u64 bigint, got -1'],
  ])('%s', async (_what, op, message) => {
    expect(await crashDetail(op)).toContain(message);
  });
});
