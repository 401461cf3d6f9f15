import { readFileSync } from 'node:fs';
import {
  CR,
  type Exit,
  type SlotSend,
  type ExceptionFrame,
  type Guest,
  GuestException,
  type GuestProgram,
  VECTOR,
  XFEATURE,
  XSAVE_LAYOUT,
} from '@kvmtest/kvm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LinuxKvm, openLinuxKvm } from '../kvm.js';
import { kvmAvailability } from '../probe.js';
import type { LinuxVcpu } from '../vcpu.js';
import { AGENT_CODE } from './agent-bytes.js';
import { assembleAgent, haveBinutils } from './assemble.js';
import { agentRunnerOf, registerGuestAgent } from './index.js';
import { type XsaveSupport, xsaveSupport } from './xprobe.js';
import { AGENT_GVA, AGENT_PORT, CODE_HEADER, CODE_MAGIC, VECTORS_WITH_ERROR_CODE } from './layout.js';

describe('the agent code', () => {
  it.skipIf(!haveBinutils())('is what GNU as makes of agent.S', () => {
    expect(Buffer.from(assembleAgent()).toString('hex')).toBe(Buffer.from(AGENT_CODE).toString('hex'));
  });

  it('has a header naming the entry point and 32 IDT stubs that push their vector', () => {
    const v = new DataView(AGENT_CODE.buffer, AGENT_CODE.byteOffset, AGENT_CODE.byteLength);
    expect(v.getUint32(CODE_HEADER.magic, true)).toBe(CODE_MAGIC);
    const stubs = v.getUint32(CODE_HEADER.stubs, true);
    const stride = v.getUint32(CODE_HEADER.stride, true);
    expect(stride).toBe(16);
    for (let n = 0; n < 32; n++) {
      const at = stubs + n * stride;
      // push imm8: 6a ib. Vectors without an error code push a dummy 0 first.
      const expected = VECTORS_WITH_ERROR_CODE.has(n) ? [0x6a, n] : [0x6a, 0, 0x6a, n];
      expect([...AGENT_CODE.subarray(at, at + expected.length)]).toEqual(expected);
    }
  });
});

const availability = kvmAvailability();
/** The probe's answer for this host (a Kvm opened and closed for it). */
function hostXsaveSupport(): XsaveSupport {
  const k = openLinuxKvm();
  try {
    return xsaveSupport(k);
  } finally {
    k.close();
  }
}
/** The host's /dev/kvm is PVM when the CPU has neither VMX nor SVM. */
const pvm = !/^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));

