// SEV-SNP through the simulator API, one test per rule (arch/x86/kvm/svm/sev.c: sev_set_cpu_caps(), sev_mem_enc_ioctl(), __sev_guest_init(), snp_launch_start(), sev_guest_init(), sev_vm_move_enc_context_from(), sev_vm_copy_enc_context_from() as
// mainline has them, the ASID allocator, and the SNP GHCB handling in sev_handle_vmgexit() / snp_begin_psc()), plus the launch digest checked against coco's SnpLaunchDigest.

import {
  encodeGhcbMsr,
  encodePscDesc,
  GHCB_LAYOUT,
  GHCB_MSR_CODE,
  Ghcb,
  PSC_OP,
  SEV_MSR,
  SNP_PAGE_TYPE,
  SNP_VMSA_GPA,
  SnpLaunchDigest,
  SVM_EXIT,
  SVM_VMGEXIT,
  VMGEXIT_PSC_ERROR,
} from '@kvmtest/coco';
import {
  CAP,
  type Exit,
  type Guest,
  type ExceptionFrame,
  GuestException,
  KvmError,
  MAP_GPA_RANGE,
  MEMORY_ATTRIBUTE,
  SEV_CMD,
  SEV_RET,
  tryKvm,
  VECTOR,
} from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { simStats, snpLaunchReport, snpRmpEntry } from '../../index.js';
import { createSimKvm } from '../sim.js';
import {
  DATA_GPA,
  DATA_GVA,
  DATA_VALUE,
  LAUNCH_END,
  leakReport,
  PEND_GPA,
  PEND_GVA,
  PEND_SHARED_GVA,
  registerGhcb,
  SHARED_GPA,
  SHARED_GVA,
  SNP_POLICY,
  type SnpVm,
  snpLaunch,
  snpVcpu,
  snpVm,
} from './snp-harness.test-support.js';
import { PVALIDATE_RET, VC_PAGE_NOT_VALIDATED } from './snp-state.js';
import { buildVmsa } from './vmsa.js';

const GHCB = SEV_MSR.MSR_AMD64_SEV_ES_GHCB;
const P = MEMORY_ATTRIBUTE.PRIVATE;

function errOf(fn: () => unknown): { code: string | undefined; fw: number | undefined } {
  try {
    fn();
    return { code: undefined, fw: undefined };
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    return { code: e.code, fw: e.fwError };
  }
}

/** A launched SNP VM with vCPU 0 running `program`. */
/** An exception entry that hands the fault back to the faulting operation (none would triple-fault). */
function rethrow(frame: ExceptionFrame): never {
  throw new GuestException(frame);
}

function launched(
  program: (g: Guest) => Promise<void>,
  policy = SNP_POLICY,
): SnpVm & { vcpu: ReturnType<typeof snpVcpu> } {
  const s = snpVm();
  const vcpu = snpVcpu(s, program);
  snpLaunch(s, policy);
  return { ...s, vcpu };
}

describe('SEV-SNP VM type and INIT2 (arch/x86/kvm/svm/sev.c: sev_set_cpu_caps(), sev_guest_init2(), __sev_guest_init())', () => {
  it('KVM_CAP_VM_TYPES advertises KVM_X86_SNP_VM (bit 4) and CPUID 0x8000001F has SEV-SNP (arch/x86/kvm/svm/sev.c: sev_set_cpu_caps())', () => {
    const kvm = createSimKvm();
    expect((kvm.checkExtension(CAP.VM_TYPES) >> 4) & 1).toBe(1);
    const leaf = kvm.getSupportedCpuid().find((e) => e.function === 0x8000001f);
    expect(((leaf?.eax ?? 0) >> 4) & 1).toBe(1);
  });

  it('has_private_mem: an SNP VM accepts guest_memfd memslots and the PRIVATE attribute (arch/x86/kvm/svm/svm.c: svm_vm_init())', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm('sev-snp');
    expect(vm.checkExtension(CAP.MEMORY_ATTRIBUTES)).toBe(Number(P));
    expect(vm.checkExtension(CAP.GUEST_MEMFD)).toBe(1);
  });

  it('INIT2 on sev-snp sets SNP_ACTIVE; the guest sees SEV status bits 0, 1 and 2 (arch/x86/kvm/svm/sev.c: __sev_guest_init())', async () => {
    let status = 0n;
    const s = launched(async (g) => {
      status = g.rdmsr(SEV_MSR.MSR_AMD64_SEV);
      g.wrmsr(GHCB, encodeGhcbMsr({ kind: 'term-req', reasonSet: 0, reasonCode: 0 }));
      await g.vmgexit();
    });
    const exit = await s.vcpu.run();
    expect(status & 0b111n).toBe(0b111n);
    expect(exit).toMatchObject({ reason: 'system-event', type: 'sev-term', data: [0x100n] });
  });

  it('legacy KVM_SEV_INIT on an SNP VM before INIT2 → EINVAL (type check, arch/x86/kvm/svm/sev.c: sev_guest_init())', () => {
    const s = snpVm(undefined, { init2: false });
    expect(errOf(() => s.op(SEV_CMD.INIT)).code).toBe('EINVAL');
    expect(errOf(() => s.op(SEV_CMD.ES_INIT)).code).toBe('EINVAL');
  });

  it('after INIT2 every legacy id (< 100), INIT2 and GUEST_STATUS included, → EPERM (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const s = snpVm();
    for (let id = 0; id < 100; id++) expect(errOf(() => s.op(id, {})).code, `id ${id}`).toBe('EPERM');
  });

  it('INIT2 with a VMSA feature outside KVM_X86_SEV_VMSA_FEATURES → EINVAL, nothing allocated (arch/x86/kvm/svm/sev.c: __sev_guest_init())', () => {
    const kvm = createSimKvm();
    const s = snpVm(kvm, { init2: false });
    const before = leakReport(kvm).ownedAsids.length;
    expect(errOf(() => s.op(SEV_CMD.INIT2, { vmsaFeatures: 1n, flags: 0, ghcbVersion: 0 })).code).toBe(
      'EINVAL',
    );
    expect(leakReport(kvm).ownedAsids.length).toBe(before);
    s.op(SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
  });

  it('SNP guests take ASIDs from the SEV-ES range (1..min_sev_asid-1) (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    const kvm = createSimKvm({ cpu: { minSevAsid: 3, maxSevAsid: 8 } });
    snpVm(kvm);
    snpVm(kvm);
    expect(leakReport(kvm).ownedAsids).toEqual([1, 2]);
    expect(errOf(() => snpVm(kvm)).code).toBe('EBUSY');
  });
});

