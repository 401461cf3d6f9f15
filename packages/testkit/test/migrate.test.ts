// Migration targets (KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM): the destination maps the source's memory,
// takes its encryption context (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from()), and the
// guest goes on there — its ucall pool and its program move with the context.
import { UCALL } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  defineGuest,
  guestDone,
  guestSync,
  runUcall,
  runUcallExpect,
  sevMigrateFrom,
  TestkitError,
  trySevMigrateFrom,
  vmCreateMigrationTarget,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
  writeGuestGlobal,
} from '../src/index.js';
import { requireType } from './helpers.js';

const guest = defineGuest(
  async (g) => {
    await guestSync(g, 1, g.vcpuId);
    const x = g.readU64(g.global('x'));
    g.writeU64(g.global('x'), x + 1n);
    await guestSync(g, 2, g.readU64(g.global('x')));
    await guestDone(g);
  },
  { globals: { x: 0n } },
);

describe.each(['sev', 'sev-es'] as const)('%s: a guest goes on on its migration target', (type) => {
  test('the target runs the source guest from where it stopped, through runUcall; closing the source recycles nothing it maps', async (ctx) => {
    requireType(ctx, type);
    const src = vmCreateWithVcpus(2, guest, type);
    writeGuestGlobal(src, 'x', 41n);
    for (const v of src.vcpus) expect((await runUcall(v)).args.slice(0, 2)).toEqual([1n, BigInt(v.id)]);
    using dst = vmCreateMigrationTarget(src);
    expect(dst.vcpus.map((v) => v.id)).toEqual([0, 1]);
    expect(dst.launchPending).toBe(true);
    sevMigrateFrom(dst, src);
    expect(dst.launchPending).toBe(false);
    expect(trySevMigrateFrom(src, dst)).toBe('EIO');
    src.close();
    // A new VM of the same size must not get (and zero) the memory the target still maps.
    using other = vmCreateWithOneVcpu(guestDone, 'default');
    expect((await runUcall(other.vcpus[0]!)).cmd).toBe(UCALL.DONE);
    const first = await runUcall(dst.vcpus[0]!);
    expect(first.args.slice(0, 2)).toEqual([2n, 42n]);
    const second = await runUcall(dst.vcpus[1]!);
    expect(second.args.slice(0, 2)).toEqual([2n, 43n]);
    await runUcallExpect(dst.vcpus[0]!, UCALL.DONE);
    await runUcallExpect(dst.vcpus[1]!, UCALL.DONE);
  });
});

test('a guest_memfd-backed VM has no migration target', (ctx) => {
  requireType(ctx, 'sev-snp');
  using vm = vmCreateWithOneVcpu(guestDone, 'sev-snp');
  expect(() => vmCreateMigrationTarget(vm)).toThrow(TestkitError);
});
