// TDX in the selftests' idiom (the TDX selftests' lib/x86/tdx/tdx_util.c; the kernel's order is
// arch/x86/kvm/vmx/tdx.c: tdx_td_init(), tdx_vcpu_init(), tdx_gmem_post_populate(),
// tdx_td_finalize()): a TD is created from its shape's type alone. vmCreate lays out slot 0 in guest_memfd with
// page tables whose SHARED leaves carry the S-bit (GPAW − 1), the ucall pool in shared pages, and a
// boot-parameters region at TD_BOOT_PARAMETERS_GPA (guest_memfd, private, measured, identity-mapped);
// its post-create step is KVM_TDX_CAPABILITIES → split irqchip → KVM_TDX_INIT_VM. Each vCPU gets
// KVM_TDX_GET_CPUID → KVM_SET_CPUID2 → KVM_TDX_INIT_VCPU and its stack and entry point in the boot
// parameters, because the host cannot set a TD's registers. Before the first run the kit launches
// the TD: PRIVATE memory attributes and a measured KVM_TDX_INIT_MEM_REGION over every private range
// (the source is the host's staging copy of what the kit wrote), then KVM_TDX_FINALIZE_VM. After
// that the private pages live only in guest_memfd: the host can neither read nor write them.
//
// The guest side is tdBootCode, the TD's code at the reset vector: with paging off (linear =
// physical, S-bit clear = private) it reads the boot parameters by GPA, loads CR4, CR3 and CR0
// (EFER.LME|NXE are set by the TDX module and a TD cannot write EFER), then — through the identity
// mapping — finds its per-vCPU stack and entry point by VCPU_INDEX (RSI) and enters the guest program.

import { noteBootParams } from './memory-map.js';
import type { GuestMode } from '@kvmtest/coco';
import { gva, type TagPolicy } from '@kvmtest/guest-memory';
import {
  CAP,
  CR,
  type CpuidEntry,
  type Errno,
  findCpuid,
  type Guest,
  type GuestProgram,
  hostPtr,
  MEM_FLAG,
  MEMORY_ATTRIBUTE,
  TDX_CMD,
  TDX_MEASURE_MEMORY_REGION,
  type TdxCapabilitiesData,
  type TdxCommand,
  type TdxInitMemRegionData,
  type TdxInitVmData,
  tryKvm,
  type Vcpu,
} from '@kvmtest/kvm';
import { TestkitError } from './errors.js';
import type { BootLayout } from './kit/ops.js';
import { tagPolicyFor } from './kit/tag.js';
import { asTestVm, kitState, type TestVm, type VmLike } from './kit-vm.js';
import { kvmAssert } from './kvm-assert.js';
import { guestCodeAddress, guestCodeAt, wrapGuest } from './runtime.js';

/** GPA of the TD boot parameters (selftests' TD_BOOT_PARAMETERS_GPA): 64 KiB below 4 GiB; identity-mapped, so also their GVA (hence a plain bigint, not a Gpa). */
export const TD_BOOT_PARAMETERS_GPA = 0xffff_0000n;
/** The memslot of the boot-parameters region (the selftests' slot 21). */
export const TD_BOOT_PARAMETERS_SLOT = 21;
/** Bytes of the boot-parameters region: up to the reset vector's page at 4 GiB. */
const TD_BOOT_REGION_SIZE = 0x1_0000n;

/**
 * Layout of `struct td_boot_parameters` as the kit writes it (little-endian): CR0, CR3, CR4 and EFER
 * as u64 at 0x00/0x08/0x10/0x18, the vCPU count (u32) at 0x20, then from 0x40 one 32-byte
 * `td_per_vcpu_parameters` per VCPU_INDEX: stack top (RSP, u64) at +0, entry point (u64) at +8,
 * vCPU id (u64) at +16. No GDTR/IDTR: the kit's exception entry is the runtime's dispatcher.
 */
export const TD_BOOT_PARAMS_LAYOUT = {
  cr0: 0x00,
  cr3: 0x08,
  cr4: 0x10,
  efer: 0x18,
  nrVcpus: 0x20,
  perVcpu: 0x40,
  perVcpuSize: 0x20,
  rsp: 0x00,
  entry: 0x08,
  vcpuId: 0x10,
} as const;

