import type { VmType } from '@kvmtest/coco';
import type { Guest, GuestProgram } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import {
  getUcall,
  isUcallExit,
  UCALL,
  UCALL_FAILED_GPA,
  UCALL_OVERFLOW_ASSERT,
  UCALL_PIO_PORT,
  type Ucall,
  UcallError,
  type UcallTransport,
  ucall,
  ucallAssert,
  ucallFmt,
  ucallInit,
  ucallNone,
  ucallPoolOf,
} from '../src/index.js';
import { createFakeVm, type FakeVcpu } from './support/fake-kvm.js';

async function next(v: FakeVcpu): Promise<Ucall | undefined> {
  await v.run();
  return getUcall(v.asVcpu());
}

function errorOf(fn: () => unknown): UcallError {
  try {
    fn();
  } catch (e) {
    if (e instanceof UcallError) return e;
    throw e;
  }
  throw new Error('expected a UcallError');
}

const script: GuestProgram = async (g: Guest) => {
  await ucall(g, UCALL.SYNC, 1n, 0xdead_beef_cafe_f00dn, -1n);
  await ucallFmt(g, UCALL.PRINTF, 'stage %d of %s: %#lx', 2, 'test', 0x1234n);
  await ucallNone(g);
  await ucallAssert(
    g,
    UCALL.ABORT,
    { expression: 'a == b', file: 'x86/smoke.c', line: 42 },
    '%#lx != %#lx (%s != %s)',
    1n,
    2n,
    'a',
    'b',
  );
  await ucall(g, UCALL.DONE);
};

async function collect(type: VmType, transport?: UcallTransport): Promise<Ucall[]> {
  const f = createFakeVm({ type });
  ucallInit(f.target, transport ? { transport } : {});
  const v = f.vcpu(0, script);
  const out: Ucall[] = [];
  for (let i = 0; i < 5; i++) out.push((await next(v))!);
  await v.run();
  expect(v.exit?.reason).toBe('hlt');
  return out;
}

