import { PTE } from '@kvmtest/guest-memory';
import { CAP, GuestException, INTERNAL_ERROR, KVM_HC, MEM_FLAG, VECTOR } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, setSimSeed } from '../src/index.js';
import { DATA_GVA, guestVm } from './helpers.js';

const KVM_ENOSYS = (1n << 64n) - 1000n;

describe('KVM_RUN: exits and resumption', () => {
  it('completes an IN with the data the host put into the exit', async () => {
    const { vcpu } = guestVm(createSimKvm());
    let got = 0;
    const v = vcpu(async (g) => {
      got = await g.in(0x60, 4);
    });
    const e = await v.run();
    if (e.reason !== 'io') throw new Error(e.reason);
    e.data.set([1, 2, 3, 4]);
    expect((await v.run()).reason).toBe('hlt');
    expect(got).toBe(0x04030201);
  });
  // arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl_run(): complete_userspace_io, then `!vcpu->wants_to_run` -> EINTR.
  it('immediate_exit completes the pending IN, fails KVM_RUN with EINTR and leaves the exit untouched', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const seen: number[] = [];
    const v = vcpu(async (g) => {
      seen.push(await g.in(0x60, 1));
      await g.out(0x61, 1, 0);
    });
    const e = await v.run();
    if (e.reason === 'io') e.data[0] = 7;
    await expect(v.run({ immediateExit: true })).rejects.toMatchObject({ code: 'EINTR' });
    expect(v.exit).toBe(e);
    expect(seen).toEqual([]);
    expect(await v.run()).toMatchObject({ reason: 'io', port: 0x61 });
    expect(seen).toEqual([7]);
  });
  it('exits to MMIO for an unbacked GPA and reads back the host data; backed GPAs need no exit', async () => {
    const { vcpu, mem } = guestVm(createSimKvm());
    new DataView(mem.buffer).setUint32(0x3000, 0xabcd, true);
    const out: bigint[] = [];
    const v = vcpu(async (g) => {
      await g.mmioWrite(0xfee00000n, 4, 0x11n);
      out.push(await g.mmioRead(0xfee00010n, 8));
      out.push(await g.mmioRead(0x3000n, 4));
    });
    expect(await v.run()).toMatchObject({ reason: 'mmio', gpa: 0xfee00000n, isWrite: true, len: 4 });
    const r = await v.run();
    expect(r).toMatchObject({ reason: 'mmio', gpa: 0xfee00010n, isWrite: false, len: 8 });
    if (r.reason === 'mmio') r.data.set([0xef, 0xbe]);
    expect((await v.run()).reason).toBe('hlt');
    expect(out).toEqual([0xbeefn, 0xabcdn]);
  });
  it('treats a write to a READONLY memslot through mmioWrite as an MMIO exit', async () => {
    const kvm = createSimKvm();
    const { vm, vcpu } = guestVm(kvm);
    vm.setUserMemoryRegion({
      slot: 1,
      flags: MEM_FLAG.READONLY,
      guestPhysAddr: 0x1000_0000n,
      memorySize: 4096n,
      userspace: new Uint8Array(4096),
    });
    const v = vcpu(async (g) => {
      await g.mmioWrite(0x1000_0000n, 1, 1n);
    });
    expect(await v.run()).toMatchObject({ reason: 'mmio', isWrite: true, gpa: 0x1000_0000n });
  });
  it('the program returning halts the vCPU: hlt now and on every later run', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const v = vcpu(async () => {});
    expect(await v.run()).toEqual({ reason: 'hlt' });
    expect(await v.run()).toEqual({ reason: 'hlt' });
    expect(v.exit).toEqual({ reason: 'hlt' });
  });
  it('reports a vCPU without a program as internal-error instead of running garbage', async () => {
    const v = createSimKvm().createVm().createVcpu(0);
    expect(await v.run()).toMatchObject({ reason: 'internal-error', detail: /setEntry/ });
  });
});

