// Benchmarks of the SEV-SNP model: a whole launch (INIT2 → SNP_LAUNCH_FINISH with 1 MiB measured), and
// page-state changes (GHCB PSC requests, each a KVM_HC_MAP_GPA_RANGE exit the host answers with
// KVM_SET_MEMORY_ATTRIBUTES).

import { encodeGhcbMsr, encodePscDesc, GHCB_LAYOUT, Ghcb, PSC_OP, SEV_MSR, SVM_VMGEXIT } from '@kvmtest/coco';
import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import {
  CAP,
  CR,
  type Exit,
  MAP_GPA_RANGE,
  MEM_FLAG,
  MEMORY_ATTRIBUTE,
  SEV_CMD,
  type SevCommand,
  type Vm,
} from '@kvmtest/kvm';
import { type Bench, nsPerOpSync } from '../../../scripts/bench/measure.js';
import { createSimKvm } from '../src/index.js';

const POLICY = (1n << 17n) | (1n << 16n);
const P = MEMORY_ATTRIBUTE.PRIVATE;

function op(vm: Vm, sevFd: number, id: number, data?: unknown): void {
  const c: SevCommand = { id, data, sevFd };
  vm.memEncryptOp(c);
}

function gmemSlot(vm: Vm, userspace: Uint8Array): number {
  const size = BigInt(userspace.length);
  const gmemFd = vm.createGuestMemfd(size);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: MEM_FLAG.GUEST_MEMFD,
    guestPhysAddr: 0n,
    memorySize: size,
    userspace,
    guestMemfd: gmemFd,
    guestMemfdOffset: 0n,
  });
  return gmemFd;
}

