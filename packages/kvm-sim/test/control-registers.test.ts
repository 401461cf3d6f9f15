// MOV to/from CR and WRMSR(EFER) from the guest: the architectural checks (#GP, nothing changed),
// long-mode activation by CR0.PG and TLB flushes (SDM vol. 2 MOV to CR, vol. 3 §2.5, §9.8.5;
// KVM's kvm_set_cr0 / kvm_set_cr3 / kvm_set_cr4 / set_efer).

import {
  CR,
  type ExceptionFrame,
  type Exit,
  type Guest,
  GuestException,
  type SregsInput,
  VECTOR,
} from '@kvmtest/kvm';
import { describe, expect, test } from 'vitest';
import { createSimKvm } from '../src/index.js';
import { DATA_GVA, guestVm } from './helpers.js';

const EFER = 0xc000_0080;
const LONG: SregsInput = {
  cr0: CR.CR0_PE | CR.CR0_PG | CR.CR0_WP | CR.CR0_ET,
  cr2: 0n,
  cr3: 0n,
  cr4: CR.CR4_PAE,
  efer: CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE,
};

/** Runs `program` on a default VM's vCPU that starts in `start` (paging off by default); returns the exit and final sregs. */
async function run(program: (g: Guest, root: bigint) => void | Promise<void>, start?: Partial<SregsInput>) {
  const kvm = createSimKvm();
  const t = guestVm(kvm);
  const vcpu = t.vcpu(async (g) => {
    await program(g, t.pt.root);
  });
  vcpu.setSregs({ cr0: CR.CR0_ET, cr2: 0n, cr3: 0n, cr4: 0n, efer: 0n, ...start });
  const exit: Exit = await vcpu.run();
  return { exit, sregs: vcpu.getSregs(), root: t.pt.root, mem: t.mem };
}

/**
 * The GuestException a write threw (or undefined), so tests can check vector and reason. The guest
 * needs an exception entry for that: with none, the fault would be a triple fault (shutdown).
 */
function gp(g: Guest, f: () => void): GuestException | undefined {
  g.setExceptionHandler(rethrow);
  try {
    f();
  } catch (e) {
    if (e instanceof GuestException) return e;
    throw e;
  }
  return undefined;
}

/** An exception entry that hands the fault back to the faulting operation as a GuestException. */
function rethrow(frame: ExceptionFrame): never {
  throw new GuestException(frame);
}

describe('a guest turns paging on itself (MOV to CR4, CR3, CR0)', () => {
  test('PAE, then CR3, then CR0.PG with EFER.LME activates long mode (EFER.LMA) and paged accesses work', async () => {
    let seen = 0n;
    const r = await run((g, root) => {
      g.wrmsr(EFER, CR.EFER_LME | CR.EFER_NXE);
      g.writeCr!(4, CR.CR4_PAE);
      g.writeCr!(3, root);
      g.writeCr!(0, CR.CR0_PE | CR.CR0_PG | CR.CR0_WP);
      g.writeU64(DATA_GVA, 0x1234n);
      seen = g.readU64(DATA_GVA);
    });
    expect(r.exit.reason).toBe('hlt');
    expect(seen).toBe(0x1234n);
    expect(r.sregs.efer & CR.EFER_LMA).toBe(CR.EFER_LMA);
    // ET is hardwired to 1; the write reached the vCPU's control state as KVM_GET_SREGS shows it.
    expect(r.sregs.cr0).toBe(CR.CR0_PE | CR.CR0_PG | CR.CR0_WP | CR.CR0_ET);
    expect(r.sregs.cr3).toBe(r.root);
    // The data page is GPA 0x200000 in the helper's layout: the paged write landed there.
    expect(new DataView(r.mem.buffer).getBigUint64(0x20_0000, true)).toBe(0x1234n);
  });

  test('readCr returns CR0, CR2 (the last #PF address), CR3 and CR4', async () => {
    const got: bigint[] = [];
    await run(
      (g) => {
        g.setExceptionHandler(() => 'skip');
        g.readU64(0xdead_0000n);
        got.push(g.readCr!(0), g.readCr!(2), g.readCr!(3), g.readCr!(4));
      },
      { ...LONG, cr3: 0n },
    );
    // CR3 0 here: the walk reads a zero root, so the access #PFs (not present) and CR2 records it.
    expect(got).toEqual([LONG.cr0, 0xdead_0000n, 0n, CR.CR4_PAE]);
  });
});

