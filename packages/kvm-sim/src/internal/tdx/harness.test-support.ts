// A TD launch as the TDX selftests' library does it (the creation flow of
// Documentation/virt/kvm/x86/intel-tdx.rst): used by the TDX model's tests and its benchmark. Not part of the package API.

import { VM_TYPE_NUMBER } from '@kvmtest/coco';
import {
  CAP,
  type CpuidEntry,
  type Kvm,
  MEM_FLAG,
  MEMORY_ATTRIBUTE,
  TDX_CMD,
  TDX_MEASURE_MEMORY_REGION,
  type TdxCapabilitiesData,
  type TdxCommand,
  type TdxInitMemRegionData,
  type TdxInitVmData,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import { SimKvm } from '../kvm.js';
import { SimVm } from '../vm.js';
import { tdxArchOps } from './ops.js';
import type { TdxGetCpuidData } from './commands.js';

/** A `tdx` VM of `kvm`: KVM_CREATE_VM when the host advertises TDX, else the TDX ops installed directly (before wiring). */
export function createTdVm(kvm: Kvm): Vm {
  if ((kvm.checkExtension(CAP.VM_TYPES) & (1 << VM_TYPE_NUMBER.tdx)) !== 0) return kvm.createVm('tdx');
  if (!(kvm instanceof SimKvm)) throw new TypeError('createTdVm: kvm must be a simulated Kvm');
  const vm = new SimVm(kvm, 'tdx', tdxArchOps(kvm.config));
  kvm.liveVms.add(vm);
  return vm;
}

/** A TDX command object. */
export function tdxCmd(id: number, data?: unknown, flags = 0): TdxCommand {
  return { id, flags, data, hwError: 0n };
}

/** The CPUID INIT_VM needs: 0x80000008 with GPAW in EAX[23:16] (and MAXPHYADDR in EAX[7:0]). */
export function gpawCpuid(gpaw: number): CpuidEntry[] {
  return [{ function: 0x8000_0008, index: 0, flags: 0, eax: (gpaw << 16) | 52, ebx: 0, ecx: 0, edx: 0 }];
}

/** KVM_TDX_CAPABILITIES with room for 64 entries. */
export function capabilities(vm: Vm): TdxCapabilitiesData {
  const data: TdxCapabilitiesData = { supportedAttrs: 0n, supportedXfam: 0n, nent: 64, cpuid: [] };
  vm.memEncryptOp(tdxCmd(TDX_CMD.CAPABILITIES, data));
  return data;
}

/** KVM_TDX_INIT_VM with GPAW `gpaw`. */
export function initVm(vm: Vm, gpaw = 48, attributes = 0n): void {
  const data: TdxInitVmData = { attributes, xfam: 0n, cpuid: gpawCpuid(gpaw) };
  vm.memEncryptOp(tdxCmd(TDX_CMD.INIT_VM, data));
}

/**
 * vm_vcpu_add for a TD, as the kit does it: KVM_CREATE_VCPU, then KVM_TDX_GET_CPUID -> KVM_SET_CPUID2
 * (a new vCPU has no CPUID: arch/x86/kvm/x86.c: kvm_arch_vcpu_create()). KVM_TDX_INIT_VCPU stays the caller's.
 */
export function tdVcpuAdd(vm: Vm, id: number): Vcpu {
  const vcpu = vm.createVcpu(id);
  const data: TdxGetCpuidData = { nent: 256, cpuid: [] };
  vcpu.memEncryptOp(tdxCmd(TDX_CMD.GET_CPUID, data));
  vcpu.setCpuid(data.cpuid);
  return vcpu;
}

/** KVM_TDX_INIT_VCPU. */
export function initVcpu(vcpu: Vcpu, rcx = 0n): void {
  vcpu.memEncryptOp(tdxCmd(TDX_CMD.INIT_VCPU, rcx));
}

/** A guest_memfd memslot of `size` bytes at `gpa` whose userspace half is `shared`; returns the gmem fd. */
export function addPrivateSlot(vm: Vm, slot: number, gpa: bigint, shared: Uint8Array): number {
  const size = BigInt(shared.length);
  const fd = vm.createGuestMemfd(size);
  vm.setUserMemoryRegion({
    slot,
    flags: MEM_FLAG.GUEST_MEMFD,
    guestPhysAddr: gpa,
    memorySize: size,
    userspace: shared,
    guestMemfd: fd,
  });
  return fd;
}

/** KVM_TDX_INIT_MEM_REGION of `source` at `gpa` (measured unless `measure` is false); returns the data struct. */
export function initMemRegion(
  vcpu: Vcpu,
  gpa: bigint,
  source: Uint8Array,
  measure = true,
): TdxInitMemRegionData {
  const data: TdxInitMemRegionData = {
    source: { buffer: source, offset: 0 },
    gpa,
    nrPages: BigInt(source.length / 4096),
  };
  vcpu.memEncryptOp(tdxCmd(TDX_CMD.INIT_MEM_REGION, data, measure ? TDX_MEASURE_MEMORY_REGION : 0));
  return data;
}

/** KVM_TDX_FINALIZE_VM. */
export function finalize(vm: Vm): void {
  vm.memEncryptOp(tdxCmd(TDX_CMD.FINALIZE_VM));
}

/** What `launchTd` built. */
export interface LaunchedTd {
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  /** The userspace half of the private slot (the host's view of it). */
  readonly shared: Uint8Array;
  readonly gmemFd: number;
}

/**
 * The whole flow: CAPABILITIES, split irqchip, INIT_VM, one vCPU + INIT_VCPU, a guest_memfd slot of
 * `image.length` bytes at `gpa` (userspace half `shared`) set PRIVATE and filled from `image` with
 * a measured INIT_MEM_REGION, FINALIZE.
 */
export function launchTd(
  kvm: Kvm,
  image: Uint8Array,
  gpa = 0n,
  gpaw = 48,
  shared: Uint8Array = new Uint8Array(image.length),
): LaunchedTd {
  const vm = createTdVm(kvm);
  capabilities(vm);
  vm.enableCap(CAP.SPLIT_IRQCHIP, [24]);
  initVm(vm, gpaw);
  const vcpu = tdVcpuAdd(vm, 0);
  initVcpu(vcpu);
  const gmemFd = addPrivateSlot(vm, 0, gpa, shared);
  vm.setMemoryAttributes({ address: gpa, size: BigInt(image.length), attributes: MEMORY_ATTRIBUTE.PRIVATE });
  initMemRegion(vcpu, gpa, image);
  finalize(vm);
  return { vm, vcpu, shared, gmemFd };
}