describe('guest → host', () => {
  it('decodes SYNC, PRINTF, NONE, ABORT and DONE', async () => {
    const [sync, printf, none, abort, done] = await collect('default');
    expect(sync!.cmd).toBe(UCALL.SYNC);
    expect(sync!.args).toEqual([1n, 0xdead_beef_cafe_f00dn, 0xffff_ffff_ffff_ffffn, 0n, 0n, 0n, 0n]);
    expect(sync!.message).toBe('');
    expect(sync!.vcpuId).toBe(0);
    expect(printf!.cmd).toBe(UCALL.PRINTF);
    expect(printf!.message).toBe('stage 2 of test: 0x1234');
    expect(none).toMatchObject({ cmd: UCALL.NONE, gpa: 0n, message: '' });
    expect(none!.slot).toBeUndefined();
    expect(abort).toMatchObject({
      cmd: UCALL.ABORT,
      message: '0x1 != 0x2 (a != b)',
      file: 'x86/smoke.c',
      line: 42,
      expression: 'a == b',
    });
    expect(abort!.truncated).toBeUndefined();
    expect(abort!.buffer).toBe('0x1 != 0x2 (a != b)\0x86/smoke.c\0a == b');
    expect(done!.cmd).toBe(UCALL.DONE);
  });

  it('gives the same ucalls over pio, ghcb, tdvmcall and mmio', async () => {
    const strip = (u: Ucall) => ({ ...u, gpa: undefined, slot: undefined });
    const base = (await collect('default')).map(strip);
    for (const [type, transport] of [
      ['sev', undefined],
      ['sw-protected', undefined],
      ['sev-es', undefined],
      ['sev-snp', undefined],
      ['tdx', undefined],
      ['default', 'mmio'],
      ['sev-es', 'mmio'],
    ] as const) {
      expect((await collect(type, transport)).map(strip), `${type} ${transport ?? ''}`).toEqual(base);
    }
  });

  it('carries assert extras in args[4]/args[5] over pio, ghcb, tdvmcall and mmio', async () => {
    const where = { expression: 'e', file: 'f.c', line: 7 };
    const sent: (readonly (bigint | undefined)[] | undefined)[] = [
      [14n, 0x2n],
      [6n, undefined],
      [undefined, 0n],
      [0n, 0n],
      [0xffff_ffff_ffff_ffffn, 1n << 63n],
      undefined,
    ];
    const expected = [
      [14n, 0x2n],
      [6n],
      [undefined, 0n],
      [0n, 0n],
      [0xffff_ffff_ffff_ffffn, 1n << 63n],
      undefined,
    ];
    for (const [type, transport] of [
      ['default', undefined],
      ['sev', undefined],
      ['sw-protected', undefined],
      ['sev-es', undefined],
      ['sev-snp', undefined],
      ['tdx', undefined],
      ['default', 'mmio'],
      ['sev-es', 'mmio'],
    ] as const) {
      const f = createFakeVm({ type });
      ucallInit(f.target, transport ? { transport } : {});
      const v = f.vcpu(0, async (g) => {
        for (const extra of sent) await ucallAssert(g, UCALL.UNHANDLED, { ...where, extra }, 'n=%d', 3);
        await ucall(g, UCALL.DONE);
      });
      const label = `${type} ${transport ?? ''}`;
      for (const want of expected) {
        const uc = (await next(v))!;
        expect(uc, label).toMatchObject({ cmd: UCALL.UNHANDLED, message: 'n=3', ...where });
        expect(uc.extra, label).toEqual(want);
        expect('extra' in uc, label).toBe(want !== undefined);
      }
      expect((await next(v))!.extra, label).toBeUndefined();
      await v.run();
      expect(v.exit?.reason, label).toBe('hlt');
    }
  });

  it('reports a pio exit on port 0x1000 as OUT of 4 bytes, whatever the transport', async () => {
    for (const type of ['default', 'sev-es', 'sev-snp', 'tdx'] as const) {
      const f = createFakeVm({ type });
      const pool = ucallInit(f.target);
      const v = f.vcpu(0, (g) => ucall(g, UCALL.SYNC, 7n));
      await v.run();
      expect(v.exit).toMatchObject({
        reason: 'io',
        direction: 'out',
        port: UCALL_PIO_PORT,
        size: 4,
        count: 1,
      });
      expect(isUcallExit(v.asVcpu())).toBe(true);
      const uc = getUcall(v.asVcpu())!;
      expect(uc.gpa).toBe(pool.slotGpa(0));
      expect(pool.inUse(0)).toBe(true);
      await v.run();
      expect(pool.inUse(0)).toBe(false);
    }
  });

  it('registers the SNP GHCB once per vCPU, and an unregistered GHCB fails KVM_RUN with EINVAL', async () => {
    const f = createFakeVm({ type: 'sev-snp' });
    ucallInit(f.target);
    const v = f.vcpu(0, async (g) => {
      await ucall(g, UCALL.SYNC, 1n);
      await ucall(g, UCALL.SYNC, 2n);
    });
    expect((await next(v))!.args[0]).toBe(1n);
    expect(f.vm.registeredGhcb.get(0)).toBe(ucallPoolOf(f.vm.asVm())!.ghcbPage(0)!.gpa);
    expect((await next(v))!.args[0]).toBe(2n);

    const g2 = createFakeVm({ type: 'sev-snp' });
    ucallInit(g2.target);
    g2.image.writeGlobalU64('ucall_flags', 0n); // a guest that skips registration
    const v2 = g2.vcpu(0, (g) => ucall(g, UCALL.SYNC, 1n));
    await expect(v2.run()).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('fills the GHCB as a #VC handler does for `out dx, eax`', async () => {
    const f = createFakeVm({ type: 'sev-es' });
    const pool = ucallInit(f.target);
    const v = f.vcpu(0, (g) => ucall(g, UCALL.SYNC));
    await v.run();
    const ghcb = f.vm.lastGhcb!;
    expect(ghcb.validFields()).toEqual(['rax', 'swExitCode', 'swExitInfo1', 'swExitInfo2']);
    expect(ghcb.get('swExitCode')).toBe(0x7bn);
    // port 0x1000 in bits 31:16, SZ32 (bit 6), A64 (bit 9), OUT (bit 0 clear)
    expect(ghcb.get('swExitInfo1')).toBe(0x1000_0240n);
    expect(ghcb.get('swExitInfo2')).toBe(0n);
    expect(ghcb.get('rax')).toBe(pool.slotGpa(0));
    expect(ghcb.usage).toBe(0);
    expect(ghcb.protocolVersion).toBe(2);
    expect(v.guest.rdmsr(0xc001_0130)).toBe(pool.ghcbPage(0)!.gpa);
  });

  it('crashes a TD whose TDVMCALL fails, naming the status', async () => {
    const f = createFakeVm({ type: 'tdx' });
    ucallInit(f.target);
    f.vm.tdvmcallStatus = 0x8000_0000_0000_0000n;
    const v = f.vcpu(0, (g) => ucall(g, UCALL.SYNC));
    await v.run();
    expect(v.exit?.reason === 'internal-error' && v.exit.detail).toMatch(
      /TDG\.VP\.VMCALL<Instruction\.IO> for the ucall returned R10 0x8000000000000000 \(INVALID_OPERAND\)/,
    );
  });

  it('uses slot = vCPU id first, so vCPUs do not contend', async () => {
    const f = createFakeVm({ type: 'sev-es' });
    const pool = ucallInit(f.target, { nrVcpus: 4 });
    const vs = [0, 1, 2, 3].map((id) => f.vcpu(id, (g) => ucall(g, UCALL.SYNC, BigInt(id))));
    const ucs = await Promise.all(vs.map((v) => next(v)));
    expect(ucs.map((u) => u!.slot)).toEqual([0, 1, 2, 3]);
    expect(ucs.map((u) => u!.args[0])).toEqual([0n, 1n, 2n, 3n]);
    expect(ucs.map((u) => u!.vcpuId)).toEqual([0, 1, 2, 3]);
    expect([0, 1, 2, 3].every((i) => pool.inUse(i))).toBe(true);
  });

  it('crashes a vCPU that has no GHCB page with a message saying so', async () => {
    const f = createFakeVm({ type: 'sev-es' });
    ucallInit(f.target, { nrVcpus: 1 });
    const v = f.vcpu(1, (g) => ucall(g, UCALL.SYNC));
    await v.run();
    expect(v.exit).toMatchObject({ reason: 'internal-error' });
    expect(v.exit?.reason === 'internal-error' && v.exit.detail).toMatch(/vCPU 1 has no GHCB page.*nrVcpus/);
  });

  it('returns undefined for exits that are not ucalls', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, async (g) => {
      await g.out(0x80, 1, 1);
      await g.mmioWrite(0xfee0_0000n, 4, 1n);
    });
    expect(await next(v)).toBeUndefined();
    expect(isUcallExit(v.asVcpu())).toBe(false);
    expect(await next(v)).toBeUndefined();
    expect(await next(v)).toBeUndefined(); // hlt
    expect(getUcall(createFakeVm().vm.createVcpu(0).asVcpu())).toBeUndefined(); // never run
  });
});

