// Migration targets: the destination of an intra-host migration (KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM),
// made the way a VMM makes it — a VM of the source's type mapping the same guest memory, with the
// same vCPUs and the same guest image, and no KVM_SEV_INIT2 of its own (the context it receives is
// already initialised and launched). sevMigrateFrom(target, source) then moves the ucall pool and,
// for plain SEV, the register state the VMM carries itself, so the guest goes on on the target.

import { TestkitError } from './errors.js';
import { supportedCpuid } from './host-cpuid.js';
import { asTestVm, kitState, TestVm, type VmLike } from './kit-vm.js';
import { symbolMap } from './symbols.js';

/** Targets the kit made, with the VM each was made for. */
const sourceOf = new WeakMap<TestVm, TestVm>();

/** @internal the VM `target` was made for by vmCreateMigrationTarget, if any. */
export function migrationSourceOf(target: TestVm): TestVm | undefined {
  return sourceOf.get(target);
}

/**
 * The destination of an intra-host migration of `src`: a VM of the same type whose slot 0 maps the
 * same host memory (the private pages stay readable once the key moves with the context), the same
 * address space and guest image, and a vCPU for each of `src`'s with the same id and CPUID — no guest
 * program of its own and no KVM_SEV_INIT2. Move the context with sevMigrateFrom(target, src); the
 * guest then continues on the target's vCPUs through runUcall. The shared memory is freed only once
 * no open VM maps it (the backend's allocateUserMemory rule).
 */
export function vmCreateMigrationTarget(srcLike: VmLike): TestVm {
  const src = asTestVm(srcLike);
  const mem = src.memory('vmCreateMigrationTarget');
  if (mem.gmemFd !== undefined || src.traits.launchFlow === 'tdx')
    throw new TestkitError(
      'BAD_ARGUMENT',
      `vmCreateMigrationTarget: the ${src.type} VM keeps its private memory in a guest_memfd bound to it; a migration target cannot map it`,
      { type: src.type },
    );
  const raw = src.kvm.createVm(src.type);
  const srcState = kitState(src);
  const cpuid = srcState.cpuid ?? supportedCpuid(src.kvm);
  const dst = new TestVm({
    raw,
    kvm: src.kvm,
    shape: src.shape,
    ops: srcState.ops,
    barebones: false,
    nrVcpus: src.nrVcpus,
    policy: src.policy,
    ...(srcState.cpuid === undefined ? {} : { cpuid: srcState.cpuid }),
  });
  try {
    raw.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: mem.slot0.gpa,
      memorySize: mem.slot0.size,
      userspace: mem.slot0.backing,
    });
    kitState(dst).attachMemory({
      space: mem.space,
      slot0: mem.slot0,
      gmemFd: undefined,
      image: mem.image,
      guestImage: mem.guestImage,
    });
    raw.setGuestSymbols(symbolMap(mem.image));
    for (const v of src.vcpus) raw.createVcpu(v.id).setCpuid(cpuid);
  } catch (e) {
    dst.close();
    throw e;
  }
  sourceOf.set(dst, src);
  return dst;
}
