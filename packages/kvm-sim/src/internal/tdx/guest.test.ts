// The TD's side (private/shared memory by the shared GPA bit that arch/x86/kvm/vmx/tdx.c: tdx_td_init() sets; the TDVMCALL ABI of handle_tdvmcall(); #VE as arch/x86/coco/tdx/tdx.c handles it) through guest programs run
// by the simulator's KVM_RUN.

import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import {
  decodeVmxIoQualification,
  encodeTdxIoRequest,
  encodeTdxMmioRequest,
  TDCALL_LEAF,
  TDVMCALL_STATUS,
  TDVMCALL_SUBFUNCTION,
} from '@kvmtest/coco';
import {
  CAP,
  CR,
  type CpuidEntry,
  type Exit,
  type GuestProgram,
  KVM_HC,
  MAP_GPA_RANGE,
  MEMORY_ATTRIBUTE,
  type TdcallRegs,
  type Vcpu,
  VECTOR,
} from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../../index.js';
import { TD_ATTR, TDX_STATUS } from './constants.js';
import {
  addPrivateSlot,
  createTdVm,
  finalize,
  initMemRegion,
  initVcpu,
  initVm,
  tdVcpuAdd,
} from './harness.test-support.js';
import { tdxSetEventPending } from './report.js';

const S = 1n << 47n; // GPAW 48
const P = MEMORY_ATTRIBUTE.PRIVATE;
const PRIV_GVA = 0x40_0000n; // -> GPA 0x20000 (private, measured image data)
const SHARED_GVA = 0x50_0000n; // -> GPA 0x100000 | S (plain slot 1)
const PENDING_GVA = 0x60_0000n; // -> GPA 0x200000 (guest_memfd slot 2, never populated)
const DATA_GPA = 0x2_0000n;
const SHARED_GPA = 0x10_0000n;
const PENDING_GPA = 0x20_0000n;
const VMCALL = BigInt(TDCALL_LEAF.VP_VMCALL);

/** A finalized GPAW-48 TD running `program` with paging on: page tables and data in measured private memory. */
function bootTd(program: GuestProgram, attributes = 0n, opts: { kvmCpuid?: CpuidEntry[] } = {}) {
  const kvm = createSimKvm();
  const vm = createTdVm(kvm);
  vm.enableCap(CAP.SPLIT_IRQCHIP, [24]);
  initVm(vm, 48, attributes);
  // kvmCpuid: the vCPU's KVM CPUID table (KVM_SET_CPUID2) instead of the TD's from KVM_TDX_GET_CPUID.
  const vcpu = opts.kvmCpuid === undefined ? tdVcpuAdd(vm, 0) : vm.createVcpu(0);
  if (opts.kvmCpuid !== undefined) vcpu.setCpuid(opts.kvmCpuid);
  initVcpu(vcpu);
  // Slot 0: 64 private pages at GPA 0 whose initial contents (page tables, data) come from `image`.
  const image = new Uint8Array(64 * 4096);
  const phys = new PhysicalMemory();
  phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(image.length), backing: image });
  let next = 0x1_0000n;
  const pt = new PageTables(phys, { levels: 4, physBits: 52, tagBit: 47 }, () => {
    const p = next;
    next += 4096n;
    return p;
  });
  pt.map(PRIV_GVA, DATA_GPA);
  pt.map(SHARED_GVA, SHARED_GPA, 4096n, { tagged: true });
  for (let i = 0n; i < 4n; i++) pt.map(PENDING_GVA + i * 4096n, PENDING_GPA + i * 4096n);
  new DataView(image.buffer).setBigUint64(Number(DATA_GPA), 0x1122_3344_5566_7788n, true);
  const slot0 = new Uint8Array(image.length);
  addPrivateSlot(vm, 0, 0n, slot0);
  vm.setMemoryAttributes({ address: 0n, size: BigInt(image.length), attributes: P });
  initMemRegion(vcpu, 0n, image);
  // Slot 1: shared memory; slot 2: private guest_memfd pages the guest must accept.
  const sharedMem = new Uint8Array(4 * 4096);
  vm.setUserMemoryRegion({
    slot: 1,
    flags: 0,
    guestPhysAddr: SHARED_GPA,
    memorySize: 16384n,
    userspace: sharedMem,
  });
  addPrivateSlot(vm, 2, PENDING_GPA, new Uint8Array(4 * 4096));
  vm.setMemoryAttributes({ address: PENDING_GPA, size: 16384n, attributes: P });
  finalize(vm);
  // The host cannot load a TD's registers (KVM_SET_SREGS is EINVAL): the TD's boot code turns paging
  // on itself, from the module's initial state (paging off, EFER.LME already set).
  vcpu.setEntry(async (g) => {
    g.writeCr!(4, CR.CR4_PAE | CR.CR4_MCE);
    g.writeCr!(3, pt.root);
    g.writeCr!(0, CR.CR0_PE | CR.CR0_NE | CR.CR0_WP | CR.CR0_PG);
    await program(g);
  });
  return { kvm, vm, vcpu, slot0, sharedMem };
}