describe('KVM_SEV_SNP_LAUNCH_START (arch/x86/kvm/svm/sev.c: snp_launch_start())', () => {
  it('before INIT2 → ENOTTY (not an SNP guest)', () => {
    const s = snpVm(undefined, { init2: false });
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 })).code).toBe('ENOTTY');
  });

  it.each([
    ['RSVD_MBO (bit 17) clear', 1n << 16n],
    ['a bit outside KVM_SNP_POLICY_MASK_VALID (bit 18)', SNP_POLICY | (1n << 18n)],
    ['SINGLE_SOCKET (bit 20)', SNP_POLICY | (1n << 20n)],
  ])('policy with %s → EINVAL, and the VM can still start', (_what, policy) => {
    const s = snpVm();
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_START, { policy, flags: 0 })).code).toBe('EINVAL');
    s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 });
  });

  it('flags ≠ 0 → EINVAL; a second SNP_LAUNCH_START (context exists) → EINVAL', () => {
    const s = snpVm();
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 1 })).code).toBe('EINVAL');
    s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 });
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 })).code).toBe('EINVAL');
  });

  it('a sev_fd that is not /dev/sev → ENOTTY (snp_context_create fails)', () => {
    const s = snpVm();
    const cmd = { id: SEV_CMD.SNP_LAUNCH_START, data: { policy: SNP_POLICY, flags: 0 }, sevFd: s.gmemFd };
    expect(tryKvm(() => s.vm.memEncryptOp(cmd))).toBe('ENOTTY');
  });

  it('firmware POLICY_FAILURE → EIO with error 7: SMT allowed bit clear on an SMT host, or a newer ABI', () => {
    const kvm = createSimKvm();
    for (const policy of [1n << 17n, SNP_POLICY | (2n << 8n)]) {
      const s = snpVm(kvm);
      const r = errOf(() => s.op(SEV_CMD.SNP_LAUNCH_START, { policy, flags: 0 }));
      expect(r).toEqual({ code: 'EIO', fw: SEV_RET.POLICY_FAILURE });
      expect(snpLaunchReport(s.vm)).toBeUndefined();
      s.vm.close();
    }
    expect(leakReport(kvm).snpContexts).toEqual([]);
  });
});

