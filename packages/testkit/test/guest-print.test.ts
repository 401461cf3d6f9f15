// A port of tools/testing/selftests/kvm/guest_print_test.c: one VM, one guest loop, many GUEST_PRINTF
// and __GUEST_ASSERT calls, half of them failing. Upstream's ucall_assert()
// (tools/testing/selftests/kvm/lib/ucall_common.c) returns after the ABORT ucall, so the guest goes on
// to GUEST_DONE and the same vCPU serves the next case; the host receives ABORT as data.
import { UCALL, UCALL_BUFFER_LEN } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  defineGuest,
  type FormatValue,
  formatString,
  GuestAssertionError,
  guestAssert,
  guestDone,
  guestPrintf,
  guestSync,
  runUcall,
  runUcallExpect,
  type TestVm,
  vmCreateWithOneVcpu,
  writeGuestGlobal,
} from '../src/index.js';
import { ALL_TYPES, requireType } from './helpers.js';

/** TYPE_LIST: [name, printf conversion, how the guest reads a u64 global as the C type]. */
const TYPES = [
  ['I64', '%ld', (v: bigint): FormatValue => BigInt.asIntN(64, v)],
  ['U64u', '%lu', (v: bigint): FormatValue => v],
  ['U64x', '0x%lx', (v: bigint): FormatValue => v],
  ['U64X', '0x%lX', (v: bigint): FormatValue => v],
  ['U32u', '%u', (v: bigint): FormatValue => BigInt.asUintN(32, v)],
  ['U32x', '0x%x', (v: bigint): FormatValue => BigInt.asUintN(32, v)],
  ['U32X', '0x%X', (v: bigint): FormatValue => BigInt.asUintN(32, v)],
  ['INT', '%d', (v: bigint): FormatValue => BigInt.asIntN(32, v)],
  ['CHAR', '%c', (v: bigint): FormatValue => Number(BigInt.asUintN(8, v))],
  // A `const char *` into the guest image: the value is an index into the guest's own strings.
  ['STR', "'%s'", (v: bigint): FormatValue => GUEST_STRINGS[Number(v)]],
  ['PTR', '%p', (v: bigint): FormatValue => v],
] as const;
const GUEST_STRINGS = ['foo', 'bar'] as const;

const printfFmt = (conv: string): string => `Got params a = ${conv} and b = ${conv}`;
const assertFmt = (conv: string): string => `Expected ${conv}, got ${conv} instead`;

const guestCode = defineGuest(
  async (g) => {
    for (;;) {
      const type = g.readU64(g.global('type'));
      const a = g.readU64(g.global('a'));
      const b = g.readU64(g.global('b'));
      const t = TYPES[Number(type)];
      if (t === undefined) await guestSync(g, type);
      else {
        const [, conv, read] = t;
        await guestPrintf(g, printfFmt(conv), read(a), read(b));
        await guestAssert(g, a === b, assertFmt(conv), read(a), read(b));
      }
      await guestDone(g);
    }
  },
  { globals: { a: 0n, b: 0n, type: 0n } },
);

/** run_test(): the guest's PRINTF, then ABORT when a != b (received as data), then DONE. */
async function runTest(vm: TestVm, expectedPrintf: string, expectedAssert: string): Promise<number> {
  const vcpu = vm.vcpus[0]!;
  let aborts = 0;
  for (;;) {
    const uc = await runUcall(vcpu, { abort: 'return' });
    switch (uc.cmd) {
      case UCALL.PRINTF:
        expect(uc.message).toBe(expectedPrintf);
        break;
      case UCALL.ABORT:
        aborts++;
        expect(uc.message?.endsWith(expectedAssert), `${uc.message} ends with ${expectedAssert}`).toBe(true);
        break;
      case UCALL.DONE:
        return aborts;
      default:
        throw new Error(`unexpected ucall ${uc.cmd} (${uc.message ?? ''})`);
    }
  }
}

const u64 = (v: bigint): bigint => BigInt.asUintN(64, v);