describe.skipIf(!availability.ok)('guest programs on /dev/kvm through the agent', () => {
  let kvm: LinuxKvm;
  beforeAll(() => {
    registerGuestAgent();
    kvm = openLinuxKvm({ runTimeoutMs: 2000 });
  });
  afterAll(() => kvm?.close());

  /**
   * A VM whose 64 KiB at GPA 0 hold 4-level page tables (PML4 0x1000, PDPT 0x2000, PD 0x3000):
   * PD[0] maps GPA 0–2 MiB with one 2 MiB page, PD[1] points at the PT at 0x4000 (no entries yet).
   */
  function vmWith(program: GuestProgram, timeoutMs = 2000): { vcpu: LinuxVcpu; mem: DataView } {
    const vm = kvm.createVm();
    vm.runTimeoutMs = timeoutMs;
    const bytes = kvm.allocateUserMemory(0x10000).bytes;
    const mem = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    mem.setBigUint64(0x1000, 0x2003n, true);
    mem.setBigUint64(0x2000, 0x3003n, true);
    mem.setBigUint64(0x3000, 0x83n, true);
    mem.setBigUint64(0x3008, 0x4003n, true);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: bytes });
    const vcpu = vm.createVcpu(0);
    vcpu.setCpuid(kvm.getSupportedCpuid());
    const s = vcpu.getSregs();
    s.cr0 |= 0x8000_0011n;
    s.cr4 |= 0x20n;
    s.efer |= 0x500n;
    s.cr3 = 0x1000n;
    vcpu.setSregs(s);
    vcpu.setEntry(program);
    return { vcpu, mem };
  }

  const io = (e: Exit) => {
    if (e.reason !== 'io')
      throw new Error(`expected an io exit, got ${e.reason === 'internal-error' ? e.detail : e.reason}`);
    return e;
  };

  it('reads and writes memory through the guest page tables, with locked bit operations and byte copies', async () => {
    const seen: unknown[] = [];
    const { vcpu, mem } = vmWith(async (g) => {
      g.writeU64(0x5000n, 0x1122_3344_5566_7788n);
      g.writeU8(0x5008n, 0xab);
      g.writeU16(0x500an, 0xbeef);
      g.writeU32(0x500cn, 0xdead_beef);
      seen.push(g.readU64(0x5000n), g.readU8(0x5008n), g.readU16(0x500an), g.readU32(0x500cn));
      seen.push(g.testAndSetBit(0x5100n, 65), g.testAndSetBit(0x5100n, 65), g.readU64(0x5108n));
      g.clearBit(0x5100n, 65);
      seen.push(g.readU64(0x5108n));
      const data = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
      g.writeBytes(0x5f00n, data); // crosses into the next page
      seen.push(g.readBytes(0x5f00n, 300));
      await g.out(0x1000, 1, 0);
    });
    expect(io(await vcpu.run()).port).toBe(0x1000);
    expect(seen.slice(0, 8)).toEqual([
      0x1122_3344_5566_7788n,
      0xab,
      0xbeef,
      0xdead_beef,
      false,
      true,
      2n,
      0n,
    ]);
    expect([...(seen[8] as Uint8Array)]).toEqual(Array.from({ length: 300 }, (_, i) => i & 0xff));
    // The guest's writes are in the VMM's memory, where its page tables put them.
    expect(mem.getBigUint64(0x5000, true)).toBe(0x1122_3344_5566_7788n);
    expect(mem.getUint8(0x6000 + 43)).toBe(299 & 0xff);
  });

  it('copies every length exactly, without touching the bytes around it', async () => {
    const lengths = [...Array.from({ length: 20 }, (_, i) => i + 1), 31, 32, 33, 63, 64, 65, 1089, 4096];
    const back: Uint8Array[] = [];
    const { vcpu, mem } = vmWith(async (g) => {
      for (const [k, n] of lengths.entries()) {
        const at = 0x8000n + BigInt(k % 8); // an unaligned start for most lengths
        const data = Uint8Array.from({ length: n }, (_, i) => (i * 7 + k + 1) & 0xff || 1);
        g.writeBytes(at - 8n, new Uint8Array(n + 16)); // clear the range and its neighbours
        g.writeBytes(at, data);
        back.push(g.readBytes(at - 1n, n + 2));
      }
      await g.out(0x1000, 1, 0);
    }, 20_000);
    io(await vcpu.run());
    for (const [k, n] of lengths.entries()) {
      const want = [0, ...Array.from({ length: n }, (_, i) => (i * 7 + k + 1) & 0xff || 1), 0];
      expect([n, ...back[k]!]).toEqual([n, ...want]);
    }
    expect(mem.getUint8(0x8000 + ((lengths.length - 1) % 8) + 4095)).not.toBe(0);
  });

  it('surfaces port I/O, HLT and MMIO exits and continues the program at the next run', async () => {
    let got = 0;
    let mmio = 0n;
    let ram = 0n;
    const { vcpu } = vmWith(async (g) => {
      await g.out(0x1000, 4, 0x1234_5678);
      got = await g.in(0x1001, 2);
      await g.hlt();
      await g.mmioWrite(0xc000_0000n, 4, 0xcafen);
      mmio = await g.mmioRead(0xc000_0008n, 8);
      // A GPA that memory backs: no exit, the access reads RAM (the agent signals it done itself).
      g.writeU64(0x5000n, 0x600d_f00dn);
      ram = await g.mmioRead(0x5000n, 4);
      await g.out(0x1002, 2, got);
    });
    const out = io(await vcpu.run());
    expect([out.direction, out.port, out.size, [...out.data]]).toEqual([
      'out',
      0x1000,
      4,
      [0x78, 0x56, 0x34, 0x12],
    ]);
    const inn = io(await vcpu.run());
    expect([inn.direction, inn.port, inn.size]).toEqual(['in', 0x1001, 2]);
    inn.data.set([0xcd, 0xab]);
    expect((await vcpu.run()).reason).toBe('hlt');
    const w = await vcpu.run();
    expect(w).toMatchObject({ reason: 'mmio', gpa: 0xc000_0000n, isWrite: true, len: 4 });
    const r = await vcpu.run();
    expect(r).toMatchObject({ reason: 'mmio', gpa: 0xc000_0008n, isWrite: false, len: 8 });
    if (r.reason === 'mmio') r.data.set([1, 2, 3, 4, 5, 6, 7, 8]);
    const last = io(await vcpu.run());
    expect(got).toBe(0xabcd);
    expect(mmio).toBe(0x0807_0605_0403_0201n);
    expect(ram).toBe(0x600d_f00dn);
    expect([...last.data]).toEqual([0xcd, 0xab]);
    // A program that returned halts the vCPU, on every later run.
    expect((await vcpu.run()).reason).toBe('hlt');
    expect((await vcpu.run()).reason).toBe('hlt');
  });

  it('executes CPUID, RDMSR and MOV from CR as real instructions', async () => {
    const seen: bigint[] = [];
    let vendor = '';
    const { vcpu } = vmWith(async (g) => {
      const c = g.cpuid(0);
      vendor = String.fromCharCode(
        ...[c.ebx, c.edx, c.ecx].flatMap((r) => [r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff, r >>> 24]),
      );
      seen.push(g.rdmsr(0xc000_0080), g.readCr!(0), g.readCr!(3), g.readCr!(4));
      g.wrmsr(0xc000_0102, 0x1234n); // KERNEL_GS_BASE
      seen.push(g.rdmsr(0xc000_0102));
      await g.out(0x1000, 1, 0);
    });
    io(await vcpu.run());
    const leaf0 = kvm.getSupportedCpuid().find((e) => e.function === 0)!;
    const want = String.fromCharCode(
      ...[leaf0.ebx, leaf0.edx, leaf0.ecx].flatMap((r) => [
        r & 0xff,
        (r >> 8) & 0xff,
        (r >> 16) & 0xff,
        r >>> 24,
      ]),
    );
    expect(vendor).toBe(want);
    expect(seen[0]! & 0x500n).toBe(0x500n); // EFER.LME | LMA
    expect(seen[1]! & 0x8000_0001n).toBe(0x8000_0001n); // CR0.PG | PE
    expect(seen[2]).toBe(0x1000n);
    expect(seen[3]! & 0x20n).toBe(0x20n);
    expect(seen[4]).toBe(0x1234n);
  });

  /** Sets the guest's CR4.OSXSAVE (what testkit's vCPUs have) and XCR0 = x87 | SSE | AVX. */
  function withOsxsave(vcpu: LinuxVcpu): void {
    vcpu.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE | XFEATURE.YMM }]);
    const s = vcpu.getSregs();
    s.cr4 |= CR.CR4_OSXSAVE;
    vcpu.setSregs(s);
  }

  it('executes XSETBV: KVM sets XCR0 or raises #GP(0), and #UD while CR4.OSXSAVE is clear', async () => {
    const frames: [number, number | undefined, string][] = [];
    const handler = (f: ExceptionFrame) => {
      frames.push([f.vector, f.errorCode, f.operation]);
      return 'skip' as const;
    };
    const { vcpu } = vmWith(async (g) => {
      g.setExceptionHandler(handler);
      g.xsetbv!(0, XFEATURE.FP | XFEATURE.SSE);
      g.xsetbv!(0, XFEATURE.SSE); // x87 clear: #GP(0)
      g.xsetbv!(1, 1n); // no XCR1 to write: #GP(0)
      await g.out(0x1000, 1, 0);
    });
    withOsxsave(vcpu);
    io(await vcpu.run());
    expect(vcpu.getXcrs()).toEqual([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE }]);
    const { vcpu: off } = vmWith(async (g) => {
      g.setExceptionHandler(handler);
      g.xsetbv!(0, XFEATURE.FP | XFEATURE.SSE);
      await g.out(0x1000, 1, 0);
    });
    off.setXcrs([{ xcr: 0, value: 7n }]);
    io(await off.run());
    expect(off.getXcrs()).toEqual([{ xcr: 0, value: 7n }]);
    expect(frames).toEqual([
      [VECTOR.GP, 0, 'xsetbv(0, 0x2)'],
      [VECTOR.GP, 0, 'xsetbv(1, 0x1)'],
      [VECTOR.UD, undefined, 'xsetbv(0, 0x3)'],
    ]);
  });

  it('offers XGETBV, XSAVE and XRSTOR exactly where this host runs them (not on PVM)', async () => {
    const support = xsaveSupport(kvm);
    let offered: boolean[] = [];
    const { vcpu } = vmWith(async (g) => {
      offered = [g.xgetbv !== undefined, g.xsave !== undefined, g.xrstor !== undefined];
      await g.out(0x1000, 1, 0);
    });
    io(await vcpu.run());
    expect(offered).toEqual([support.xgetbv, support.xsave, support.xrstor]);
    if (pvm) {
      // PVM offers guests no XSAVE in CPUID, and its emulator has no XGETBV (0F 01 D0) anyway.
      expect(support).toMatchObject({ xgetbv: false, xsave: false, xrstor: false });
      expect(support.reason).toMatch(/does not offer XSAVE|internal-error/);
    }
  });

  it.skipIf(!availability.ok || !hostXsaveSupport().xrstor)(
    'executes XGETBV, XSAVE and XRSTOR on the state KVM_SET_XSAVE / KVM_SET_XCRS load',
    async () => {
      const seen: bigint[] = [];
      const frames: [number, number | undefined, string][] = [];
      const xmm = (n: number, seed: number) =>
        Array.from({ length: 16 }, (_, i) => (seed + n * 16 + i) & 0xff);
      const { vcpu, mem } = vmWith(async (g) => {
        g.setExceptionHandler((f) => {
          frames.push([f.vector, f.errorCode, f.operation]);
          return 'skip';
        });
        seen.push(g.xgetbv!(0));
        g.xsetbv!(0, XFEATURE.FP | XFEATURE.SSE);
        seen.push(g.xgetbv!(0));
        g.xsetbv!(0, XFEATURE.FP | XFEATURE.SSE | XFEATURE.YMM);
        g.xsave!(0x6000n, XFEATURE.FP | XFEATURE.SSE);
        // XMM2 in the area at 0x7000 (its header: SSE in XSTATE_BV), loaded with XRSTOR.
        g.xsave!(0x7000n, XFEATURE.FP | XFEATURE.SSE);
        g.writeBytes(0x7000n + BigInt(XSAVE_LAYOUT.xmm + 32), Uint8Array.from(xmm(2, 0x40)));
        g.xrstor!(0x7000n, XFEATURE.SSE);
        g.xsave!(0x6008n, XFEATURE.SSE); // not 64-byte aligned: #GP(0)
        await g.out(0x1000, 1, 0);
      });
      // The host's state, through the kernel: XMM1 set with KVM_SET_XSAVE, XCR0 = x87|SSE|AVX.
      withOsxsave(vcpu);
      const area = vcpu.getXsave();
      area.set(xmm(1, 0x10), XSAVE_LAYOUT.xmm + 16);
      new DataView(area.buffer).setBigUint64(XSAVE_LAYOUT.xstateBv, XFEATURE.FP | XFEATURE.SSE, true);
      vcpu.setXsave(area);
      io(await vcpu.run());
      expect(seen).toEqual([7n, 3n]);
      expect(frames).toEqual([[VECTOR.GP, 0, 'xsave(0x6008, 0x2)']]);
      // The guest's XSAVE wrote the XMM1 the host loaded, and XSTATE_BV.
      const at = 0x6000;
      expect(Array.from({ length: 16 }, (_, i) => mem.getUint8(at + XSAVE_LAYOUT.xmm + 16 + i))).toEqual(
        xmm(1, 0x10),
      );
      expect(mem.getBigUint64(at + XSAVE_LAYOUT.xstateBv, true) & XFEATURE.SSE).toBe(XFEATURE.SSE);
      // The guest's XRSTOR reached the vCPU: KVM_GET_XSAVE sees XMM2, and XMM1 is still the host's.
      const back = vcpu.getXsave();
      expect([...back.subarray(XSAVE_LAYOUT.xmm + 32, XSAVE_LAYOUT.xmm + 48)]).toEqual(xmm(2, 0x40));
      expect([...back.subarray(XSAVE_LAYOUT.xmm + 16, XSAVE_LAYOUT.xmm + 32)]).toEqual(xmm(1, 0x10));
      expect(vcpu.getXcrs()).toEqual([{ xcr: 0, value: 7n }]);
    },
  );

  it('delivers exceptions with vector, error code and CR2; retry re-executes, skip abandons', async () => {
    const frames: ExceptionFrame[] = [];
    const results: unknown[] = [];
    const { vcpu } = vmWith(async (g: Guest) => {
      g.setExceptionHandler((f) => {
        frames.push(f);
        if (f.vector === VECTOR.PF && f.cr2 === 0x20_3000n) {
          // Map the page (PT[3] → GPA 0x7000) and run the access again.
          g.writeU64(0x4018n, 0x7003n);
          return 'retry';
        }
        return 'skip';
      });
      g.writeU64(0x7000n, 77n);
      results.push(g.readU64(0x20_3000n)); // not present → handler maps it → 77
      results.push(g.readU64(0x20_4000n)); // not present → skip → 0
      results.push(g.rdmsr(0x1234_5678)); // #GP(0) → skip → 0
      g.ud2(); // #UD → skip
      results.push('after ud2');
      await g.out(0x1000, 1, 0);
    });
    io(await vcpu.run());
    expect(results).toEqual([77n, 0n, 0n, 'after ud2']);
    expect(frames.map((f) => [f.vector, f.errorCode, f.cr2, f.operation])).toEqual([
      [VECTOR.PF, 0, 0x20_3000n, 'readU64(0x203000)'],
      [VECTOR.PF, 0, 0x20_4000n, 'readU64(0x204000)'],
      [VECTOR.GP, 0, undefined, 'rdmsr(0x12345678)'],
      [VECTOR.UD, undefined, undefined, 'ud2'],
    ]);
  });

  it('reports a write fault with the W bit and throws GuestException from a throwing handler; uncaught, it triple-faults', async () => {
    let caught: unknown;
    const { vcpu } = vmWith(async (g) => {
      g.setExceptionHandler(() => {
        throw new Error('not mine');
      });
      try {
        g.writeU32(0x20_5000n, 1);
      } catch (e) {
        caught = e;
      }
      await g.out(0x1000, 1, 0);
      g.readU64(0x20_6000n);
    });
    io(await vcpu.run());
    expect(caught).toBeInstanceOf(GuestException);
    expect((caught as GuestException).frame).toMatchObject({
      vector: VECTOR.PF,
      errorCode: 2,
      cr2: 0x20_5000n,
    });
    const e = await vcpu.run();
    expect(e.reason).toBe('shutdown');
    expect(e.reason === 'shutdown' && e.detail).toContain('#PF');
    expect((await vcpu.run()).reason).toBe('shutdown');
  });

  it('triple-faults in the instruction itself when the program never installed a handler', async () => {
    let after = false;
    const { vcpu } = vmWith(async (g) => {
      await g.out(0x1000, 1, 0);
      g.readU64(0x20_6000n); // not present, no exception entry
      after = true;
    });
    io(await vcpu.run());
    expect(await vcpu.run()).toEqual({ reason: 'shutdown' });
    expect(after).toBe(false);
    expect((await vcpu.run()).reason).toBe('shutdown');
  });

  it('triple-faults in the instruction itself once the program removed its exception entry', async () => {
    let after = false;
    const { vcpu } = vmWith(async (g) => {
      g.setExceptionHandler(() => 'skip');
      g.setExceptionHandler(undefined);
      await g.out(0x1000, 1, 0);
      g.ud2();
      after = true;
    });
    io(await vcpu.run());
    expect(await vcpu.run()).toEqual({ reason: 'shutdown' });
    expect(after).toBe(false);
  });

  it('ends a run stuck in VMCALL with the watchdog (intr), and a synchronous access to MMIO unwinds the program', async () => {
    const { vcpu } = vmWith(async (g) => {
      await g.hypercall(0n);
    }, 100);
    const e = await vcpu.run();
    // PVM never completes VMCALL; elsewhere KVM answers -KVM_ENOSYS and the program returns (hlt).
    expect(e.reason === 'intr' ? e.budgetExhausted : e.reason).toBe(e.reason === 'intr' ? true : 'hlt');

    const { vcpu: v2 } = vmWith(async (g) => {
      g.readU64(0x10_0000n); // GPA 1 MiB: inside the 2 MiB page, past the 64 KiB slot
    });
    expect(await v2.run()).toMatchObject({ reason: 'mmio', gpa: 0x10_0000n, isWrite: false });
    const later = await v2.run();
    expect(later.reason === 'internal-error' && later.detail).toContain('cannot resume');
  });

  it('stops a program that keeps the vCPU busy past the deadline, as a run budget', async () => {
    const { vcpu } = vmWith(async (g) => {
      g.setExceptionHandler(() => 'retry');
      g.ud2(); // #UD, retried forever
    }, 150);
    expect(await vcpu.run()).toEqual({ reason: 'intr', budgetExhausted: true });
    const later = await vcpu.run();
    expect(later.reason === 'internal-error' && later.detail).toContain('deadline');
  });

  it('fails a run with immediate_exit with EINTR, keeps the last exit, and the program goes on', async () => {
    let got = 0;
    const { vcpu } = vmWith(async (g) => {
      got = await g.in(0x1001, 1);
      await g.out(0x1002, 1, got);
    });
    const inn = io(await vcpu.run());
    inn.data.set([0x5a]);
    await expect(vcpu.run({ immediateExit: true })).rejects.toMatchObject({ code: 'EINTR' });
    expect(vcpu.exit).toBe(inn);
    const out = io(await vcpu.run());
    expect([out.port, [...out.data]]).toEqual([0x1002, [0x5a]]);
    expect(got).toBe(0x5a);
  });

  it('rejects the run with the kernel error when KVM_RUN itself fails mid-program', async () => {
    let after = false;
    const { vcpu } = vmWith(async (g) => {
      await g.out(0x1000, 1, 0);
      g.readU64(0x5000n);
      after = true;
    });
    io(await vcpu.run());
    vcpu.vm.kvm.closeFd(vcpu.fd);
    await expect(vcpu.run()).rejects.toMatchObject({ code: 'EBADF' });
    await expect(vcpu.run()).rejects.toMatchObject({ code: 'EBADF' });
    expect(after).toBe(false);
  });

  it('keeps its own region out of the way: the port is refused and the top-level entry is reused', async () => {
    let err: unknown;
    const { vcpu, mem } = vmWith(async (g) => {
      try {
        await g.out(AGENT_PORT, 1, 0);
      } catch (e) {
        err = e;
      }
      await g.out(0x1000, 1, 0);
    });
    io(await vcpu.run());
    expect(String(err)).toContain('reserved');
    expect(mem.getBigUint64(0x1000 + 511 * 8, true) & 0xfff_ffff_f000n).toBe(0xe_0000_0000n);
    expect(AGENT_GVA >> 39n).toBe((1n << 25n) - 1n);
  });

  describe('slotSend: a ucall-shaped pool send as one operation', () => {
    // Globals at 0x6000 (pool), 0x6008 (count), 0x6010 (selector); the pool's bitmap at 0x7000;
    // slots of 0x100 bytes from 0x7100, each with its value (its own address) at +0x48. GVAs from
    // 0x20_0000 are not mapped (PD[1] points at an empty PT).
    const data = Uint8Array.from({ length: 65 }, (_, i) => 0x80 + i);
    const req = (over: Partial<SlotSend> = {}): SlotSend => ({
      poolGlobal: 0x6000n,
      pool: 0x7000n,
      countGlobal: 0x6008n,
      count: 8n,
      bit: 1,
      slot: 0x7100n,
      data,
      value: 0x7148n,
      selectorGlobal: 0x6010n,
      selector: 1n,
      port: 0x1000,
      ...over,
    });
    function poolVm(program: GuestProgram) {
      const v = vmWith(program);
      v.mem.setBigUint64(0x6000, 0x7000n, true);
      v.mem.setBigUint64(0x6008, 8n, true);
      v.mem.setBigUint64(0x6010, 1n, true);
      for (let k = 0; k < 4; k++) v.mem.setBigUint64(0x7148 + k * 0x100, BigInt(0x7100 + k * 0x100), true);
      return v;
    }
    const slotBytes = (mem: DataView, at: number) =>
      Array.from({ length: data.length }, (_, i) => mem.getUint8(at + i));

    it('stores the slot and exits with its value in one KVM_RUN; the bit is free again at the next operation', async () => {
      const seen: unknown[] = [];
      const { vcpu, mem } = poolVm(async (g) => {
        g.readU64(0x6000n); // the first operation also loads the empty IDT
        const r = agentRunnerOf(vcpu);
        const before = r.ops;
        seen.push(await g.slotSend!(req()), r.ops - before);
        seen.push(await g.slotSend!(req()), r.ops - before);
        seen.push(g.readU64(0x7000n));
        await g.out(0x1001, 1, 0);
      });
      for (let k = 0; k < 2; k++) {
        const e = io(await vcpu.run());
        expect([e.port, e.size, e.direction, [...e.data]]).toEqual([0x1000, 4, 'out', [0x00, 0x71, 0, 0]]);
        // At the exit the host sees the slot filled and taken, as after the single operations.
        expect(mem.getBigUint64(0x7000, true)).toBe(2n);
        expect(slotBytes(mem, 0x7100)).toEqual([...data]);
        mem.setUint8(0x7100, 0);
      }
      expect(io(await vcpu.run()).port).toBe(0x1001);
      expect(seen).toEqual(['sent', 1, 'sent', 2, 0n]);
    });

    it('stops before any store where a global differs, at a bit already set, and before the OUT where the selector differs or the value is wider than 32 bits', async () => {
      const seen: unknown[] = [];
      const { vcpu, mem } = poolVm(async (g) => {
        seen.push(await g.slotSend!(req({ pool: 0x7800n })));
        seen.push(await g.slotSend!(req({ count: 9n })));
        seen.push(await g.slotSend!(req({ bit: 0 })));
        seen.push(await g.slotSend!(req({ bit: 2, slot: 0x7300n, value: 0x7348n, selector: 2n })));
        seen.push(await g.slotSend!(req({ bit: 3, slot: 0x7400n, value: 0x7448n })));
        await g.out(0x1001, 1, 0);
      });
      mem.setBigUint64(0x7000, 1n, true); // bit 0 taken
      mem.setBigUint64(0x7448, 1n << 32n, true);
      expect(io(await vcpu.run()).port).toBe(0x1001);
      expect(seen).toEqual(['declined', 'declined', 'occupied', 'filled', 'filled']);
      expect(mem.getBigUint64(0x7000, true)).toBe(0b1101n);
      expect(mem.getBigUint64(0x7800, true)).toBe(0n);
      expect(slotBytes(mem, 0x7100)).toEqual(new Array(data.length).fill(0));
      expect(slotBytes(mem, 0x7300)).toEqual([...data]);
      expect(slotBytes(mem, 0x7400)).toEqual([...data]);
    });

    it("with a handler, stops at a faulting step without calling it (the caller's own operation faults again)", async () => {
      const seen: unknown[] = [];
      const frames: string[] = [];
      const { vcpu, mem } = poolVm(async (g) => {
        g.setExceptionHandler((f) => {
          frames.push(f.operation);
          return 'skip';
        });
        seen.push(await g.slotSend!(req({ poolGlobal: 0x20_0000n })));
        seen.push(await g.slotSend!(req({ bit: 2, slot: 0x20_1000n, value: 0x20_1048n })));
        seen.push(await g.slotSend!(req({ bit: 3, slot: 0x7300n, value: 0x20_2000n })));
        const r = agentRunnerOf(vcpu);
        const before = r.ops;
        seen.push(await g.slotSend!(req()), r.ops - before, g.readU64(0x7000n));
        g.writeBytes(0x20_1000n, data);
        await g.out(0x1001, 1, 0);
      });
      expect(io(await vcpu.run()).port).toBe(0x1000);
      expect(mem.getBigUint64(0x7000, true)).toBe(0b1110n);
      expect(io(await vcpu.run()).port).toBe(0x1001);
      // One run for the send; the release runs before the next operation.
      expect(seen).toEqual(['declined', 'reserved', 'filled', 'sent', 1, 0b1100n]);
      expect(slotBytes(mem, 0x7300)).toEqual([...data]);
      expect(frames).toEqual(['writeBytes(0x201000)']);
    });

    it("delivers a fault of the release to the handler as clearBit's before the send resolves, when the host changed the vCPU state at the exit", async () => {
      const frames: string[] = [];
      const seen: unknown[] = [];
      const { vcpu, mem } = poolVm(async (g) => {
        g.setExceptionHandler((f) => {
          frames.push(`${f.operation} ${f.vector} ${f.errorCode}`);
          return 'skip';
        });
        seen.push(await g.slotSend!(req()), [...frames]);
        await g.out(0x1001, 1, 0);
      });
      expect(io(await vcpu.run()).port).toBe(0x1000);
      // New tables at 0x8000 (PML4, with the agent's entry), 0x9000 (PDPT), 0xa000 (PD): the 2 MiB
      // page read-only, and CR0.WP set, so that the release's LOCK BTR faults.
      for (let i = 0; i < 512; i++)
        mem.setBigUint64(0x8000 + i * 8, mem.getBigUint64(0x1000 + i * 8, true), true);
      mem.setBigUint64(0x8000, 0x9003n, true);
      mem.setBigUint64(0x9000, 0xa003n, true);
      mem.setBigUint64(0xa000, 0x81n, true);
      const s = vcpu.getSregs();
      s.cr3 = 0x8000n;
      s.cr0 |= 0x1_0000n;
      vcpu.setSregs(s);
      expect(io(await vcpu.run()).port).toBe(0x1001);
      expect(seen).toEqual(['sent', ['clearBit(0x7000) 14 3']]);
      expect(mem.getBigUint64(0x7000, true)).toBe(2n);
    });

    it('sends slots longer than the emitted code takes through the copy ladder, step for step the same', async () => {
      const long = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
      const frames: string[] = [];
      const seen: unknown[] = [];
      const { vcpu, mem } = poolVm(async (g) => {
        g.setExceptionHandler((f) => {
          frames.push(f.operation);
          return 'skip';
        });
        const r = agentRunnerOf(vcpu);
        const before = r.ops;
        seen.push(
          await g.slotSend!(req({ bit: 4, slot: 0x7400n, data: long, value: 0x7600n })),
          r.ops - before,
        );
        seen.push(await g.slotSend!(req({ bit: 5, slot: 0x20_1000n, data: long, value: 0x20_1200n })));
        seen.push(await g.slotSend!(req({ bit: 6, slot: 0x7800n, data: long, value: 0x20_2000n })));
        seen.push(await g.slotSend!(req({ bit: 7, slot: 0x7400n, data: long, value: 0x7600n, count: 3n })));
        await g.out(0x1001, 1, 0);
      });
      mem.setBigUint64(0x7600, 0x7400n, true);
      const e = io(await vcpu.run());
      expect([e.port, [...e.data]]).toEqual([0x1000, [0x00, 0x74, 0, 0]]);
      expect(Array.from({ length: 300 }, (_, i) => mem.getUint8(0x7400 + i))).toEqual([...long]);
      expect(io(await vcpu.run()).port).toBe(0x1001);
      expect(seen).toEqual(['sent', 1, 'reserved', 'filled', 'declined']);
      expect(Array.from({ length: 300 }, (_, i) => mem.getUint8(0x7800 + i))).toEqual([...long]);
      expect(mem.getBigUint64(0x7000, true)).toBe(0b110_0000n);
      expect(frames).toEqual([]);
    });

    it('frees the bit before the run ends when the program throws or waits on something else right after the send', async () => {
      for (const after of ['throw', 'stuck'] as const) {
        const { vcpu, mem } = poolVm(async (g) => {
          await g.slotSend!(req());
          if (after === 'throw') throw new Error('boom');
          await new Promise((r) => setTimeout(r, 10));
        });
        expect(io(await vcpu.run()).port).toBe(0x1000);
        expect(mem.getBigUint64(0x7000, true)).toBe(2n);
        const e = await vcpu.run();
        expect(e.reason === 'internal-error' && e.detail).toMatch(
          after === 'throw' ? /boom/ : /awaited something/,
        );
        expect(mem.getBigUint64(0x7000, true)).toBe(0n);
      }
    });

    it('without a handler, a fault in its store triple-faults there, after the bit was taken', async () => {
      const { vcpu, mem } = poolVm(async (g) => {
        await g.slotSend!(req({ slot: 0x20_1000n, value: 0x20_1048n }));
      });
      expect((await vcpu.run()).reason).toBe('shutdown');
      expect(mem.getBigUint64(0x7000, true)).toBe(2n);
      expect((await vcpu.run()).reason).toBe('shutdown');
    });
  });
});
