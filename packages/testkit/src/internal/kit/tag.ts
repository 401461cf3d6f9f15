// The page-table tag of a VM type, from its `tagBit` trait and KVM's supported CPUID.

import { cBitFromCpuid, isVmType, tdxSharedBit, VM_TYPE_TRAITS, VM_TYPES, type VmType } from '@kvmtest/coco';
import type { TagPolicy } from '@kvmtest/guest-memory';
import { argTypeError, type CpuidEntry, findCpuid } from '@kvmtest/kvm';
import { TestkitError } from '../errors.js';

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
