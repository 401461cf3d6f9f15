// The kit VM: the contract Vm (`vm.raw`) plus what the library built for it (memory, image, launch
// state) and the per-type table (./kit/ops.ts) chosen when it was made. TestVm shows tests what they
// read; the kit's own modules change a VM only through the named steps of its KitVmState.

import { noteStack, noteVmClosing, noteVmCreated } from './memory-map.js';
import { VM_TYPE_TRAITS, type VmShape, type VmType, type VmTypeTraits } from '@kvmtest/coco';
import type { AddressSpace, GuestImage, LoadedImage } from '@kvmtest/guest-memory';
import {
  argTypeError,
  type CpuidEntry,
  type GuestProgram,
  type Kvm,
  type UserMemory,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import { type UcallPool, ucallPoolOf } from '@kvmtest/ucall';
import { shown } from './check.js';
import { TestkitError } from './errors.js';
import type { KitOps } from './kit/ops.js';
import { DEFAULT_GUEST_STACK_VADDR_MIN, DEFAULT_STACK_PAGES } from './sizing.js';

/** Where a confidential VM's launch stands (SEV flow: START → UPDATE → MEASURE → FINISH). */
export type LaunchStage = 'none' | 'started' | 'updated' | 'measured' | 'finished';

/**
 * A launch policy as every kit helper takes it: a number or a bigint (SEV's is a u32, SNP's a u64),
 * so ports pass `SEV_POLICY_ES` and `snp_default_policy()` the same way.
 */
export type LaunchPolicy = number | bigint;

/** @internal a launch policy as a non-negative bigint no wider than `bits`, or a BAD_ARGUMENT error naming it. */
export function policyValue(policy: unknown, bits: 32 | 64): bigint {
  const v =
    typeof policy === 'bigint'
      ? policy
      : typeof policy === 'number' && Number.isSafeInteger(policy)
        ? BigInt(policy)
        : undefined;
  if (v === undefined || v < 0n || v >> BigInt(bits) !== 0n)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `launch policy ${String(policy)} must be a u${bits} (a number or a bigint)`,
      { policy },
    );
  return v;
}

/** @internal the memory state the kit keeps for a memory-backed VM. */
export interface VmMemory {
  readonly space: AddressSpace;
  readonly slot0: { readonly gpa: bigint; readonly size: bigint; readonly backing: Uint8Array };
  readonly gmemFd: number | undefined;
  readonly image: LoadedImage;
  readonly guestImage: GuestImage;
}

/** @internal what a TestVm is made from (the creation tiers and migration targets). */
export interface TestVmInit {
  readonly raw: Vm;
  readonly kvm: Kvm;
  readonly shape: VmShape;
  readonly ops: KitOps<TestVm>;
  /** True for vmCreateBarebones VMs: no memory, no image, no ucall. */
  readonly barebones: boolean;
  /** vCPUs the VM was sized for (GHCB pages). */
  readonly nrVcpus: number;
  /** Launch policy (a u32). */
  readonly policy: number;
  /** The CPUID its vCPUs get (KVM's supported CPUID). */
  readonly cpuid?: readonly CpuidEntry[];
}

/**
 * @internal the mutable part of a kit VM, changed only through these named steps by the kit's
 * creation, launch, migration and memory helpers.
 */
export class KitVmState {
  #stage: LaunchStage = 'none';
  #policy: number;
  #ptProtected = false;
  #mem: VmMemory | undefined;
  readonly ops: KitOps<TestVm>;
  readonly cpuid: readonly CpuidEntry[] | undefined;
  /** Host memory from kvm.allocateUserMemory behind the VM's memslots, released at close. */
  readonly #userMemory: UserMemory[] = [];
  /** Descriptors the kit opened for the VM (guest_memfds, /dev/sev), closed with it. */
  readonly #ownedFds: number[] = [];

  constructor(init: TestVmInit) {
    this.ops = init.ops;
    this.#policy = init.policy;
    this.cpuid = init.cpuid;
  }

  get stage(): LaunchStage {
    return this.#stage;
  }
  get policy(): number {
    return this.#policy;
  }
  get ptProtected(): boolean {
    return this.#ptProtected;
  }
  get mem(): VmMemory | undefined {
    return this.#mem;
  }

