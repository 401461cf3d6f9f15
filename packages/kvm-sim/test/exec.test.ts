import { type Exit, type GuestProgram, KvmError, MEMORY_ATTRIBUTE } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { privateMemVm, TEST_GPA, TEST_GVA } from './helpers.js';
import { setSimSeed, simSeed, simYield } from '../src/index.js';

const P = MEMORY_ATTRIBUTE.PRIVATE;
const MMIO_GPA = 0x2_0000_0000n;
const MMIO_GVA = 0x9000_0000n;

/** A sw-protected VM: slot 0 (page tables), slot 1 at TEST_GPA (guest_memfd when `gmem`), MMIO_GVA mapped to no slot. */
function setup(gmem: boolean, yieldQuantum?: number) {
  return privateMemVm({
    gmem,
    ...(yieldQuantum === undefined ? {} : { config: { yieldQuantum } }),
    extraMaps: [[MMIO_GVA, MMIO_GPA]],
  });
}

const deleteSlot1 = (vm: ReturnType<typeof setup>['vm']) =>
  vm.setUserMemoryRegion({
    slot: 1,
    flags: 0,
    guestPhysAddr: TEST_GPA,
    memorySize: 0n,
    userspace: undefined,
  });

describe('resumable exits', () => {
  it('a memory-fault exit answered by an attribute change resumes the guest access', async () => {
    const { vm, shared, vcpu } = setup(false);
    new DataView(shared.buffer).setBigUint64(8, 0x1234n, true);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    let got = 0n;
    const v = vcpu(async (g) => {
      got = await g.readAsync(TEST_GVA + 8n, 8);
    });
    expect(await v.run()).toEqual({
      reason: 'memory-fault',
      gpa: TEST_GPA,
      size: 4096n,
      private: true,
      errno: 'EFAULT',
    });
    expect(v.exit?.reason).toBe('memory-fault');
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: 0n });
    expect(await v.run()).toEqual({ reason: 'hlt' });
    expect(got).toBe(0x1234n);
  });

  it('MMIO through readAsync returns the host data; writeAsync exits with the stored bytes', async () => {
    const { vcpu } = setup(false);
    let got = 0n;
    const v = vcpu(async (g) => {
      got = await g.readAsync(MMIO_GVA + 4n, 4);
      await g.writeAsync(MMIO_GVA, 2, 0xbeefn);
    });
    const e = await v.run();
    expect(e).toMatchObject({ reason: 'mmio', gpa: MMIO_GPA + 4n, isWrite: false, len: 4 });
    (e as Extract<Exit, { reason: 'mmio' }>).data.set([0x78, 0x56, 0x34, 0x12]);
    const w = await v.run();
    expect(w).toMatchObject({ reason: 'mmio', gpa: MMIO_GPA, isWrite: true, len: 2 });
    expect([...(w as Extract<Exit, { reason: 'mmio' }>).data]).toEqual([0xef, 0xbe]);
    expect(await v.run()).toEqual({ reason: 'hlt' });
    expect(got).toBe(0x12345678n);
  });

  it('a synchronous accessor never exits: MMIO through readU64 names the async form', async () => {
    const { vcpu } = setup(false);
    const v = vcpu(async (g) => {
      g.readU64(MMIO_GVA);
    });
    const e = await v.run();
    expect(e.reason).toBe('internal-error');
    expect((e as { detail: string }).detail).toMatch(/never exits; use g\.readAsync/);
  });

  it('two exits in flight from one vCPU get their own error', async () => {
    const { vcpu } = setup(false);
    const v = vcpu(async (g) => {
      await Promise.all([g.out(0x80, 1, 1), g.out(0x81, 1, 2)]);
    });
    expect(await v.run()).toMatchObject({ reason: 'io', port: 0x80 });
    const e = await v.run();
    expect(e.reason).toBe('internal-error');
    expect((e as { detail: string }).detail).toMatch(
      /started out while out was still waiting for the host \(two exits in flight/,
    );
  });
});

