// coco-smoke: the framework's promise, shown. For every VM type the simulator supports, a VM whose
// guest checks what it should see — its SEV status MSR or TD info, the tag bit (C-bit set =
// private for the SEV family, S-bit set = shared for TDX) in its own page tables, and that a
// private page reads back as written while the host sees something else — and reports over ucall
// (PRINTF, SYNC) before DONE. One case per type, then every type at once in one process beside a
// barebones VM that never gets a ucall pool. The test names only the VM type: memory, page tables,
// image, ucall and launch are the kit's business.

import {
  decodeGhcbMsr,
  encodeGhcbMsr,
  SEV_MSR,
  TDCALL_LEAF,
  type VmType,
  VM_TYPE_TRAITS,
  VM_TYPES,
} from '@kvmtest/coco';
import { type Guest, MEMORY_ATTRIBUTE } from '@kvmtest/kvm';
import {
  defineGuest,
  defineSuite,
  guestAssert,
  guestAssertEq,
  guestDone,
  guestPrintf,
  guestSync,
  KsftSkip,
  runUcall,
  type TestCase,
  type TestVm,
  testAssert,
  testAssertEq,
  testRequireVmType,
  vmCreateBarebones,
  vmCreateWithOneVcpu,
  vmVaddrAlloc,
  vmVaddrAllocShared,
  writeGuestGlobal,
} from '@kvmtest/testkit';
import { UCALL } from '@kvmtest/ucall';

/** Where the guest finds its page-table pages: a window of GVAs over the page-table region. */
const PT_REGION_GPA = 0x180000n; // KVM_GUEST_PAGE_TABLE_MIN_PADDR: page tables are allocated from here
const PT_WINDOW_PAGES = 64n;
const PT_WINDOW_GVA = 0x4000_0000n;
const PATTERN = 0x5eed_c0c0_a11c_e5e5n;
const ADDR_MASK = 0x000f_ffff_ffff_f000n;

/** SEV status MSR bits (arch/x86/include/asm/msr-index.h `MSR_AMD64_SEV_*_ENABLED`): SEV_ENABLED, SEV_ES_ENABLED, SEV_SNP_ENABLED. */
const SEV_STATUS = { SEV: 1n, ES: 2n, SNP: 4n } as const;

/**
 * CPUID EBX of `fn` as the guest can get it: the instruction for SEV, and for SEV-ES/SNP (whose
 * CPUID is intercepted with #VC) the GHCB MSR protocol's CPUID request, as early Linux boot code does.
 */
async function guestCpuidEbx(g: Guest, type: number, fn: number): Promise<number> {
  if (type !== 3 && type !== 4) return g.cpuid(fn).ebx;
  const saved = g.rdmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB);
  g.wrmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB, encodeGhcbMsr({ kind: 'cpuid-req', fn, reg: 'ebx' }));
  await g.vmgexit();
  const resp = decodeGhcbMsr(g.rdmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB));
  g.wrmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB, saved);
  if (resp.kind !== 'cpuid-resp') throw new Error(`GHCB CPUID request answered with ${resp.kind}`);
  return resp.value;
}

/** The tag bit as the guest learns it: from CPUID 0x8000001F on AMD, from TDG.VP.INFO's GPAW in a TD. */
async function guestTagBit(g: Guest, type: number): Promise<bigint | undefined> {
  if (type >= 2 && type <= 4) return BigInt((await guestCpuidEbx(g, type, 0x8000_001f)) & 0x3f);
  if (type === 5) {
    const info = await g.tdcall(BigInt(TDCALL_LEAF.VP_INFO), {});
    return ((info.rcx ?? 0n) & 0x3fn) - 1n; // the shared bit is GPAW - 1
  }
  return undefined;
}

/** The leaf PTE mapping `gva`, read through the page-table window (4-level paging, 4 KiB leaves). */
function leafPte(g: Guest, gva: bigint, tagMask: bigint): bigint {
  let table = g.readU64(g.global('pt_root'));
  let entry = 0n;
  for (let level = 4; level >= 1; level--) {
    const index = (gva >> BigInt(12 + 9 * (level - 1))) & 0x1ffn;
    const gpa = (table & ADDR_MASK & ~tagMask) + index * 8n;
    if (gpa < PT_REGION_GPA || gpa >= PT_REGION_GPA + PT_WINDOW_PAGES * 4096n)
      throw new Error(`page-table entry at GPA 0x${gpa.toString(16)} lies outside the window`);
    entry = g.readU64(PT_WINDOW_GVA + (gpa - PT_REGION_GPA));
    table = entry;
  }
  return entry;
}