/** EFER of a TD vCPU, fixed by the TDX module (LME and NXE; LMA follows CR0.PG). */
const TD_EFER = CR.EFER_LME | CR.EFER_NXE;
/** Bytes of KVM_TDX_CAPABILITIES' first CPUID buffer (grown on E2BIG, as tdx_init_vm does). */
const CAPS_NENT = 64;

/** What the kit keeps for a TD besides the common memory state (private to this module). */
interface TdxKitState {
  /** Guest physical address width the TD was created with (48, or 52 for a 5-level shape). */
  readonly gpaw: 48 | 52;
  /** The boot-parameters region: the host's staging copy (the memslot's userspace half). */
  readonly boot: { readonly gpa: bigint; readonly backing: Uint8Array; readonly gmemFd: number };
  /** Per-vCPU entries the boot parameters can hold. */
  readonly capacity: number;
  /** vCPUs that went through KVM_TDX_INIT_VCPU (the next VCPU_INDEX). */
  vcpusInitialized: number;
}

const tdStates = new WeakMap<TestVm, TdxKitState>();

function tdState(vm: TestVm, what: string): TdxKitState {
  const td = tdStates.get(vm);
  if (td === undefined)
    throw new TestkitError(
      'WRONG_VM_TYPE',
      `${what}: this ${vm.type} VM has no TD boot parameters (made by vmCreate for a tdx shape)`,
      {
        type: vm.type,
      },
    );
  return td;
}

function u64At(b: Uint8Array, off: number, v: bigint): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(off, v, true);
}

/** GPAW of a TD of guest mode `mode`: 48, or 52 when the shape asks 5-level paging. */
export function tdxGpaw(mode: GuestMode): 48 | 52 {
  return mode === '5-level' ? 52 : 48;
}

/** The TD's tag policy: the S-bit (GPAW − 1) set in shared leaf PTEs. */
export function tdxTagPolicy(gpaw: 48 | 52): TagPolicy {
  const cpuid: CpuidEntry[] = [
    { function: 0x8000_0008, index: 0, flags: 0, eax: (gpaw << 16) | 52, ebx: 0, ecx: 0, edx: 0 },
  ];
  return tagPolicyFor('tdx', cpuid)!;
}

/** Entries the boot parameters must hold for `capacity` vCPUs, in 4 KiB pages. */
function bootPages(capacity: number): number {
  return Math.ceil((TD_BOOT_PARAMS_LAYOUT.perVcpu + capacity * TD_BOOT_PARAMS_LAYOUT.perVcpuSize) / 4096);
}

/**
 * The boot-parameters region of a new TD (before its image): a guest_memfd memslot at
 * TD_BOOT_PARAMETERS_GPA whose pages are allocated private (measured at launch) and identity-mapped.
 */
export function tdxAddBootRegion(vm: TestVm, { memory, space, capacity }: BootLayout): void {
  const raw = vm.raw;
  const state = kitState(vm);
  const userMemory = vm.kvm.allocateUserMemory(Number(TD_BOOT_REGION_SIZE));
  state.keepUserMemory(userMemory);
  const backing = userMemory.bytes;
  const gmemFd = raw.createGuestMemfd(TD_BOOT_REGION_SIZE);
  state.ownFd(gmemFd);
  raw.setUserMemoryRegion({
    slot: TD_BOOT_PARAMETERS_SLOT,
    flags: MEM_FLAG.GUEST_MEMFD,
    guestPhysAddr: TD_BOOT_PARAMETERS_GPA,
    memorySize: TD_BOOT_REGION_SIZE,
    userspace: backing,
    guestMemfd: gmemFd,
    guestMemfdOffset: 0n,
  });
  memory.addRegion({
    slot: TD_BOOT_PARAMETERS_SLOT,
    gpa: TD_BOOT_PARAMETERS_GPA,
    size: TD_BOOT_REGION_SIZE,
    backing,
    flags: { privateBacking: true },
  });
  noteBootParams(space, TD_BOOT_PARAMETERS_GPA, Number(TD_BOOT_REGION_SIZE >> 12n));
  const pages = bootPages(capacity);
  const gpa = space.allocator.alloc({
    slot: TD_BOOT_PARAMETERS_SLOT,
    pages,
    minGpa: TD_BOOT_PARAMETERS_GPA,
    protected: true,
  });
  if (gpa !== TD_BOOT_PARAMETERS_GPA)
    throw new TestkitError('BAD_ARGUMENT', `the TD boot parameters landed at GPA 0x${gpa.toString(16)}`, {
      gpa,
    });
  // Identity map: the boot code keeps reading them at the same address once paging is on.
  space.mapRange(gva(gpa), gpa, BigInt(pages) * 4096n, { visibility: 'private', nx: true });
  tdStates.set(vm, {
    gpaw: tdxGpaw(vm.shape.mode),
    boot: { gpa, backing, gmemFd },
    capacity,
    vcpusInitialized: 0,
  });
}