/** Runs until the guest program ends (a `hlt` exit after it returns), handing each other exit to `onExit`. */
async function runAll(vcpu: Vcpu, onExit: (e: Exit) => void = () => {}): Promise<Exit[]> {
  const seen: Exit[] = [];
  for (let i = 0; i < 50; i++) {
    const e = await vcpu.run();
    seen.push(e);
    if (e.reason === 'hlt' || e.reason === 'internal-error' || e.reason === 'shutdown') return seen;
    onExit(e);
  }
  throw new Error('guest did not finish');
}

const vmcall = (regs: TdcallRegs) => regs;

describe('TD memory: private iff the S-bit is clear (arch/x86/kvm/vmx/tdx.c: tdx_td_init(), kvm_mmu_faultin_pfn for a TD)', () => {
  it('private pages come from guest_memfd with the measured contents; the host buffer never shows them', async () => {
    let read = 0n;
    const { vcpu, slot0 } = bootTd(async (g) => {
      read = g.readU64(PRIV_GVA);
      g.writeU64(PRIV_GVA + 8n, 0xdead_beefn);
      if (g.readU64(PRIV_GVA + 8n) !== 0xdead_beefn) throw new Error('private write lost');
    });
    await runAll(vcpu);
    expect(read).toBe(0x1122_3344_5566_7788n);
    expect(slot0.every((b) => b === 0)).toBe(true);
  });

  it("a shared access (S-bit set in the leaf PTE) reaches the slot's userspace memory", async () => {
    const { vcpu, sharedMem } = bootTd(async (g) => g.writeU64(SHARED_GVA, 0xabcdn));
    await runAll(vcpu);
    expect(new DataView(sharedMem.buffer).getBigUint64(0, true)).toBe(0xabcdn);
  });

  it('a shared access to a PRIVATE page, or a private access to a shared page, is a memory-fault exit', async () => {
    const a = bootTd(async (g) => void g.readU64(SHARED_GVA));
    a.vm.setMemoryAttributes({ address: SHARED_GPA, size: 4096n, attributes: P });
    expect(await a.vcpu.run()).toMatchObject({ reason: 'memory-fault', gpa: SHARED_GPA, private: false });
    const b = bootTd(async (g) => void g.readU64(PRIV_GVA));
    b.vm.setMemoryAttributes({ address: DATA_GPA, size: 4096n, attributes: 0n });
    expect(await b.vcpu.run()).toMatchObject({ reason: 'memory-fault', gpa: DATA_GPA, private: true });
  });

  it('a private page never added nor accepted raises #VE with the GPA in VE_INFO (pending in the secure EPT)', async () => {
    const frames: number[] = [];
    let info: TdcallRegs = {};
    const { vcpu } = bootTd(async (g) => {
      g.setExceptionHandler((f) => {
        frames.push(f.vector);
        return 'skip';
      });
      g.readU64(PENDING_GVA);
      info = await g.tdcall(BigInt(TDCALL_LEAF.VP_VEINFO_GET), {});
    });
    await runAll(vcpu);
    expect(frames).toEqual([VECTOR.VE]);
    expect(info).toMatchObject({ rax: 0n, rcx: 48n, r9: PENDING_GPA });
  });

  it('with SEPT_VE_DISABLE a pending private access kills the VM: KVM_RUN fails with EIO (tdx_handle_ept_violation)', async () => {
    const { vcpu } = bootTd(async (g) => void g.readU64(PENDING_GVA), TD_ATTR.SEPT_VE_DISABLE);
    await expect(vcpu.run()).rejects.toMatchObject({ code: 'EIO' });
    await expect(vcpu.run()).rejects.toMatchObject({ code: 'EIO' });
  });

  it('TDG.MEM.PAGE.ACCEPT maps a pending page zeroed; again is ALREADY_ACCEPTED; 2 MiB is PAGE_SIZE_MISMATCH', async () => {
    const rax: bigint[] = [];
    let value = -1n;
    const accept = BigInt(TDCALL_LEAF.MEM_PAGE_ACCEPT);
    const { vcpu } = bootTd(async (g) => {
      rax.push((await g.tdcall(accept, { rcx: PENDING_GPA | 1n })).rax!);
      rax.push((await g.tdcall(accept, { rcx: PENDING_GPA })).rax!);
      value = g.readU64(PENDING_GVA + 8n);
      rax.push((await g.tdcall(accept, { rcx: PENDING_GPA })).rax!);
      rax.push((await g.tdcall(accept, { rcx: DATA_GPA })).rax!);
    });
    await runAll(vcpu);
    expect(rax).toEqual([
      TDX_STATUS.PAGE_SIZE_MISMATCH,
      TDX_STATUS.SUCCESS,
      TDX_STATUS.PAGE_ALREADY_ACCEPTED,
      TDX_STATUS.PAGE_ALREADY_ACCEPTED,
    ]);
    expect(value).toBe(0n);
  });

  it('accepting a page without the PRIVATE attribute exits with memory-fault until the host converts it', async () => {
    let status = -1n;
    const { vm, vcpu } = bootTd(async (g) => {
      status = (await g.tdcall(BigInt(TDCALL_LEAF.MEM_PAGE_ACCEPT), { rcx: PENDING_GPA + 0x1000n })).rax!;
    });
    vm.setMemoryAttributes({ address: PENDING_GPA + 0x1000n, size: 4096n, attributes: 0n });
    expect(await vcpu.run()).toMatchObject({
      reason: 'memory-fault',
      gpa: PENDING_GPA + 0x1000n,
      private: true,
    });
    vm.setMemoryAttributes({ address: PENDING_GPA + 0x1000n, size: 4096n, attributes: P });
    await runAll(vcpu);
    expect(status).toBe(TDX_STATUS.SUCCESS);
  });
});