/** The guest: the same code for every VM type; it learns its type from the `vm_type` global. */
const smokeGuest = defineGuest(
  async (g) => {
    const type = Number(g.readU64(g.global('vm_type')));
    await guestPrintf(g, 'coco-smoke guest of type %d on vCPU %d', type, g.vcpuId);

    // 1. What the platform says about this guest.
    let status = 0n;
    if (type >= 2 && type <= 4) status = g.rdmsr(SEV_MSR.MSR_AMD64_SEV);
    await guestSync(g, 1, status);

    // 2. The tag bit in its own page tables: the C-bit marks private pages, the S-bit shared ones.
    const privateGva = g.readU64(g.global('private_page'));
    const sharedGva = g.readU64(g.global('shared_page'));
    const bit = await guestTagBit(g, type);
    const tagMask = bit === undefined ? 0n : 1n << bit;
    const privatePte = leafPte(g, privateGva, tagMask);
    const sharedPte = leafPte(g, sharedGva, tagMask);
    if (type >= 2 && type <= 4) {
      await guestAssert(
        g,
        (privatePte & tagMask) !== 0n,
        'private page lacks the C-bit (bit %d)',
        Number(bit),
      );
      await guestAssert(g, (sharedPte & tagMask) === 0n, 'shared page has the C-bit (bit %d)', Number(bit));
    } else if (type === 5) {
      await guestAssert(g, (privatePte & tagMask) === 0n, 'private page has the S-bit (bit %d)', Number(bit));
      await guestAssert(g, (sharedPte & tagMask) !== 0n, 'shared page lacks the S-bit (bit %d)', Number(bit));
    }
    await guestSync(g, 2, bit ?? 0n, privatePte, sharedPte);

    // 3. Private and shared memory read back what the guest wrote.
    g.writeU64(privateGva, PATTERN);
    g.writeU64(sharedGva, ~PATTERN & 0xffff_ffff_ffff_ffffn);
    await guestAssertEq(g, g.readU64(privateGva), PATTERN);
    await guestAssertEq(g, g.readU64(sharedGva), ~PATTERN & 0xffff_ffff_ffff_ffffn);
    await guestSync(g, 3);
    await guestDone(g);
  },
  { globals: { vm_type: 0n, private_page: 0n, shared_page: 0n, pt_root: 0n } },
);

/** Creates the VM of `type` for the smoke guest, with its test pages and page-table window. */
function createSmokeVm(type: VmType): { vm: TestVm; privateGpa: bigint; sharedGpa: bigint } {
  // sw-protected VMs have no tag bit: their private memory is guest_memfd pages the host marks
  // PRIVATE with KVM_SET_MEMORY_ATTRIBUTES (the confidential types are private by default).
  const swProtected = type === 'sw-protected';
  const vm = vmCreateWithOneVcpu(smokeGuest, { type }, swProtected ? { guestMemfd: true } : {});
  const privateGva = vmVaddrAlloc(vm, 4096n);
  if (swProtected)
    vm.raw.setMemoryAttributes({
      address: vm.space.gvaToGpa(privateGva),
      size: 4096n,
      attributes: MEMORY_ATTRIBUTE.PRIVATE,
    });
  const sharedGva = vmVaddrAllocShared(vm, 4096n);
  // Let the guest read its own page tables: map the page-table region at a window, private like
  // the tables themselves (the SEV family walks them encrypted; TDX keeps them private).
  const protectedMemory = VM_TYPE_TRAITS[type].protectedMemory;
  vm.space.mapRange(PT_WINDOW_GVA, PT_REGION_GPA, PT_WINDOW_PAGES * 4096n, {
    writable: false,
    visibility: protectedMemory ? 'private' : 'shared',
  });
  writeGuestGlobal(vm, 'vm_type', BigInt(typeNumber(type)));
  writeGuestGlobal(vm, 'private_page', privateGva);
  writeGuestGlobal(vm, 'shared_page', sharedGva);
  writeGuestGlobal(vm, 'pt_root', vm.space.pageTables.root);
  // The host resolves the GPAs now: once a confidential VM is launched its page tables are opaque.
  return { vm, privateGpa: vm.space.gvaToGpa(privateGva), sharedGpa: vm.space.gvaToGpa(sharedGva) };
}

