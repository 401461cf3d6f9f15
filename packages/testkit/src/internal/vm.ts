// The creation tiers (the selftests' lib/kvm_util.c: vm_create_barebones, __vm_create,
// vm_create_with_vcpus): vmCreateBarebones (the VM object only), vmCreate (slot 0, page tables with
// the type's tag bit, the type's boot regions, the guest image, then ucall, then the type's
// post-create step), vmCreateWithVcpus / vmCreateWithOneVcpu (plus vCPUs). Every type-specific step
// is a hook of the VM's kit table (./kit/ops.ts), chosen here once.

import {
  GUEST_MODE_PARAMS,
  type GuestMode,
  isVmType,
  VM_TYPE_NUMBER,
  VM_TYPE_TRAITS,
  VM_TYPES,
  type VmShape,
  type VmType,
  vmShape,
} from '@kvmtest/coco';
import { AddressSpace, type GuestImage, loadImage, PhysicalMemory } from '@kvmtest/guest-memory';
import { argTypeError, type GuestProgram, KVM_LIMITS, type Kvm, MEM_FLAG } from '@kvmtest/kvm';
import { type UcallTransport, ucallInit } from '@kvmtest/ucall';
import { getKvm } from './backend.js';
import { checkKvm, checkOptions, shown } from './check.js';
import { KsftSkip, TestkitError } from './errors.js';
import { supportedCpuid, vmTypesMask } from './host-cpuid.js';
import { buildGuestImage, type GlobalDecls, guestGlobalsOf } from './image.js';
import { kitOpsFor } from './kit/registry.js';
import { noteImage } from './memory-map.js';
import { kitState, type LaunchPolicy, policyValue, TestVm } from './kit-vm.js';
import { symbolMap } from './symbols.js';
import { ucallPagesRequired, vmNrPagesRequired } from './sizing.js';

/** A shape as a test may write it: a VM type name, or a partial shape. */
export type ShapeLike = VmType | Partial<VmShape> | undefined;

/** Normalises a ShapeLike into a validated VmShape. */
export function toShape(shape: ShapeLike): VmShape {
  return vmShape(typeof shape === 'string' ? { type: shape } : (shape ?? {}));
}

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

/** Fewest ucall slots a kit VM's pool gets. */
export const MIN_UCALL_SLOTS = 8;

/** The default launch policy of a type (its `defaultPolicy` trait). */
export function defaultPolicy(type: VmType): number {
  return VM_TYPE_TRAITS[type].defaultPolicy;
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
  return new TestVm({
    raw,
    kvm,
    shape: s,
    ops: kitOpsFor(s.type),
    barebones: true,
    nrVcpus: 0,
    policy: defaultPolicy(s.type),
  });
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
  const ops = kitOpsFor(s.type);
  const cpuid = supportedCpuid(kvm);
  const tag = ops.tagPolicy(s, cpuid);
  const image = imageFor(guest, opts.globals);
  const gmem = opts.guestMemfd ?? (traits.privateMemoryInGuestMemfd && traits.tagBit !== 'none');

  const raw = kvm.createVm(s.type);
  const vm = new TestVm({ raw, kvm, shape: s, ops, barebones: false, nrVcpus, policy, cpuid });
  const state = kitState(vm);
  try {
    const size = BigInt(pages) * 4096n;
    const userMemory = kvm.allocateUserMemory(pages * 4096);
    state.keepUserMemory(userMemory);
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
    ops.bootRegions(vm, { memory, space, capacity: withUcall ? slots : KVM_LIMITS.MAX_VCPUS });
    const loaded = loadImage(space, image);
    noteImage(space, loaded.base, image.size);
    raw.setGuestSymbols(symbolMap(loaded));
    state.attachMemory({
      space,
      slot0: { gpa: 0n, size, backing },
      gmemFd,
      image: loaded,
      guestImage: image,
    });
    // Image first, then ucall: ucallInit writes the pool's address into this VM's copy of the image.
    if (withUcall)
      ucallInit(
        { vm: raw, space, image: loaded },
        { slots, nrVcpus, ...(opts.ucallTransport ? { transport: opts.ucallTransport } : {}) },
      );
    ops.postCreate(vm);
  } catch (e) {
    vm.close();
    throw e;
  }
  return vm;
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

/** vm_sev_create_with_one_vcpu: a full SEV-family VM of `type` with vCPU 0 entering `guest` (launched before its first run). */
export function vmSevCreateWithOneVcpu(
  type: 'sev' | 'sev-es',
  guest: GuestProgram | undefined,
  opts: VmCreateOptions & { mode?: GuestMode } = {},
): TestVm {
  const { mode, ...rest } = opts;
  return vmCreateWithOneVcpu(guest, toShape({ type, ...(mode ? { mode } : {}) }), rest);
}
