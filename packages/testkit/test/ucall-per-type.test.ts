// For every VM type the backend supports: the host sees exactly what the guest sent — SYNC with
// args, PRINTF, a failing ASSERT, an unhandled #PF and DONE.
import { PF_ERROR, VECTOR } from '@kvmtest/kvm';
import { UCALL } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  defineGuest,
  GuestAssertionError,
  GuestUnhandledError,
  guestAssert,
  guestAssertEq,
  guestDone,
  guestFail,
  guestPrintf,
  guestSync,
  runUcall,
  TestAssertionError,
  vmCreateWithOneVcpu,
  writeGuestGlobal,
} from '../src/index.js';
import { ALL_TYPES, lineOf, requireType } from './helpers.js';

const UNMAPPED = 0xdead_0000n;

describe.each(ALL_TYPES)('%s guests report to their host', (type) => {
  test('SYNC with args, PRINTF and DONE arrive exactly as sent', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      await guestSync(g, 1n, 0xffff_ffff_ffff_ffffn, 3n, 4n, 5n, 6n, 7n);
      await guestPrintf(g, 'vCPU %d says %s: %#lx', g.vcpuId, 'hello', 0xabcn);
      await guestSync(g, 2);
      await guestDone(g);
    }, type);
    const vcpu = vm.vcpus[0]!;
    const sync = await runUcall(vcpu);
    expect(sync.cmd).toBe(UCALL.SYNC);
    expect(sync.args).toEqual([1n, 0xffff_ffff_ffff_ffffn, 3n, 4n, 5n, 6n, 7n]);
    expect(sync.vcpuId).toBe(0);
    const printf = await runUcall(vcpu);
    expect(printf.cmd).toBe(UCALL.PRINTF);
    expect(printf.message).toBe('vCPU 0 says hello: 0xabc');
    const second = await runUcall(vcpu);
    expect([second.cmd, second.args[0]]).toEqual([UCALL.SYNC, 2n]);
    expect((await runUcall(vcpu)).cmd).toBe(UCALL.DONE);
  });

  test('a failing GUEST_ASSERT becomes a host failure with its file, line, expression and message', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      const answer: bigint = 41n;
      await guestAssert(g, answer === 42n, 'answer is %d', answer); // @assert-line
      await guestDone(g);
    }, type);
    const err = await runUcall(vm.vcpus[0]!).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestAssertionError);
    expect(err).toBeInstanceOf(TestAssertionError);
    const e = err as GuestAssertionError;
    expect(e.file).toMatch(/test\/ucall-per-type\.test\.ts$/);
    expect(e.line).toBe(lineOf(import.meta.url, '// @assert-line'));
    expect(e.expression).toBe('answer === 42n');
    expect(e.userMessage).toBe('answer is 41');
    expect(e.message).toContain('==== Guest Assertion Failure (vCPU 0) ====');
    expect(e.message).toContain(`${e.file}:${e.line}: answer === 42n`);
  });

  test('GUEST_ASSERT_EQ compares a global the host wrote before the first run', async (ctx) => {
    requireType(ctx, type);
    const guest = defineGuest(
      async (g) => {
        const v = g.readU64(g.global('expected'));
        await guestAssertEq(g, v, 42n);
        await guestSync(g, v);
        await guestAssertEq(g, v, 43n, 'stage %d', 2);
      },
      { globals: { expected: 0n } },
    );
    using vm = vmCreateWithOneVcpu(guest, type);
    writeGuestGlobal(vm, 'expected', 42n);
    const vcpu = vm.vcpus[0]!;
    expect((await runUcall(vcpu)).args[0]).toBe(42n);
    const e = (await runUcall(vcpu).catch((x: unknown) => x)) as GuestAssertionError;
    expect(e).toBeInstanceOf(GuestAssertionError);
    expect(e.expression).toBe('v == 43n');
    expect(e.userMessage).toBe('0x2a != 0x2b (v != 43n)\nstage 2');
  });

  test('GUEST_FAIL reports an unconditional failure', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      await guestFail(g, 'stage %d went wrong', 3);
    }, type);
    const e = (await runUcall(vm.vcpus[0]!).catch((x: unknown) => x)) as GuestAssertionError;
    expect(e.expression).toBe('Unconditional guest failure');
    expect(e.userMessage).toBe('stage 3 went wrong');
  });

  test('an unhandled #PF reaches the host as UNHANDLED with vector, error code and guest line', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      await guestSync(g, 1n);
      g.readU64(UNMAPPED); // @pf-line
      await guestDone(g);
    }, type);
    const vcpu = vm.vcpus[0]!;
    expect((await runUcall(vcpu)).cmd).toBe(UCALL.SYNC);
    const e = (await runUcall(vcpu).catch((x: unknown) => x)) as GuestUnhandledError;
    expect(e).toBeInstanceOf(GuestUnhandledError);
    expect(e.ucall.cmd).toBe(UCALL.UNHANDLED);
    expect(e.vector).toBe(VECTOR.PF);
    expect(e.errorCode).toBe(0); // not present, read, supervisor
    expect(e.file).toMatch(/test\/ucall-per-type\.test\.ts$/);
    expect(e.line).toBe(lineOf(import.meta.url, '// @pf-line'));
    expect(e.userMessage).toMatch(/^Unhandled exception #PF \(vector 14\) error code 0x0 at 0xdead0000/);
    expect(e.message).toContain('==== Unhandled Guest Exception #PF (vCPU 0) ====');
  });

  test('an unhandled #PF carries vector 14 and the architectural error code in the ucall, not in its text', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      g.writeU64(UNMAPPED, 1n);
    }, type);
    const e = (await runUcall(vm.vcpus[0]!).catch((x: unknown) => x)) as GuestUnhandledError;
    expect(e).toBeInstanceOf(GuestUnhandledError);
    expect(e.vector).toBe(VECTOR.PF);
    expect(e.errorCode).toBe(PF_ERROR.WRITE); // not present, write, supervisor
    expect(e.ucall.extra).toEqual([BigInt(VECTOR.PF), BigInt(PF_ERROR.WRITE)]);
    expect(e.userMessage).toMatch(/^Unhandled exception #PF \(vector 14\) error code 0x2 at 0xdead0000/);
    // The host reads the numbers from the ucall's extra args: a message saying otherwise changes nothing.
    const relabelled = new GuestUnhandledError({
      ...e.ucall,
      message: 'Unhandled exception #GP (vector 13) error code 0x99',
    });
    expect(relabelled.vector).toBe(VECTOR.PF);
    expect(relabelled.errorCode).toBe(PF_ERROR.WRITE);
    expect(relabelled.message).toContain('==== Unhandled Guest Exception #PF (vCPU 0) ====');
  });

  test('an unhandled #UD is reported with vector 6 and no error code', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      g.ud2();
    }, type);
    const e = (await runUcall(vm.vcpus[0]!).catch((x: unknown) => x)) as GuestUnhandledError;
    expect(e).toBeInstanceOf(GuestUnhandledError);
    expect(e.ucall.cmd).toBe(UCALL.UNHANDLED);
    expect(e.vector).toBe(VECTOR.UD);
    expect(e.errorCode).toBeUndefined();
    expect(e.ucall.extra).toEqual([BigInt(VECTOR.UD)]);
    expect(e.userMessage).toMatch(/^Unhandled exception #UD \(vector 6\) error code none/);
    expect(e.message).toContain('==== Unhandled Guest Exception #UD (vCPU 0) ====');
  });
});
