// Memory maps: for each VM a case creates, a compact picture of its guest physical memory — the
// memslots, and per 4 KiB page what it holds (page tables, the guest image, a vCPU stack, the ucall
// pool, GHCB pages, TDX boot parameters, private or shared data, unallocated) — plus a timeline of
// which VM held an SEV encryption context when (KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM / _COPY_). The CLI's
// HTML report draws them. Outside a recording every hook costs one check; a recording reads the
// allocator's bitmaps once per VM (at close or at case end) and run-length encodes them.

import { cBitFromCpuid, VM_TYPE_TRAITS, type VmShape, type VmType } from '@kvmtest/coco';
import type { AddressSpace } from '@kvmtest/guest-memory';
import { type CpuidEntry, findCpuid, type Kvm, type Vm } from '@kvmtest/kvm';
import { ucallPoolOf } from '@kvmtest/ucall';

/**
 * What a memory map reads of a kit VM: the kit's TestVm (./kit-vm.ts) has these members, and is
 * named here only by this shape so the kit VM can call the hooks below without an import loop.
 */
export interface MappedVm {
  readonly raw: Vm;
  readonly kvm: Kvm;
  readonly shape: VmShape;
  readonly type: VmType;
  readonly barebones: boolean;
  readonly closed: boolean;
  /** Read only while the VM is neither barebones nor closed. */
  readonly space: AddressSpace;
  /** Where its launch stands (LaunchStage of ./kit-vm.ts). */
  readonly launchStage: string;
}

/** What a page holds, by index in run tuples. `data` is an allocated page of a VM without encryption. */
export const PAGE_KINDS = [
  'unused',
  'data',
  'private',
  'shared',
  'page-table',
  'image',
  'stack',
  'ucall',
  'ghcb',
  'boot-params',
] as const;

/** One of PAGE_KINDS. */
export type PageKind = (typeof PAGE_KINDS)[number];

/** A run of pages: [first page index in the slot, page count, PAGE_KINDS index, 1 when private (protected) else 0]. */
export type PageRun = readonly [start: number, pages: number, kind: number, isPrivate: 0 | 1];

/** One memslot of a VM's map: where it lies, its flags, and its pages as runs (covering every page, in order). */
export interface MemslotMap {
  readonly slot: number;
  /** First GPA, as 0x-hex. */
  readonly gpa: string;
  readonly pages: number;
  readonly readOnly: boolean;
  /** Backed by a guest_memfd (KVM_MEM_GUEST_MEMFD). */
  readonly guestMemfd: boolean;
  readonly runs: readonly PageRun[];
}

/** The tag bit of a VM's page tables: SEV's C-bit (set on private leaves) or TDX's S-bit (set on shared leaves). */
export interface TagBitInfo {
  readonly kind: 'c-bit' | 's-bit';
  readonly bit: number;
  readonly setWhen: 'private' | 'shared';
}

/** The memory picture of one VM. */
export interface VmMemoryMap {
  /** The VM's number within the case (1, 2, …, in creation order). */
  readonly id: number;
  readonly type: VmType;
  readonly fd: number;
  /** Made by vmCreateBarebones (or adopted): no memory of the kit's. */
  readonly barebones: boolean;
  readonly vcpus: number;
  /** Where its launch stood (`none` for types without a launch). */
  readonly launch: string;
  readonly tag: TagBitInfo | undefined;
  /** When the picture was taken. */
  readonly takenAt: 'close' | 'case-end';
  readonly slots: readonly MemslotMap[];
}

/**
 * One step of the encryption-context timeline: a VM made or closed, a context made in it by
 * KVM_SEV_INIT / ES_INIT / INIT2 (`init`), or moved or mirrored into `vm` from `from`.
 */
export interface EncContextEvent {
  readonly step: number;
  /** Milliseconds since the recording started. */
  readonly atMs: number;
  readonly op: 'create' | 'init' | 'move' | 'mirror' | 'close';
  readonly vm: number;
  readonly from?: number;
}

