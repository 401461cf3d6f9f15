import {
  decodeSevStatus,
  encodeIoioExitInfo,
  GHCB_ERR,
  GHCB_MSR_CODE,
  Ghcb,
  SEV_MSR,
  SVM_EXIT,
  SVM_VMGEXIT,
} from '@kvmtest/coco';
import { type Exit, SEV_CMD } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { GHCB_GP_EVENT, vcErrorCode } from './es.js';
import { FakeHost, type FakeVm, launchedVm } from './fakes.test-support.js';

const GHCB_GPA = 0x11000n;

/** An SEV-ES VM with one launched vCPU and a shared page for the GHCB at 0x11000. */
function esVm(ghcbVersion?: number): { h: FakeHost; vm: FakeVm; ghcb: Ghcb; mem: Uint8Array } {
  const h = new FakeHost();
  let vm: FakeVm;
  if (ghcbVersion === undefined) vm = launchedVm(h, true, { vcpus: 1 });
  else {
    vm = h.createVm('sev-es');
    vm.cmd(SEV_CMD.INIT2, { vmsaFeatures: 32n, flags: 0, ghcbVersion });
    vm.addVcpu(0);
  }
  const mem = vm.addSlot(0x10000n, 0x4000);
  const ghcb = new Ghcb(mem.subarray(0x1000, 0x2000));
  return { h, vm, ghcb, mem };
}

function run(h: FakeHost, vm: FakeVm) {
  return h.platform.vmgexit(vm.cpu(0));
}

function ioRequest(ghcb: Ghcb, info: bigint, opts: { rax?: bigint; info2?: bigint; scratch?: bigint } = {}) {
  ghcb.reset();
  ghcb.set('swExitCode', BigInt(SVM_EXIT.IOIO));
  ghcb.set('swExitInfo1', info);
  ghcb.set('swExitInfo2', opts.info2 ?? 0n);
  if (opts.rax !== undefined) ghcb.set('rax', opts.rax);
  if (opts.scratch !== undefined) ghcb.set('swScratch', opts.scratch);
}

describe('SEV status MSR and #VC (arch/x86/include/asm/trapnr.h: X86_TRAP_VC; arch/x86/include/asm/msr-index.h: MSR_AMD64_SEV_*)', () => {
  it('MSR 0xC0010131 reads 0 / SEV / SEV+ES, with VMSA features shifted by 2 (arch/x86/include/asm/msr-index.h: MSR_AMD64_SEV_*)', () => {
    const h = new FakeHost();
    const plain = h.createVm();
    expect(h.platform.sevStatusMsr(plain)).toBe(0n);
    const sev = launchedVm(h, false, { vcpus: 0 });
    expect(decodeSevStatus(h.platform.sevStatusMsr(sev))).toEqual(['SEV_ENABLED']);
    const es = launchedVm(h, true, { vcpus: 0 });
    expect(decodeSevStatus(h.platform.sevStatusMsr(es))).toEqual(['SEV_ENABLED', 'SEV_ES_ENABLED']);
    const { vm } = esVm(2);
    expect(decodeSevStatus(h.platform.sevStatusMsr(vm))).toEqual([
      'SEV_ENABLED',
      'SEV_ES_ENABLED',
      'DEBUG_SWAP',
    ]);
  });

  it('IN/OUT, CPUID and other MSRs raise #VC in an SEV-ES guest with the SVM exit code (arch/x86/include/asm/trapnr.h: X86_TRAP_VC)', () => {
    const h = new FakeHost();
    const es = launchedVm(h, true, { vcpus: 0 });
    expect(h.platform.vcErrorCode(es, 'io')).toBe(0x7b);
    expect(h.platform.vcErrorCode(es, 'cpuid')).toBe(0x72);
    expect(h.platform.vcErrorCode(es, 'msr')).toBe(0x7c);
    expect(h.platform.vcErrorCode(es, 'vmmcall')).toBe(0x81);
  });

  it('SEV (non-ES) and default guests do not trap; the GHCB and status MSRs never trap (arch/x86/include/asm/msr-index.h)', () => {
    const h = new FakeHost();
    expect(h.platform.vcErrorCode(launchedVm(h, false, { vcpus: 0 }), 'io')).toBeUndefined();
    expect(h.platform.vcErrorCode(h.createVm(), 'cpuid')).toBeUndefined();
    const es = launchedVm(h, true, { vcpus: 0 });
    expect(vcErrorCode(es.sev, 'msr', SEV_MSR.MSR_AMD64_SEV_ES_GHCB)).toBeUndefined();
    expect(vcErrorCode(es.sev, 'msr', SEV_MSR.MSR_AMD64_SEV)).toBeUndefined();
    expect(vcErrorCode(es.sev, 'msr', 0x10)).toBe(0x7c);
  });
});