describe('KVM_SEV_SNP_LAUNCH_UPDATE (arch/x86/kvm/svm/sev.c: snp_launch_update(); virt/kvm/guest_memfd.c: kvm_gmem_populate())', () => {
  const upd = (over: Record<string, unknown> = {}) => ({
    gfnStart: DATA_GPA >> 12n,
    uaddr: undefined as unknown,
    len: 4096n,
    type: SNP_PAGE_TYPE.NORMAL,
    flags: 0,
    ...over,
  });
  function started() {
    const s = snpVm();
    s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 });
    return s;
  }

  it('no SNP context → EINVAL', () => {
    const s = snpVm();
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_UPDATE, upd())).code).toBe('EINVAL');
  });

  it.each([
    ['len not page aligned', { len: 100n }],
    ['flags ≠ 0', { flags: 1 }],
    ['type VMSA (2), not a KVM page type', { type: 2 }],
    ['type 7', { type: 7 }],
  ])('%s → EINVAL', (_w, over) => {
    const s = started();
    expect(
      errOf(() => s.op(SEV_CMD.SNP_LAUNCH_UPDATE, upd({ uaddr: { buffer: s.image, offset: 0 }, ...over })))
        .code,
    ).toBe('EINVAL');
  });

  it('a GFN outside any guest_memfd memslot → EINVAL', () => {
    const s = started();
    const r = errOf(() =>
      s.op(SEV_CMD.SNP_LAUNCH_UPDATE, upd({ gfnStart: 0x1000n, uaddr: { buffer: s.image, offset: 0 } })),
    );
    expect(r.code).toBe('EINVAL');
  });

  it('a GFN without the PRIVATE attribute → EIO (populate error), nothing assigned', () => {
    const s = started();
    const r = errOf(() =>
      s.op(
        SEV_CMD.SNP_LAUNCH_UPDATE,
        upd({ gfnStart: SHARED_GPA >> 12n, uaddr: { buffer: s.image, offset: 0 } }),
      ),
    );
    expect(r).toEqual({ code: 'EIO', fw: 0 });
    expect(snpLaunchReport(s.vm)?.rmpAssigned).toBe(0);
  });

  it('an RMP entry already assigned → EIO (EEXIST inside populate), the page keeps its contents', () => {
    const s = started();
    const data = { buffer: s.image, offset: Number(DATA_GPA) };
    s.op(SEV_CMD.SNP_LAUNCH_UPDATE, upd({ uaddr: data }));
    const before = snpLaunchReport(s.vm)!;
    expect(
      errOf(() =>
        s.op(SEV_CMD.SNP_LAUNCH_UPDATE, upd({ uaddr: { buffer: new Uint8Array(4096), offset: 0 } })),
      ),
    ).toEqual({
      code: 'EIO',
      fw: 0,
    });
    expect(snpLaunchReport(s.vm)).toEqual(before);
  });

  it('progress is written back: gfn_start, len and uaddr advance by the pages done', () => {
    const s = started();
    const data = upd({ gfnStart: 0n, uaddr: { buffer: s.image, offset: 0 }, len: 3n * 4096n });
    s.op(SEV_CMD.SNP_LAUNCH_UPDATE, data);
    expect(data).toMatchObject({ gfnStart: 3n, len: 0n, uaddr: { offset: 3 * 4096 } });
  });

  it('a failure after the first page is partial progress: 0, with the struct advanced to the failing page', () => {
    const s = started();
    // [PEND_GPA - 2 pages, SHARED_GPA + 1): the last page is shared.
    const first = (SHARED_GPA >> 12n) - 2n;
    const data = upd({ gfnStart: first, uaddr: { buffer: s.image, offset: 0 }, len: 3n * 4096n });
    s.op(SEV_CMD.SNP_LAUNCH_UPDATE, data);
    expect(data).toMatchObject({ gfnStart: first + 2n, len: 4096n });
  });

  it('type ZERO needs no uaddr and does not advance it; UNMEASURED, SECRETS and CPUID pages are accepted', () => {
    const s = started();
    const z = upd({ gfnStart: 0x30n, type: SNP_PAGE_TYPE.ZERO });
    s.op(SEV_CMD.SNP_LAUNCH_UPDATE, z);
    expect(z).toMatchObject({ gfnStart: 0x31n, len: 0n, uaddr: undefined });
    for (const [gfn, type] of [
      [0x31n, SNP_PAGE_TYPE.UNMEASURED],
      [0x32n, SNP_PAGE_TYPE.SECRETS],
      [0x33n, SNP_PAGE_TYPE.CPUID],
    ] as const)
      s.op(
        SEV_CMD.SNP_LAUNCH_UPDATE,
        upd({ gfnStart: gfn, type, uaddr: { buffer: new Uint8Array(4096), offset: 0 } }),
      );
    expect(snpLaunchReport(s.vm)?.pagesUpdated).toBe(4);
  });

  it('a non-ZERO type with a NULL uaddr → EIO', () => {
    const s = started();
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_UPDATE, upd())).code).toBe('EIO');
  });

  it('after SNP_LAUNCH_FINISH the firmware refuses: EIO with INVALID_GUEST_STATE (2)', () => {
    const s = snpVm();
    snpVcpu(s, async () => {});
    snpLaunch(s);
    const r = errOf(() =>
      s.op(
        SEV_CMD.SNP_LAUNCH_UPDATE,
        upd({ gfnStart: PEND_GPA >> 12n, uaddr: { buffer: s.image, offset: 0 } }),
      ),
    );
    expect(r).toEqual({ code: 'EIO', fw: SEV_RET.INVALID_GUEST_STATE });
  });
});