describe('messages', () => {
  it('turns an overlong PRINTF into ABORT, as guest_print_test expects', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, (g) => ucallFmt(g, UCALL.PRINTF, '%s', 'a'.repeat(1033)));
    const uc = (await next(v))!;
    expect(uc.cmd).toBe(UCALL.ABORT);
    expect(uc.expression).toBe(UCALL_OVERFLOW_ASSERT.expression);
    expect(uc.file).toBe(UCALL_OVERFLOW_ASSERT.file);
    expect(uc.message).toMatch(/^formatted message of 1033 bytes does not fit the 1024-byte ucall buffer/);
    expect(uc.truncated).toBe(true);
  });

  it('ends a PRINTF with a huge width as an ABORT that the message does not fit, without building it', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, async (g) => {
      await ucallFmt(g, UCALL.PRINTF, '%999999999d', 1);
      await ucallFmt(g, UCALL.PRINTF, '%.999999999lx', 1n);
    });
    for (let i = 0; i < 2; i++) {
      const uc = (await next(v))!;
      expect(uc.cmd).toBe(UCALL.ABORT);
      expect(uc.expression).toBe(UCALL_OVERFLOW_ASSERT.expression);
      expect(uc.message).toMatch(
        /^formatted message of more than 4096 characters does not fit the 1024-byte/,
      );
    }
  });

  it('keeps a PRINTF of exactly 1023 bytes', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, (g) => ucallFmt(g, UCALL.PRINTF, '%s', 'b'.repeat(1023)));
    const uc = (await next(v))!;
    expect(uc.cmd).toBe(UCALL.PRINTF);
    expect(uc.message).toBe('b'.repeat(1023));
  });

  it('cuts an assert message first, keeping file, line and expression', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const where = { expression: 'x < y', file: 'lib/x86/sev.c', line: 1234 };
    const v = f.vcpu(0, (g) => ucallAssert(g, UCALL.ABORT, where, '%s', 'é'.repeat(600)));
    const uc = (await next(v))!;
    expect(uc).toMatchObject({ cmd: UCALL.ABORT, ...where, truncated: true });
    expect(uc.message).toBe('é'.repeat((1024 - 3 - 13 - 5) >> 1));
  });

  it('does not show an earlier message with a later SYNC in the same slot', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, async (g) => {
      await ucallFmt(g, UCALL.PRINTF, 'hello');
      await ucall(g, UCALL.SYNC);
    });
    expect((await next(v))!.message).toBe('hello');
    const sync = (await next(v))!;
    expect(sync.slot).toBe(0);
    expect(sync.message).toBe('');
    expect(sync.buffer).toBe('');
  });
});