describe('#VE for instructions the TD cannot expose (guest side, arch/x86/coco/tdx/tdx.c: virt_exception_kernel())', () => {
  it('OUT raises #VE (vector 20); TDG.VP.VEINFO.GET gives exit reason 30 and the I/O qualification', async () => {
    let vector = -1;
    let info: TdcallRegs = {};
    const { vcpu } = bootTd(async (g) => {
      g.setExceptionHandler((f) => {
        vector = f.vector;
        return 'skip';
      });
      await g.out(0x3f8, 1, 0x41);
      info = await g.tdcall(BigInt(TDCALL_LEAF.VP_VEINFO_GET), {});
    });
    const exits = await runAll(vcpu);
    expect(exits.map((e) => e.reason)).toEqual(['hlt']);
    expect(vector).toBe(VECTOR.VE);
    expect(info.rcx).toBe(30n);
    expect(decodeVmxIoQualification(info.rdx!)).toMatchObject({ direction: 'out', size: 1, port: 0x3f8 });
  });

  it('HLT, RDMSR, CPUID of the hypervisor range and MMIO to an unbacked shared GPA raise #VE; CPUID leaf 0 does not', async () => {
    const vectors: number[] = [];
    let leaf0 = -1;
    const { vcpu } = bootTd(async (g) => {
      g.setExceptionHandler((f) => {
        vectors.push(f.vector);
        return 'skip';
      });
      await g.hlt();
      g.rdmsr(0x10);
      g.cpuid(0x4000_0000);
      leaf0 = g.cpuid(0).eax;
      await g.mmioWrite(S | 0x30_0000n, 4, 1n);
    });
    await runAll(vcpu);
    expect(vectors).toEqual([VECTOR.VE, VECTOR.VE, VECTOR.VE, VECTOR.VE]);
    expect(leaf0).toBeGreaterThan(0);
  });

  it('VMCALL in a TD is #UD', async () => {
    let vector = -1;
    const { vcpu } = bootTd(async (g) => {
      g.setExceptionHandler((f) => {
        vector = f.vector;
        return 'skip';
      });
      await g.hypercall(BigInt(KVM_HC.SCHED_YIELD));
    });
    await runAll(vcpu);
    expect(vector).toBe(VECTOR.UD);
  });
});

