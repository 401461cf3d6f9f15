// Model-based property test: random sequences of VM creation, INIT flavours, vCPU creation, launch
// steps, MOVE, COPY and close over several VMs, each checked against a small reference model of the
// kernel's rules (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl(), the INIT and launch handlers, MOVE/COPY, the ASID allocator); after every sequence, closing all VMs must give every
// ASID back and leave no firmware context.

import type { VmType } from '@kvmtest/coco';
import { type Errno, SEV_CMD, tryKvm } from '@kvmtest/kvm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cpuidWith, FakeHost, type FakeVm, POLICY } from './fakes.test-support.js';

// ---- the reference model --------------------------------------------------------------------------------

interface RefVm {
  type: VmType;
  closed: boolean;
  dead: boolean;
  active: boolean;
  es: boolean;
  needInit: boolean;
  owner: number | undefined;
  /** Firmware handle held (0 = none); shared by mirrors. */
  handle: number;
  fdOk: boolean;
  vcpus: number;
  /** vCPUs whose VMSA was launched (a prefix of the vCPU list). */
  protectedVcpus: number;
  /** ASID slot this VM's context holds (owner side); mirrors point at their owner's. */
  asid: boolean;
  /** Mirrors referencing this VM. */
  refs: number;
}

const ES_ASIDS = 2; // ASIDs 1..2
const SEV_ASIDS = 3; // ASIDs 3..5

class Ref {
  readonly vms: RefVm[] = [];
  #handles = 0;

  owned(es: boolean): number {
    return this.vms.filter(
      (v) => v.asid && v.owner === undefined && v.es === es && (!v.closed || v.refs > 0) && v.active,
    ).length;
  }

  create(type: VmType): void {
    const needInit = type === 'sev' || type === 'sev-es';
    this.vms.push({
      type,
      closed: false,
      dead: false,
      active: false,
      es: false,
      needInit,
      owner: undefined,
      handle: 0,
      fdOk: false,
      vcpus: 0,
      protectedVcpus: 0,
      asid: false,
      refs: 0,
    });
  }

  init(i: number, id: number): Errno | undefined {
    const v = this.vms[i]!;
    if (v.dead) return 'EIO';
    if (v.owner !== undefined) return 'EINVAL';
    let es: boolean;
    if (id === SEV_CMD.INIT2) {
      if (!v.needInit) return 'EINVAL';
      es = v.type === 'sev-es';
    } else {
      if (v.type !== 'default') return 'EINVAL';
      es = id === SEV_CMD.ES_INIT;
    }
    if (v.vcpus !== 0) return 'EINVAL';
    if (v.active) return 'EINVAL';
    if (this.owned(es) >= (es ? ES_ASIDS : SEV_ASIDS)) return 'EBUSY';
    Object.assign(v, { active: true, es, needInit: false, asid: true });
    return undefined;
  }

  addVcpu(i: number): Errno | undefined {
    const v = this.vms[i]!;
    if (v.dead) return 'EIO';
    v.vcpus++;
    return undefined;
  }

  launchStart(i: number): Errno | undefined {
    const v = this.vms[i]!;
    if (v.dead) return 'EIO';
    if (v.owner !== undefined) return 'EINVAL';
    if (!v.active) return 'ENOTTY';
    // The firmware binds the VM's ASID; a second context on the same ASID is ASID_OWNED.
    if (v.handle !== 0) return 'EIO';
    v.handle = ++this.#handles;
    v.fdOk = true;
    return undefined;
  }

  updateVmsa(i: number): Errno | undefined {
    const v = this.vms[i]!;
    if (v.dead) return 'EIO';
    if (!(v.active && v.es)) return 'ENOTTY';
    if (v.vcpus === 0) return undefined;
    if (!v.fdOk) return 'EBADF';
    if (v.handle === 0) return 'EIO';
    v.protectedVcpus = v.vcpus;
    return undefined;
  }

  move(d: number, s: number): Errno | undefined {
    const dst = this.vms[d]!;
    const src = this.vms[s]!;
    if (dst.dead) return 'EIO';
    if (src.closed) return 'EBADF';
    if (d === s) return 'EINVAL';
    if (dst.type !== src.type || dst.active || !src.active) return 'EINVAL';
    if (src.es && (src.vcpus !== dst.vcpus || src.protectedVcpus < src.vcpus)) return 'EINVAL';
    Object.assign(dst, {
      active: true,
      es: src.es,
      owner: src.owner,
      handle: src.handle,
      asid: src.asid,
      refs: src.refs,
      protectedVcpus: src.es ? dst.vcpus : dst.protectedVcpus,
    });
    for (const m of this.vms) if (m.owner === s) m.owner = d;
    Object.assign(src, {
      active: false,
      es: false,
      owner: undefined,
      handle: 0,
      asid: false,
      refs: 0,
      dead: true,
    });
    src.protectedVcpus = 0;
    return undefined;
  }

