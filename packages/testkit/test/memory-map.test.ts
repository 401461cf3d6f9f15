import { describe, expect, test } from 'vitest';
import {
  PAGE_KINDS,
  type PageKind,
  startMemoryMaps,
  sevInit,
  sevMigrateFrom,
  sevMirrorFrom,
  takeMemoryMaps,
  vmCreateBarebones,
  vmCreateMigrationTarget,
  vmCreateWithOneVcpu,
  type VmMemoryMap,
  vmSevLaunch,
} from '../src/index.js';
import { pageRuns } from '../src/internal/memory-map.js';

const kindsOf = (m: VmMemoryMap, slot = 0): Map<PageKind, number> => {
  const out = new Map<PageKind, number>();
  const s = m.slots.find((x) => x.slot === slot)!;
  for (const [, n, k] of s.runs) out.set(PAGE_KINDS[k]!, (out.get(PAGE_KINDS[k]!) ?? 0) + n);
  return out;
};

describe('memory maps', () => {
  test('nothing is recorded outside a recording', () => {
    using _vm = vmCreateWithOneVcpu(async () => {});
    expect(takeMemoryMaps()).toBeUndefined();
  });

  test('a default VM: page tables, image, stack, ucall pool, unused; runs cover the slot in order', () => {
    startMemoryMaps();
    {
      using _vm = vmCreateWithOneVcpu(async () => {});
    }
    const rec = takeMemoryMaps()!;
    expect(rec.vms).toHaveLength(1);
    const m = rec.vms[0]!;
    expect(m).toMatchObject({ id: 1, type: 'default', barebones: false, takenAt: 'close', tag: undefined });
    const slot = m.slots[0]!;
    expect(slot).toMatchObject({ slot: 0, gpa: '0x0', guestMemfd: false });
    let next = 0;
    for (const [start, n] of slot.runs) {
      expect(start).toBe(next);
      expect(n).toBeGreaterThan(0);
      next += n;
    }
    expect(next).toBe(slot.pages);
    const kinds = kindsOf(m);
    expect(kinds.get('page-table')).toBeGreaterThanOrEqual(4); // PML4, PDPT, PD, PT at least
    expect(kinds.get('stack')).toBe(5);
    expect(kinds.get('image')).toBeGreaterThanOrEqual(1);
    expect(kinds.get('ucall')).toBeGreaterThanOrEqual(1);
    expect(kinds.get('unused')).toBeGreaterThan(0);
    expect(kinds.has('private')).toBe(false);
    expect(rec.timeline.map((e) => e.op)).toEqual(['create', 'close']);
  });

  test('an SEV-ES VM: C-bit, private page tables and image, shared ucall pool and GHCB page', () => {
    startMemoryMaps();
    const vm = vmCreateWithOneVcpu(async () => {}, 'sev-es');
    vmSevLaunch(vm);
    const rec = takeMemoryMaps()!; // still open: taken at case end
    vm.close();
    const m = rec.vms[0]!;
    expect(m.takenAt).toBe('case-end');
    expect(m.launch).toBe('finished');
    expect(m.tag).toMatchObject({ kind: 'c-bit', setWhen: 'private' });
    expect(m.tag!.bit).toBeGreaterThan(30);
    const runs = m.slots[0]!.runs;
    const priv = (k: PageKind) => runs.filter((r) => PAGE_KINDS[r[2]] === k).map((r) => r[3]);
    expect(new Set(priv('page-table'))).toEqual(new Set([1]));
    expect(new Set(priv('image'))).toEqual(new Set([1]));
    expect(new Set(priv('ucall'))).toEqual(new Set([0]));
    expect(kindsOf(m).get('ghcb')).toBe(1);
  });

  test('a TD: S-bit, guest_memfd slot 0 and the boot-parameters slot', () => {
    startMemoryMaps();
    {
      using _vm = vmCreateWithOneVcpu(async () => {}, 'tdx');
    }
    const m = takeMemoryMaps()!.vms[0]!;
    expect(m.tag).toEqual({ kind: 's-bit', bit: 47, setWhen: 'shared' });
    expect(m.slots.map((s) => s.guestMemfd)).toEqual([true, true]);
    const boot = m.slots.find((s) => s.slot !== 0)!;
    expect(kindsOf(m, boot.slot).get('boot-params')).toBeGreaterThan(0);
  });

  test('barebones VMs, a migration and a mirror make a timeline', () => {
    startMemoryMaps();
    const src = vmCreateWithOneVcpu(async () => {}, 'sev');
    const dst = vmCreateMigrationTarget(src);
    sevMigrateFrom(dst, src);
    const bare = vmCreateBarebones('sev');
    sevMirrorFrom(bare, dst);
    bare.close();
    dst.close();
    src.close();
    const rec = takeMemoryMaps()!;
    expect(rec.vms.map((v) => [v.id, v.type, v.barebones])).toEqual([
      [1, 'sev', false],
      [2, 'sev', false],
      [3, 'sev', true],
    ]);
    expect(rec.vms[2]!.slots).toEqual([]);
    expect(rec.vms.map((v) => v.tag?.kind)).toEqual(['c-bit', 'c-bit', 'c-bit']);
    expect(rec.vms[2]!.tag?.kind).toBe('c-bit');
    expect(rec.timeline.map((e) => [e.op, e.vm, e.from])).toEqual([
      ['create', 1, undefined],
      ['create', 2, undefined],
      ['move', 2, 1],
      ['create', 3, undefined],
      ['mirror', 3, 2],
      ['close', 3, undefined],
      ['close', 2, undefined],
      ['close', 1, undefined],
    ]);
    // The target shares the source's address space: its picture shows the same image and stack.
    expect(kindsOf(rec.vms[1]!).get('image')).toBe(kindsOf(rec.vms[0]!).get('image'));
  });

  test('a default VM that takes part in a context move is pictured with the C-bit', () => {
    startMemoryMaps();
    const a = vmCreateBarebones('default');
    const b = vmCreateBarebones('default');
    sevInit(a);
    sevMigrateFrom(b, a);
    a.close();
    b.close();
    const rec = takeMemoryMaps()!;
    expect(rec.vms.map((v) => [v.type, v.tag?.kind])).toEqual([
      ['default', 'c-bit'],
      ['default', 'c-bit'],
    ]);
    expect(rec.timeline.map((e) => [e.op, e.vm, e.from])).toEqual([
      ['create', 1, undefined],
      ['create', 2, undefined],
      ['init', 1, undefined],
      ['move', 2, 1],
      ['close', 1, undefined],
      ['close', 2, undefined],
    ]);
  });

  test('pageRuns merges equal neighbours and lets the last mark win', () => {
    const K = (k: PageKind) => PAGE_KINDS.indexOf(k);
    expect(
      pageRuns(
        10,
        [{ start: 0, length: 6 }],
        [{ start: 0, length: 3 }],
        [
          { start: 0, end: 1, kind: K('page-table') },
          { start: 4, end: 8, kind: K('stack') },
          { start: 5, end: 6, kind: K('image') },
        ],
        true,
      ),
    ).toEqual([
      [0, 1, K('page-table'), 1],
      [1, 2, K('private'), 1],
      [3, 1, K('shared'), 0],
      [4, 1, K('stack'), 0],
      [5, 1, K('image'), 0],
      [6, 4, K('unused'), 0],
    ]);
  });
});
