// A vCPU's CPUID before the VMM sets one. arch/x86/kvm/x86.c: kvm_arch_vcpu_create() leaves
// vcpu->arch.cpuid_entries empty; arch/x86/kvm/cpuid.c: kvm_cpuid() then finds no entry for any leaf,
// and get_out_of_range_cpuid_entry() has no CPUID.0 entry to redirect to, so every leaf reads zeros.
// Every CPUID-gated check sees the feature absent.
import { CR, type CpuidEntry, tryKvm, VECTOR } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../src/index.js';

const LEAVES = [
  0, 1, 7, 0xd, 0xb, 0x1f, 0x4000_0000, 0x8000_0000, 0x8000_0001, 0x8000_0008, 0x8000_001f, 0x1234,
];

describe('kvm_cpuid on a vCPU whose CPUID was never set', () => {
  for (const host of ['mainline-intel', 'mainline-amd', 'pvm'] as const)
    it(`${host}: the guest's CPUID instruction reads zeros for every leaf, the out-of-range ones included`, async () => {
      const vcpu = createSimKvm({ host }).createVm().createVcpu(0);
      const seen: CpuidEntry[] = [];
      vcpu.setEntry(async (g) => {
        for (const leaf of LEAVES) seen.push(g.cpuid(leaf, 1));
      });
      expect((await vcpu.run()).reason).toBe('hlt');
      expect(seen.map((e) => [e.eax, e.ebx, e.ecx, e.edx])).toEqual(LEAVES.map(() => [0, 0, 0, 0]));
    });

  it('the same guest reads the host values once KVM_SET_CPUID2 gave it the supported CPUID', async () => {
    const kvm = createSimKvm();
    const vcpu = kvm.createVm().createVcpu(0);
    vcpu.setCpuid(kvm.getSupportedCpuid());
    let leaf0: CpuidEntry | undefined;
    vcpu.setEntry(async (g) => {
      leaf0 = g.cpuid(0);
    });
    await vcpu.run();
    expect(leaf0?.eax).toBe(kvm.getSupportedCpuid().find((e) => e.function === 0)!.eax);
  });

  it('KVM_SET_SREGS does not consult the CPUID for EFER: long mode and NXE are accepted (measured on /dev/kvm)', () => {
    const vcpu = createSimKvm().createVm().createVcpu(0);
    const long = {
      cr0: CR.CR0_PE | CR.CR0_PG,
      cr2: 0n,
      cr3: 0x1000n,
      cr4: CR.CR4_PAE,
      efer: CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE,
    };
    expect(tryKvm(() => vcpu.setSregs(long))).toBeUndefined();
    expect(vcpu.getSregs()).toMatchObject(long);
  });

  it('a guest WRMSR(EFER) setting NXE takes #GP: CPUID.80000001H:EDX.NX reads 0', async () => {
    const vcpu = createSimKvm().createVm().createVcpu(0);
    let vector = -1;
    vcpu.setEntry(async (g) => {
      g.setExceptionHandler((f) => {
        vector = f.vector;
        return 'skip';
      });
      g.wrmsr(0xc000_0080, CR.EFER_NXE);
    });
    expect((await vcpu.run()).reason).toBe('hlt');
    expect(vector).toBe(VECTOR.GP);
    expect(vcpu.getSregs().efer & CR.EFER_NXE).toBe(0n);
  });
});

// arch/x86/kvm/cpuid.c: get_out_of_range_cpuid_entry() and kvm_cpuid()'s 0xB/0x1F rule, on a set table.
describe('kvm_cpuid on a set table: missing leaves', () => {
  const e = (fn: number, index: number, eax: number, ebx = 0, ecx = 0, edx = 0, flags = 0): CpuidEntry => ({
    function: fn,
    index,
    flags,
    eax,
    ebx,
    ecx,
    edx,
  });
  /** "GenuineIntel" / "AuthenticAMD" as CPUID.0 EBX, ECX, EDX. */
  const INTEL = [0x756e_6547, 0x6c65_746e, 0x4965_6e69] as const;
  const AMD = [0x6874_7541, 0x444d_4163, 0x6974_6e65] as const;
  const table = (vendor: readonly [number, number, number]): CpuidEntry[] => [
    e(0, 0, 0xb, vendor[0], vendor[1], vendor[2]),
    e(0xb, 0, 0x11, 0x22, 0x100, 0x7, 1),
    e(0xb, 1, 0x33, 0x44, 0x201, 0x7, 1),
    e(0x8000_0000, 0, 0x8000_0008),
    e(0x8000_0008, 0, 0x3030),
  ];
  async function guestCpuid(entries: CpuidEntry[], leaves: readonly (readonly [number, number])[]) {
    const vcpu = createSimKvm().createVm().createVcpu(0);
    vcpu.setCpuid(entries);
    const out: number[][] = [];
    vcpu.setEntry(async (g) => {
      for (const [leaf, sub] of leaves) {
        const r = g.cpuid(leaf, sub);
        out.push([r.eax, r.ebx, r.ecx, r.edx]);
      }
    });
    await vcpu.run();
    return out;
  }

  it('an Intel guest reads the highest basic leaf for a function past its class maximum, or in a class with no base leaf', async () => {
    const got = await guestCpuid(table(INTEL), [
      [0xc, 0], // past CPUID.0.EAX 0xB: leaf 0xB subleaf 0
      [0x8000_0009, 1], // past CPUID.0x80000000.EAX: leaf 0xB subleaf 1
      [0x4000_0000, 0], // no hypervisor base leaf: redirected too
      [0x5, 0], // in range but absent: zeros
    ]);
    expect(got).toEqual([
      [0x11, 0x22, 0x100, 0x7],
      [0x33, 0x44, 0x201, 0x7],
      [0x11, 0x22, 0x100, 0x7],
      [0, 0, 0, 0],
    ]);
  });

  it('an AMD guest gets zeros for the same functions (no redirect for AMD or Hygon vendors)', async () => {
    const got = await guestCpuid(table(AMD), [
      [0xc, 0],
      [0x8000_0009, 1],
      [0x4000_0000, 0],
    ]);
    expect(got).toEqual([
      [0, 0, 0, 0],
      [0, 0, 0, 0],
      [0, 0, 0, 0],
    ]);
  });

  it('leaf 0xB: an undefined subleaf passes ECX[7:0] through and reports subleaf 1 EDX', async () => {
    const got = await guestCpuid(table(AMD), [[0xb, 0x1_05]]);
    expect(got).toEqual([[0, 0, 0x05, 0x7]]);
  });
});