describe('KVM_RUN: hypercalls (x86.c kvm_emulate_hypercall)', () => {
  it('returns -KVM_ENOSYS for MAP_GPA_RANGE unless KVM_CAP_EXIT_HYPERCALL enabled it', async () => {
    const { vcpu } = guestVm(createSimKvm());
    let rax = 0n;
    const v = vcpu(async (g) => {
      rax = await g.hypercall(BigInt(KVM_HC.MAP_GPA_RANGE), [0x1000n, 1n, 0n]);
    });
    expect((await v.run()).reason).toBe('hlt');
    expect(rax).toBe(KVM_ENOSYS);
  });
  it('exits with KVM_EXIT_HYPERCALL once enabled and returns the ret the host set', async () => {
    const { vm, vcpu } = guestVm(createSimKvm());
    vm.enableCap(CAP.EXIT_HYPERCALL, [1 << 12]);
    const rets: bigint[] = [];
    const v = vcpu(async (g) => {
      rets.push(await g.hypercall(12n, [0x2000n, 3n, 16n]));
      rets.push(await g.hypercall(12n, [0x2001n, 3n, 16n]));
      rets.push(await g.hypercall(12n, [0x2000n, 0n, 16n]));
      rets.push(await g.hypercall(99n));
      rets.push(await g.hypercall(BigInt(KVM_HC.VAPIC_POLL_IRQ)));
    });
    const e = await v.run();
    expect(e).toMatchObject({ reason: 'hypercall', nr: 12n, args: [0x2000n, 3n, 16n], longmode: true });
    if (e.reason === 'hypercall') e.ret = 5n;
    expect((await v.run()).reason).toBe('hlt');
    expect(rets).toEqual([5n, (1n << 64n) - 22n, (1n << 64n) - 22n, KVM_ENOSYS, 0n]);
  });
});