describe('TDG.VP.VMCALL (handle_tdvmcall and friends, arch/x86/kvm/vmx/tdx.c)', () => {
  it("Instruction.IO OUT exits with the R15 value; IN returns the host's value in R11 (tdx_emulate_io)", async () => {
    let inReply: TdcallRegs = {};
    const { vcpu } = bootTd(async (g) => {
      await g.tdcall(
        VMCALL,
        vmcall(encodeTdxIoRequest({ port: 0x1000, size: 4, write: true, value: 0x1234_5678n })),
      );
      inReply = await g.tdcall(VMCALL, vmcall(encodeTdxIoRequest({ port: 0x60, size: 2, write: false })));
    });
    const out = await vcpu.run();
    expect(out).toMatchObject({ reason: 'io', direction: 'out', port: 0x1000, size: 4, count: 1 });
    expect([...(out as { data: Uint8Array }).data]).toEqual([0x78, 0x56, 0x34, 0x12]);
    const inn = await vcpu.run();
    expect(inn).toMatchObject({ reason: 'io', direction: 'in', port: 0x60, size: 2 });
    (inn as { data: Uint8Array }).data.set([0xcd, 0xab]);
    await runAll(vcpu);
    expect(inReply).toMatchObject({ rax: 0n, r10: 0n, r11: 0xabcdn });
  });

  it('Instruction.IO with a bad size or direction answers INVALID_OPERAND and does not exit', async () => {
    const r10: bigint[] = [];
    const { vcpu } = bootTd(async (g) => {
      const io = { r10: 0n, r11: 30n, r12: 3n, r13: 1n, r14: 0x80n, r15: 0n };
      r10.push((await g.tdcall(VMCALL, io)).r10!);
      r10.push((await g.tdcall(VMCALL, { ...io, r12: 1n, r13: 2n })).r10!);
    });
    expect((await runAll(vcpu)).map((e) => e.reason)).toEqual(['hlt']);
    expect(r10).toEqual([TDVMCALL_STATUS.INVALID_OPERAND, TDVMCALL_STATUS.INVALID_OPERAND]);
  });

  it('#VE.RequestMMIO to a shared GPA exits without the S-bit; a read returns in R11; a private GPA is INVALID_OPERAND', async () => {
    let read: TdcallRegs = {};
    let priv: TdcallRegs = {};
    const { vcpu } = bootTd(async (g) => {
      await g.tdcall(
        VMCALL,
        encodeTdxMmioRequest({ gpa: S | 0x30_0000n, size: 8, write: true, value: 0x55n }),
      );
      read = await g.tdcall(VMCALL, encodeTdxMmioRequest({ gpa: S | 0x30_0010n, size: 4, write: false }));
      priv = await g.tdcall(VMCALL, encodeTdxMmioRequest({ gpa: 0x30_0000n, size: 4, write: false }));
    });
    expect(await vcpu.run()).toMatchObject({ reason: 'mmio', gpa: 0x30_0000n, isWrite: true, len: 8 });
    const r = await vcpu.run();
    expect(r).toMatchObject({ reason: 'mmio', gpa: 0x30_0010n, isWrite: false, len: 4 });
    (r as { data: Uint8Array }).data.set([1, 2, 3, 4]);
    await runAll(vcpu);
    expect(read.r11).toBe(0x0403_0201n);
    expect(priv.r10).toBe(TDVMCALL_STATUS.INVALID_OPERAND);
  });

  it('MapGPA without KVM_CAP_EXIT_HYPERCALL bit 12 is SUBFUNC_UNSUPPORTED with R11 = the GPA (tdx_map_gpa)', async () => {
    let r: TdcallRegs = {};
    const { vcpu } = bootTd(async (g) => {
      r = await g.tdcall(VMCALL, {
        r10: 0n,
        r11: BigInt(TDVMCALL_SUBFUNCTION.MAP_GPA),
        r12: S | 0x10_0000n,
        r13: 4096n,
      });
    });
    await runAll(vcpu);
    expect(r).toMatchObject({ r10: TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED, r11: S | 0x10_0000n });
  });

  it('MapGPA exits KVM_HC_MAP_GPA_RANGE per 2 MiB chunk, S-bit stripped, ENCRYPTED only for private ranges', async () => {
    const results: TdcallRegs[] = [];
    const map = (gpa: bigint, size: bigint): TdcallRegs => ({
      r10: 0n,
      r11: BigInt(TDVMCALL_SUBFUNCTION.MAP_GPA),
      r12: gpa,
      r13: size,
    });
    const { vm, vcpu } = bootTd(async (g) => {
      results.push(await g.tdcall(VMCALL, map(S | 0x40_0000n, 0x30_0000n)));
      results.push(await g.tdcall(VMCALL, map(0x80_0000n, 0x1000n)));
    });
    vm.enableCap(CAP.EXIT_HYPERCALL, [1 << KVM_HC.MAP_GPA_RANGE]);
    const exits = await runAll(vcpu);
    const calls = exits.filter((e) => e.reason === 'hypercall').map((e) => (e as { args: bigint[] }).args);
    expect(calls).toEqual([
      [0x40_0000n, 512n, MAP_GPA_RANGE.DECRYPTED],
      [0x60_0000n, 256n, MAP_GPA_RANGE.DECRYPTED],
      [0x80_0000n, 1n, MAP_GPA_RANGE.ENCRYPTED],
    ]);
    expect(results.map((r) => r.r10)).toEqual([TDVMCALL_STATUS.SUCCESS, TDVMCALL_STATUS.SUCCESS]);
  });

  it('MapGPA: a host error fails at that chunk, misalignment is ALIGN_ERROR, a mixed or too-wide range INVALID_OPERAND', async () => {
    const results: TdcallRegs[] = [];
    const map = (gpa: bigint, size: bigint): TdcallRegs => ({
      r10: 0n,
      r11: BigInt(TDVMCALL_SUBFUNCTION.MAP_GPA),
      r12: gpa,
      r13: size,
    });
    const { vm, vcpu } = bootTd(async (g) => {
      results.push(await g.tdcall(VMCALL, map(0x40_0000n, 0x40_0000n)));
      results.push(await g.tdcall(VMCALL, map(0x40_0800n, 0x1000n)));
      results.push(await g.tdcall(VMCALL, map(S - 0x1000n, 0x2000n)));
      results.push(await g.tdcall(VMCALL, map(1n << 48n, 0x1000n)));
    });
    vm.enableCap(CAP.EXIT_HYPERCALL, [1 << KVM_HC.MAP_GPA_RANGE]);
    let n = 0;
    await runAll(vcpu, (e) => {
      if (e.reason === 'hypercall' && n++ === 1) e.ret = 1n;
    });
    expect(results).toMatchObject([
      { r10: TDVMCALL_STATUS.INVALID_OPERAND, r11: 0x60_0000n },
      { r10: TDVMCALL_STATUS.ALIGN_ERROR, r11: 0x40_0800n },
      { r10: TDVMCALL_STATUS.INVALID_OPERAND, r11: S - 0x1000n },
      { r10: TDVMCALL_STATUS.INVALID_OPERAND, r11: 1n << 48n },
    ]);
  });

  it('MapGPA returns RETRY with R11 = the next chunk when an event is pending between chunks', async () => {
    let r: TdcallRegs = {};
    const { vm, vcpu } = bootTd(async (g) => {
      r = await g.tdcall(VMCALL, {
        r10: 0n,
        r11: BigInt(TDVMCALL_SUBFUNCTION.MAP_GPA),
        r12: 0n,
        r13: 0x40_0000n,
      });
    });
    vm.enableCap(CAP.EXIT_HYPERCALL, [1 << KVM_HC.MAP_GPA_RANGE]);
    expect(await vcpu.run()).toMatchObject({ reason: 'hypercall' });
    tdxSetEventPending(vcpu, true);
    await runAll(vcpu);
    expect(r).toMatchObject({ r10: TDVMCALL_STATUS.RETRY, r11: 0x20_0000n });
  });

  it('ReportFatalError is a system-event exit of type tdx-fatal with 16 registers (tdx_report_fatal_error)', async () => {
    const { vcpu } = bootTd(async (g) => {
      await g.tdcall(VMCALL, {
        r10: 0n,
        r11: BigInt(TDVMCALL_SUBFUNCTION.REPORT_FATAL_ERROR),
        r12: 0xbadn,
        r13: 7n,
      });
    });
    const e = await vcpu.run();
    expect(e).toMatchObject({ reason: 'system-event', type: 'tdx-fatal' });
    const data = (e as { data: bigint[] }).data;
    expect(data.length).toBe(16);
    expect([data[0], data[12], data[13]]).toEqual([77n, 0xbadn, 7n]);
  });

  it('GetTdVmCallInfo leaf 0 answers SUCCESS with zeros; another leaf is INVALID_OPERAND; unknown sub-functions SUBFUNC_UNSUPPORTED', async () => {
    const r: TdcallRegs[] = [];
    const { vcpu } = bootTd(async (g) => {
      const info = BigInt(TDVMCALL_SUBFUNCTION.GET_TD_VM_CALL_INFO);
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: info, r12: 0n, r13: 9n, r14: 9n }));
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: info, r12: 7n }));
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 0x2_0000n }));
      r.push(
        await g.tdcall(VMCALL, {
          r10: 0n,
          r11: BigInt(TDVMCALL_SUBFUNCTION.GET_QUOTE),
          r12: 0x1000n,
          r13: 4096n,
        }),
      );
      r.push(
        await g.tdcall(VMCALL, {
          r10: 0n,
          r11: BigInt(TDVMCALL_SUBFUNCTION.GET_QUOTE),
          r12: S | 0x1000n,
          r13: 4096n,
        }),
      );
    });
    await runAll(vcpu);
    expect(r[0]).toMatchObject({ r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n });
    expect(r.slice(1).map((x) => x.r10)).toEqual([
      TDVMCALL_STATUS.INVALID_OPERAND,
      TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED,
      TDVMCALL_STATUS.INVALID_OPERAND,
      TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED,
    ]);
  });

  it('R10 != 0 is a KVM hypercall: R10 returns its result (tdx_emulate_vmcall)', async () => {
    const r: bigint[] = [];
    const { vcpu } = bootTd(async (g) => {
      r.push((await g.tdcall(VMCALL, { r10: BigInt(KVM_HC.SCHED_YIELD), r11: 0n })).r10!);
      r.push((await g.tdcall(VMCALL, { r10: 999n })).r10!);
    });
    await runAll(vcpu);
    expect(r).toEqual([0n, BigInt.asUintN(64, -1000n)]);
  });

  it('CPUID, HLT and RDMSR/WRMSR sub-functions follow tdx_emulate_cpuid, kvm_emulate_halt and tdx_get/set_msr', async () => {
    const r: TdcallRegs[] = [];
    const { vcpu } = bootTd(async (g) => {
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 10n, r12: 0n, r13: 0n }));
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 31n, r12: 0x1bn }));
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 31n, r12: 0xc000_0081n }));
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 32n, r12: 0xc000_0080n, r13: 0n }));
      await g.tdcall(VMCALL, { r10: 0n, r11: 12n });
      r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 32n, r12: 0x277n, r13: 6n }));
    });
    const first = await vcpu.run();
    expect(first.reason).toBe('hlt');
    await runAll(vcpu);
    expect(r[0]!.r12).toBeGreaterThan(0n);
    expect(r[1]).toMatchObject({ r10: 0n });
    expect(r[1]!.r11! & (1n << 10n)).toBe(1n << 10n);
    expect(r.slice(2).map((x) => x.r10)).toEqual([
      TDVMCALL_STATUS.INVALID_OPERAND,
      TDVMCALL_STATUS.INVALID_OPERAND,
      TDVMCALL_STATUS.SUCCESS,
    ]);
  });

  // The TDX module answers the leaves it virtualizes from the TD's CPUID configuration
  // (KVM_TDX_INIT_VM); KVM's table (KVM_SET_CPUID2) answers only the TDVMCALL
  // (tdx_emulate_cpuid() -> kvm_cpuid(), zeros for a leaf it lacks). Here KVM's table is leaf 1 alone
  // (x2APIC, which KVM_TDX_INIT_VCPU needs).
  it('the TD reads CPUID.0 from its configuration; TDVMCALL<CPUID> reads the vCPU KVM table, zeros where it has no entry', async () => {
    let leaf0 = -1;
    let ext0 = -1;
    const r: TdcallRegs[] = [];
    const x2apicOnly = [{ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 1 << 21, edx: 0 }];
    const { vcpu } = bootTd(
      async (g) => {
        leaf0 = g.cpuid(0).eax;
        ext0 = g.cpuid(0x8000_0000).eax;
        r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 10n, r12: 0n, r13: 0n }));
        r.push(await g.tdcall(VMCALL, { r10: 0n, r11: 10n, r12: 1n, r13: 0n }));
      },
      0n,
      { kvmCpuid: x2apicOnly },
    );
    await runAll(vcpu);
    expect(leaf0).toBeGreaterThan(0);
    expect(ext0).toBeGreaterThanOrEqual(0x8000_0008);
    expect(r.map((x) => x.r10)).toEqual([TDVMCALL_STATUS.SUCCESS, TDVMCALL_STATUS.SUCCESS]);
    expect(r.map((x) => [x.r12, x.r13, x.r14, x.r15])).toEqual([
      [0n, 0n, 0n, 0n],
      [0n, 0n, 1n << 21n, 0n],
    ]);
  });

  it('RCX names the registers the VMM sees: forbidden bits are OPERAND_INVALID, hidden registers are not written', async () => {
    const r: TdcallRegs[] = [];
    const { vcpu } = bootTd(async (g) => {
      r.push(await g.tdcall(VMCALL, { rcx: 1n << 1n, r10: 0n, r11: 0n }));
      r.push(await g.tdcall(VMCALL, { rcx: 0x0c00n, r10: 0n, r11: 0x1_0000n, r12: 0n, r13: 5n }));
    });
    await runAll(vcpu);
    expect(r[0]!.rax).toBe(TDX_STATUS.OPERAND_INVALID | 1n);
    // R12 is hidden: KVM reads leaf 0 and its zeros do not reach R12/R13.
    expect(r[1]).toMatchObject({ rax: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 5n });
  });
});