describe('bad ucalls', () => {
  it('refuses a GPA that is not the start of a slot, naming it and the pool range', async () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target);
    const forged = pool.slotGpa(2) + 8n;
    const v = f.vcpu(0, (g) => g.out(UCALL_PIO_PORT, 4, Number(forged)));
    await v.run();
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('FORGED_GPA');
    expect(e.message).toContain(`0x${forged.toString(16)}`);
    expect(e.message).toContain(`0x${pool.gpa.toString(16)}–0x${(pool.endGpa - 1n).toString(16)}`);
  });

  it('refuses the GPA of a slot that is not in use (stale)', async () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target);
    const v = f.vcpu(0, (g) => g.out(UCALL_PIO_PORT, 4, Number(pool.slotGpa(3))));
    await v.run();
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('STALE_GPA');
    expect(e.message).toMatch(/slot 3 .* not in use/);
  });

  it('refuses a slot whose gpa field was overwritten', async () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target);
    const v = f.vcpu(0, async (g) => {
      await ucall(g, UCALL.SYNC);
      await ucall(g, UCALL.SYNC);
    });
    await v.run();
    f.space.memory.writeU64(pool.slotGpa(0) + 1088n, 0x1234n);
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('SLOT_MISMATCH');
    expect(e.message).toMatch(/records GPA 0x1234/);
    // A guest that reads the clobbered field sends a GPA that is no slot at all.
    await v.run();
    expect(errorOf(() => getUcall(v.asVcpu())).code).toBe('FORGED_GPA');
  });

  it('refuses a second getUcall for one exit, and decodes the next exit after run()', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, async (g) => {
      await ucall(g, UCALL.SYNC, 1n);
      await ucall(g, UCALL.SYNC, 2n);
    });
    expect((await next(v))!.args[0]).toBe(1n);
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('ALREADY_DECODED');
    expect(e.message).toMatch(/already called for this exit.*run the vCPU/);
    expect((await next(v))!.args[0]).toBe(2n);
  });

  it('reports slot exhaustion as the failure value, then stops the guest', async () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target, { slots: 2 });
    const v = f.vcpu(0, async (g) => {
      const bits = g.readU64(g.global('ucall_pool'));
      g.testAndSetBit(bits, 0);
      g.testAndSetBit(bits, 1);
      await ucall(g, UCALL.SYNC, 1n);
    });
    await v.run();
    expect(v.exit?.reason === 'io' && Array.from(v.exit.data)).toEqual([0xff, 0xff, 0xff, 0xff]);
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('NO_FREE_SLOT');
    expect(e.message).toMatch(/no free ucall slot/);
    expect(e.details.gpa).toBe(UCALL_FAILED_GPA);
    await v.run();
    expect(v.exit?.reason === 'internal-error' && v.exit.detail).toMatch(/all 2 ucall slots are in use/);
    expect(pool.inUse(0) && pool.inUse(1)).toBe(true);
  });

  it('reports a guest whose image globals were reloaded without ucallReapply', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    f.reloadImage();
    const v = f.vcpu(0, (g) => ucall(g, UCALL.SYNC));
    await v.run();
    // The pool has free slots, so the failure value cannot be a failed allocation of it.
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('FORGED_GPA');
    expect(e.message).toMatch(/reloaded without ucallReapply/);
  });

  it('forged-failure-value: reports a failure value sent while slots are free as forged', async () => {
    const f = createFakeVm();
    ucallInit(f.target, { slots: 2 });
    const v = f.vcpu(0, (g) => g.out(UCALL_PIO_PORT, 4, 0xffff_ffff));
    await v.run();
    const e = errorOf(() => getUcall(v.asVcpu()));
    expect(e.code).toBe('FORGED_GPA');
    expect(e.message).toMatch(/failure value 0xffffffff while 2 of the 2 slots/);
  });

  it('forged-failure-value: reports 64 bits of ones on the MMIO transport as forged', async () => {
    const f = createFakeVm();
    ucallInit(f.target, { transport: 'mmio' });
    const v = f.vcpu(0, async (g) => {
      const gpa = g.readU64(g.global('ucall_mmio_gpa'));
      await g.mmioWrite(gpa, 8, 0xffff_ffff_ffff_ffffn);
    });
    await v.run();
    expect(errorOf(() => getUcall(v.asVcpu())).code).toBe('FORGED_GPA');
  });

  it('pio-gpa-fits-4-bytes: a slot GPA that does not fit the port write stops the guest, never arrives as NONE', async () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target, { slots: 1 });
    const v = f.vcpu(0, async (g) => {
      g.writeU64(pool.slotGva(0) + 1088n, 0xffff_ffff_ffff_ffffn); // the slot's own gpa field
      await ucall(g, UCALL.SYNC, 1n);
    });
    await v.run();
    expect(v.exit?.reason === 'internal-error' && v.exit.detail).toMatch(
      /FORGED_GPA|ucall GPA 0xffffffffffffffff does not fit the 4-byte port write/,
    );
  });

  it('foreign-slot: a vCPU that sends the slot another vCPU holds is refused', async () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target, { slots: 4 });
    const a = f.vcpu(0, (g) => ucall(g, UCALL.SYNC, 7n));
    const b = f.vcpu(1, (g) => g.out(UCALL_PIO_PORT, 4, Number(pool.slotGpa(0))));
    expect((await next(a))!.args[0]).toBe(7n);
    await b.run();
    const e = errorOf(() => getUcall(b.asVcpu()));
    expect(e.code).toBe('FOREIGN_SLOT');
    expect(e.details).toMatchObject({ slot: 0, holder: 0 });
  });

  it("closed-vm-ebadf: getUcall on a closed VM's vCPU fails with EBADF instead of decoding", async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, (g) => ucall(g, UCALL.SYNC, 1n));
    await v.run();
    f.vm.closed = true;
    expect(() => getUcall(v.asVcpu())).toThrow(expect.objectContaining({ name: 'KvmError', code: 'EBADF' }));
  });

  it('refuses an IN or a 1-byte OUT on the ucall port', async () => {
    const f = createFakeVm();
    ucallInit(f.target);
    const v = f.vcpu(0, (g) => g.out(UCALL_PIO_PORT, 1, 1));
    await v.run();
    expect(errorOf(() => getUcall(v.asVcpu())).code).toBe('BAD_EXIT');
  });

  it('refuses a ucall from a VM without a pool', async () => {
    const f = createFakeVm();
    const v = f.vcpu(0, (g) => g.out(UCALL_PIO_PORT, 4, 0x5000));
    await v.run();
    expect(errorOf(() => getUcall(v.asVcpu())).code).toBe('NO_POOL');
  });
});