/** A `struct kvm_tdx_cmd`. */
function cmd(id: number, data?: unknown, flags = 0): TdxCommand {
  return { id, flags, data, hwError: 0n };
}

/** `KVM_TDX_<NAME>` of a command id, for messages. */
export function tdxCmdName(id: number): string {
  const hit = Object.entries(TDX_CMD).find(([, v]) => v === id);
  return hit ? `KVM_TDX_${hit[0]}` : `KVM_MEMORY_ENCRYPT_OP ${id}`;
}

function requireTd(vm: TestVm, what: string): void {
  if (vm.type !== 'tdx')
    throw new TestkitError('WRONG_VM_TYPE', `${what}: this is a ${vm.type} VM, not a TD (VM type tdx)`, {
      type: vm.type,
    });
}

/** tdx_vm_ioctl: KVM_MEMORY_ENCRYPT_OP `id` on the TD's VM fd (asserts success; the KvmError is the cause). */
export function tdxVmIoctl(vmLike: VmLike, id: number, data?: unknown, flags = 0): void {
  const vm = asTestVm(vmLike);
  kvmAssert(tdxCmdName(id), () => vm.raw.memEncryptOp(cmd(id, data, flags)));
}

/** The try form of tdxVmIoctl: the errno name, or undefined on success. */
export function tryTdxVmIoctl(vmLike: VmLike, id: number, data?: unknown, flags = 0): Errno | undefined {
  const vm = asTestVm(vmLike);
  return tryKvm(() => vm.raw.memEncryptOp(cmd(id, data, flags)));
}

/** tdx_vcpu_ioctl: KVM_MEMORY_ENCRYPT_OP `id` on a TD vCPU fd (asserts success). */
export function tdxVcpuIoctl(vcpu: Vcpu, id: number, data?: unknown, flags = 0): void {
  kvmAssert(tdxCmdName(id), () => vcpu.memEncryptOp(cmd(id, data, flags)));
}

/** KVM_TDX_CAPABILITIES, growing the CPUID buffer on E2BIG (tdx_read_capabilities). */
export function tdxCapabilities(vmLike: VmLike): TdxCapabilitiesData {
  const vm = asTestVm(vmLike);
  let nent = CAPS_NENT;
  for (;;) {
    const data: TdxCapabilitiesData = { supportedAttrs: 0n, supportedXfam: 0n, nent, cpuid: [] };
    const err = tryKvm(() => vm.raw.memEncryptOp(cmd(TDX_CMD.CAPABILITIES, data)));
    if (err === 'E2BIG' && nent < 4096) {
      nent *= 2;
      continue;
    }
    if (err !== undefined) tdxVmIoctl(vm, TDX_CMD.CAPABILITIES, data); // re-issue for the assertion
    return data;
  }
}

/**
 * The CPUID KVM_TDX_INIT_VM configures: KVM's supported CPUID filtered by the TDX module's
 * configurable bits, with the guest physical address width in 0x80000008 EAX[23:16].
 */
export function tdxInitVmCpuid(
  caps: TdxCapabilitiesData,
  supported: readonly CpuidEntry[],
  gpaw: 48 | 52,
): CpuidEntry[] {
  return caps.cpuid.map((c) => {
    const s = findCpuid(supported, c.function, c.index);
    const e: CpuidEntry = {
      function: c.function,
      index: c.index,
      flags: c.flags,
      eax: ((s?.eax ?? 0) & c.eax) >>> 0,
      ebx: ((s?.ebx ?? 0) & c.ebx) >>> 0,
      ecx: ((s?.ecx ?? 0) & c.ecx) >>> 0,
      edx: ((s?.edx ?? 0) & c.edx) >>> 0,
    };
    if (c.function === 0x8000_0008) e.eax = ((e.eax & ~0x00ff_0000) | (gpaw << 16)) >>> 0;
    return e;
  });
}