// tools/testing/selftests/kvm/x86/private_mem_kvm_exits_test.c, with the guest's loop on a read
// that may exit (readAsync) and the host's second thread as a host task.
describe('private_mem_kvm_exits_test', () => {
  it('test_private_access_memslot_deleted: a host task deletes the memslot while the guest loops', async () => {
    const { vm, vcpu } = setup(true);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    let reads = 0;
    const v = vcpu(async (g) => {
      for (;;) {
        await g.readAsync(TEST_GVA, 8);
        reads++;
      }
    });
    const run = v.run();
    // The second "thread": waits until the guest is reading, then deletes the slot under it.
    while (reads < 1000) await simYield();
    deleteSlot1(vm);
    expect(await run).toEqual({
      reason: 'memory-fault',
      gpa: TEST_GPA,
      size: 4096n,
      private: true,
      errno: 'EFAULT',
    });
    expect(v.exit).toEqual({
      reason: 'memory-fault',
      gpa: TEST_GPA,
      size: 4096n,
      private: true,
      errno: 'EFAULT',
    });
  });

  it('test_private_access_memslot_not_private: a private access to a slot without guest_memfd', async () => {
    const { vm, vcpu } = setup(false);
    vm.setMemoryAttributes({ address: TEST_GPA, size: 4096n, attributes: P });
    const v = vcpu(async (g) => {
      for (;;) await g.readAsync(TEST_GVA, 8);
    });
    expect(await v.run()).toEqual({
      reason: 'memory-fault',
      gpa: TEST_GPA,
      size: 4096n,
      private: true,
      errno: 'EFAULT',
    });
  });

  it('a shared slot deleted mid-loop turns the next access into an MMIO exit, completed by the host data', async () => {
    const { vm, vcpu } = setup(false);
    let reads = 0;
    let last = 0n;
    const v = vcpu(async (g) => {
      for (;;) {
        last = await g.readAsync(TEST_GVA, 8);
        reads++;
      }
    });
    const run = v.run();
    while (reads < 100) await simYield();
    deleteSlot1(vm);
    const e = await run;
    expect(e).toMatchObject({ reason: 'mmio', gpa: TEST_GPA, isWrite: false, len: 8 });
    (e as Extract<Exit, { reason: 'mmio' }>).data[0] = 7;
    // Kicked before the run: the MMIO read completes at entry, then KVM_RUN fails with EINTR.
    v.kick!();
    await expect(v.run()).rejects.toMatchObject({ code: 'EINTR' });
    expect(await v.run()).toMatchObject({ reason: 'mmio', gpa: TEST_GPA });
    expect(last).toBe(7n);
  });
});

describe('host tasks beside a running guest', () => {
  it('a kicked vCPU: run() fails with EINTR (exit intr), and the next run goes on', async () => {
    const { vcpu } = setup(false);
    let reads = 0;
    const v = vcpu(async (g) => {
      for (;;) {
        await g.readAsync(TEST_GVA, 8);
        if (++reads === 5000) await g.out(0x80, 1, 0);
      }
    });
    const run = v.run();
    while (reads < 100) await simYield();
    v.kick!();
    const err = await run.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KvmError);
    expect((err as KvmError).code).toBe('EINTR');
    expect(v.exit).toEqual({ reason: 'intr' });
    expect(await v.run()).toMatchObject({ reason: 'io', port: 0x80 });
    expect(reads).toBe(5000);
  });

  it('a kick with no run in flight fails the next run with EINTR, once', async () => {
    const { vcpu } = setup(false);
    const v = vcpu(async (g) => {
      await g.out(0x80, 1, 0);
    });
    v.kick!();
    await expect(v.run()).rejects.toMatchObject({ code: 'EINTR' });
    expect(await v.run()).toMatchObject({ reason: 'io' });
  });
});

describe('seeded interleaving', () => {
  /** Two vCPUs append to one trace through async accesses; returns the trace. */
  async function trace(seed: number): Promise<string> {
    setSimSeed(seed);
    const { vcpu } = setup(false, 4);
    const out: string[] = [];
    const prog =
      (tag: string): GuestProgram =>
      async (g) => {
        for (let i = 0; i < 200; i++) {
          await g.writeAsync(TEST_GVA, 8, BigInt(i));
          out.push(tag);
        }
      };
    const a = vcpu(prog('a'));
    const b = vcpu(prog('b'));
    await Promise.all([a.run(), b.run()]);
    return out.join('');
  }

  it('the same seed replays the same interleaving; the order interleaves both vCPUs', async () => {
    const s = 0x5eed;
    const t1 = await trace(s);
    const t2 = await trace(s);
    expect(simSeed()).toBe(s);
    expect(t1).toBe(t2);
    expect(t1).toMatch(/ab|ba/);
    expect(t1.length).toBe(400);
  });
});
