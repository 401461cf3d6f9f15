// Model-based property test of SNP flows (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl(), __sev_guest_init(), snp_launch_start(), sev_asid_new(), sev_asid_free()): random sequences of VM creation,
// INIT2, vCPU creation, SNP_LAUNCH_START / UPDATE / FINISH (in any order, with bad inputs) and close over
// several sev-snp VMs of the simulator, each result checked against a small reference of the rules; a
// failing command must change nothing (the firmware's page count and the RMP agree with the reference);
// after every sequence, closing everything gives back every ASID, RMP entry, SNP context and guest_memfd.

import { type Errno, isKvmError, MEM_FLAG, MEMORY_ATTRIBUTE, SEV_CMD, type Vm } from '@kvmtest/kvm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { simStats, snpLaunchReport } from '../../index.js';
import { createSimKvm } from '../sim.js';
import { leakReport } from './snp-harness.test-support.js';

const SLOT_PAGES = 16;
const PRIVATE_PAGES = 12; // GFNs 0..11 private, 12..15 shared
const SNP_ASIDS = 3; // minSevAsid 4 → ASIDs 1..3 for SEV-ES/SNP
const OK_POLICY = (1n << 17n) | (1n << 16n);
const POLICIES = {
  ok: OK_POLICY,
  'no-mbo': 1n << 16n,
  outside: OK_POLICY | (1n << 18n),
  'no-smt': 1n << 17n,
} as const;

type Op =
  | { k: 'create' }
  | { k: 'init2'; vm: number; bad: boolean }
  | { k: 'vcpu'; vm: number }
  | { k: 'start'; vm: number; policy: keyof typeof POLICIES; flags: number }
  | { k: 'update'; vm: number; gfn: number; pages: number; type: number; aligned: boolean }
  | { k: 'finish'; vm: number; flags: number }
  | { k: 'close'; vm: number };

interface RefVm {
  closed: boolean;
  inited: boolean;
  vcpus: number;
  ctx: 'none' | 'launch' | 'running';
  assigned: Set<number>;
}

interface SimVm {
  vm: Vm;
  sevFd: number;
  gmemFd: number;
  image: Uint8Array;
}

/** The reference: what the kernel answers (undefined = success), updating its state on success only. */
function expected(ref: RefVm[], op: Op): Errno | undefined {
  if (op.k === 'create') {
    ref.push({ closed: false, inited: false, vcpus: 0, ctx: 'none', assigned: new Set() });
    return undefined;
  }
  const v = ref[op.vm]!;
  switch (op.k) {
    case 'init2': {
      if (v.inited) return 'EPERM'; // sev_mem_enc_ioctl(): id 22 < 100 on an SNP guest
      if (v.vcpus > 0 || op.bad) return 'EINVAL'; // __sev_guest_init(): vCPUs exist, or bad flags/features
      const inUse = ref.filter((r) => !r.closed && r.inited).length;
      if (inUse >= SNP_ASIDS) return 'EBUSY'; // sev_asid_new(): no free ASID
      v.inited = true;
      return undefined;
    }
    case 'vcpu':
      v.vcpus++;
      return undefined;
    case 'start':
      if (!v.inited) return 'ENOTTY';
      if (v.ctx !== 'none' || op.flags !== 0) return 'EINVAL';
      if (op.policy === 'no-mbo' || op.policy === 'outside') return 'EINVAL';
      if (op.policy === 'no-smt') return 'EIO'; // firmware POLICY_FAILURE
      v.ctx = 'launch';
      return undefined;
    case 'update': {
      if (!v.inited || v.ctx === 'none') return 'EINVAL';
      if (!op.aligned || (op.type !== 1 && op.type !== 3 && op.type !== 4)) return 'EINVAL';
      if (op.gfn >= SLOT_PAGES) return 'EINVAL'; // no guest_memfd memslot there
      const n = Math.min(op.pages, SLOT_PAGES - op.gfn);
      let done = 0;
      for (; done < n; done++) {
        const gfn = op.gfn + done;
        if (v.assigned.has(gfn) || gfn >= PRIVATE_PAGES || v.ctx !== 'launch') break;
        v.assigned.add(gfn);
      }
      return n > 0 && done === 0 ? 'EIO' : undefined;
    }
    case 'finish':
      if (!v.inited) return 'ENOTTY';
      if (v.ctx === 'none' || op.flags !== 0) return 'EINVAL';
      if (v.ctx === 'running') return 'EIO'; // INVALID_GUEST_STATE
      v.ctx = 'running';
      return undefined;
    case 'close':
      v.closed = true;
      return undefined;
  }
}

function createSim(kvm: ReturnType<typeof createSimKvm>): SimVm {
  const vm = kvm.createVm('sev-snp');
  const sevFd = kvm.openSevDevice();
  const size = BigInt(SLOT_PAGES * 4096);
  const gmemFd = vm.createGuestMemfd(size);
  const image = new Uint8Array(SLOT_PAGES * 4096).fill(0xa5);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: MEM_FLAG.GUEST_MEMFD,
    guestPhysAddr: 0n,
    memorySize: size,
    userspace: new Uint8Array(SLOT_PAGES * 4096),
    guestMemfd: gmemFd,
    guestMemfdOffset: 0n,
  });
  vm.setMemoryAttributes({
    address: 0n,
    size: BigInt(PRIVATE_PAGES * 4096),
    attributes: MEMORY_ATTRIBUTE.PRIVATE,
  });
  return { vm, sevFd, gmemFd, image };
}