describe('KVM_SEV_SNP_LAUNCH_FINISH (arch/x86/kvm/svm/sev.c: snp_launch_finish(), snp_launch_update_vmsa())', () => {
  it('before INIT2 → ENOTTY; without SNP_LAUNCH_START → EINVAL; flags ≠ 0 → EINVAL', () => {
    expect(
      errOf(() => snpVm(undefined, { init2: false }).op(SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0 })).code,
    ).toBe('ENOTTY');
    const s = snpVm();
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0 })).code).toBe('EINVAL');
    s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 });
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_FINISH, { flags: 1 })).code).toBe('EINVAL');
  });

  it('measures every vCPU VMSA (page type VMSA) and protects the vCPUs: KVM_GET_REGS → EINVAL', () => {
    const s = snpVm();
    const a = snpVcpu(s, async () => {});
    const b = snpVcpu(s, async () => {});
    snpLaunch(s);
    expect(snpLaunchReport(s.vm)).toMatchObject({
      state: 'running',
      vmsas: 2,
      pagesUpdated: Number(LAUNCH_END / 4096n),
    });
    expect(tryKvm(() => a.getRegs())).toBe('EINVAL');
    expect(tryKvm(() => b.getRegs())).toBe('EINVAL');
  });

  it('an ID block of the wrong size → EFAULT (psp_copy_user_blob of 96 bytes)', () => {
    const s = snpVm();
    s.op(SEV_CMD.SNP_LAUNCH_START, { policy: SNP_POLICY, flags: 0 });
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0, idBlock: new Uint8Array(10) })).code).toBe(
      'EFAULT',
    );
  });

  it('a second SNP_LAUNCH_FINISH → EIO with INVALID_GUEST_STATE (2)', () => {
    const s = snpVm();
    snpVcpu(s, async () => {});
    snpLaunch(s);
    expect(errOf(() => s.op(SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0 }))).toEqual({
      code: 'EIO',
      fw: SEV_RET.INVALID_GUEST_STATE,
    });
  });

  it('pre_sev_run: KVM_RUN before SNP_LAUNCH_FINISH → EINVAL (no VMSA yet)', async () => {
    const s = snpVm();
    const v = snpVcpu(s, async () => {});
    await expect(v.run()).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('SNP launch digest (firmware model vs coco SnpLaunchDigest)', () => {
  it('the MEASUREMENT the firmware reports equals SnpLaunchDigest over the same pages and VMSAs', () => {
    const s = snpVm();
    const v = snpVcpu(s, async () => {});
    const regs = v.getRegs();
    const sregs = v.getSregs();
    // An SNP VM is not a KVM_X86_DEFAULT_VM: sev_es_sync_vmsa() puts the FPU state in the VMSA too.
    const fpu = v.getXsave();
    snpLaunch(s);
    const d = new SnpLaunchDigest();
    for (let gpa = 0n; gpa < LAUNCH_END; gpa += 4096n)
      d.updatePage(gpa, SNP_PAGE_TYPE.NORMAL, s.image.subarray(Number(gpa), Number(gpa) + 4096));
    d.updatePage(SNP_VMSA_GPA, SNP_PAGE_TYPE.VMSA, buildVmsa(regs, sregs, 0x400n, 1n, { fpu }));
    expect(Buffer.from(snpLaunchReport(s.vm)!.measurement).toString('hex')).toBe(
      Buffer.from(d.digest()).toString('hex'),
    );
  });
});

describe('SNP guest memory: RMP, PVALIDATE, #VC (APM §15.36; arch/x86/virt/svm/sev.c: rmp_make_private(), rmp_make_shared())', () => {
  it('launched private pages are validated by the firmware: the guest reads their contents', async () => {
    let v = 0n;
    const s = launched(async (g) => {
      v = g.readU64(DATA_GVA);
      await g.hlt();
    });
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(v).toBe(DATA_VALUE);
    expect(snpRmpEntry(s.vm, DATA_GPA)).toMatchObject({ validated: true });
  });

  it('the host cannot reach a guest-owned page: writing the slot’s userspace buffer does not change what the guest reads', async () => {
    let v = 0n;
    const s = launched(async (g) => {
      v = g.readU64(DATA_GVA);
      await g.hlt();
    });
    new DataView(s.userspace.buffer).setBigUint64(Number(DATA_GPA), 0xdeadn, true);
    await s.vcpu.run();
    expect(v).toBe(DATA_VALUE);
  });

  it('use before PVALIDATE → #VC with error code PAGE_NOT_VALIDATED (0x404)', async () => {
    let frame: { vector: number; errorCode: number | undefined } | undefined;
    const s = launched(async (g) => {
      g.setExceptionHandler(rethrow);
      try {
        g.readU64(PEND_GVA);
      } catch (e) {
        if (e instanceof GuestException) frame = { vector: e.frame.vector, errorCode: e.frame.errorCode };
      }
      await g.hlt();
    });
    await s.vcpu.run();
    expect(frame).toEqual({ vector: VECTOR.VC, errorCode: VC_PAGE_NOT_VALIDATED });
  });

  it('PVALIDATE status codes: 0 success, 255 NOUPDATE, 1 FAIL_INPUT (unaligned); then the page is usable', async () => {
    const codes: number[] = [];
    let v = -1n;
    const s = launched(async (g) => {
      codes.push(g.pvalidate(PEND_GVA, true));
      codes.push(g.pvalidate(PEND_GVA, true));
      codes.push(g.pvalidate(PEND_GVA + 8n, true));
      g.writeU64(PEND_GVA, 42n);
      v = g.readU64(PEND_GVA);
      codes.push(g.pvalidate(PEND_GVA, false));
      codes.push(g.pvalidate(PEND_GVA, false));
      await g.hlt();
    });
    await s.vcpu.run();
    expect(codes).toEqual([
      PVALIDATE_RET.SUCCESS,
      PVALIDATE_RET.FAIL_NOUPDATE,
      PVALIDATE_RET.FAIL_INPUT,
      PVALIDATE_RET.SUCCESS,
      PVALIDATE_RET.FAIL_NOUPDATE,
    ]);
    expect(v).toBe(42n);
  });

  it('a private (C-bit) access to a shared GFN, or a plain access to a private one → KVM_EXIT_MEMORY_FAULT', async () => {
    const s = launched(async (g) => {
      g.readU64(PEND_SHARED_GVA);
    });
    expect(await s.vcpu.run()).toMatchObject({ reason: 'memory-fault', gpa: PEND_GPA, private: false });
  });
});

// Guest helpers for the GHCB protocol.
function ghcbAt(g: Guest): { read: (f: 'swExitInfo1' | 'swExitInfo2' | 'rax') => bigint; gva: bigint } {
  const gva = SHARED_GVA;
  return {
    gva,
    read: (f) => g.readU64(gva + BigInt(f === 'rax' ? 0x1f8 : f === 'swExitInfo1' ? 0x398 : 0x3a0)),
  };
}

function fillGhcb(g: Guest, fields: Record<string, bigint>): void {
  const page = new Uint8Array(4096);
  const gh = new Ghcb(page);
  for (const [k, v] of Object.entries(fields)) gh.set(k as 'rax', v);
  g.writeBytes(SHARED_GVA, page.subarray(0, GHCB_LAYOUT.SHARED_BUFFER_OFFSET));
  g.writeBytes(SHARED_GVA + 0x3f0n, page.subarray(0x3f0, 0x400));
}

describe('SNP page-state changes and MAP_GPA_RANGE (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol(), snp_begin_psc())', () => {
  it('MSR-protocol PSC without KVM_CAP_EXIT_HYPERCALL → PSC_RESP error (bit 63 | 0x015), no exit', async () => {
    let resp = 0n;
    const s = snpVm(undefined, { exitHypercall: false });
    const vcpu = snpVcpu(s, async (g) => {
      g.wrmsr(GHCB, encodeGhcbMsr({ kind: 'psc-req', gfn: PEND_GPA >> 12n, op: PSC_OP.SHARED }));
      await g.vmgexit();
      resp = g.rdmsr(GHCB);
      await g.hlt();
    });
    snpLaunch(s);
    expect((await vcpu.run()).reason).toBe('hlt');
    expect(resp).toBe((1n << 63n) | BigInt(GHCB_MSR_CODE.PSC_RESP));
  });

  it('private → shared → private round trip: PSC exit (nr 12), host conversion, shared access, re-PVALIDATE', async () => {
    const log: string[] = [];
    const s = launched(async (g) => {
      g.setExceptionHandler(rethrow);
      // The guest rescinds validation, asks for shared, uses the page shared.
      g.pvalidate(PEND_GVA, true);
      g.writeU64(PEND_GVA, 7n);
      g.pvalidate(PEND_GVA, false);
      g.wrmsr(GHCB, encodeGhcbMsr({ kind: 'psc-req', gfn: PEND_GPA >> 12n, op: PSC_OP.SHARED }));
      await g.vmgexit();
      log.push(`resp ${g.rdmsr(GHCB).toString(16)}`);
      g.writeU64(PEND_SHARED_GVA, 0x5a5an);
      await g.hlt();
      // Back to private: the page is assigned again, not validated.
      g.wrmsr(GHCB, encodeGhcbMsr({ kind: 'psc-req', gfn: PEND_GPA >> 12n, op: PSC_OP.PRIVATE }));
      await g.vmgexit();
      try {
        g.readU64(PEND_GVA);
      } catch (e) {
        if (e instanceof GuestException) log.push(`#${e.frame.vector} ${e.frame.errorCode?.toString(16)}`);
      }
      log.push(`pvalidate ${g.pvalidate(PEND_GVA, true)}`);
      await g.hlt();
    });
    const e1 = (await s.vcpu.run()) as Exit & { reason: 'hypercall' };
    expect(e1).toMatchObject({ reason: 'hypercall', nr: 12n, args: [PEND_GPA, 1n, MAP_GPA_RANGE.DECRYPTED] });
    s.vm.setMemoryAttributes({ address: PEND_GPA, size: 4096n, attributes: 0n });
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(snpRmpEntry(s.vm, PEND_GPA)).toBeUndefined();
    // The host reads what the guest wrote into the now-shared page.
    expect(new DataView(s.userspace.buffer).getBigUint64(Number(PEND_GPA), true)).toBe(0x5a5an);
    const e2 = await s.vcpu.run();
    expect(e2).toMatchObject({ reason: 'hypercall', nr: 12n, args: [PEND_GPA, 1n, MAP_GPA_RANGE.ENCRYPTED] });
    s.vm.setMemoryAttributes({ address: PEND_GPA, size: 4096n, attributes: P });
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(log).toEqual(['resp 15', '#29 404', 'pvalidate 0']);
  });

  it('a GHCB GPA used without REG_GPA registration ends the run with KVM_RUN’s EINVAL (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit())', async () => {
    const s = launched(async (g) => {
      fillGhcb(g, { swExitCode: BigInt(SVM_EXIT.IOIO), swExitInfo1: 0n, swExitInfo2: 0n, rax: 0n });
      g.wrmsr(GHCB, SHARED_GPA);
      await g.vmgexit();
    });
    // The core reports a KVM_RUN failure raised inside a guest operation as an internal-error exit
    // naming the errno (as it does for the SEV-ES scratch-area EFAULT).
    const e = await s.vcpu.run();
    expect(e.reason).toBe('internal-error');
    expect((e as { detail: string }).detail).toMatch(/EINVAL.*without registering it/);
  });

  it('REG_GPA and PREF_GPA responses (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', async () => {
    let pref = 0n;
    let reg = 0n;
    const s = launched(async (g) => {
      g.wrmsr(GHCB, BigInt(GHCB_MSR_CODE.PREF_GPA_REQ));
      await g.vmgexit();
      pref = g.rdmsr(GHCB);
      await registerGhcb(g);
      reg = g.rdmsr(GHCB);
      await g.hlt();
    });
    await s.vcpu.run();
    expect(pref).toBe((0xfffffffffffffn << 12n) | 0x11n);
    expect(reg).toBe(SHARED_GPA | 0x13n);
  });

  it('GHCB PSC NAE event: adjacent entries merge into one exit; the descriptor is completed; bad header → INVALID_HDR', async () => {
    const out: bigint[] = [];
    const s = launched(async (g) => {
      await registerGhcb(g);
      const desc = encodePscDesc({
        curEntry: 0,
        entries: [0, 1, 2].map((i) => ({
          curPage: 0,
          gfn: (PEND_GPA >> 12n) + BigInt(i),
          op: PSC_OP.SHARED,
          pageSize: '4k' as const,
        })),
      });
      const sb = SHARED_GVA + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
      g.writeBytes(sb, desc.subarray(0, 8 + 3 * 8));
      const req = {
        swExitCode: BigInt(SVM_VMGEXIT.PSC),
        swExitInfo1: 0n,
        swExitInfo2: 0n,
        swScratch: SHARED_GPA + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET),
      };
      fillGhcb(g, req);
      g.wrmsr(GHCB, SHARED_GPA);
      await g.vmgexit();
      out.push(ghcbAt(g).read('swExitInfo2'), BigInt(g.readU16(sb)), g.readU64(sb + 8n) & 0xfffn);
      // end_entry 253 ≥ VMGEXIT_PSC_MAX_ENTRY.
      g.writeU16(sb + 2n, 253);
      fillGhcb(g, req);
      g.wrmsr(GHCB, SHARED_GPA);
      await g.vmgexit();
      out.push(ghcbAt(g).read('swExitInfo2'));
      await g.hlt();
    });
    const e = await s.vcpu.run();
    expect(e).toMatchObject({ reason: 'hypercall', nr: 12n, args: [PEND_GPA, 3n, 0n] });
    s.vm.setMemoryAttributes({ address: PEND_GPA, size: 3n * 4096n, attributes: 0n });
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(out).toEqual([0n, 3n, 1n, VMGEXIT_PSC_ERROR.INVALID_HDR]);
  });

  it('KVM_HC_MAP_GPA_RANGE through the GHCB (VMMCALL): a hypercall exit whose ret lands in RAX', async () => {
    let rax = -1n;
    let vc: number | undefined;
    const s = launched(async (g) => {
      g.setExceptionHandler(rethrow);
      try {
        await g.hypercall(12n, [PEND_GPA, 2n, MAP_GPA_RANGE.DECRYPTED]);
      } catch (e) {
        if (e instanceof GuestException) vc = e.frame.errorCode;
      }
      await registerGhcb(g);
      fillGhcb(g, {
        swExitCode: BigInt(SVM_EXIT.VMMCALL),
        swExitInfo1: 0n,
        swExitInfo2: 0n,
        rax: 12n,
        rbx: PEND_GPA,
        rcx: 2n,
        rdx: 0n,
        cpl: 0n,
      });
      g.wrmsr(GHCB, SHARED_GPA);
      await g.vmgexit();
      rax = ghcbAt(g).read('rax');
      await g.hlt();
    });
    const e = (await s.vcpu.run()) as Exit & { reason: 'hypercall'; ret: bigint };
    expect(e).toMatchObject({ reason: 'hypercall', nr: 12n, args: [PEND_GPA, 2n, 0n] });
    e.ret = 0n;
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(vc).toBe(SVM_EXIT.VMMCALL);
    expect(rax).toBe(0n);
  });
});

describe('SNP teardown and MOVE/COPY as mainline has them (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from(), sev_vm_copy_enc_context_from(), sev_vm_destroy(), sev_asid_free())', () => {
  it('closing launched SNP VMs leaks nothing: ASIDs back, RMP entries released, contexts decommissioned, gmem freed', () => {
    const kvm = createSimKvm();
    for (let i = 0; i < 3; i++) {
      const s = snpVm(kvm);
      snpVcpu(s, async () => {});
      snpLaunch(s);
      expect(leakReport(kvm).rmpAssigned).toBeGreaterThan(0);
      s.vm.close();
      kvm.closeFd(s.gmemFd);
      kvm.closeFd(s.sevFd);
    }
    expect(leakReport(kvm)).toEqual({
      ownedAsids: [],
      firmwareContexts: [],
      boundAsids: 0,
      snpContexts: [],
      rmpAssigned: 0,
      liveVms: 0,
    });
    expect(simStats(kvm)).toMatchObject({ gmemFiles: 0, gmemBytes: 0, liveVms: 0 });
  });

  it('mainline: MOVE from an SNP source passes the type checks; the source’s SNP context stays with it (kvm-x86 next rejects SNP sources; arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
    const kvm = createSimKvm();
    const src = snpVm(kvm);
    snpVcpu(src, async () => {});
    snpLaunch(src);
    const dst = kvm.createVm('sev-snp');
    dst.createVcpu(0);
    dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src.vm]);
    expect(tryKvm(() => src.vm.checkExtension(CAP.VM_TYPES))).toBe('EIO');
    // The destination is now the SNP guest: legacy ids are EPERM there.
    expect(tryKvm(() => dst.memEncryptOp({ id: SEV_CMD.GUEST_STATUS, data: {}, sevFd: src.sevFd }))).toBe(
      'EPERM',
    );
    src.vm.close();
    kvm.closeFd(src.gmemFd);
    dst.close();
    // sev_vm_destroy returns early for the dead source: its SNP context is never decommissioned in mainline;
    // its guest_memfd pages still go back to the hypervisor (sev_gmem_invalidate).
    expect(leakReport(kvm)).toMatchObject({ ownedAsids: [], rmpAssigned: 0, liveVms: 0 });
    expect(leakReport(kvm).snpContexts.length).toBe(1);
  });

  it('mainline: COPY from an SNP source makes an SEV-ES mirror, vmsa_features not copied (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from())', () => {
    const kvm = createSimKvm();
    const src = snpVm(kvm);
    const mirror = kvm.createVm('sev-snp');
    mirror.enableCap(CAP.VM_COPY_ENC_CONTEXT_FROM, [src.vm]);
    // Mirror gate first (arch/x86/kvm/svm/sev.c: is_cmd_allowed_from_mirror()): INIT2 on a mirror → EINVAL.
    expect(tryKvm(() => mirror.memEncryptOp({ id: SEV_CMD.INIT2, data: {}, sevFd: src.sevFd }))).toBe(
      'EINVAL',
    );
    mirror.close();
    src.vm.close();
    kvm.closeFd(src.gmemFd);
    expect(leakReport(kvm).ownedAsids).toEqual([]);
  });
});