/** main()'s cases: [type, a, b] as the host passes them (then stored to the guest's u64 globals). */
const CASES: [(typeof TYPES)[number][0], bigint, bigint][] = [
  ['I64', -1n, -1n],
  ['I64', -1n, 1n],
  ['I64', 0x1234567890abcdefn, 0x1234567890abcdefn],
  ['I64', 0x1234567890abcdefn, 0x1234567890abcdeen],
  ['U64u', 0x1234567890abcdefn, 0x1234567890abcdefn],
  ['U64u', 0x1234567890abcdefn, 0x1234567890abcdeen],
  ['U64x', 0x1234567890abcdefn, 0x1234567890abcdefn],
  ['U64x', 0x1234567890abcdefn, 0x1234567890abcdeen],
  ['U64X', 0x1234567890abcdefn, 0x1234567890abcdefn],
  ['U64X', 0x1234567890abcdefn, 0x1234567890abcdeen],
  ['U32u', 0x90abcdefn, 0x90abcdefn],
  ['U32u', 0x90abcdefn, 0x90abcdeen],
  ['U32x', 0x90abcdefn, 0x90abcdefn],
  ['U32x', 0x90abcdefn, 0x90abcdeen],
  ['U32X', 0x90abcdefn, 0x90abcdefn],
  ['U32X', 0x90abcdefn, 0x90abcdeen],
  ['INT', -1n, -1n],
  ['INT', -1n, 1n],
  ['INT', 1n, 1n],
  ['CHAR', 0x61n, 0x61n],
  ['CHAR', 0x61n, 0x41n],
  ['CHAR', 0x61n, 0x62n],
  ['STR', 0n, 0n],
  ['STR', 0n, 1n],
  ['PTR', 0x1234567890abcdefn, 0x1234567890abcdefn],
  ['PTR', 0x1234567890abcdefn, 0x1234567890abcdeen],
];

// Upstream rewrites the guest's globals between cases (sync_global_to_guest): types whose image is
// private after launch cannot, so the many-cases loop runs where the host can write guest memory.
describe.each(['default', 'sw-protected'] as const)('%s: guest_print_test', (vmType) => {
  test('ucall_assert returns: many failing assertions on one VM arrive as ABORT data, the guest goes on', async (ctx) => {
    requireType(ctx, vmType);
    using vm = vmCreateWithOneVcpu(guestCode, vmType);
    let aborts = 0;
    for (const [name, a, b] of CASES) {
      const i = TYPES.findIndex((t) => t[0] === name);
      const [, conv, read] = TYPES[i]!;
      writeGuestGlobal(vm, 'a', u64(a));
      writeGuestGlobal(vm, 'b', u64(b));
      writeGuestGlobal(vm, 'type', BigInt(i));
      aborts += await runTest(
        vm,
        formatString(printfFmt(conv), read(u64(a)), read(u64(b))),
        formatString(assertFmt(conv), read(u64(a)), read(u64(b))),
      );
    }
    expect(aborts).toBe(CASES.filter(([, a, b]) => a !== b).length);
  });
});

describe.each(ALL_TYPES)('%s: a failed guest assertion returns', (vmType) => {
  test('test_limits: a PRINTF longer than UCALL_BUFFER_LEN arrives as ABORT', async (ctx) => {
    requireType(ctx, vmType);
    using vm = vmCreateWithOneVcpu(async (g) => {
      await guestPrintf(g, '%s', 'a'.repeat(UCALL_BUFFER_LEN + 9));
    }, vmType);
    expect((await runUcallExpect(vm.vcpus[0]!, UCALL.ABORT)).cmd).toBe(UCALL.ABORT);
  });

  test('runUcall still throws on ABORT by default, and the guest goes on when run again', async (ctx) => {
    requireType(ctx, vmType);
    using vm = vmCreateWithOneVcpu(async (g) => {
      await guestAssert(g, 1 + 1 === 3, 'arithmetic');
      await guestSync(g, 7);
      await guestDone(g);
    }, vmType);
    const vcpu = vm.vcpus[0]!;
    await expect(runUcall(vcpu)).rejects.toBeInstanceOf(GuestAssertionError);
    expect((await runUcall(vcpu)).args[0]).toBe(7n);
    await runUcallExpect(vcpu, UCALL.DONE);
  });
});