describe('GHCB MSR protocol (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
  it('the GHCB MSR starts with SEV_INFO (max = ghcb_version, min = 1, C-bit) (arch/x86/kvm/svm/sev.c: sev_es_vcpu_reset())', () => {
    const { h, vm } = esVm();
    const v = h.platform.ghcbMsrRead(vm.list[0]!);
    expect(v & 0xfffn).toBe(BigInt(GHCB_MSR_CODE.SEV_INFO_RESP));
    expect(v >> 48n).toBe(1n); // legacy ES_INIT → GHCB protocol 1
    expect((v >> 32n) & 0xffffn).toBe(1n);
    expect((v >> 24n) & 0xffn).toBe(51n);
  });

  it('SEV_INFO_REQ answers SEV_INFO_RESP with the VM ghcb_version (INIT2 default 2) (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
    const { h, vm } = esVm(0);
    h.platform.ghcbMsrWrite(vm.list[0]!, BigInt(GHCB_MSR_CODE.SEV_INFO_REQ));
    expect(run(h, vm)).toEqual({ kind: 'resume' });
    expect(h.platform.ghcbMsrRead(vm.list[0]!) >> 48n).toBe(2n);
  });

  it('CPUID_REQ answers the requested register in [63:32] (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
    const { h, vm } = esVm();
    const req = (0x8000001fn << 32n) | (1n << 30n) | BigInt(GHCB_MSR_CODE.CPUID_REQ);
    h.platform.ghcbMsrWrite(vm.list[0]!, req);
    expect(run(h, vm).kind).toBe('resume');
    const r = h.platform.ghcbMsrRead(vm.list[0]!);
    expect(r & 0xfffn).toBe(BigInt(GHCB_MSR_CODE.CPUID_RESP));
    expect((r >> 30n) & 3n).toBe(1n);
    expect(r >> 32n).toBe(2n); // the fake CPUID answers EBX = subleaf + 2
  });

  it('HV_FT_REQ answers the feature bitmap (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
    const { h, vm } = esVm();
    h.platform.ghcbMsrWrite(vm.list[0]!, BigInt(GHCB_MSR_CODE.HV_FT_REQ));
    run(h, vm);
    expect(h.platform.ghcbMsrRead(vm.list[0]!)).toBe((3n << 12n) | BigInt(GHCB_MSR_CODE.HV_FT_RESP));
  });

  it('TERM_REQ exits with system-event sev-term, data[0] = the MSR value (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
    const { h, vm } = esVm();
    const v = (7n << 16n) | (1n << 12n) | BigInt(GHCB_MSR_CODE.TERM_REQ);
    h.platform.ghcbMsrWrite(vm.list[0]!, v);
    expect(run(h, vm)).toEqual({
      kind: 'exit',
      exit: { reason: 'system-event', type: 'sev-term', data: [v] },
    });
  });

  it('an SNP-only request from a non-SNP guest is a termination request (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
    const { h, vm } = esVm();
    const v = (0x1234n << 12n) | BigInt(GHCB_MSR_CODE.REG_GPA_REQ);
    h.platform.ghcbMsrWrite(vm.list[0]!, v);
    const out = run(h, vm);
    expect(out.kind === 'exit' && out.exit.reason === 'system-event' && out.exit.type).toBe('sev-term');
  });

  it('an unknown code leaves the MSR unchanged and resumes (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol())', () => {
    const { h, vm } = esVm();
    h.platform.ghcbMsrWrite(vm.list[0]!, 0xabcn | (5n << 40n));
    expect(run(h, vm)).toEqual({ kind: 'resume' });
    expect(h.platform.ghcbMsrRead(vm.list[0]!)).toBe(0xabcn | (5n << 40n));
  });
});