describe('an invalid MOV to CR raises #GP(0) and changes nothing', () => {
  const cases: [string, Partial<SregsInput>, 0 | 3 | 4, bigint, RegExp][] = [
    ['CR0.PG without CR0.PE', {}, 0, CR.CR0_PG, /CR0\.PG set with CR0\.PE clear/],
    ['CR0.NW without CR0.CD', {}, 0, CR.CR0_PE | CR.CR0_NW, /CR0\.NW set with CR0\.CD clear/],
    ['a bit in CR0 63:32', {}, 0, CR.CR0_PE | (1n << 40n), /bits 63:32 are reserved/],
    [
      'paging with EFER.LME but without CR4.PAE',
      { efer: CR.EFER_LME },
      0,
      CR.CR0_PE | CR.CR0_PG,
      /long mode needs PAE/,
    ],
    ['clearing CR0.PG in 64-bit code', LONG, 0, CR.CR0_PE, /IA-32e/],
    ['a reserved CR4 bit', {}, 4, 1n << 15n, /reserved bits 0x8000/],
    ['clearing CR4.PAE in long mode', LONG, 4, 0n, /CR4\.PAE cleared in IA-32e mode/],
    ['changing CR4.LA57 in long mode', LONG, 4, CR.CR4_PAE | CR.CR4_LA57, /LA57 changed in IA-32e mode/],
    ['CR3 above MAXPHYADDR in long mode', LONG, 3, 1n << 52n, /MAXPHYADDR/],
  ];
  test.each(cases)('%s', async (_name, start, n, value, why) => {
    let e: GuestException | undefined;
    let before: bigint[] = [];
    let after: bigint[] = [];
    await run((g) => {
      before = [g.readCr!(0), g.readCr!(3), g.readCr!(4)];
      e = gp(g, () => g.writeCr!(n, value));
      after = [g.readCr!(0), g.readCr!(3), g.readCr!(4)];
    }, start);
    expect(e?.frame.vector).toBe(VECTOR.GP);
    expect(e?.frame.errorCode).toBe(0);
    expect(e?.frame.detail).toMatch(why);
    expect(after).toEqual(before);
  });

  test("a handler that skips the #GP resumes after the MOV; the program's other writes stand", async () => {
    const r = await run((g) => {
      g.setExceptionHandler((f) => (f.vector === VECTOR.GP ? 'skip' : 'retry'));
      g.writeCr!(0, CR.CR0_PG);
      g.writeCr!(4, CR.CR4_PAE);
    });
    expect(r.exit.reason).toBe('hlt');
    expect(r.sregs.cr0 & CR.CR0_PG).toBe(0n);
    expect(r.sregs.cr4).toBe(CR.CR4_PAE);
  });

  test('an unhandled #GP ends the run with a shutdown exit naming the rule', async () => {
    const r = await run((g) => g.writeCr!(0, CR.CR0_PG));
    expect(r.exit.reason).toBe('shutdown');
    expect(String((r.exit as { detail?: string }).detail)).toMatch(
      /#GP .*writeCr\(0, 0x80000000\).*CR0\.PG set/,
    );
  });
});

describe('translations follow the control registers', () => {
  test('a CR3 write flushes the TLB: the next access walks the new tables', async () => {
    let first = 0n;
    let second = 0n;
    const kvm = createSimKvm();
    const t = guestVm(kvm);
    // A second set of tables mapping DATA_GVA to another page (GPA 0x300000).
    const mem = new DataView(t.mem.buffer);
    mem.setBigUint64(0x20_0000, 1n, true);
    mem.setBigUint64(0x30_0000, 2n, true);
    const { PageTables } = await import('@kvmtest/guest-memory');
    let next = 0x18_0000n;
    const other = new PageTables(t.phys, { levels: 4, physBits: 52 }, () => {
      const p = next;
      next += 4096n;
      return p;
    });
    other.map(DATA_GVA, 0x30_0000n);
    const vcpu = t.vcpu(async (g) => {
      first = g.readU64(DATA_GVA);
      g.writeCr!(3, other.root);
      second = g.readU64(DATA_GVA);
    });
    await vcpu.run();
    expect([first, second]).toEqual([1n, 2n]);
  });

  test('CR4.LA57 set with paging off selects 5-level tables once CR0.PG is set', async () => {
    let lvl = 0n;
    await run((g) => {
      g.writeCr!(4, CR.CR4_PAE | CR.CR4_LA57);
      lvl = g.readCr!(4) & CR.CR4_LA57;
    });
    expect(lvl).toBe(CR.CR4_LA57);
  });
});

describe('WRMSR(EFER) from the guest (set_efer, not host-initiated)', () => {
  test('EFER.LME cannot change while paging is on', async () => {
    let e: GuestException | undefined;
    await run((g) => {
      e = gp(g, () => g.wrmsr(EFER, CR.EFER_NXE));
    }, LONG);
    expect(e?.frame.vector).toBe(VECTOR.GP);
    expect(e?.frame.detail).toMatch(/EFER\.LME changed while CR0\.PG is set/);
  });

  test('EFER.LMA belongs to the CPU: a write keeps its current value', async () => {
    let efer = 0n;
    await run((g) => {
      g.wrmsr(EFER, CR.EFER_LME | CR.EFER_NXE | CR.EFER_SCE);
      efer = g.rdmsr(EFER);
    }, LONG);
    expect(efer).toBe(CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE | CR.EFER_SCE);
  });
});