  /** The memory state of a VM once its slot 0, page tables and image exist. */
  attachMemory(mem: VmMemory): void {
    this.#mem = mem;
  }
  /** A reloaded guest image replaces the old copy. */
  replaceImage(image: LoadedImage): void {
    if (this.#mem) this.#mem = { ...this.#mem, image };
  }
  /** The first launch command took `policy` (a u32; an SNP policy's low half). */
  launchStarted(policy: number): void {
    this.#policy = policy;
    this.#stage = 'started';
  }
  /** Private memory was measured in: from here the page tables are out of the host's reach. */
  launchUpdated(): void {
    this.#stage = 'updated';
    this.#ptProtected = this.#mem !== undefined;
  }
  /** LAUNCH_MEASURE returned the measurement. */
  launchMeasured(): void {
    this.#stage = 'measured';
  }
  /** The launch is complete: the VM runs. */
  launchFinished(): void {
    this.#stage = 'finished';
  }
  /** KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM moved `src`'s context (and launch state) here; a migration target also takes over its protected page tables. */
  tookContextFrom(src: KitVmState, withPageTables: boolean): void {
    this.#stage = src.#stage;
    this.#policy = src.#policy;
    if (withPageTables) this.#ptProtected = src.#ptProtected;
  }
  /** Host memory behind one of the VM's memslots: released once the VM is closed. */
  keepUserMemory(memory: UserMemory): void {
    this.#userMemory.push(memory);
  }
  /** A descriptor the kit opened for the VM: closed with it. */
  ownFd(fd: number): void {
    this.#ownedFds.push(fd);
  }
  /** The descriptors to close with the VM (the list is emptied). */
  takeOwnedFds(): number[] {
    return this.#ownedFds.splice(0);
  }
  /** The VM is closed: its host memory is released and its memory state is gone. */
  releaseMemory(): void {
    for (const m of this.#userMemory.splice(0)) m.release();
    this.#mem = undefined;
  }
}

const states = new WeakMap<TestVm, KitVmState>();
const byRaw = new WeakMap<Vm, TestVm>();

/** @internal the mutable state of a kit VM (for the kit's own modules). */
export function kitState(vm: TestVm): KitVmState {
  return states.get(vm)!;
}

/** A VM created by the kit: the contract Vm plus the memory, image, ucall pool and launch state built for it. */
export class TestVm implements Disposable {
  /** The contract VM (KVM ioctls). */
  readonly raw: Vm;
  /** The backend the VM was created on. */
  readonly kvm: Kvm;
  /** The VM's type and guest paging mode. */
  readonly shape: VmShape;
  /** The type's traits (coco's VM_TYPE_TRAITS). */
  readonly traits: VmTypeTraits;
  /** True for vmCreateBarebones VMs: no memory, no image, no ucall. */
  readonly barebones: boolean;
  /** vCPUs the VM was sized for (GHCB pages, a TD's boot parameters). */
  readonly nrVcpus: number;
  #disposed = false;

  /** @internal TestVms are made by the creation tiers. */
  constructor(init: TestVmInit) {
    this.raw = init.raw;
    this.kvm = init.kvm;
    this.shape = init.shape;
    this.traits = VM_TYPE_TRAITS[init.shape.type];
    this.barebones = init.barebones;
    this.nrVcpus = init.nrVcpus;
    states.set(this, new KitVmState(init));
    byRaw.set(init.raw, this);
    noteVmCreated(this); // memory maps for the HTML report (a no-op unless recording)
  }

  /** The VM type. */
  get type(): VmType {
    return this.shape.type;
  }

  /** Launch policy used when the kit launches the VM (a u32). */
  get policy(): number {
    return kitState(this).policy;
  }

  /** Where the VM's launch stands. */
  get launchStage(): LaunchStage {
    return kitState(this).stage;
  }

  /** True once the guest page tables are out of the host's reach (encrypted, or in guest_memfd). */
  get ptProtected(): boolean {
    return kitState(this).ptProtected;
  }

  /** vCPUs of the VM, in creation order (the contract Vcpu objects). */
  get vcpus(): readonly Vcpu[] {
    return this.raw.vcpus;
  }

  /** The guest address space (memory, allocators, page tables); BAREBONES error for barebones VMs. */
  get space(): AddressSpace {
    return this.memory('the address space').space;
  }

  /** This VM's copy of the guest image; BAREBONES error for barebones VMs. */
  get image(): LoadedImage {
    return this.memory('the guest image').image;
  }

  /** The VM's ucall pool, or undefined (barebones, or created with `ucall: false`). */
  get ucallPool(): UcallPool | undefined {
    return ucallPoolOf(this.raw);
  }

  /** True once the VM is closed. */
  get closed(): boolean {
    return this.raw.closed;
  }

  /** True when the VM needs a launch and it has not finished yet. */
  get launchPending(): boolean {
    return this.traits.needsLaunch && kitState(this).stage !== 'finished';
  }

  /** @internal memory state, or a BAREBONES error naming what was wanted. */
  memory(what: string): VmMemory {
    this.checkOpen();
    const mem = kitState(this).mem;
    if (!mem)
      throw new TestkitError(
        'BAREBONES',
        `${what} of this ${this.type} VM does not exist: it was made with vmCreateBarebones() (no memory, image or ucall)`,
        { type: this.type },
      );
    return mem;
  }

  /** @internal */
  checkOpen(): void {
    if (this.raw.closed)
      throw new TestkitError('CLOSED', `this ${this.type} VM (fd ${this.raw.fd}) is closed`, {
        fd: this.raw.fd,
      });
  }

  /**
   * Adds vCPU `id` (vm_vcpu_add): on a memory-backed VM a 5-page stack, then the type's own setup
   * (default: KVM's supported CPUID, 64-bit paging state, RSP and the guest program as entry point;
   * a TD: its boot-parameters entry). On a barebones VM only KVM_CREATE_VCPU.
   */
  addVcpu(id: number, guest?: GuestProgram): Vcpu {
    this.checkOpen();
    if (!Number.isSafeInteger(id) || id < 0)
      throw new TestkitError('BAD_ARGUMENT', `vCPU id ${shown(id)} must be a non-negative integer`, { id });
    if (guest !== undefined && typeof guest !== 'function')
      throw argTypeError('addVcpu', 'guest', 'a guest program (g) => Promise<void> or undefined', guest);
    if (this.raw.vcpus.some((v) => v.id === id))
      throw new TestkitError('VCPU_EXISTS', `vCPU ${id} already exists on this ${this.type} VM`, { id });
    const state = kitState(this);
    if (this.traits.needsLaunch && state.stage !== 'none')
      throw new TestkitError(
        'LAUNCHED',
        `cannot add vCPU ${id}: the ${this.type} VM's launch has begun (stage ${state.stage}); add vCPUs before the first run`,
        { id, stage: state.stage },
      );
    const mem = state.mem;
    if (!mem) {
      if (guest !== undefined)
        throw new TestkitError(
          'BAREBONES',
          `cannot give vCPU ${id} a guest program: a barebones VM has no memory for its stack and page tables`,
          { id },
        );
      return this.raw.createVcpu(id);
    }
    const pool = this.ucallPool;
    if (pool !== undefined && this.raw.vcpus.length >= pool.slots)
      throw new TestkitError(
        'BAD_ARGUMENT',
        `cannot add vCPU ${id}: this ${this.type} VM's ucall pool has ${pool.slots} slot(s), one per vCPU it was created for (pass nrVcpus or ucallSlots to vmCreate)`,
        { id, slots: pool.slots },
      );
    if (this.traits.portRequest === 'ghcb' && pool !== undefined && id >= this.nrVcpus)
      throw new TestkitError(
        'BAD_ARGUMENT',
        `vCPU id ${id} has no GHCB page for ucalls: this ${this.type} VM was created for ${this.nrVcpus} vCPU(s) (pass nrVcpus to vmCreate)`,
        { id, nrVcpus: this.nrVcpus },
      );
    const space = mem.space;
    const stackSize = BigInt(DEFAULT_STACK_PAGES * 4096);
    const stack = space.vaddrAlloc(stackSize, { minGva: DEFAULT_GUEST_STACK_VADDR_MIN });
    let vcpu: Vcpu;
    try {
      vcpu = this.raw.createVcpu(id);
    } catch (e) {
      space.vaddrFree(stack); // KVM_CREATE_VCPU refused: the VM keeps no stack for a vCPU it lacks
      throw e;
    }
    noteStack(space, stack, DEFAULT_STACK_PAGES);
    // SysV: the stack top minus a return address.
    state.ops.addVcpu(this, vcpu, stack + stackSize - 8n, guest);
    return vcpu;
  }

  /** Closes the VM and its vCPUs, and the descriptors the kit opened for it (guest_memfd, /dev/sev). Idempotent. */
  close(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    noteVmClosing(this);
    const state = kitState(this);
    try {
      if (!this.raw.closed) this.raw.close();
    } finally {
      for (const fd of [state.mem?.gmemFd, ...state.takeOwnedFds()])
        if (fd !== undefined && this.kvm.isFdOpen(fd)) this.kvm.closeFd(fd);
      if (this.raw.closed) {
        // The backend frees (or recycles) host memory once no memslot of an open VM maps it.
        state.releaseMemory();
      }
    }
  }

  /** `using vm = …`: closes the VM at the end of the block. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** A kit VM or a contract VM: helpers that issue ioctls accept either. */
export type VmLike = TestVm | Vm;

/** The kit VM of a contract VM, if the kit made (or adopted) it. */
export function testVmOf(vm: Vm): TestVm | undefined {
  return byRaw.get(vm);
}

/**
 * The kit VM for `vm`: itself, or the TestVm the kit made (or adopted) for a contract VM. A contract
 * VM the kit knows nothing of is a NOT_A_KIT_VM error: make it with vmCreate*, or adoptVm() it.
 */
export function asTestVm(vm: VmLike): TestVm {
  if (vm instanceof TestVm) return vm;
  if (typeof vm !== 'object' || vm === null || typeof (vm as Vm).createVcpu !== 'function')
    throw new TypeError('expected a TestVm or a contract Vm');
  const known = byRaw.get(vm);
  if (known) return known;
  throw new TestkitError(
    'NOT_A_KIT_VM',
    `this ${vm.type} VM (fd ${vm.fd}) was not made by the kit: create it with vmCreate* or vmCreateBarebones, or pass it to adoptVm first`,
    { type: vm.type, fd: vm.fd },
  );
}

/** `vm` must be a TestVm (made by the vmCreate* family). */
export function checkTestVm(vm: unknown, op: string): TestVm {
  if (!(vm instanceof TestVm)) throw argTypeError(op, 'vm', 'a TestVm (from vmCreate*)', vm);
  return vm;
}