/**
 * kvm_arch_vm_post_create for a TD (tdx_init_vm): KVM_TDX_CAPABILITIES, the split irqchip a TD
 * vCPU needs, KVM_TDX_INIT_VM (attributes 0; the CPUID is part of the TD's configuration, so it
 * precedes every vCPU), then the common boot parameters: CR0/CR3/CR4/EFER for 64-bit paging.
 */
export function tdxPostCreate(vm: TestVm, supported: readonly CpuidEntry[]): void {
  const tdx = tdState(vm, 'tdxPostCreate');
  const caps = tdxCapabilities(vm);
  kvmAssert('KVM_CAP_SPLIT_IRQCHIP', () => vm.raw.enableCap(CAP.SPLIT_IRQCHIP, [24]));
  const init: TdxInitVmData = {
    attributes: 0n,
    xfam: 0n,
    cpuid: tdxInitVmCpuid(caps, supported, tdx.gpaw),
  };
  tdxVmIoctl(vm, TDX_CMD.INIT_VM, init);
  const b = tdx.boot.backing;
  const L = TD_BOOT_PARAMS_LAYOUT;
  const space = vm.memory('the TD boot parameters').space;
  u64At(b, L.cr0, CR.CR0_PE | CR.CR0_NE | CR.CR0_WP | CR.CR0_PG);
  u64At(b, L.cr3, space.pageTables.root);
  u64At(b, L.cr4, CR.CR4_PAE | CR.CR4_MCE | (vm.shape.mode === '5-level' ? CR.CR4_LA57 : 0n));
  u64At(b, L.efer, TD_EFER);
}

/**
 * vm_vcpu_add for a TD: KVM_TDX_GET_CPUID → KVM_SET_CPUID2 → KVM_TDX_INIT_VCPU, then the vCPU's
 * stack top and entry point go into its boot-parameters entry (tdx_vcpu_set_entry_point) — the host
 * cannot load RSP/RIP — and the vCPU's program becomes the TD boot code.
 */
export function tdxAddVcpu(vm: TestVm, vcpu: Vcpu, stackTop: bigint, guest: GuestProgram | undefined): void {
  const tdx = tdState(vm, 'addVcpu');
  const index = tdx.vcpusInitialized;
  if (index >= tdx.capacity)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `vCPU ${vcpu.id} would be the TD's vCPU #${index + 1}; its boot parameters hold ${tdx.capacity} (pass nrVcpus or ucallSlots to vmCreate)`,
      { id: vcpu.id, capacity: tdx.capacity },
    );
  const cpuid = { nent: 256, cpuid: [] as CpuidEntry[] };
  tdxVcpuIoctl(vcpu, TDX_CMD.GET_CPUID, cpuid);
  vcpu.setCpuid(cpuid.cpuid);
  tdxVcpuIoctl(vcpu, TDX_CMD.INIT_VCPU, 0n);
  tdx.vcpusInitialized++;
  const L = TD_BOOT_PARAMS_LAYOUT;
  const b = tdx.boot.backing;
  const at = L.perVcpu + index * L.perVcpuSize;
  u64At(b, at + L.rsp, stackTop);
  u64At(b, at + L.entry, guest === undefined ? 0n : guestCodeAddress(guest));
  u64At(b, at + L.vcpuId, BigInt(vcpu.id));
  new DataView(b.buffer, b.byteOffset).setUint32(L.nrVcpus, tdx.vcpusInitialized, true);
  if (guest !== undefined) vcpu.setEntry(tdBootCode);
}

/**
 * The TD's code at the reset vector (the selftests' td_boot.S): paging is off, so the boot
 * parameters are read by GPA; it loads CR4, CR3 and CR0 (paging on, long mode), finds its entry by
 * VCPU_INDEX (RSI, from the TDX module) through the identity mapping, sets RSP and enters the guest
 * program under the runtime's exception entry. A failure here is a triple fault (shutdown exit).
 */
