// The kit's per-type seam, the counterpart of the simulator's arch ops: what vmCreate, addVcpu and
// the launch do differently for a family of VM types. vmCreate picks a table once (./registry.ts,
// by the type's `launchFlow` trait) and the TestVm keeps it; per-type state lives in the table's own
// module, never on the TestVm.

import type { VmShape } from '@kvmtest/coco';
import type { AddressSpace, PhysicalMemory, TagPolicy } from '@kvmtest/guest-memory';
import type { CpuidEntry, GuestProgram, Vcpu } from '@kvmtest/kvm';

/** What a VM under construction offers a table's bootRegions hook. */
export interface BootLayout {
  readonly memory: PhysicalMemory;
  readonly space: AddressSpace;
  /** vCPUs the VM is sized for (the ucall pool's slots, or KVM's maximum without ucall). */
  readonly capacity: number;
}

/**
 * The hooks of one VM-type family. `V` is the kit VM they act on (TestVm, ../kit-vm.ts): a type
 * parameter, so this seam needs nothing from the class that holds it.
 */
export interface KitOps<V> {
  /** The family's name, for messages ('default', 'sev', 'snp', 'tdx'). */
  readonly name: string;
  /** The page-table tag of this shape (C-bit, S-bit) from KVM's supported CPUID, or undefined. */
  tagPolicy(shape: VmShape, cpuid: readonly CpuidEntry[]): TagPolicy | undefined;
  /** Memory the type needs besides slot 0, laid out before the guest image (a TD's boot parameters). */
  bootRegions(vm: V, layout: BootLayout): void;
  /** kvm_arch_vm_post_create: the type's VM-level init once memory, image and ucall exist (KVM_SEV_INIT2, KVM_TDX_INIT_VM). */
  postCreate(vm: V): void;
  /** vm_vcpu_add's architectural part: registers, CPUID and entry of a new vCPU whose stack top is `stackTop`. */
  addVcpu(vm: V, vcpu: Vcpu, stackTop: bigint, guest: GuestProgram | undefined): void;
  /** Finishes whatever remains of the launch from the VM's current stage (only called while one is pending). */
  launch(vm: V): void;
}