describe('VMGEXIT through the GHCB (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit(); arch/x86/kvm/svm/svm.c: io_interception())', () => {
  it('GHCB GPA 0, or not backed by memory → resume, nothing done (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit())', () => {
    const { h, vm } = esVm();
    h.platform.ghcbMsrWrite(vm.list[0]!, 0n);
    expect(run(h, vm)).toEqual({ kind: 'resume' });
    h.platform.ghcbMsrWrite(vm.list[0]!, 0x100000n);
    expect(run(h, vm)).toEqual({ kind: 'resume' });
  });

  it('OUT through the GHCB becomes an io exit with RAX as data; the valid bitmap is cleared (arch/x86/kvm/svm/svm.c: io_interception())', () => {
    const { h, vm, ghcb } = esVm();
    ioRequest(
      ghcb,
      encodeIoioExitInfo({ direction: 'out', size: 4, port: 0x1000, string: false, rep: false }),
      {
        rax: 0xcafe1234n,
      },
    );
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    const out = run(h, vm);
    expect(out).toEqual({
      kind: 'exit',
      exit: {
        reason: 'io',
        direction: 'out',
        port: 0x1000,
        size: 4,
        count: 1,
        data: new Uint8Array([0x34, 0x12, 0xfe, 0xca]),
      },
    });
    expect(ghcb.isValid('rax')).toBe(false);
    expect(ghcb.get('swExitInfo1')).toBe(0n);
    h.platform.completeVmgexit(vm.cpu(0), (out as { exit: Exit }).exit);
    // arch/x86/kvm/svm/sev.c: sev_es_sync_to_ghcb(): RAX written back.
    expect(ghcb.getIfValid('rax')).toBe(0xcafe1234n);
  });

  it('IN through the GHCB: the host data lands in the GHCB RAX (merged below 4 bytes) (arch/x86/kvm/svm/sev.c: sev_es_sync_to_ghcb())', () => {
    const { h, vm, ghcb } = esVm();
    ioRequest(ghcb, encodeIoioExitInfo({ direction: 'in', size: 2, port: 0x60, string: false, rep: false }), {
      rax: 0xffff_0000_1111_2222n,
    });
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    const out = run(h, vm);
    if (out.kind !== 'exit' || out.exit.reason !== 'io') throw new Error('expected io exit');
    expect(out.exit.direction).toBe('in');
    out.exit.data.set([0xbb, 0xaa]);
    h.platform.completeVmgexit(vm.cpu(0), out.exit);
    expect(ghcb.getIfValid('rax')).toBe(0xffff_0000_1111_aabbn);
  });

  it('OUT without RAX marked valid → GHCB error MISSING_INPUT, guest resumed (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit())', () => {
    const { h, vm, ghcb } = esVm();
    ioRequest(ghcb, encodeIoioExitInfo({ direction: 'out', size: 1, port: 0x80, string: false, rep: false }));
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    expect(run(h, vm)).toEqual({ kind: 'resume' });
    expect(ghcb.getIfValid('swExitInfo1')).toBe(2n);
    expect(ghcb.getIfValid('swExitInfo2')).toBe(BigInt(GHCB_ERR.MISSING_INPUT));
  });

  it('IN needs no RAX (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit())', () => {
    const { h, vm, ghcb } = esVm();
    ioRequest(ghcb, encodeIoioExitInfo({ direction: 'in', size: 1, port: 0x80, string: false, rep: false }));
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    expect(run(h, vm).kind).toBe('exit');
  });

  it('sw_exit_code / info1 / info2 not valid → MISSING_INPUT; ghcb_usage ≠ 0 → INVALID_USAGE; unknown exit → INVALID_EVENT (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit())', () => {
    const { h, vm, ghcb } = esVm();
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    ghcb.reset();
    ghcb.set('swExitCode', BigInt(SVM_EXIT.IOIO));
    ghcb.set('swExitInfo1', 0n);
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.MISSING_INPUT));
    ioRequest(ghcb, 1n);
    ghcb.usage = 1;
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.INVALID_USAGE));
    ghcb.usage = 0;
    ghcb.reset();
    ghcb.set('swExitCode', 0x1234n);
    ghcb.set('swExitInfo1', 0n);
    ghcb.set('swExitInfo2', 0n);
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.INVALID_EVENT));
    ghcb.reset();
    ghcb.set('swExitCode', BigInt(SVM_VMGEXIT.PSC));
    ghcb.set('swExitInfo1', 0n);
    ghcb.set('swExitInfo2', 0n);
    ghcb.set('swScratch', 0x11800n);
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.INVALID_EVENT));
  });

  it('string I/O needs sw_scratch; a scratch inside the GHCB must lie in the shared buffer (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit(), setup_vmgexit_scratch())', () => {
    const { h, vm, ghcb } = esVm();
    const info = encodeIoioExitInfo({ direction: 'out', size: 1, port: 0x3f8, string: true, rep: true });
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    ioRequest(ghcb, info, { info2: 4n });
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.MISSING_INPUT));
    ioRequest(ghcb, info, { info2: 4n, scratch: GHCB_GPA + 0x100n });
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.INVALID_SCRATCH_AREA));
    ghcb.sharedBuffer.set([72, 105, 33, 10]);
    ioRequest(ghcb, info, { info2: 4n, scratch: GHCB_GPA + 0x800n });
    const out = run(h, vm);
    expect(out).toEqual({
      kind: 'exit',
      exit: {
        reason: 'io',
        direction: 'out',
        port: 0x3f8,
        size: 1,
        count: 4,
        data: new Uint8Array([72, 105, 33, 10]),
      },
    });
  });

  it('string IN writes the host data into the scratch area outside the GHCB (arch/x86/kvm/svm/sev.c: sev_es_string_io())', () => {
    const { h, vm, ghcb, mem } = esVm();
    const info = encodeIoioExitInfo({ direction: 'in', size: 2, port: 0x1f0, string: true, rep: true });
    ioRequest(ghcb, info, { info2: 2n, scratch: 0x12000n });
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    const out = run(h, vm);
    if (out.kind !== 'exit' || out.exit.reason !== 'io') throw new Error('expected io exit');
    expect(out.exit.count).toBe(2);
    out.exit.data.set([1, 2, 3, 4]);
    h.platform.completeVmgexit(vm.cpu(0), out.exit);
    expect(mem.subarray(0x2000, 0x2004)).toEqual(new Uint8Array([1, 2, 3, 4]));
  });

  it('a scratch outside guest memory fails KVM_RUN with EFAULT (arch/x86/kvm/svm/sev.c: setup_vmgexit_scratch())', () => {
    const { h, vm, ghcb } = esVm();
    const info = encodeIoioExitInfo({ direction: 'out', size: 1, port: 0x3f8, string: true, rep: true });
    ioRequest(ghcb, info, { info2: 4n, scratch: 0x900000n });
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    expect(run(h, vm)).toMatchObject({ kind: 'error', errno: 'EFAULT' });
  });

  it('CPUID through the GHCB answers RAX..RDX; TERM_REQUEST exits with the GHCB GPA (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit())', () => {
    const { h, vm, ghcb } = esVm();
    ghcb.reset();
    ghcb.set('swExitCode', BigInt(SVM_EXIT.CPUID));
    ghcb.set('swExitInfo1', 0n);
    ghcb.set('swExitInfo2', 0n);
    ghcb.set('rax', 0x8000001fn);
    ghcb.set('rcx', 0n);
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    expect(run(h, vm).kind).toBe('resume');
    expect(ghcb.getIfValid('rax')).toBe(BigInt((0x8000001f ^ 0x1111) >>> 0));
    expect(ghcb.getIfValid('rbx')).toBe(2n);
    ghcb.reset();
    ghcb.set('swExitCode', BigInt(SVM_VMGEXIT.TERM_REQUEST));
    ghcb.set('swExitInfo1', 0n);
    ghcb.set('swExitInfo2', 0n);
    expect(run(h, vm)).toEqual({
      kind: 'exit',
      exit: { reason: 'system-event', type: 'sev-term', data: [GHCB_GPA] },
    });
  });

  it('MMIO_WRITE through the GHCB becomes an mmio exit with the scratch data (arch/x86/kvm/svm/sev.c: setup_vmgexit_scratch())', () => {
    const { h, vm, ghcb } = esVm();
    ghcb.sharedBuffer.set([9, 8, 7, 6]);
    ghcb.reset();
    ghcb.set('swExitCode', BigInt(SVM_VMGEXIT.MMIO_WRITE));
    ghcb.set('swExitInfo1', 0xfeb00000n);
    ghcb.set('swExitInfo2', 4n);
    ghcb.set('swScratch', GHCB_GPA + 0x800n);
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    expect(run(h, vm)).toEqual({
      kind: 'exit',
      exit: { reason: 'mmio', gpa: 0xfeb00000n, isWrite: true, len: 4, data: new Uint8Array([9, 8, 7, 6]) },
    });
  });

  it('MSR through the GHCB: RDMSR answers RDX:RAX, WRMSR takes them; an unknown MSR reports a #GP to inject (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit())', () => {
    const { h, vm, ghcb } = esVm();
    h.platform.ghcbMsrWrite(vm.list[0]!, GHCB_GPA);
    const req = (write: boolean, msr: bigint, rax = 0n, rdx = 0n) => {
      ghcb.reset();
      ghcb.set('swExitCode', BigInt(SVM_EXIT.MSR));
      ghcb.set('swExitInfo1', write ? 1n : 0n);
      ghcb.set('swExitInfo2', 0n);
      ghcb.set('rcx', msr);
      if (write) {
        ghcb.set('rax', rax);
        ghcb.set('rdx', rdx);
      }
      return run(h, vm);
    };
    expect(req(false, 0x10n).kind).toBe('resume');
    expect([ghcb.getIfValid('rax'), ghcb.getIfValid('rdx')]).toEqual([0x55667788n, 0x11223344n]);
    expect(req(true, 0x10n, 0xaaaan, 0xbn).kind).toBe('resume');
    expect(vm.msrs.get(0x10)).toBe(0xb_0000_aaaan);
    req(false, 0x99n);
    expect([ghcb.get('swExitInfo1'), ghcb.get('swExitInfo2')]).toEqual([1n, GHCB_GP_EVENT]);
    // arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit(): WRMSR without RAX/RDX marked valid → MISSING_INPUT.
    ghcb.reset();
    ghcb.set('swExitCode', BigInt(SVM_EXIT.MSR));
    ghcb.set('swExitInfo1', 1n);
    ghcb.set('swExitInfo2', 0n);
    ghcb.set('rcx', 0x10n);
    run(h, vm);
    expect(ghcb.get('swExitInfo2')).toBe(BigInt(GHCB_ERR.MISSING_INPUT));
  });
});