  copy(d: number, s: number): Errno | undefined {
    const dst = this.vms[d]!;
    const src = this.vms[s]!;
    if (dst.dead) return 'EIO';
    if (src.closed) return 'EBADF';
    if (d === s) return 'EINVAL';
    if (dst.active || !src.active || src.owner !== undefined || dst.vcpus !== 0) return 'EINVAL';
    Object.assign(dst, {
      active: true,
      es: src.es,
      needInit: false,
      owner: s,
      handle: src.handle,
      fdOk: src.fdOk,
    });
    src.refs++;
    return undefined;
  }

  close(i: number): void {
    const v = this.vms[i]!;
    v.closed = true;
    this.#release(i);
  }

  #release(i: number): void {
    const v = this.vms[i]!;
    if (!v.closed || v.refs > 0) return;
    if (v.owner !== undefined) {
      const o = v.owner;
      v.owner = undefined;
      v.active = false;
      this.vms[o]!.refs--;
      this.#release(o);
      return;
    }
    v.active = false;
    v.asid = false;
  }
}

// ---- the property ---------------------------------------------------------------------------------------

type Op =
  | { k: 'create'; type: VmType }
  | { k: 'sevvm'; es: boolean; vcpus: number }
  | { k: 'aux'; vcpus: number }
  | { k: 'init'; vm: number; id: number }
  | { k: 'vcpu'; vm: number }
  | { k: 'start'; vm: number }
  | { k: 'vmsa'; vm: number }
  | { k: 'move'; dst: number; src: number }
  | { k: 'copy'; dst: number; src: number }
  | { k: 'close'; vm: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .record({ es: fc.boolean(), vcpus: fc.integer({ min: 0, max: 3 }) })
      .map((r) => ({ k: 'sevvm' as const, ...r })),
  },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 3 }).map((vcpus) => ({ k: 'aux' as const, vcpus })) },
  {
    weight: 3,
    arbitrary: fc
      .constantFrom<VmType>('default', 'default', 'sev', 'sev-es')
      .map((type) => ({ k: 'create' as const, type })),
  },
  {
    weight: 3,
    arbitrary: fc
      .record({ vm: fc.nat(9), id: fc.constantFrom(SEV_CMD.INIT, SEV_CMD.ES_INIT, SEV_CMD.INIT2) })
      .map((r) => ({ k: 'init' as const, ...r })),
  },
  { weight: 3, arbitrary: fc.nat(9).map((vm) => ({ k: 'vcpu' as const, vm })) },
  { weight: 2, arbitrary: fc.nat(9).map((vm) => ({ k: 'start' as const, vm })) },
  { weight: 2, arbitrary: fc.nat(9).map((vm) => ({ k: 'vmsa' as const, vm })) },
  {
    weight: 4,
    arbitrary: fc.record({ dst: fc.nat(9), src: fc.nat(9) }).map((r) => ({ k: 'move' as const, ...r })),
  },
  {
    weight: 3,
    arbitrary: fc.record({ dst: fc.nat(9), src: fc.nat(9) }).map((r) => ({ k: 'copy' as const, ...r })),
  },
  { weight: 1, arbitrary: fc.nat(9).map((vm) => ({ k: 'close' as const, vm })) },
);