/** What a case recorded: its VMs' maps (at most MAX_VM_MAPS; `omitted` counts the rest) and the timeline. */
export interface MemoryRecording {
  readonly vms: readonly VmMemoryMap[];
  readonly omitted: number;
  readonly timeline: readonly EncContextEvent[];
}

/** Maps kept per case; a case making thousands of VMs keeps the first ones and counts the rest. */
export const MAX_VM_MAPS = 64;
/** Timeline events kept per case. */
const MAX_EVENTS = 1000;

interface Entry {
  readonly vm: MappedVm;
  readonly id: number;
  /** The picture was taken (or counted as omitted). */
  taken: boolean;
}

interface Recording {
  readonly t0: number;
  readonly entries: Map<MappedVm, Entry>;
  readonly maps: VmMemoryMap[];
  readonly timeline: EncContextEvent[];
  /** VMs that gave or received an encryption context: SEV guests whatever their VM type. */
  readonly sev: Set<MappedVm>;
  omitted: number;
  nextId: number;
}

let recording: Recording | undefined;

/** What the kit noted about an address space while it was plaintext (the walk to find it needs readable tables). */
interface SpaceNotes {
  image?: { gpa: bigint; pages: number };
  bootParams?: { gpa: bigint; pages: number };
  stacks: { gpa: bigint; pages: number }[];
}
const notes = new WeakMap<AddressSpace, SpaceNotes>();

function notesOf(space: AddressSpace): SpaceNotes {
  let n = notes.get(space);
  if (n === undefined) {
    n = { stacks: [] };
    notes.set(space, n);
  }
  return n;
}

/** Starts recording memory maps for the running case (replacing any recording in progress). */
export function startMemoryMaps(): void {
  recording = {
    t0: performance.now(),
    entries: new Map(),
    maps: [],
    timeline: [],
    sev: new Set(),
    omitted: 0,
    nextId: 1,
  };
}

/** True while memory maps are being recorded. */
export function recordingMemoryMaps(): boolean {
  return recording !== undefined;
}

/** Ends the recording: pictures the VMs still open (taken at case end) and returns everything recorded. */
export function takeMemoryMaps(): MemoryRecording | undefined {
  const r = recording;
  if (r === undefined) return undefined;
  for (const e of r.entries.values()) if (!e.taken) take(r, e, 'case-end');
  recording = undefined;
  return {
    vms: r.maps.sort((a, b) => a.id - b.id),
    omitted: r.omitted,
    timeline: r.timeline,
  };
}

function entryOf(r: Recording, vm: MappedVm): Entry {
  let e = r.entries.get(vm);
  if (e === undefined) {
    e = { vm, id: r.nextId++, taken: false };
    r.entries.set(vm, e);
    event(r, 'create', e.id);
  }
  return e;
}

function event(r: Recording, op: EncContextEvent['op'], vm: number, from?: number): void {
  if (r.timeline.length >= MAX_EVENTS) return;
  r.timeline.push({
    step: r.timeline.length,
    atMs: Math.round((performance.now() - r.t0) * 1000) / 1000,
    op,
    vm,
    ...(from === undefined ? {} : { from }),
  });
}

/** @internal a kit VM was made (TestVm constructor). */
export function noteVmCreated(vm: MappedVm): void {
  if (recording !== undefined) entryOf(recording, vm);
}

/** @internal a kit VM is closing (TestVm.close, before its memory is let go): picture it now. */
export function noteVmClosing(vm: MappedVm): void {
  const r = recording;
  if (r === undefined) return;
  const e = entryOf(r, vm);
  if (!e.taken) take(r, e, 'close');
  event(r, 'close', e.id);
}

/** @internal the guest image was loaded into `space` at `gva` (noted while the tables are plaintext). */
export function noteImage(space: AddressSpace, gva: bigint, bytes: number): void {
  if (recording === undefined) return;
  notesOf(space).image = { gpa: space.gvaToGpa(gva), pages: Math.ceil(bytes / 4096) };
}

