// Kit VMs and the creation tiers (selftest-anatomy §1.3): vmCreateBarebones (the VM object only),
// vmCreate (slot 0, page tables with the type's tag bit, the guest image, then ucall, then the
// type's post-create step), vmCreateWithVcpus / vmCreateWithOneVcpu (plus vCPUs). A TestVm wraps
// the contract Vm (`vm.raw`) with what the library built for it; `using vm = …` closes it.

import {
  cBitFromCpuid,
  cpuidHas,
  GUEST_MODE_PARAMS,
  isVmType,
  tdxSharedBit,
  VM_TYPE_NUMBER,
  VM_TYPE_TRAITS,
  VM_TYPES,
  type VmShape,
  type VmType,
  type VmTypeTraits,
  vmShape,
  X86_FEATURE,
} from '@kvmtest/coco';
import {
  AddressSpace,
  type GuestImage,
  type LoadedImage,
  loadImage,
  PhysicalMemory,
  type TagPolicy,
} from '@kvmtest/guest-memory';
import {
  argTypeError,
  CAP,
  CR,
  type CpuidEntry,
  findCpuid,
  type GuestProgram,
  KVM_LIMITS,
  type Kvm,
  MEM_FLAG,
  SEV_CMD,
  type UserMemory,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import { type UcallPool, type UcallTransport, ucallInit, ucallPoolOf } from '@kvmtest/ucall';
import {
  type TdxKitState,
  tdxAddBootRegion,
  tdxAddVcpu,
  tdxGpaw,
  tdxPostCreate,
  tdxTagPolicy,
} from './tdx.js';
import { getKvm } from './backend.js';
import { checkKvm, checkOptions, shown } from './check.js';
import { KsftSkip, TestkitError } from './errors.js';
import { buildGuestImage, type GlobalDecls, guestGlobalsOf } from './image.js';
import { noteImage, noteStack, noteVmClosing, noteVmCreated } from './memory-map.js';
import { wrapGuest } from './runtime.js';
import {
  DEFAULT_GUEST_STACK_VADDR_MIN,
  DEFAULT_STACK_PAGES,
  ucallPagesRequired,
  vmNrPagesRequired,
} from './sizing.js';

/** A shape as a test may write it: a VM type name, or a partial shape. */
export type ShapeLike = VmType | Partial<VmShape> | undefined;

/** Normalises a ShapeLike into a validated VmShape. */
export function toShape(shape: ShapeLike): VmShape {
  return vmShape(typeof shape === 'string' ? { type: shape } : (shape ?? {}));
}

/** Where a confidential VM's launch stands (SEV flow: START → UPDATE → MEASURE → FINISH). */
export type LaunchStage = 'none' | 'started' | 'updated' | 'measured' | 'finished';

/** Options every creation tier takes. */
export interface VmBaseOptions {
  /** The backend; default getKvm(). */
  kvm?: Kvm;
}

/** Options of vmCreate and the tiers above it. */
export interface VmCreateOptions extends VmBaseOptions {
  /** Runnable vCPUs slot 0 is sized for (and GHCB pages for SEV-ES); default 1, or the vCPU count of the tier. */
  nrVcpus?: number;
  /** Pages the test will add in other memslots (sizes page-table headroom only, like the selftests). */
  extraPages?: number;
  /** Globals the test declares besides those of the guest program (defineGuest). */
  globals?: GlobalDecls;
  /** false: no ucall pool (the guest cannot report; runUcall refuses). Default true. */
  ucall?: boolean;
  /** The ucall transport: the type's own (default) or 'mmio' (an 8-byte write to the first GPA past slot 0). */
  ucallTransport?: UcallTransport;
  /** Slots of the ucall pool (default: one per vCPU the VM is sized for, at least 8; at most 512). */
  ucallSlots?: number;
  /** Force a guest_memfd-backed slot 0 (default: when the type keeps private memory in guest_memfd and has a tag bit). */
  guestMemfd?: boolean;
  /** Launch policy for confidential types (a u32; default 0 for sev, ES for sev-es, RSVD_MBO | SMT for SNP). */
  policy?: LaunchPolicy;
}

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

/** State the kit keeps for a memory-backed VM. */
interface VmMemory {
  readonly space: AddressSpace;
  readonly slot0: { readonly gpa: bigint; readonly size: bigint; readonly backing: Uint8Array };
  readonly gmemFd: number | undefined;
  image: LoadedImage;
  readonly guestImage: GuestImage;
}

const byRaw = new WeakMap<Vm, TestVm>();

/** Fewest ucall slots a kit VM's pool gets. */
export const MIN_UCALL_SLOTS = 8;

/** SEV_POLICY_ES (bit 2), required in the policy of a SEV-ES guest. */
const SEV_POLICY_ES = 1 << 2;

/** A VM created by the kit: the contract Vm plus the memory, image, ucall pool and launch state built for it. */
export class TestVm implements Disposable {
  /** The contract VM (KVM ioctls). */
  readonly raw: Vm;
  readonly kvm: Kvm;
  readonly shape: VmShape;
  readonly traits: VmTypeTraits;
  /** True for vmCreateBarebones VMs: no memory, no image, no ucall. */
  readonly barebones: boolean;
  /** Launch policy used when the kit launches the VM. */
  policy: number;
  /** @internal */
  mem: VmMemory | undefined;
  /** @internal the /dev/sev descriptor, opened on first need. */
  sevFd: number | undefined;
  /** @internal */
  launchStage: LaunchStage = 'none';
  /** @internal true once the guest page tables are encrypted (is_pt_protected). */
  ptProtected = false;
  /** @internal vCPUs the slot was sized for (GHCB pages). */
  nrVcpus: number;
  /** @internal */
  cpuid: readonly CpuidEntry[] | undefined;
  /** @internal a TD's boot parameters and GPAW (tdx VMs made by vmCreate). */
  tdx: TdxKitState | undefined;
  /** @internal host memory from kvm.allocateUserMemory behind this VM's memslots, released at close. */
  readonly userMemory: UserMemory[] = [];
  private disposed = false;
  /** Descriptors the kit opened for this VM besides slot 0's (vmMemAdd's guest_memfds), closed with it. */
  private readonly ownedFds: number[] = [];

  /** @internal TestVms are made by the creation tiers. */
  constructor(raw: Vm, kvm: Kvm, shape: VmShape, barebones: boolean, nrVcpus: number, policy: number) {
    this.raw = raw;
    this.kvm = kvm;
    this.shape = shape;
    this.traits = VM_TYPE_TRAITS[shape.type];
    this.barebones = barebones;
    this.nrVcpus = nrVcpus;
    this.policy = policy;
    byRaw.set(raw, this);
    noteVmCreated(this); // memory maps for the HTML report (a no-op unless recording)
  }

  /** The VM type. */
  get type(): VmType {
    return this.shape.type;
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
    return this.traits.needsLaunch && this.launchStage !== 'finished';
  }

  /** @internal memory state, or a BAREBONES error naming what was wanted. */
  memory(what: string): VmMemory {
    this.checkOpen();
    if (!this.mem)
      throw new TestkitError(
        'BAREBONES',
        `${what} of this ${this.type} VM does not exist: it was made with vmCreateBarebones() (no memory, image or ucall)`,
        { type: this.type },
      );
    return this.mem;
  }

  /** @internal */
  checkOpen(): void {
    if (this.raw.closed)
      throw new TestkitError('CLOSED', `this ${this.type} VM (fd ${this.raw.fd}) is closed`, {
        fd: this.raw.fd,
      });
  }

  /**
   * Adds vCPU `id` (vm_vcpu_add): on a memory-backed VM a 5-page stack, KVM's supported CPUID, 64-bit
   * paging state (CR0.PG|PE|WP, CR4.PAE[|LA57], EFER.LME|LMA|NXE, CR3 = the page-table root) and,
   * when given, the guest program as entry point. On a barebones VM only KVM_CREATE_VCPU.
   */
  addVcpu(id: number, guest?: GuestProgram): Vcpu {
    this.checkOpen();
    if (!Number.isSafeInteger(id) || id < 0)
      throw new TestkitError('BAD_ARGUMENT', `vCPU id ${shown(id)} must be a non-negative integer`, { id });
    if (guest !== undefined && typeof guest !== 'function')
      throw argTypeError('addVcpu', 'guest', 'a guest program (g) => Promise<void> or undefined', guest);
    if (this.raw.vcpus.some((v) => v.id === id))
      throw new TestkitError('VCPU_EXISTS', `vCPU ${id} already exists on this ${this.type} VM`, { id });
    if (this.traits.needsLaunch && this.launchStage !== 'none')
      throw new TestkitError(
        'LAUNCHED',
        `cannot add vCPU ${id}: the ${this.type} VM's launch has begun (stage ${this.launchStage}); add vCPUs before the first run`,
        { id, stage: this.launchStage },
      );
    if (!this.mem) {
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
    const space = this.mem.space;
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
    if (this.tdx !== undefined) {
      // A TD's registers are the TDX module's: the guest loads them from its boot parameters.
      tdxAddVcpu(this, vcpu, stack + stackSize - 8n, guest);
      return vcpu;
    }
    this.cpuid ??= supportedCpuid(this.kvm);
    vcpu.setCpuid(this.cpuid);
    // vcpu_init_sregs / vcpu_init_xcrs: with XSAVE, CR4.OSXSAVE and XCR0 = every feature KVM supports.
    const xcr0 = xsaveXcr0(this.kvm, this.cpuid);
    const sregs = vcpu.getSregs();
    sregs.cr0 |= CR.CR0_PE | CR.CR0_PG | CR.CR0_WP;
    sregs.cr4 |=
      CR.CR4_PAE |
      (this.shape.mode === '5-level' ? CR.CR4_LA57 : 0n) |
      (xcr0 !== undefined ? CR.CR4_OSXSAVE : 0n);
    sregs.efer |= CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE;
    sregs.cr3 = space.pageTables.root;
    vcpu.setSregs(sregs);
    const regs = vcpu.getRegs();
    regs.rsp = stack + stackSize - 8n; // SysV: the stack top minus a return address
    regs.rflags |= 2n;
    vcpu.setRegs(regs);
    if (xcr0 !== undefined) vcpu.setXcrs([{ xcr: 0, value: xcr0 }]);
    if (guest !== undefined) vcpu.setEntry(wrapGuest(guest));
    return vcpu;
  }

  /** @internal a descriptor the kit opened for this VM, to close with it. */
  ownFd(fd: number): void {
    this.ownedFds.push(fd);
  }

  /** Closes the VM and its vCPUs, and the descriptors the kit opened for it (guest_memfd, /dev/sev). Idempotent. */
  close(): void {
    if (this.disposed) return;
    this.disposed = true;
    noteVmClosing(this);
    try {
      if (!this.raw.closed) this.raw.close();
    } finally {
      for (const fd of [this.mem?.gmemFd, this.sevFd, this.tdx?.boot.gmemFd, ...this.ownedFds])
        if (fd !== undefined && this.kvm.isFdOpen(fd)) this.kvm.closeFd(fd);
      this.sevFd = undefined;
      if (this.raw.closed) {
        // The backend frees (or recycles) it once no memslot of an open VM maps it.
        for (const m of this.userMemory.splice(0)) m.release();
        this.mem = undefined;
      }
    }
  }

  /** `using vm = …`: closes the VM at the end of the block. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * kvm_cpu_supported_xcr0(): the XCR0 a kit vCPU starts with when KVM has XSAVE (CPUID XSAVE and
 * KVM_CAP_XCRS), i.e. CPUID.(0xD,0) EDX:EAX; undefined without XSAVE.
 */
function xsaveXcr0(kvm: Kvm, cpuid: readonly CpuidEntry[]): bigint | undefined {
  if (!cpuidHas(cpuid, X86_FEATURE.XSAVE) || kvm.checkExtension(CAP.XCRS) <= 0) return undefined;
  const d = findCpuid(cpuid, 0xd, 0);
  return d === undefined ? undefined : (BigInt(d.edx) << 32n) | BigInt(d.eax);
}

/** A kit VM or a contract VM: helpers that issue ioctls accept either. */
export type VmLike = TestVm | Vm;

/** The kit VM of a contract VM, if the kit made it. */
export function testVmOf(vm: Vm): TestVm | undefined {
  return byRaw.get(vm);
}

/**
 * The kit VM for `vm`: itself, the TestVm that wraps a contract VM, or a barebones wrapper adopted
 * for a contract VM the kit did not make (so SEV helpers can keep launch state for it).
 */
export function asTestVm(vm: VmLike): TestVm {
  if (vm instanceof TestVm) return vm;
  const known = byRaw.get(vm);
  if (known) return known;
  if (typeof vm !== 'object' || vm === null || typeof (vm as Vm).createVcpu !== 'function')
    throw new TypeError('expected a TestVm or a contract Vm');
  const shape = vmShape({ type: vm.type });
  return new TestVm(vm, vm.kvm, shape, true, 0, defaultPolicy(shape.type));
}

/** The kit VM a vCPU belongs to (adopting a foreign VM as barebones). */
export function testVmOfVcpu(vcpu: Vcpu): TestVm {
  return asTestVm(vcpu.vm);
}

/** SNP default policy (snp_default_policy): RSVD_MBO (bit 17) | SMT (bit 16). */
const SNP_POLICY_DEFAULT = (1 << 17) | (1 << 16);

/** The default launch policy of a type: SEV_POLICY_ES for sev-es, RSVD_MBO | SMT for sev-snp, 0 otherwise. */
export function defaultPolicy(type: VmType): number {
  return type === 'sev-es' ? SEV_POLICY_ES : type === 'sev-snp' ? SNP_POLICY_DEFAULT : 0;
}

// What a backend answers once and never changes: KVM_CAP_VM_TYPES and KVM_GET_SUPPORTED_CPUID.
const typeMasks = new WeakMap<Kvm, number>();
const cpuids = new WeakMap<Kvm, readonly CpuidEntry[]>();

function vmTypesMask(kvm: Kvm): number {
  let mask = typeMasks.get(kvm);
  if (mask === undefined) {
    mask = kvm.checkExtension(CAP.VM_TYPES);
    typeMasks.set(kvm, mask);
  }
  return mask;
}

/** @internal KVM_GET_SUPPORTED_CPUID of a backend, read once. */
export function supportedCpuid(kvm: Kvm): readonly CpuidEntry[] {
  let c = cpuids.get(kvm);
  if (c === undefined) {
    c = Object.freeze(kvm.getSupportedCpuid());
    cpuids.set(kvm, c);
  }
  return c;
}

/** VM types the backend supports (KVM_CAP_VM_TYPES), in kernel order. */
export function supportedVmTypes(kvm: Kvm = getKvm()): VmType[] {
  checkKvm(kvm, 'supportedVmTypes');
  const mask = vmTypesMask(kvm);
  return VM_TYPES.filter((t) => (mask >>> VM_TYPE_NUMBER[t]) & 1);
}

/** True when the backend supports VM type `type` (for testRequire). */
export function vmTypeSupported(type: VmType, kvm: Kvm = getKvm()): boolean {
  checkKvm(kvm, 'vmTypeSupported');
  if (!isVmType(type)) throw argTypeError('vmTypeSupported', 'type', `one of ${VM_TYPES.join(', ')}`, type);
  return ((vmTypesMask(kvm) >>> VM_TYPE_NUMBER[type]) & 1) === 1;
}

function requireSupported(kvm: Kvm, type: VmType): void {
  if (vmTypeSupported(type, kvm)) return;
  const supported = supportedVmTypes(kvm);
  throw new TestkitError(
    'UNSUPPORTED_VM_TYPE',
    `the ${kvm.backend} backend does not support ${type} VMs (KVM_CAP_VM_TYPES: ${supported.join(', ') || 'none'}); skip with testRequire(vmTypeSupported('${type}'))`,
    { type, supported },
  );
}

/**
 * The only dispatch point for VM types whose creation or launch the kit does not implement. Every
 * type is implemented now (SEV family ./sev.ts, SNP ./snp.ts, TDX ./tdx.ts); a new type slots in here.
 */
export function requireLaunchImplemented(_type: VmType): void {}

/** The tag policy of a type: C-bit from CPUID 0x8000001F set on private leaves; TDX S-bit (GPAW − 1) set on shared leaves. */
export function tagPolicyFor(type: VmType, cpuid: readonly CpuidEntry[]): TagPolicy | undefined {
  if (!isVmType(type)) throw argTypeError('tagPolicyFor', 'type', `one of ${VM_TYPES.join(', ')}`, type);
  if (!Array.isArray(cpuid) || !cpuid.every((e) => typeof e === 'object' && e !== null))
    throw argTypeError('tagPolicyFor', 'cpuid', 'an array of CPUID entries', cpuid);
  const traits = VM_TYPE_TRAITS[type];
  if (traits.tagBit === 'c-bit') {
    const leaf = findCpuid(cpuid, 0x8000001f);
    if (!leaf)
      throw new TestkitError(
        'CPUID',
        `KVM's CPUID has no leaf 0x8000001F: cannot place the C-bit of a ${type} VM`,
        {
          type,
        },
      );
    const bit = cBitFromCpuid(leaf.ebx);
    if (bit === 0)
      throw new TestkitError('CPUID', `CPUID 0x8000001F EBX reports C-bit position 0 for a ${type} VM`, {
        type,
      });
    return { bit, setWhen: 'private' };
  }
  if (traits.tagBit === 's-bit') {
    const leaf = findCpuid(cpuid, 0x80000008);
    const gpaw = leaf ? (leaf.eax >>> 16) & 0xff || leaf.eax & 0xff : 0;
    if (gpaw !== 48 && gpaw !== 52)
      throw new TestkitError(
        'CPUID',
        `CPUID 0x80000008 gives guest physical address width ${gpaw}; a TD needs 48 or 52 to place the S-bit`,
        { gpaw },
      );
    return { bit: tdxSharedBit(gpaw), setWhen: 'shared' };
  }
  return undefined;
}

const imagesByGuest = new WeakMap<GuestProgram, GuestImage>();
let plainImage: GuestImage | undefined;

/** The image of a guest program (cached: a program's globals never change) plus the options' globals. */
function imageFor(guest: GuestProgram | undefined, extra: GlobalDecls | undefined): GuestImage {
  if (extra !== undefined && Object.keys(extra).length > 0)
    return buildGuestImage('guest', guestGlobalsOf(guest), extra);
  if (guest === undefined) {
    plainImage ??= buildGuestImage('guest');
    return plainImage;
  }
  let img = imagesByGuest.get(guest);
  if (img === undefined) {
    img = buildGuestImage(guest.name || 'guest', guestGlobalsOf(guest));
    imagesByGuest.set(guest, img);
  }
  return img;
}

/** vm_create_barebones: only the VM object (KVM_CREATE_VM) — no memory, image, ucall or post-create step. */
export function vmCreateBarebones(shape?: ShapeLike, opts: VmBaseOptions = {}): TestVm {
  checkOptions(opts, 'vmCreateBarebones');
  const s = toShape(shape);
  const kvm = opts.kvm ?? getKvm();
  requireSupported(kvm, s.type);
  const raw = kvm.createVm(s.type);
  return new TestVm(raw, kvm, s, true, 0, defaultPolicy(s.type));
}

function checkPolicy(policy: unknown): number {
  return Number(policyValue(policy, 32));
}

/**
 * vm_create / __vm_create: the VM, slot 0 at GPA 0 sized for the vCPUs (guest_memfd-backed where
 * the type needs it), page tables with the type's tag bit, the guest image, then the ucall pool
 * (unless `ucall: false`), then the type's post-create step (SEV family: KVM_SEV_INIT2). No vCPUs.
 */
export function vmCreate(shape?: ShapeLike, opts: VmCreateOptions = {}, guest?: GuestProgram): TestVm {
  checkOptions(opts, 'vmCreate');
  if (guest !== undefined && typeof guest !== 'function')
    throw argTypeError('vmCreate', 'guest', 'a guest program (g) => Promise<void> or undefined', guest);
  const s = toShape(shape);
  const traits = VM_TYPE_TRAITS[s.type];
  const kvm = opts.kvm ?? getKvm();
  const nrVcpus = opts.nrVcpus ?? 1;
  const slots = opts.ucallSlots ?? Math.max(nrVcpus, MIN_UCALL_SLOTS);
  const withUcall = opts.ucall !== false;
  // Validate everything before KVM_CREATE_VM, so a mistake leaves nothing behind.
  const pages = vmNrPagesRequired(nrVcpus, {
    extraPages: opts.extraPages ?? 0,
    ucallPages: withUcall ? ucallPagesRequired(slots, traits.portRequest === 'ghcb' ? nrVcpus : 0) : 0,
  });
  const policy = checkPolicy(opts.policy ?? defaultPolicy(s.type));
  requireSupported(kvm, s.type);
  requireLaunchImplemented(s.type);
  const cpuid = supportedCpuid(kvm);
  // A TD's S-bit follows the GPAW the kit configures at KVM_TDX_INIT_VM (48, or 52 for 5-level).
  const gpaw = s.type === 'tdx' ? tdxGpaw(s.mode) : undefined;
  const tag = gpaw === undefined ? tagPolicyFor(s.type, cpuid) : tdxTagPolicy(gpaw);
  const image = imageFor(guest, opts.globals);
  const gmem = opts.guestMemfd ?? (traits.privateMemoryInGuestMemfd && traits.tagBit !== 'none');

  const raw = kvm.createVm(s.type);
  const vm = new TestVm(raw, kvm, s, false, nrVcpus, policy);
  vm.cpuid = cpuid;
  try {
    const size = BigInt(pages) * 4096n;
    const userMemory = kvm.allocateUserMemory(pages * 4096);
    vm.userMemory.push(userMemory);
    const backing = userMemory.bytes;
    const gmemFd = gmem ? raw.createGuestMemfd(size) : undefined;
    raw.setUserMemoryRegion({
      slot: 0,
      flags: gmem ? MEM_FLAG.GUEST_MEMFD : 0,
      guestPhysAddr: 0n,
      memorySize: size,
      userspace: backing,
      ...(gmemFd === undefined ? {} : { guestMemfd: gmemFd, guestMemfdOffset: 0n }),
    });
    const memory = new PhysicalMemory();
    memory.addRegion({ slot: 0, gpa: 0n, size, backing, flags: { privateBacking: gmem } });
    const space = new AddressSpace({
      memory,
      levels: GUEST_MODE_PARAMS[s.mode].levels,
      ...(tag ? { tag } : {}),
      protectedByDefault: traits.tagBit !== 'none',
    });
    if (gpaw !== undefined)
      vm.tdx = {
        gpaw,
        ...tdxAddBootRegion(vm, memory, space, withUcall ? slots : KVM_LIMITS.MAX_VCPUS),
        capacity: withUcall ? slots : KVM_LIMITS.MAX_VCPUS,
        vcpusInitialized: 0,
      };
    const loaded = loadImage(space, image);
    noteImage(space, loaded.base, image.size);
    raw.setGuestSymbols(symbolMap(loaded));
    vm.mem = { space, slot0: { gpa: 0n, size, backing }, gmemFd, image: loaded, guestImage: image };
    // Image first, then ucall: ucallInit writes the pool's address into this VM's copy of the image.
    if (withUcall)
      ucallInit(
        { vm: raw, space, image: loaded },
        { slots, nrVcpus, ...(opts.ucallTransport ? { transport: opts.ucallTransport } : {}) },
      );
    postCreate(vm);
  } catch (e) {
    vm.close();
    throw e;
  }
  return vm;
}

/**
 * kvm_arch_vm_post_create: KVM_SEV_INIT2 for the SEV family, KVM_TDX_CAPABILITIES → split irqchip →
 * KVM_TDX_INIT_VM for a TD (before any vCPU, as the kernel requires).
 */
function postCreate(vm: TestVm): void {
  switch (vm.type) {
    case 'sev':
    case 'sev-es':
      initSev2(vm);
      return;
    case 'tdx':
      tdxPostCreate(vm, vm.tdx!, supportedCpuid(vm.kvm));
      return;
    case 'sev-snp':
      // snp_vm_init: INIT2 only (KVM_CAP_EXIT_HYPERCALL comes with the launch, as vm_sev_launch does).
      initSev2(vm);
      return;
    default:
      return;
  }
}

function initSev2(vm: TestVm): void {
  // A failure (e.g. EBUSY when the ASIDs are exhausted) propagates as the KvmError itself.
  vm.raw.memEncryptOp({ id: SEV_CMD.INIT2, data: { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 } });
}

/** The symbol table handed to the backend: global name → GVA in this VM's copy. */
export function symbolMap(image: LoadedImage): Map<string, bigint> {
  return new Map([...image.symbols].map(([name, s]) => [name, s.gva]));
}

/**
 * vm_create_with_vcpus: vmCreate sized for `nrVcpus`, then vCPUs 0..n-1 all entering `guest`.
 * `opts.nrVcpus` may ask for room for more vCPUs than are created.
 */
export function vmCreateWithVcpus(
  nrVcpus: number,
  guest: GuestProgram | undefined,
  shape?: ShapeLike,
  opts: VmCreateOptions = {},
): TestVm {
  checkOptions(opts, 'vmCreateWithVcpus');
  if (!Number.isSafeInteger(nrVcpus) || nrVcpus < 1)
    throw new TestkitError('BAD_ARGUMENT', `vCPU count ${shown(nrVcpus)} must be a positive integer`, {
      nrVcpus,
    });
  const vm = vmCreate(shape, { ...opts, nrVcpus: Math.max(nrVcpus, opts.nrVcpus ?? 0) }, guest);
  try {
    for (let i = 0; i < nrVcpus; i++) vm.addVcpu(i, guest);
  } catch (e) {
    vm.close();
    throw e;
  }
  return vm;
}

/** vm_create_shape_with_one_vcpu: a full VM of `shape` with vCPU 0 entering `guest` (vm.vcpus[0]). */
export function vmCreateWithOneVcpu(
  guest: GuestProgram | undefined,
  shape?: ShapeLike,
  opts: VmCreateOptions = {},
): TestVm {
  return vmCreateWithVcpus(1, guest, shape, opts);
}

/**
 * TEST_REQUIRE for a VM type: skips (KsftSkip) unless the backend supports `type` and the kit can
 * set it up and launch it.
 */
export function testRequireVmType(type: VmType, kvm: Kvm = getKvm()): void {
  if (!vmTypeSupported(type, kvm))
    throw new KsftSkip(`${type} VMs are not supported by the ${kvm.backend} backend (KVM_CAP_VM_TYPES)`);
}
