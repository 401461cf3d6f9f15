// A TD vCPU's state at its first entry (TDX module ABI "TD vCPU initial state") and the guest
// turning paging on from there with MOV to CR — the host cannot set a TD's registers.

import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import { CR, type Guest, GuestException, KvmError, VECTOR } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../../index.js';
import { TD_RESET_VECTOR } from './constants.js';
import { launchTd } from './harness.test-support.js';

const PAGES = 32;
const DATA_GPA = 0x3000n;
const DATA_GVA = 0x40_0000n;

/** A finalized TD whose measured private image holds page tables (from 0x10000) mapping DATA_GVA to DATA_GPA. */
function td(gpaw: 48 | 52 = 48) {
  const kvm = createSimKvm();
  const image = new Uint8Array(PAGES * 4096);
  new DataView(image.buffer).setBigUint64(Number(DATA_GPA), 0xfeed_f00dn, true);
  const phys = new PhysicalMemory();
  phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(image.length), backing: image });
  let next = 0x1_0000n;
  const pt = new PageTables(phys, { levels: 4, physBits: 52, tagBit: gpaw - 1 }, () => {
    const p = next;
    next += 4096n;
    return p;
  });
  pt.map(DATA_GVA, DATA_GPA);
  const t = launchTd(kvm, image, 0n, gpaw);
  return { ...t, root: pt.root };
}

async function runOnce(vcpu: ReturnType<typeof td>['vcpu'], program: (g: Guest) => void | Promise<void>) {
  vcpu.setEntry(async (g) => {
    // An exception entry that hands faults back to the faulting operation (none would triple-fault).
    g.setExceptionHandler((frame) => {
      throw new GuestException(frame);
    });
    await program(g);
  });
  return vcpu.run();
}

describe('a TD vCPU starts where the TDX module leaves it (TDH.VP.INIT)', () => {
  it('RIP is the reset vector, paging is off, RBX = GPAW, RSI = VCPU_INDEX, RCX = R8 = the INIT_VCPU datum', async () => {
    const { vcpu } = td();
    let seen: Record<string, bigint> = {};
    const exit = await runOnce(vcpu, (g) => {
      seen = {
        rip: g.regs.rip,
        rbx: g.regs.rbx,
        rsi: g.regs.rsi,
        rcx: g.regs.rcx,
        r8: g.regs.r8,
        cr0: g.readCr!(0),
        cr3: g.readCr!(3),
        cr4: g.readCr!(4),
      };
    });
    expect(exit.reason).toBe('hlt');
    expect(seen).toEqual({
      rip: TD_RESET_VECTOR,
      rbx: 48n,
      rsi: 0n,
      rcx: 0n,
      r8: 0n,
      cr0: CR.CR0_PE | CR.CR0_NE | CR.CR0_ET,
      cr3: 0n,
      cr4: CR.CR4_MCE,
    });
  });

  it('with paging off a read by GPA (S-bit clear) is private: it sees the measured guest_memfd page', async () => {
    const { vcpu, shared } = td();
    let v = 0n;
    await runOnce(vcpu, (g) => {
      v = g.readU64(DATA_GPA);
    });
    expect(v).toBe(0xfeed_f00dn);
    // The VMM's half of the slot never held it: INIT_MEM_REGION copied the source into guest_memfd.
    expect(new DataView(shared.buffer).getBigUint64(Number(DATA_GPA), true)).toBe(0n);
  });

  it('the host still cannot read or set the registers (KVM_GET_SREGS is EINVAL for a TD)', () => {
    const { vcpu } = td();
    expect(() => vcpu.getSregs()).toThrow(KvmError);
    expect(() => vcpu.getSregs()).toThrow(/EINVAL|protected/);
  });
});

describe('the TD turns paging on itself (MOV to CR4, CR3, CR0; EFER.LME is already set by the module)', () => {
  it('CR4.PAE|MCE, CR3 = the private root, CR0.PG: paged accesses then go through the TD page tables', async () => {
    const { vcpu, root } = td();
    let v = 0n;
    const exit = await runOnce(vcpu, (g) => {
      g.writeCr!(4, CR.CR4_PAE | CR.CR4_MCE);
      g.writeCr!(3, root);
      g.writeCr!(0, CR.CR0_PE | CR.CR0_NE | CR.CR0_WP | CR.CR0_PG);
      v = g.readU64(DATA_GVA);
    });
    expect(exit.reason).toBe('hlt');
    expect(v).toBe(0xfeed_f00dn);
  });

  it('CR0.PG before CR4.PAE is #GP: the module already set EFER.LME, so paging means long mode', async () => {
    const { vcpu } = td();
    let e: unknown;
    await runOnce(vcpu, (g) => {
      try {
        g.writeCr!(0, CR.CR0_PE | CR.CR0_PG);
      } catch (x) {
        e = x;
      }
    });
    expect(e).toBeInstanceOf(GuestException);
    expect((e as GuestException).frame.vector).toBe(VECTOR.GP);
    expect((e as GuestException).message).toMatch(/long mode needs PAE/);
  });

  it('a TD cannot read or write EFER itself: RDMSR/WRMSR are #VE (tdx_is_read_only_msr for the VMCALL)', async () => {
    const { vcpu } = td();
    let vector = -1;
    await runOnce(vcpu, (g) => {
      try {
        g.rdmsr(0xc000_0080);
      } catch (x) {
        vector = (x as GuestException).frame.vector;
      }
    });
    expect(vector).toBe(VECTOR.VE);
  });
});