function apply(kvm: ReturnType<typeof createSimKvm>, sims: SimVm[], op: Op): Errno | undefined {
  if (op.k === 'create') {
    sims.push(createSim(kvm));
    return undefined;
  }
  const s = sims[op.vm]!;
  const cmd = (id: number, data?: unknown) => s.vm.memEncryptOp({ id, data, sevFd: s.sevFd, error: 0 });
  try {
    switch (op.k) {
      case 'init2':
        cmd(SEV_CMD.INIT2, { vmsaFeatures: op.bad ? 1n : 0n, flags: 0, ghcbVersion: 0 });
        break;
      case 'vcpu':
        s.vm.createVcpu(s.vm.vcpus.length);
        break;
      case 'start':
        cmd(SEV_CMD.SNP_LAUNCH_START, { policy: POLICIES[op.policy], flags: op.flags });
        break;
      case 'update':
        cmd(SEV_CMD.SNP_LAUNCH_UPDATE, {
          gfnStart: BigInt(op.gfn),
          uaddr: { buffer: s.image, offset: 0 },
          len: BigInt(op.pages * 4096 + (op.aligned ? 0 : 8)),
          type: op.type,
          flags: 0,
        });
        break;
      case 'finish':
        cmd(SEV_CMD.SNP_LAUNCH_FINISH, { flags: op.flags });
        break;
      case 'close':
        s.vm.close();
        kvm.closeFd(s.gmemFd);
        kvm.closeFd(s.sevFd);
        break;
    }
    return undefined;
  } catch (e) {
    if (isKvmError(e)) return e.code;
    throw e;
  }
}

function opArb(): fc.Arbitrary<{ kind: string; vm: number; op: Op }> {
  const vm = fc.nat(3);
  return fc
    .oneof(
      fc.constant({ k: 'create' } as Op),
      fc.record({ k: fc.constant('init2' as const), vm, bad: fc.boolean() }),
      fc.record({ k: fc.constant('vcpu' as const), vm }),
      fc.record({
        k: fc.constant('start' as const),
        vm,
        policy: fc.constantFrom(...(Object.keys(POLICIES) as (keyof typeof POLICIES)[])),
        flags: fc.constantFrom(0, 0, 0, 1),
      }),
      fc.record({
        k: fc.constant('update' as const),
        vm,
        gfn: fc.nat(17),
        pages: fc.nat(4),
        type: fc.constantFrom(1, 1, 1, 2, 3, 4, 7),
        aligned: fc.constantFrom(true, true, true, false),
      }),
      fc.record({ k: fc.constant('finish' as const), vm, flags: fc.constantFrom(0, 0, 0, 1) }),
      fc.record({ k: fc.constant('close' as const), vm }),
    )
    .map((op) => ({ kind: op.k, vm: 'vm' in op ? op.vm : -1, op }));
}

function runSequence(ops: readonly Op[]): void {
  const kvm = createSimKvm({ cpu: { minSevAsid: SNP_ASIDS + 1, maxSevAsid: 8 } });
  const ref: RefVm[] = [];
  const sims: SimVm[] = [];
  for (const raw of ops) {
    // Operations name an open VM by index among the created ones; skip when there is none.
    let op = raw;
    if (op.k !== 'create') {
      if (ref.length === 0) continue;
      const idx = op.vm % ref.length;
      if (ref[idx]!.closed) continue;
      op = { ...op, vm: idx };
    }
    const want = expected(ref, op);
    const got = apply(kvm, sims, op);
    expect(got, JSON.stringify(op)).toBe(want);
    if (op.k !== 'create' && op.k !== 'close') {
      const r = ref[op.vm]!;
      const report = snpLaunchReport(sims[op.vm]!.vm);
      // Nothing changed by a failure: the firmware's pages and the RMP are the reference's.
      expect(report?.pagesUpdated ?? 0).toBe(r.assigned.size);
      expect(report?.rmpAssigned ?? 0).toBe(r.assigned.size);
      expect(report?.state ?? 'none').toBe(
        r.ctx === 'none' ? 'none' : r.ctx === 'launch' ? 'launch' : 'running',
      );
    }
  }
  for (const [i, r] of ref.entries()) if (!r.closed) apply(kvm, sims, { k: 'close', vm: i });
  expect(leakReport(kvm)).toEqual({
    ownedAsids: [],
    firmwareContexts: [],
    boundAsids: 0,
    snpContexts: [],
    rmpAssigned: 0,
    liveVms: 0,
  });
  // Only /dev/kvm itself stays open.
  expect(simStats(kvm)).toMatchObject({ liveVms: 0, gmemFiles: 0, gmemBytes: 0, openFds: 1 });
}

describe('SNP model against a reference of the rules (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl(), __sev_guest_init(), snp_launch_start(), sev_asid_new(), sev_asid_free())', () => {
  it('random create/INIT2/vCPU/SNP_LAUNCH_START/UPDATE/FINISH/close sequences agree with the rules and leak nothing', () => {
    fc.assert(
      fc.property(fc.array(opArb(), { minLength: 1, maxLength: 40 }), (ops) =>
        runSequence(ops.map((o) => o.op)),
      ),
      { numRuns: 150, seed: 0x5e5 },
    );
  });

  it('a full launch sequence on one VM, then everything closed', () => {
    runSequence([
      { k: 'create' },
      { k: 'init2', vm: 0, bad: false },
      { k: 'vcpu', vm: 0 },
      { k: 'start', vm: 0, policy: 'ok', flags: 0 },
      { k: 'update', vm: 0, gfn: 0, pages: 4, type: 1, aligned: true },
      { k: 'update', vm: 0, gfn: 2, pages: 4, type: 1, aligned: true },
      { k: 'finish', vm: 0, flags: 0 },
      { k: 'finish', vm: 0, flags: 0 },
    ]);
  });
});