export async function tdBootCode(g: Guest): Promise<void> {
  const { readCr, writeCr } = g;
  if (writeCr === undefined || readCr === undefined)
    throw new Error('this backend has no Guest.writeCr: a TD cannot turn paging on (MOV to CR)');
  const L = TD_BOOT_PARAMS_LAYOUT;
  const p = TD_BOOT_PARAMETERS_GPA;
  if ((readCr.call(g, 0) & CR.CR0_PG) !== 0n)
    throw new Error('TD boot code entered with paging on: it runs once, from the reset vector');
  const efer = g.readU64(p + BigInt(L.efer));
  if (efer !== TD_EFER)
    throw new Error(
      `TD boot parameters ask EFER 0x${efer.toString(16)}; a TD's EFER is the module's 0x${TD_EFER.toString(16)} (it cannot write EFER)`,
    );
  const cr4 = g.readU64(p + BigInt(L.cr4));
  const cr3 = g.readU64(p + BigInt(L.cr3));
  const cr0 = g.readU64(p + BigInt(L.cr0));
  writeCr.call(g, 4, cr4);
  writeCr.call(g, 3, cr3);
  writeCr.call(g, 0, cr0);
  const index = g.regs.rsi;
  const at = p + BigInt(L.perVcpu) + index * BigInt(L.perVcpuSize);
  g.regs.rsp = g.readU64(at + BigInt(L.rsp));
  const entry = g.readU64(at + BigInt(L.entry));
  const program = guestCodeAt(entry);
  if (program === undefined)
    throw new Error(
      `TD vCPU index ${index}: boot parameters name entry point 0x${entry.toString(16)}, no guest code`,
    );
  await wrapGuest(program)(g);
}

/**
 * The first half of a TD's launch (tdx_vm_finalize's loop): for every range of private pages of
 * every memslot, set the PRIVATE memory attribute, then KVM_TDX_INIT_MEM_REGION with
 * KVM_TDX_MEASURE_MEMORY_REGION from the host's staging copy (on the first vCPU). Stage → updated.
 */
export function tdxInitMemRegions(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireTd(vm, 'tdxInitMemRegions');
  const vcpu = vm.vcpus[0];
  if (vcpu === undefined)
    throw new TestkitError(
      'NO_VCPU',
      `the ${vm.type} VM has no vCPU: KVM_TDX_INIT_MEM_REGION is a vCPU ioctl (add vCPUs before the launch)`,
      { type: vm.type },
    );
  const mem = kitState(vm).mem;
  if (mem) {
    const { space } = mem;
    for (const region of space.memory.regions()) {
      for (const r of space.allocator.protectedRanges(region.slot)) {
        const size = BigInt(r.pages) * 4096n;
        kvmAssert('KVM_SET_MEMORY_ATTRIBUTES', () =>
          vm.raw.setMemoryAttributes({ address: r.gpa, size, attributes: MEMORY_ATTRIBUTE.PRIVATE }),
        );
        const data: TdxInitMemRegionData = {
          source: hostPtr(region.backing, region.offsetOf(r.gpa)),
          gpa: r.gpa,
          nrPages: BigInt(r.pages),
        };
        tdxVcpuIoctl(vcpu, TDX_CMD.INIT_MEM_REGION, data, TDX_MEASURE_MEMORY_REGION);
      }
    }
  }
  // From here the private pages are guest_memfd's: the staging copy no longer reaches the guest.
  kitState(vm).launchUpdated();
}

/** KVM_TDX_FINALIZE_VM: the MRTD is final and the TD runnable. Stage → finished. */
export function tdxFinalize(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireTd(vm, 'tdxFinalize');
  tdxVmIoctl(vm, TDX_CMD.FINALIZE_VM);
  kitState(vm).launchFinished();
}

/** tdx_vm_finalize: the TD's launch from its current stage (INIT_MEM_REGION over private memory, FINALIZE). */
export function vmTdxLaunch(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireTd(vm, 'vmTdxLaunch');
  if (vm.launchStage === 'none') tdxInitMemRegions(vm);
  if (vm.launchStage !== 'finished') tdxFinalize(vm);
}