/** @internal a TD's boot-parameters memslot (`pages` pages at `gpa`) was added to `space`. */
export function noteBootParams(space: AddressSpace, gpa: bigint, pages: number): void {
  if (recording === undefined) return;
  notesOf(space).bootParams = { gpa, pages };
}

/** @internal a vCPU stack of `pages` was allocated at `gva` in `space`. */
export function noteStack(space: AddressSpace, gva: bigint, pages: number): void {
  if (recording === undefined) return;
  notesOf(space).stacks.push({ gpa: space.gvaToGpa(gva), pages });
}

/** @internal a context was made in `dst` (`init`), or moved (`move`) or mirrored (`mirror`) into `dst` from `src`. */
export function noteEncContext(op: 'init' | 'move' | 'mirror', dst: MappedVm, src?: MappedVm): void {
  const r = recording;
  if (r === undefined) return;
  r.sev.add(dst);
  if (src === undefined) event(r, op, entryOf(r, dst).id);
  else {
    r.sev.add(src);
    event(r, op, entryOf(r, dst).id, entryOf(r, src).id);
  }
}

const cpuidCache = new WeakMap<Kvm, readonly CpuidEntry[]>();

/** The VM's address space through its public API (undefined for barebones or closed VMs). */
function spaceOf(vm: MappedVm): AddressSpace | undefined {
  return vm.barebones || vm.closed ? undefined : vm.space;
}

/** The tag bit a VM of `type` uses (for a barebones VM, what vmCreate would give it on this backend). */
function tagOf(vm: MappedVm, sev: boolean): TagBitInfo | undefined {
  const tag = spaceOf(vm)?.tag;
  // A default VM that got KVM_SEV_INIT (the legacy way, as the SEV migrate selftests do) is an SEV guest.
  const kind = sev && vm.type === 'default' ? 'c-bit' : VM_TYPE_TRAITS[vm.type].tagBit;
  if (kind === 'none') return undefined;
  if (tag !== undefined) return { kind, bit: tag.bit, setWhen: tag.setWhen };
  if (kind === 's-bit') return { kind, bit: vm.shape.mode === '5-level' ? 51 : 47, setWhen: 'shared' };
  try {
    let cpuid = cpuidCache.get(vm.kvm);
    if (cpuid === undefined) {
      cpuid = vm.kvm.getSupportedCpuid();
      cpuidCache.set(vm.kvm, cpuid);
    }
    const leaf = findCpuid(cpuid, 0x8000001f);
    const bit = leaf ? cBitFromCpuid(leaf.ebx) : 0;
    return bit === 0 ? undefined : { kind, bit, setWhen: 'private' };
  } catch {
    return undefined;
  }
}

const KIND = Object.fromEntries(PAGE_KINDS.map((k, i) => [k, i])) as Record<PageKind, number>;

function take(r: Recording, e: Entry, takenAt: VmMemoryMap['takenAt']): void {
  e.taken = true;
  if (r.maps.length >= MAX_VM_MAPS) r.omitted++;
  else r.maps.push(describeVm(e.vm, e.id, takenAt, r.sev.has(e.vm)));
}

/** The memory picture of a kit VM now (its memslots and page runs). */
export function describeVmMemory(
  vm: MappedVm,
  id = 0,
  takenAt: VmMemoryMap['takenAt'] = 'case-end',
): VmMemoryMap {
  return describeVm(vm, id, takenAt, false);
}

