// The core's own views of itself: what a lower layer of the simulator uses of the layer that owns
// it (a VM of its process, a vCPU of its VM, a guest CPU of its vCPU). SimKvm, SimVm and SimVcpu
// (kvm.ts, vm.ts, vcpu.ts) implement them; vm.ts names the process, vcpu.ts the VM and the guest
// CPU its vCPU only through these interfaces, so the modules import each other in one direction
// (kvm → vm → vcpu → guest*) and the type graph has no loop either. Types only: nothing here runs.

import type { CpuidEntry, Exit, Kvm, Regs, Sregs, Vcpu, Vm } from '@kvmtest/kvm';
import type { ArchKvm, ArchOps, ArchVcpu, ArchVm } from './arch/ops.js';
import type { AttributeMap, GmemFile, Memslot } from './memory.js';
import type { StatsBlock } from './stats.js';

/** One open descriptor of the simulated process: its kind and the object behind it (`V`/`C`: the VM and vCPU classes). */
export type FdEntryOf<V, C> =
  | { kind: 'kvm' }
  | { kind: 'vm'; vm: V }
  | { kind: 'vcpu'; vcpu: C }
  | { kind: 'guest-memfd'; gmem: GmemFile; vm: V }
  | { kind: 'stats'; block: StatsBlock; id: string; vm: V }
  | { kind: 'sev-device' };

/** Where a vCPU's KVM_RUN stands. */
export type RunState = 'idle' | 'running' | 'at-exit' | 'ended';

/** The simulated process as a VM uses it (SimKvm): its fd table, capabilities and live objects. */
export interface KvmCore extends Kvm, ArchKvm {
  /** KVM_GET_SUPPORTED_CPUID: a new vCPU's initial CPUID. */
  readonly cpuid: readonly CpuidEntry[];
  /** VMs not yet destroyed. */
  readonly liveVms: Set<VmCore>;
  /** guest_memfd files not yet released. */
  readonly liveGmem: Set<GmemFile>;
  /** Installs `entry` at the lowest free descriptor and returns it. */
  allocFd(entry: FdEntryOf<VmCore, VcpuCore>): number;
  /** The object behind an open descriptor, or undefined. */
  fdEntry(fd: number): FdEntryOf<VmCore, VcpuCore> | undefined;
  /** Closes a descriptor of the process. */
  closeFd(fd: number): void;
  /** KVM_CHECK_EXTENSION on /dev/kvm (`vm` undefined) or on a VM fd. */
  extension(vm: VmCore | undefined, cap: number): number;
}

/** A VM as its vCPUs and their guest CPUs use it (SimVm). */
export interface VmCore extends Vm, ArchVm {
  readonly kvm: KvmCore;
  readonly vcpus: readonly VcpuCore[];
  /** The VM's arch table (chosen at KVM_CREATE_VM). */
  readonly ops: ArchOps;
  /** KVM_SET_MEMORY_ATTRIBUTES state. */
  readonly attributes: AttributeMap;
  /** Bumped whenever a change invalidates guest translations or access decisions (vCPUs compare it). */
  readonly memGeneration: number;
  /** The guest program's globals by name (vm.setGuestSymbols). */
  readonly symbols: ReadonlyMap<string, bigint>;
  memslotAt(gpa: bigint): Memslot | undefined;
  /** Opens a binary-stats descriptor on `block` (KVM_GET_STATS_FD). */
  openStatsFd(block: StatsBlock, id: string): number;
  /** A vCPU fd of this VM was released (the VM may now be destroyed). */
  vcpuFdReleased(): void;
}

/** A vCPU as its guest CPU uses it (SimVcpu): register state, run state and the exit path. */
export interface VcpuCore extends Vcpu, ArchVcpu {
  readonly vm: VmCore;
  readonly regs: Regs;
  readonly sregs: Sregs;
  /** The XSAVE area (x87/SSE/AVX state). */
  readonly fpu: Uint8Array;
  xcr0: bigint;
  cpuid: CpuidEntry[];
  state: RunState;
  kicked: boolean;
  yielding: boolean;
  /** The MSR file as the CPU sees it; undefined for an MSR the simulator does not model. */
  msr(index: number): bigint | undefined;
  /** Writes the MSR file; false when the MSR is not modelled or the value is invalid for it. */
  writeMsr(index: number, value: bigint): boolean;
  /** guest_supported_xcr0: CPUID.(0xD,0) EDX:EAX of the vCPU's CPUID, masked by what KVM saves. */
  guestSupportedXcr0(): bigint;
  /** kvm_is_valid_cr4()'s CPUID checks: why `cr4` sets a feature bit that is reserved, or undefined. */
  cr4FeatureProblem(cr4: bigint): string | undefined;
  /** Hands `exit` to the pending KVM_RUN and waits for the next one (`complete` fills the guest's side). */
  exitToHost(exit: Exit, complete?: (e: Exit) => unknown, errno?: 'EINTR'): Promise<unknown>;
  /** Ends the program for good: `exit` now, `later` on every following run. */
  end(exit: Exit, later: Exit): void;
  /** A second guest operation exited while the first one's exit is with the host: the program ends with `detail`. */
  failAtExit(detail: string): void;
}
