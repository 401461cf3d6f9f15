// Binary statistics (KVM_CAP_BINARY_STATS_FD, KVM_GET_STATS_FD): the descriptor tables of a VM and
// a vCPU with the kernel's names and flags (virt/kvm/kvm_main.c: kvm_vm_stats_desc /
// kvm_vcpu_stats_desc with KVM_GENERIC_*_STATS, arch/x86/kvm/x86.c's x86 entries), their counters,
// and the file a stats descriptor reads (virt/kvm/binary_stats.c: kvm_stats_read()).

/** KVM_STATS_NAME_SIZE: bytes of the id string and of each descriptor's name. */
export const KVM_STATS_NAME_SIZE = 48;
/** sizeof(struct kvm_stats_header). */
const HEADER_SIZE = 24;
/** sizeof(struct _kvm_stats_desc): struct kvm_stats_desc (16 bytes) and its name. */
const DESC_SIZE = 16 + KVM_STATS_NAME_SIZE;

/** KVM_STATS_TYPE_* (bits 3:0), KVM_STATS_UNIT_* (bits 7:4), KVM_STATS_BASE_* (bits 11:8). */
const TYPE = { CUMULATIVE: 0, INSTANT: 1, PEAK: 2, LINEAR_HIST: 3, LOG_HIST: 4 } as const;
const UNIT = { NONE: 0, BYTES: 1 << 4, SECONDS: 2 << 4, CYCLES: 3 << 4, BOOLEAN: 4 << 4 } as const;

/** One statistic: name, flags, exponent (of the unit, base 10), size in u64 and bucket size. */
interface StatDesc {
  readonly name: string;
  readonly flags: number;
  readonly exponent: number;
  readonly size: number;
  readonly bucketSize: number;
}

const counter = (name: string): StatDesc => ({
  name,
  flags: TYPE.CUMULATIVE,
  exponent: 0,
  size: 1,
  bucketSize: 0,
});
const instant = (name: string, unit: number = UNIT.NONE): StatDesc => ({
  name,
  flags: TYPE.INSTANT | unit,
  exponent: 0,
  size: 1,
  bucketSize: 0,
});
const peak = (name: string): StatDesc => ({ name, flags: TYPE.PEAK, exponent: 0, size: 1, bucketSize: 0 });
const nanos = (name: string): StatDesc => ({
  name,
  flags: TYPE.CUMULATIVE | UNIT.SECONDS,
  exponent: -9,
  size: 1,
  bucketSize: 0,
});
/** HALT_POLL_HIST_COUNT log-2 buckets of nanoseconds. */
const logHist = (name: string): StatDesc => ({
  name,
  flags: TYPE.LOG_HIST | UNIT.SECONDS,
  exponent: -9,
  size: 32,
  bucketSize: 0,
});

/** The VM's statistics: KVM_GENERIC_VM_STATS, then x86's. */
const VM_STATS: readonly StatDesc[] = [
  counter('remote_tlb_flush'),
  counter('remote_tlb_flush_requests'),
  counter('mmu_shadow_zapped'),
  counter('mmu_pte_write'),
  counter('mmu_pde_zapped'),
  counter('mmu_flooded'),
  counter('mmu_recycled'),
  counter('mmu_cache_miss'),
  instant('mmu_unsync'),
  instant('pages_4k'),
  instant('pages_2m'),
  instant('pages_1g'),
  instant('nx_lpage_splits'),
  peak('max_mmu_page_hash_collisions'),
  peak('max_mmu_rmap_size'),
];

/** The vCPU's statistics: KVM_GENERIC_VCPU_STATS, then x86's. */
const VCPU_STATS: readonly StatDesc[] = [
  counter('halt_successful_poll'),
  counter('halt_attempted_poll'),
  counter('halt_poll_invalid'),
  counter('halt_wakeup'),
  nanos('halt_poll_success_ns'),
  nanos('halt_poll_fail_ns'),
  nanos('halt_wait_ns'),
  logHist('halt_poll_success_hist'),
  logHist('halt_poll_fail_hist'),
  logHist('halt_wait_hist'),
  instant('blocking', UNIT.BOOLEAN),
  counter('pf_taken'),
  counter('pf_fixed'),
  counter('pf_emulate'),
  counter('pf_spurious'),
  counter('pf_fast'),
  counter('pf_mmio_spte_created'),
  counter('pf_guest'),
  counter('tlb_flush'),
  counter('invlpg'),
  counter('exits'),
  counter('io_exits'),
  counter('mmio_exits'),
  counter('signal_exits'),
  counter('irq_window_exits'),
  counter('nmi_window_exits'),
  counter('l1d_flush'),
  counter('halt_exits'),
  counter('request_irq_exits'),
  counter('irq_exits'),
  counter('host_state_reload'),
  counter('fpu_reload'),
  counter('insn_emulation'),
  counter('insn_emulation_fail'),
  counter('hypercalls'),
  counter('irq_injections'),
  counter('nmi_injections'),
  counter('req_event'),
  counter('nested_run'),
  counter('directed_yield_attempted'),
  counter('directed_yield_successful'),
  counter('preemption_reported'),
  counter('preemption_other'),
  instant('guest_mode', UNIT.BOOLEAN),
  counter('notify_window_exits'),
];