function describeVm(vm: MappedVm, id: number, takenAt: VmMemoryMap['takenAt'], sev: boolean): VmMemoryMap {
  const base = {
    id,
    type: vm.type,
    fd: vm.raw.fd,
    barebones: vm.barebones,
    vcpus: vm.raw.vcpus.length,
    launch: vm.launchStage,
    tag: tagOf(vm, sev),
    takenAt,
  };
  const space = spaceOf(vm);
  if (space === undefined) return { ...base, slots: [] };
  const coco = space.tag !== undefined || space.protectedByDefault;
  // Marks: GPA ranges whose allocated pages have a known use (later marks win over earlier ones).
  const marks: { gpa: bigint; pages: number; kind: number }[] = [];
  const n = notes.get(space);
  if (n?.bootParams) marks.push({ ...n.bootParams, kind: KIND['boot-params'] });
  if (n?.image) marks.push({ ...n.image, kind: KIND.image });
  for (const s of n?.stacks ?? []) marks.push({ ...s, kind: KIND.stack });
  const pool = ucallPoolOf(vm.raw);
  if (pool !== undefined) {
    marks.push({ gpa: pool.gpa, pages: Number((pool.endGpa - pool.gpa + 4095n) >> 12n), kind: KIND.ucall });
    if (pool.ghcb) marks.push({ gpa: pool.ghcb.gpa, pages: pool.ghcb.count, kind: KIND.ghcb });
  }
  for (const p of space.pageTables.tablePages()) marks.push({ gpa: p, pages: 1, kind: KIND['page-table'] });
  const slots = space.memory.regions().map((region): MemslotMap => {
    const inside = marks
      .filter((m) => m.gpa < region.end && m.gpa + BigInt(m.pages) * 4096n > region.gpa)
      .map((m) => {
        const start = m.gpa <= region.gpa ? 0 : Number((m.gpa - region.gpa) >> 12n);
        const end = Math.min(region.pages, Number((m.gpa + BigInt(m.pages) * 4096n - region.gpa) >> 12n));
        return { start, end, kind: m.kind };
      });
    return {
      slot: region.slot,
      gpa: `0x${region.gpa.toString(16)}`,
      pages: region.pages,
      readOnly: region.flags.readOnly === true,
      guestMemfd: region.flags.privateBacking === true,
      runs: pageRuns(region.pages, region.used.setRuns(), region.protectedPages.setRuns(), inside, coco),
    };
  });
  return { ...base, slots };
}

type BitRun = { start: number; length: number };

/**
 * @internal run-length encodes a slot of `pages` pages: allocated runs (`used`), protected runs,
 * and marks (last one wins) → runs of equal (kind, private), covering [0, pages) in order.
 */
export function pageRuns(
  pages: number,
  used: readonly BitRun[],
  prot: readonly BitRun[],
  marks: readonly { start: number; end: number; kind: number }[],
  coco: boolean,
): PageRun[] {
  const cuts = new Set<number>([0, pages]);
  for (const r of used) cuts.add(r.start).add(r.start + r.length);
  for (const r of prot) cuts.add(r.start).add(r.start + r.length);
  for (const m of marks) cuts.add(m.start).add(m.end);
  const points = [...cuts].filter((c) => c >= 0 && c <= pages).sort((a, b) => a - b);
  const inRuns = (runs: readonly BitRun[], p: number, cursor: { i: number }): boolean => {
    while (cursor.i < runs.length && runs[cursor.i]!.start + runs[cursor.i]!.length <= p) cursor.i++;
    const r = runs[cursor.i];
    return r !== undefined && r.start <= p;
  };
  const uc = { i: 0 };
  const pc = { i: 0 };
  const out: [number, number, number, 0 | 1][] = [];
  for (let k = 0; k + 1 < points.length; k++) {
    const a = points[k]!;
    const b = points[k + 1]!;
    const isUsed = inRuns(used, a, uc);
    const isPrivate: 0 | 1 = inRuns(prot, a, pc) ? 1 : 0;
    let kind = KIND.unused;
    if (isUsed) {
      kind = coco ? (isPrivate ? KIND.private : KIND.shared) : KIND.data;
      for (let m = marks.length - 1; m >= 0; m--) {
        const mk = marks[m]!;
        if (mk.start <= a && a < mk.end) {
          kind = mk.kind;
          break;
        }
      }
    }
    const last = out[out.length - 1];
    if (last && last[2] === kind && last[3] === isPrivate) last[1] += b - a;
    else out.push([a, b - a, kind, isPrivate]);
  }
  return out;
}