describe('Other TDCALL leaves of the TDX module', () => {
  it('TDG.VP.INFO reports GPAW, attributes, vCPU counts and the VCPU_INDEX', async () => {
    let r: TdcallRegs = {};
    const { vcpu } = bootTd(async (g) => {
      r = await g.tdcall(BigInt(TDCALL_LEAF.VP_INFO), {});
    }, TD_ATTR.SEPT_VE_DISABLE);
    await runAll(vcpu);
    expect(r).toMatchObject({ rax: 0n, rcx: 48n, rdx: TD_ATTR.SEPT_VE_DISABLE, r9: 0n });
    expect(r.r8! & 0xffff_ffffn).toBe(1n);
  });

  it('TDG.VP.VEINFO.GET without a #VE is NO_VALID_VE_INFO; an unknown leaf is OPERAND_INVALID', async () => {
    const r: bigint[] = [];
    const { vcpu } = bootTd(async (g) => {
      r.push((await g.tdcall(BigInt(TDCALL_LEAF.VP_VEINFO_GET), {})).rax!);
      r.push((await g.tdcall(99n, {})).rax!);
    });
    await runAll(vcpu);
    expect(r).toEqual([TDX_STATUS.NO_VALID_VE_INFO, TDX_STATUS.OPERAND_INVALID]);
  });
});