function typeNumber(type: VmType): number {
  return VM_TYPES.indexOf(type);
}

/** Host side of one smoke VM: run it to DONE, checking every report on the way. */
async function smoke(
  type: VmType,
  log: (fmt: string, ...v: (string | number | bigint)[]) => void,
): Promise<void> {
  const { vm, privateGpa, sharedGpa } = createSmokeVm(type);
  using _vm = vm;
  const vcpu = vm.vcpus[0]!;
  const traits = VM_TYPE_TRAITS[type];

  let uc = await runUcall(vcpu);
  testAssertEq(uc.cmd, UCALL.PRINTF); // the kit attaches the guest's printf line to the case's report

  uc = await runUcall(vcpu);
  testAssert(uc.cmd === UCALL.SYNC && uc.args[0] === 1n, 'expected SYNC 1, got %s', JSON.stringify(uc.cmd));
  const status = uc.args[1]!;
  if (traits.tagBit === 'c-bit') {
    testAssert((status & SEV_STATUS.SEV) !== 0n, 'SEV status 0x%lx lacks SEV_ENABLED', status);
    testAssert(
      ((status & SEV_STATUS.ES) !== 0n) === traits.protectedState,
      'SEV status 0x%lx: ES bit wrong for %s',
      status,
      type,
    );
    testAssert(
      ((status & SEV_STATUS.SNP) !== 0n) === (type === 'sev-snp'),
      'SEV status 0x%lx: SNP bit wrong for %s',
      status,
      type,
    );
  }

  uc = await runUcall(vcpu);
  testAssert(uc.cmd === UCALL.SYNC && uc.args[0] === 2n, 'expected SYNC 2');
  log('tag bit %d; private leaf PTE 0x%lx, shared leaf PTE 0x%lx', uc.args[1]!, uc.args[2]!, uc.args[3]!);

  uc = await runUcall(vcpu);
  testAssert(uc.cmd === UCALL.SYNC && uc.args[0] === 3n, 'expected SYNC 3');
  // The host's view of the pages the guest just wrote: shared memory is plaintext to both sides;
  // private memory is ciphertext (SEV) or not in the host's mapping at all (guest_memfd).
  testAssertEq(vm.space.memory.readU64(sharedGpa), ~PATTERN & 0xffff_ffff_ffff_ffffn);
  const hostPrivate = vm.space.memory.readU64(privateGpa);
  if (traits.protectedMemory)
    testAssert(hostPrivate !== PATTERN, 'the host reads the private page in the clear (%s)', type);
  else testAssertEq(hostPrivate, PATTERN);
  log('host reads 0x%lx where the guest wrote 0x%lx in private memory', hostPrivate, PATTERN);

  uc = await runUcall(vcpu);
  testAssertEq(uc.cmd, UCALL.DONE);
}

/** True when the backend offers `type` and the kit can set it up (testRequireVmType would not skip). */
function runnable(type: VmType): boolean {
  try {
    testRequireVmType(type);
    return true;
  } catch (e) {
    if (e instanceof KsftSkip) return false;
    throw e;
  }
}

function typeCase(type: VmType): TestCase {
  return {
    name: type,
    run: async (ctx) => {
      testRequireVmType(type);
      await smoke(type, (fmt, ...v) => ctx.log(fmt, ...v));
    },
  };
}

export default defineSuite({
  name: 'coco-smoke',
  cases: [
    ...VM_TYPES.map(typeCase),
    {
      name: 'all types at once, beside a barebones VM',
      run: async (ctx) => {
        const types = VM_TYPES.filter(runnable);
        using bare = vmCreateBarebones();
        await Promise.all(types.map((t) => smoke(t, () => {})));
        testAssert(bare.ucallPool === undefined, 'a barebones VM got a ucall pool');
        ctx.log('%d VM types ran at the same time: %s', types.length, types.join(', '));
      },
    },
  ],
});