/** One statistics block (a VM's or a vCPU's): its descriptors and live u64 values. */
/** Where each statistic of a descriptor table starts in the value array (u64 index), by name. */
interface StatsLayout {
  readonly offsetOf: ReadonlyMap<string, number>;
  readonly slots: number;
}

// One layout per descriptor table, computed once: a VM or vCPU only allocates its values.
const layouts = new WeakMap<readonly StatDesc[], StatsLayout>();

function layoutOf(descs: readonly StatDesc[]): StatsLayout {
  let l = layouts.get(descs);
  if (l === undefined) {
    const offsetOf = new Map<string, number>();
    let at = 0;
    for (const d of descs) {
      offsetOf.set(d.name, at);
      at += d.size;
    }
    l = { offsetOf, slots: at };
    layouts.set(descs, l);
  }
  return l;
}

export class StatsBlock {
  readonly descs: readonly StatDesc[];
  private readonly layout: StatsLayout;
  // Counted as doubles (exact far beyond any count a test reaches; no BigInt per exit), allocated
  // at the first count: most VMs never count a VM-wide statistic.
  private counts: Float64Array | undefined;

  constructor(descs: readonly StatDesc[]) {
    this.descs = descs;
    this.layout = layoutOf(descs);
  }

  /** The statistics' values (u64 each, histograms several), in descriptor order. */
  get values(): BigUint64Array {
    const out = new BigUint64Array(this.layout.slots);
    const c = this.counts;
    if (c !== undefined) for (let i = 0; i < c.length; i++) out[i] = BigInt(c[i]!);
    return out;
  }

  /** Adds 1 to the value at index `index` (from vcpuStatIndex): the exit path's count, no name lookup. */
  bumpAt(index: number): void {
    const c = this.counts ?? this.allocate();
    c[index]!++;
  }

  private allocate(): Float64Array {
    this.counts = new Float64Array(this.layout.slots);
    return this.counts;
  }

  /** Adds 1 to the single-valued statistic `name`. */
  bump(name: string): void {
    const o = this.layout.offsetOf.get(name);
    if (o === undefined) return;
    this.counts ??= new Float64Array(this.layout.slots);
    this.counts[o]!++;
  }

  /** The file contents for stats id `id` (header, id, descriptors, data), little-endian. */
  image(id: string): Uint8Array {
    const n = this.descs.length;
    const idOffset = HEADER_SIZE;
    const descOffset = idOffset + KVM_STATS_NAME_SIZE;
    const dataOffset = descOffset + n * DESC_SIZE;
    const values = this.values;
    const out = new Uint8Array(dataOffset + values.length * 8);
    const v = new DataView(out.buffer);
    // struct kvm_stats_header
    v.setUint32(0, 0, true);
    v.setUint32(4, KVM_STATS_NAME_SIZE, true);
    v.setUint32(8, n, true);
    v.setUint32(12, idOffset, true);
    v.setUint32(16, descOffset, true);
    v.setUint32(20, dataOffset, true);
    out.set(ascii(id), idOffset);
    this.descs.forEach((d, i) => {
      const at = descOffset + i * DESC_SIZE;
      v.setUint32(at, d.flags, true);
      v.setInt16(at + 4, d.exponent, true);
      v.setUint16(at + 6, d.size, true);
      v.setUint32(at + 8, this.layout.offsetOf.get(d.name)! * 8, true);
      v.setUint32(at + 12, d.bucketSize, true);
      out.set(ascii(d.name), at + 16);
    });
    for (let i = 0; i < values.length; i++) v.setBigUint64(dataOffset + i * 8, values[i]!, true);
    return out;
  }
}

function ascii(s: string): Uint8Array {
  const b = new Uint8Array(Math.min(s.length, KVM_STATS_NAME_SIZE - 1));
  for (let i = 0; i < b.length; i++) b[i] = s.charCodeAt(i) & 0x7f;
  return b;
}

/** A VM's statistics block. */
export function vmStats(): StatsBlock {
  return new StatsBlock(VM_STATS);
}

/** The value index of the vCPU statistic `name` (for StatsBlock.bumpAt). */
export function vcpuStatIndex(name: string): number {
  const o = layoutOf(VCPU_STATS).offsetOf.get(name);
  if (o === undefined) throw new Error(`vcpuStatIndex: no vCPU statistic named ${name}`);
  return o;
}

/** A vCPU's statistics block. */
export function vcpuStats(): StatsBlock {
  return new StatsBlock(VCPU_STATS);
}

/** The process id the stats ids name ("kvm-<pid>"). */
export function statsPid(): number {
  return typeof process !== 'undefined' && typeof process.pid === 'number' ? process.pid : 1;
}