describe('KVM_RUN: guest failures end in reports, never a host crash', () => {
  it('turns a JavaScript error into internal-error GUEST_CRASH with the message and the stack', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const v = vcpu(async (g) => {
      await g.out(0x80, 1, 0);
      throw new RangeError('boom in the guest');
    });
    await v.run();
    const e = await v.run();
    expect(e).toMatchObject({ reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH });
    if (e.reason === 'internal-error') {
      expect(e.detail).toMatch(/RangeError: boom in the guest/);
      expect(e.detail).toMatch(/run\.test\.ts/);
    }
    expect(await v.run()).toEqual(e);
  });
  it('turns a program that throws synchronously (not async) into a guest crash too', async () => {
    const v = createSimKvm().createVm().createVcpu(0);
    v.setEntry((() => {
      throw new Error('sync');
    }) as never);
    expect(await v.run()).toMatchObject({ reason: 'internal-error', detail: /Error: sync/ });
  });
  it('turns an unhandled #PF into a shutdown exit describing the fault', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const v = vcpu(async (g) => {
      g.readU64(0xdead_0000n);
    });
    const e = await v.run();
    expect(e.reason).toBe('shutdown');
    if (e.reason === 'shutdown')
      expect(e.detail).toMatch(/#PF error code 0x0 at 0xdead0000 in readU64\(0xdead0000\)/);
  });
  // svm.c: shutdown_interception() / vmx.c: handle_triple_fault(): an exception the CPU cannot deliver.
  it('triple fault: a fault with no exception entry ends the run with shutdown; the program cannot catch it and go on', async () => {
    const { vcpu } = guestVm(createSimKvm());
    let wentOn = false;
    const v = vcpu(async (g) => {
      try {
        g.ud2();
      } catch {
        wentOn = true;
        await g.out(0x80, 1, 0);
      }
    });
    expect(await v.run()).toMatchObject({ reason: 'shutdown', detail: /triple fault: #UD/ });
    expect(wentOn).toBe(true);
    expect((await v.run()).reason).toBe('shutdown');
  });
  it('delivers #PF with the architectural error code and CR2 to the handler; skip reads 0', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const frames: unknown[] = [];
    let val = 1n;
    const v = vcpu(async (g) => {
      g.setExceptionHandler((f) => {
        frames.push({ vector: f.vector, errorCode: f.errorCode, cr2: f.cr2 });
        return 'skip';
      });
      val = g.readU64(0x7000_0000n);
      g.writeU32(0x7000_0008n, 1);
    });
    expect((await v.run()).reason).toBe('hlt');
    expect(val).toBe(0n);
    expect(frames).toEqual([
      { vector: VECTOR.PF, errorCode: 0, cr2: 0x7000_0000n },
      { vector: VECTOR.PF, errorCode: 2, cr2: 0x7000_0008n },
    ]);
    expect(v.getSregs().cr2).toBe(0x7000_0008n);
  });
  it('re-executes the access after a handler that fixed the mapping answers retry', async () => {
    const { vcpu, map, mem } = guestVm(createSimKvm());
    new DataView(mem.buffer).setBigUint64(0x30_0000, 42n, true);
    let val = 0n;
    const v = vcpu(async (g) => {
      g.setExceptionHandler(() => {
        map(0x9000_0000n, 0x30_0000n);
        return 'retry';
      });
      val = g.readU64(0x9000_0000n);
    });
    expect((await v.run()).reason).toBe('hlt');
    expect(val).toBe(42n);
  });
  it('raises #PF with W|P for a write through a read-only PTE, #GP for a non-canonical GVA and #UD for ud2', async () => {
    const { vcpu, pt } = guestVm(createSimKvm());
    pt.map(0x5000_0000n, 0x30_0000n, 4096n, { writable: false });
    const seen: [number, number | undefined][] = [];
    const v = vcpu(async (g) => {
      g.setExceptionHandler((f) => {
        seen.push([f.vector, f.errorCode]);
        return 'skip';
      });
      g.writeU8(0x5000_0000n, 1);
      g.readU8(0x8000_0000_0000n);
      g.ud2();
      g.rdmsr(0x12345);
    });
    expect((await v.run()).reason).toBe('hlt');
    expect(seen).toEqual([
      [VECTOR.PF, 3],
      [VECTOR.GP, 0],
      [VECTOR.UD, undefined],
      [VECTOR.GP, 0],
    ]);
  });
  it('makes a throwing handler raise GuestException out of the operation', async () => {
    const { vcpu } = guestVm(createSimKvm());
    let caught: unknown;
    const v = vcpu(async (g) => {
      g.setExceptionHandler(() => {
        throw new Error('handler bug');
      });
      try {
        g.readU64(0x7000_0000n);
      } catch (e) {
        caught = e;
      }
    });
    await v.run();
    expect(caught).toBeInstanceOf(GuestException);
    expect(String(caught)).toMatch(/handler bug/);
  });
  it('vmgexit, tdcall and pvalidate raise #UD on a VM that has none of them', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const vectors: number[] = [];
    const v = vcpu(async (g) => {
      g.setExceptionHandler((f) => {
        vectors.push(f.vector);
        return 'skip';
      });
      await g.vmgexit();
      await g.tdcall(0n, {});
      g.pvalidate(DATA_GVA, true);
    });
    expect((await v.run()).reason).toBe('hlt');
    expect(vectors).toEqual([VECTOR.UD, VECTOR.UD, VECTOR.UD]);
  });
  it('tells a guest that reaches MMIO through a synchronous accessor to use mmioRead/mmioWrite', async () => {
    const { vcpu, pt } = guestVm(createSimKvm());
    pt.map(0x6000_0000n, 0xfee0_0000n);
    const v = vcpu(async (g) => {
      g.readU32(0x6000_0000n);
    });
    const e = await v.run();
    expect(e).toMatchObject({ reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH });
    if (e.reason === 'internal-error') expect(e.detail).toMatch(/no memslot backs.*mmioRead/);
  });
  it('ends a run whose guest awaits a timer with internal-error naming the problem', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const v = vcpu(async () => {
      await new Promise((r) => setTimeout(r, 5));
    });
    const e = await v.run();
    expect(e).toMatchObject({ reason: 'internal-error' });
    if (e.reason === 'internal-error') expect(e.detail).toMatch(/not a guest exit/);
    await new Promise((r) => setTimeout(r, 10));
    expect((await v.run()).reason).toBe('internal-error');
  });
});