describe('several VMs', () => {
  it('keeps two pools apart even at the same GPAs', async () => {
    const a = createFakeVm();
    const b = createFakeVm({ type: 'sev-es' });
    const pa = ucallInit(a.target);
    const pb = ucallInit(b.target);
    expect(pa.gpa).toBe(pb.gpa);
    expect(ucallPoolOf(a.vm.asVm())).not.toBe(ucallPoolOf(b.vm.asVm()));
    const va = a.vcpu(0, (g) => ucallFmt(g, UCALL.PRINTF, 'from A'));
    const vb = b.vcpu(0, (g) => ucallFmt(g, UCALL.PRINTF, 'from B'));
    await Promise.all([va.run(), vb.run()]);
    expect(getUcall(vb.asVcpu())!.message).toBe('from B');
    expect(getUcall(va.asVcpu())!.message).toBe('from A');
  });

  it('refuses, in VM B, the GPA of a slot VM A uses', async () => {
    const a = createFakeVm();
    const b = createFakeVm({ memSize: 16n << 20n });
    const pa = ucallInit(a.target);
    b.space.vaddrAlloc(0x10_0000n, { visibility: 'shared' }); // move B's pool elsewhere
    const pb = ucallInit(b.target, { slots: 8 });
    expect(pb.gpa).not.toBe(pa.gpa);
    const va = a.vcpu(0, (g) => ucall(g, UCALL.SYNC));
    await va.run();
    const gpa = getUcall(va.asVcpu())!.gpa;
    const vb = b.vcpu(0, (g) => g.out(UCALL_PIO_PORT, 4, Number(gpa)));
    await vb.run();
    expect(errorOf(() => getUcall(vb.asVcpu())).code).toBe('FORGED_GPA');
  });
});