const benches: Bench[] = [
  {
    name: 'kvm-sim.snp-launch',
    unit: 'ns/op',
    goal: '<= 3 ms',
    reference: 'real SNP: SNP_LAUNCH_UPDATE of 1 MiB takes the PSP tens of ms',
    run() {
      const kvm = createSimKvm({ vendor: 'amd' });
      const sevFd = kvm.openSevDevice();
      const mem = new Uint8Array(1 << 20);
      for (let i = 0; i < mem.length; i += 64) mem[i] = i & 0xff;
      return nsPerOpSync(() => {
        const vm = kvm.createVm('sev-snp');
        const gmemFd = gmemSlot(vm, mem);
        vm.setMemoryAttributes({ address: 0n, size: BigInt(mem.length), attributes: P });
        op(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
        vm.createVcpu(0);
        op(vm, sevFd, SEV_CMD.SNP_LAUNCH_START, { policy: POLICY, flags: 0 });
        op(vm, sevFd, SEV_CMD.SNP_LAUNCH_UPDATE, {
          gfnStart: 0n,
          uaddr: { buffer: mem, offset: 0 },
          len: BigInt(mem.length),
          type: 1,
          flags: 0,
        });
        op(vm, sevFd, SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0 });
        vm.close();
        kvm.closeFd(gmemFd);
      }, 1000);
    },
  },
  {
    name: 'kvm-sim.snp-psc',
    unit: 'ops/s',
    goal: '>= 500k/s',
    reference:
      'pages converted per second: GHCB PSC requests of 253 4K entries, each one KVM_HC_MAP_GPA_RANGE exit + KVM_SET_MEMORY_ATTRIBUTES',
    async run() {
      const kvm = createSimKvm({ vendor: 'amd', runBudget: Number.MAX_SAFE_INTEGER });
      const sevFd = kvm.openSevDevice();
      const vm = kvm.createVm('sev-snp');
      const mem = new Uint8Array(4 << 20);
      gmemSlot(vm, mem);
      const PT_END = 0x10_0000n;
      const GHCB_GPA = 0x10_0000n;
      const CONV_GPA = 0x20_0000n;
      const N = 253;
      vm.setMemoryAttributes({ address: 0n, size: PT_END, attributes: P });
      vm.setMemoryAttributes({ address: CONV_GPA, size: BigInt(N * 4096), attributes: P });
      const image = new Uint8Array(mem.length);
      const phys = new PhysicalMemory();
      phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(image.length), backing: image });
      let next = 0x1_0000n;
      const pt = new PageTables(phys, { levels: 4, physBits: 52, tagBit: 51 }, () => {
        const p = next;
        next += 4096n;
        return p;
      });
      const GHCB_GVA = 0x50_0000n;
      pt.map(GHCB_GVA, GHCB_GPA, 4096n);
      op(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
      vm.enableCap(CAP.EXIT_HYPERCALL, [1n << 12n]);
      const vcpu = vm.createVcpu(0);
      vcpu.setCpuid(kvm.getSupportedCpuid()); // vm_vcpu_add(): a new vCPU has no CPUID
      vcpu.setSregs({
        cr0: CR.CR0_PE | CR.CR0_PG,
        cr2: 0n,
        cr3: pt.root,
        cr4: CR.CR4_PAE,
        efer: CR.EFER_LME | CR.EFER_LMA,
      });
      op(vm, sevFd, SEV_CMD.SNP_LAUNCH_START, { policy: POLICY, flags: 0 });
      op(vm, sevFd, SEV_CMD.SNP_LAUNCH_UPDATE, {
        gfnStart: 0n,
        uaddr: { buffer: image, offset: 0 },
        len: PT_END,
        type: 1,
        flags: 0,
      });
      op(vm, sevFd, SEV_CMD.SNP_LAUNCH_FINISH, { flags: 0 });
      const descs = [PSC_OP.SHARED, PSC_OP.PRIVATE].map((o) =>
        encodePscDesc({
          curEntry: 0,
          entries: Array.from({ length: N }, (_, i) => ({
            curPage: 0,
            gfn: (CONV_GPA >> 12n) + BigInt(i),
            op: o,
            pageSize: '4k' as const,
          })),
        }),
      );
      const fields = new Uint8Array(GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
      const g0 = new Ghcb(new Uint8Array(4096));
      g0.set('swExitCode', BigInt(SVM_VMGEXIT.PSC));
      g0.set('swExitInfo1', 0n);
      g0.set('swExitInfo2', 0n);
      g0.set('swScratch', GHCB_GPA + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET));
      const header = g0.bytes.slice(0, GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
      fields.set(header);
      vcpu.setEntry(async (g) => {
        const ghcbMsr = SEV_MSR.MSR_AMD64_SEV_ES_GHCB;
        g.wrmsr(ghcbMsr, encodeGhcbMsr({ kind: 'reg-gpa-req', gfn: GHCB_GPA >> 12n }));
        await g.vmgexit();
        for (let i = 0; ; i++) {
          g.writeBytes(GHCB_GVA + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET), descs[i & 1]!);
          g.writeBytes(GHCB_GVA, fields);
          g.wrmsr(ghcbMsr, GHCB_GPA);
          await g.vmgexit();
        }
      });
      await vcpu.run(); // registers the GHCB, then the first PSC exit
      let pages = 0;
      let exit: Exit = vcpu.exit!;
      const t0 = process.hrtime.bigint();
      const until = t0 + 600_000_000n;
      let t = t0;
      while (t < until) {
        for (let k = 0; k < 64; k++) {
          if (exit.reason !== 'hypercall') throw new Error(`unexpected exit ${exit.reason}`);
          const priv = (exit.args[2]! & MAP_GPA_RANGE.ENCRYPTED) !== 0n;
          vm.setMemoryAttributes({
            address: exit.args[0]!,
            size: exit.args[1]! * 4096n,
            attributes: priv ? P : 0n,
          });
          pages += Number(exit.args[1]);
          exit = await vcpu.run();
        }
        t = process.hrtime.bigint();
      }
      return (pages * 1e9) / Number(t - t0);
    },
  },
];

export default benches;