function runSequence(ops: readonly Op[]): void {
  const h = new FakeHost({ cpuid: cpuidWith(3, 5) });
  const ref = new Ref();
  const sim: FakeVm[] = [];
  // Indices ≥ 1e6 name the VM created n-th by a macro step; others pick among existing VMs.
  const pick = (n: number) =>
    sim.length === 0 ? undefined : n >= 1_000_000 ? n - 1_000_000 : n % sim.length;
  const expanded: Op[] = [];
  for (const op of ops) {
    // Macro steps: the selftest's sev_vm_create / aux_vm_create, on a fresh default VM.
    if (op.k === 'sevvm' || op.k === 'aux') {
      const n = 1_000_000 + expanded.filter((o) => o.k === 'create').length;
      expanded.push({ k: 'create', type: 'default' });
      if (op.k === 'sevvm') expanded.push({ k: 'init', vm: n, id: op.es ? SEV_CMD.ES_INIT : SEV_CMD.INIT });
      for (let i = 0; i < op.vcpus; i++) expanded.push({ k: 'vcpu', vm: n });
      if (op.k === 'sevvm') expanded.push({ k: 'start', vm: n }, { k: 'vmsa', vm: n });
    } else expanded.push(op);
  }
  for (const [step, op] of expanded.entries()) {
    const where = `step ${step} ${JSON.stringify(op)}`;
    if (op.k === 'create') {
      sim.push(h.createVm(op.type));
      ref.create(op.type);
      continue;
    }
    if (op.k === 'move' || op.k === 'copy') {
      const d = pick(op.dst);
      const s = pick(op.src);
      if (d === undefined || s === undefined || ref.vms[d]!.closed) continue;
      const got = tryKvm(() => (op.k === 'move' ? sim[d]!.move(sim[s]!.fd) : sim[d]!.copy(sim[s]!.fd)));
      const want = op.k === 'move' ? ref.move(d, s) : ref.copy(d, s);
      expect(got, where).toBe(want);
    } else {
      if (op.k === 'sevvm' || op.k === 'aux') continue; // expanded above
      const i = pick(op.vm);
      if (i === undefined || ref.vms[i]!.closed) continue;
      const vm = sim[i]!;
      const es = ref.vms[i]!.es;
      let got: Errno | undefined;
      let want: Errno | undefined;
      switch (op.k) {
        case 'init':
          got = tryKvm(() =>
            vm.cmd(
              op.id,
              op.id === SEV_CMD.INIT2 ? { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 } : undefined,
            ),
          );
          want = ref.init(i, op.id);
          break;
        case 'vcpu':
          got = tryKvm(() => {
            vm.gate();
            vm.addVcpu();
          });
          want = ref.addVcpu(i);
          break;
        case 'start':
          got = tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: es ? POLICY.ES : 0 }));
          want = ref.launchStart(i);
          break;
        case 'vmsa':
          got = tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA));
          want = ref.updateVmsa(i);
          break;
        case 'close':
          vm.close();
          ref.close(i);
          break;
      }
      expect(got, where).toBe(want);
    }
    // Observable state agrees after every step.
    sim.forEach((v, j) => {
      const r = ref.vms[j]!;
      if (r.closed) return;
      expect(
        { active: v.sev.active, es: v.sev.esActive, dead: v.dead, mirror: v.sev.owner !== undefined },
        `${where} vm ${j}`,
      ).toEqual({
        active: r.active,
        es: r.active && r.es,
        dead: r.dead,
        mirror: r.owner !== undefined,
      });
      expect(v.sev.migrationInProgress || v.sev.locked).toBe(false);
    });
    expect(h.platform.asids.ownedAsids().length, where).toBe(ref.owned(true) + ref.owned(false));
  }
  for (const v of sim) v.close();
  const leaks = h.platform.leakReport();
  expect(leaks).toEqual({
    ownedAsids: [],
    firmwareContexts: [],
    boundAsids: 0,
    snpContexts: [],
    rmpAssigned: 0,
    liveVms: 0,
  });
}

describe('SEV model against a reference of the rules (arch/x86/kvm/svm/sev.c)', () => {
  it('property: random create/INIT/vCPU/launch/MOVE/COPY/close sequences agree with the rules and leak nothing (arch/x86/kvm/svm/sev.c)', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), (ops) => runSequence(ops)),
      { numRuns: 250 },
    );
  });

  it('sev_migrate_tests shape: SEV and SEV-ES VMs moved along a chain and mirrored, then all closed (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const ops: Op[] = [
      { k: 'create', type: 'default' },
      { k: 'init', vm: 0, id: SEV_CMD.ES_INIT },
      ...[0, 1, 2, 3].map(() => ({ k: 'vcpu' as const, vm: 0 })),
      { k: 'start', vm: 0 },
      { k: 'vmsa', vm: 0 },
      { k: 'vmsa', vm: 0 },
      { k: 'create', type: 'default' },
      ...[0, 1, 2, 3].map(() => ({ k: 'vcpu' as const, vm: 1 })),
      { k: 'move', dst: 1, src: 0 },
      { k: 'move', dst: 0, src: 1 },
      { k: 'create', type: 'default' },
      { k: 'copy', dst: 2, src: 1 },
      { k: 'vcpu', vm: 2 },
      { k: 'vmsa', vm: 2 },
      { k: 'close', vm: 1 },
    ];
    runSequence(ops);
  });
});