describe('KVM_RUN: the guest budget', () => {
  it('ends a run with intr/budgetExhausted in an async loop and resumes on the next run', async () => {
    const { vcpu } = guestVm(createSimKvm({ runBudget: 100 }));
    let n = 0;
    const v = vcpu(async (g) => {
      for (; n < 150; n++) await g.hypercall(1n);
      await g.out(0x80, 1, 1);
    });
    expect(await v.run()).toEqual({ reason: 'intr', budgetExhausted: true });
    expect(n).toBe(100);
    expect(await v.run()).toMatchObject({ reason: 'io' });
  });
  it('unwinds a guest that never exits; later runs explain it cannot resume', async () => {
    const { vcpu } = guestVm(createSimKvm({ runBudget: 1000 }));
    const v = vcpu(async (g) => {
      for (;;) g.readU64(DATA_GVA);
    });
    expect(await v.run()).toEqual({ reason: 'intr', budgetExhausted: true });
    const e = await v.run();
    expect(e.reason).toBe('internal-error');
    if (e.reason === 'internal-error') expect(e.detail).toMatch(/cannot resume.*budget.*readU64/);
  });
});

describe('the guest CPU', () => {
  it('reads and writes every width, across page boundaries, and bytes', async () => {
    const { vcpu, mem } = guestVm(createSimKvm());
    const got: unknown[] = [];
    const v = vcpu(async (g) => {
      g.writeU64(DATA_GVA + 0xffcn, 0x0807060504030201n);
      got.push(g.readU64(DATA_GVA + 0xffcn), g.readU32(DATA_GVA + 0xffen), g.readU16(DATA_GVA + 0xfffn));
      g.writeBytes(DATA_GVA + 0x10n, new Uint8Array([9, 8, 7]));
      got.push([...g.readBytes(DATA_GVA + 0x10n, 3)]);
      g.writeU16(DATA_GVA + 0x20n, 0xbeef);
      got.push(g.readU8(DATA_GVA + 0x21n));
    });
    await v.run();
    expect(got).toEqual([0x0807060504030201n, 0x06050403, 0x0504, [9, 8, 7], 0xbe]);
    expect(mem[0x200ffc]).toBe(1);
    expect(mem[0x201003]).toBe(8);
  });
  it('does LOCK BTS / BTR on u64 words of a bit array', async () => {
    const { vcpu, mem } = guestVm(createSimKvm());
    const r: boolean[] = [];
    const v = vcpu(async (g) => {
      r.push(g.testAndSetBit(DATA_GVA, 70), g.testAndSetBit(DATA_GVA, 70));
      g.clearBit(DATA_GVA, 70);
      r.push(g.testAndSetBit(DATA_GVA, 3));
    });
    await v.run();
    expect(r).toEqual([false, true, false]);
    expect(mem[0x200008]).toBe(0);
    expect(mem[0x200000]).toBe(8);
  });
  it('sees a page-table change the guest itself wrote (the TLB drops walked page-table pages)', async () => {
    const { vcpu, mem, pt } = guestVm(createSimKvm());
    const dv = new DataView(mem.buffer);
    dv.setBigUint64(0x30_0000, 111n, true);
    dv.setBigUint64(0x30_1000, 222n, true);
    pt.map(0x7000_0000n, 0x30_0000n);
    // Map the leaf page table itself so the guest can edit its PTE.
    const w = pt.walk(0x7000_0000n, { withPtes: true });
    if (!w.ok) throw new Error('walk');
    const leafTable = w.ptes[2]! & 0xf_ffff_ffff_f000n;
    pt.map(0x7100_0000n, leafTable);
    const pteGva = 0x7100_0000n + ((0x7000_0000n >> 12n) & 511n) * 8n;
    const r: bigint[] = [];
    const v = vcpu(async (g) => {
      r.push(g.readU64(0x7000_0000n));
      g.writeU64(pteGva, 0x30_1000n | PTE.PRESENT | PTE.WRITABLE);
      r.push(g.readU64(0x7000_0000n));
    });
    expect(await v.run()).toEqual({ reason: 'hlt' });
    expect(r).toEqual([111n, 222n]);
  });
  it('sees host page-table edits made between runs (flush at run entry)', async () => {
    const { vcpu, mem, pt } = guestVm(createSimKvm());
    new DataView(mem.buffer).setBigUint64(0x30_0000, 5n, true);
    const r: bigint[] = [];
    const v = vcpu(async (g) => {
      g.setExceptionHandler(() => 'skip');
      r.push(g.readU64(0x7000_0000n));
      await g.out(0x80, 1, 0);
      r.push(g.readU64(0x7000_0000n));
    });
    await v.run();
    pt.map(0x7000_0000n, 0x30_0000n);
    await v.run();
    expect(r).toEqual([0n, 5n]);
  });
  it('uses identity addressing while CR0.PG is clear', async () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    const mem = new Uint8Array(0x10000);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: mem });
    const v = vm.createVcpu(0);
    v.setEntry(async (g) => g.writeU32(0x1234n, 0xcafe));
    await v.run();
    expect(new DataView(mem.buffer).getUint32(0x1234, true)).toBe(0xcafe);
  });
  it('answers cpuid from the vCPU table, rdmsr/wrmsr from the MSR file, and global() from the symbols', async () => {
    const { vm, vcpu } = guestVm(createSimKvm());
    vm.setGuestSymbols(new Map([['ucall_pool', 0x1234n]]));
    const r: unknown[] = [];
    const v = vcpu(async (g) => {
      r.push(g.cpuid(0x80000008).eax & 0xff, g.cpuid(0x4fff_0000).eax);
      g.wrmsr(0xc0000102, 77n);
      r.push(g.rdmsr(0xc0000102), g.global('ucall_pool'));
      g.global('missing');
    });
    const e = await v.run();
    expect(r).toEqual([52, 0, 77n, 0x1234n]);
    expect(e).toMatchObject({ reason: 'internal-error', detail: /global "missing"/ });
  });
  it('interleaves several vCPUs at operations, in the order the seed gives, deterministically', async () => {
    const trace: string[] = [];
    const run = async () => {
      setSimSeed(0x1234);
      const { vm, vcpu } = guestVm(createSimKvm());
      const vs = [0, 1, 2].map((id) =>
        vcpu(async (g) => {
          for (let i = 0; i < 3; i++) {
            trace.push(`${id}:${i}`);
            await g.out(0x80, 1, i);
          }
        }),
      );
      for (let round = 0; round < 4; round++) await Promise.all(vs.map((v) => v.run()));
      vm.close();
      return trace.splice(0);
    };
    const a = await run();
    expect([...a].sort()).toEqual(['0:0', '0:1', '0:2', '1:0', '1:1', '1:2', '2:0', '2:1', '2:2']);
    for (const id of [0, 1, 2])
      expect(a.filter((t) => t.startsWith(`${id}:`))).toEqual([0, 1, 2].map((i) => `${id}:${i}`));
    expect(await run()).toEqual(a);
  });
  it('serialises a second concurrent run of one vCPU behind the first (vcpu->mutex)', async () => {
    const { vcpu } = guestVm(createSimKvm());
    const v = vcpu(async (g) => {
      await g.out(0x81, 1, 1);
      await g.out(0x82, 1, 2);
    });
    const [a, b] = await Promise.all([v.run(), v.run()]);
    expect([a, b].map((e) => (e.reason === 'io' ? e.port : -1))).toEqual([0x81, 0x82]);
  });
});