describe('SNP GHCB requests: the error answers (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit(), snp_begin_psc(); arch/x86/kvm/x86.c: __kvm_emulate_hypercall())', () => {
  const SB = SHARED_GVA + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
  const SCRATCH = SHARED_GPA + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
  const psc = (
    op: number,
    n: number,
    extra: Partial<{ curPage: number; pageSize: '4k' | '2m'; gfn: bigint }> = {},
  ) =>
    encodePscDesc({
      curEntry: 0,
      entries: Array.from({ length: n }, (_, i) => ({
        curPage: extra.curPage ?? 0,
        gfn: (extra.gfn ?? PEND_GPA >> 12n) + BigInt(i),
        op,
        pageSize: extra.pageSize ?? ('4k' as const),
      })),
    }).subarray(0, 8 + n * 8);
  async function pscRequest(g: Guest, desc: Uint8Array, withScratch = true): Promise<bigint> {
    g.writeBytes(SB, desc);
    fillGhcb(g, {
      swExitCode: BigInt(SVM_VMGEXIT.PSC),
      swExitInfo1: 0n,
      swExitInfo2: 0n,
      ...(withScratch ? { swScratch: SCRATCH } : {}),
    });
    g.wrmsr(GHCB, SHARED_GPA);
    await g.vmgexit();
    return ghcbAt(g).read('swExitInfo2');
  }

  it('GHCB PSC without KVM_CAP_EXIT_HYPERCALL → VMGEXIT_PSC_ERROR_GENERIC, no exit', async () => {
    const out: bigint[] = [];
    const s = snpVm(undefined, { exitHypercall: false });
    const vcpu = snpVcpu(s, async (g) => {
      await registerGhcb(g);
      out.push(await pscRequest(g, psc(PSC_OP.SHARED, 1)));
      await g.hlt();
    });
    snpLaunch(s);
    expect((await vcpu.run()).reason).toBe('hlt');
    expect(out).toEqual([VMGEXIT_PSC_ERROR.GENERIC]);
  });

  it('GHCB PSC: a non-zero hypercall.ret from the host → GENERIC; a cur_page beyond the page count → INVALID_ENTRY; missing sw_scratch → MISSING_INPUT', async () => {
    const out: bigint[] = [];
    const s = launched(async (g) => {
      await registerGhcb(g);
      out.push(await pscRequest(g, psc(PSC_OP.SHARED, 1)));
      out.push(await pscRequest(g, psc(PSC_OP.SHARED, 1, { curPage: 2 })));
      out.push(await pscRequest(g, psc(PSC_OP.SHARED, 1), false));
      out.push(ghcbAt(g).read('swExitInfo1'));
      await g.hlt();
    });
    const e = (await s.vcpu.run()) as Exit & { reason: 'hypercall'; ret: bigint };
    expect(e.reason).toBe('hypercall');
    e.ret = 1n;
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(out).toEqual([VMGEXIT_PSC_ERROR.GENERIC, VMGEXIT_PSC_ERROR.INVALID_ENTRY, 4n, 2n]);
  });

  it('GHCB PSC: PSMASH / UNSMASH entries are completed without an exit; a 2M entry exits with PAGE_SZ_2M and 512 pages', async () => {
    const out: bigint[] = [];
    const s = launched(async (g) => {
      await registerGhcb(g);
      out.push(await pscRequest(g, psc(PSC_OP.PSMASH, 2)));
      out.push(BigInt(g.readU16(SB)));
      out.push(await pscRequest(g, psc(PSC_OP.SHARED, 1, { gfn: 0x200n, pageSize: '2m' })));
      await g.hlt();
    });
    const e = await s.vcpu.run();
    expect(e).toMatchObject({ reason: 'hypercall', args: [0x20_0000n, 512n, MAP_GPA_RANGE.PAGE_SZ_2M] });
    expect((await s.vcpu.run()).reason).toBe('hlt');
    expect(out).toEqual([0n, 2n, 0n]);
  });

  it('GHCB VMMCALL MAP_GPA_RANGE: not enabled → -KVM_ENOSYS; unaligned GPA or 0 pages → -KVM_EINVAL; CPL 3 → -KVM_EPERM', async () => {
    const rax: bigint[] = [];
    const s = snpVm(undefined, { exitHypercall: false });
    const call = async (g: Guest, gpa: bigint, npages: bigint, cpl = 0n) => {
      fillGhcb(g, {
        swExitCode: BigInt(SVM_EXIT.VMMCALL),
        swExitInfo1: 0n,
        swExitInfo2: 0n,
        rax: 12n,
        rbx: gpa,
        rcx: npages,
        rdx: 0n,
        cpl,
      });
      g.wrmsr(GHCB, SHARED_GPA);
      await g.vmgexit();
      rax.push(BigInt.asIntN(64, ghcbAt(g).read('rax')));
    };
    const vcpu = snpVcpu(s, async (g) => {
      await registerGhcb(g);
      await call(g, PEND_GPA, 1n);
      await g.hlt();
      await call(g, PEND_GPA + 8n, 1n);
      await call(g, PEND_GPA, 0n);
      await call(g, PEND_GPA, 1n, 3n);
      await g.hlt();
    });
    snpLaunch(s);
    expect((await vcpu.run()).reason).toBe('hlt');
    s.vm.enableCap(CAP.EXIT_HYPERCALL, [1n << 12n]);
    expect((await vcpu.run()).reason).toBe('hlt');
    expect(rax).toEqual([-1000n, -22n, -22n, -1n]);
  });

  it('an SNP-only MSR request (PSC) from an SEV-ES guest is a termination request (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', async () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm('sev-es');
    const sevFd = kvm.openSevDevice();
    vm.memEncryptOp({ id: SEV_CMD.INIT2, data: { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 }, sevFd });
    const mem = new Uint8Array(1 << 20);
    vm.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: BigInt(mem.length),
      userspace: mem,
    });
    const v = vm.createVcpu(0);
    const msr = encodeGhcbMsr({ kind: 'psc-req', gfn: 1n, op: PSC_OP.SHARED });
    v.setEntry(async (g) => {
      g.wrmsr(GHCB, msr);
      await g.vmgexit();
    });
    expect(await v.run()).toMatchObject({ reason: 'system-event', type: 'sev-term', data: [msr] });
  });
});

describe('PVALIDATE of a page the RMP cannot assign (simulator answer)', () => {
  it('a shared GFN answers FAIL_INPUT and changes nothing (hardware: an RMP #NPF KVM turns into KVM_EXIT_MEMORY_FAULT)', async () => {
    const codes: number[] = [];
    const s = launched(async (g) => {
      codes.push(g.pvalidate(SHARED_GVA + 4096n, true));
      codes.push(g.pvalidate(PEND_SHARED_GVA, true)); // private GFN through a C-bit-clear mapping: validates
      await g.hlt();
    });
    await s.vcpu.run();
    expect(codes).toEqual([PVALIDATE_RET.FAIL_INPUT, PVALIDATE_RET.SUCCESS]);
    expect(snpRmpEntry(s.vm, SHARED_GPA + 4096n)).toBeUndefined();
    expect(snpRmpEntry(s.vm, PEND_GPA)).toMatchObject({ validated: true });
  });
});
