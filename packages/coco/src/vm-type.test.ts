import { describe, expect, it, it as test } from 'vitest';
import {
  GUEST_MODE_PARAMS,
  SEV_POLICY_BIT,
  isVmType,
  VM_SHAPE_DEFAULT,
  VM_TYPE_NUMBER,
  VM_TYPE_TRAITS,
  VM_TYPES,
  vmShape,
  vmTypeFromNumber,
} from './index.js';

describe('VM types', () => {
  it('numbers the types as KVM_CREATE_VM does (arch/x86/include/uapi/asm/kvm.h)', () => {
    expect(VM_TYPE_NUMBER).toEqual({
      default: 0,
      'sw-protected': 1,
      sev: 2,
      'sev-es': 3,
      'sev-snp': 4,
      tdx: 5,
    });
    expect(VM_TYPES).toEqual(['default', 'sw-protected', 'sev', 'sev-es', 'sev-snp', 'tdx']);
  });

  it('maps numbers back to types and answers undefined for unknown numbers', () => {
    for (const t of VM_TYPES) expect(vmTypeFromNumber(VM_TYPE_NUMBER[t])).toBe(t);
    expect(vmTypeFromNumber(6)).toBeUndefined();
    expect(vmTypeFromNumber(-1)).toBeUndefined();
  });

  it('recognises only the known type names', () => {
    expect(isVmType('sev-es')).toBe(true);
    expect(isVmType('sev_es')).toBe(false);
    expect(isVmType('toString')).toBe(false);
    expect(isVmType(2)).toBe(false);
  });

  it('gives protected state to every type but plain SEV among the confidential ones (arch/x86/include/uapi/asm/kvm.h)', () => {
    expect(VM_TYPE_TRAITS.sev.protectedState).toBe(false);
    expect(VM_TYPE_TRAITS['sev-es'].protectedState).toBe(true);
    expect(VM_TYPE_TRAITS['sev-snp'].protectedState).toBe(true);
    expect(VM_TYPE_TRAITS.tdx.protectedState).toBe(true);
    expect(VM_TYPE_TRAITS.default.protectedMemory).toBe(false);
  });

  it('uses private memory in guest_memfd for SNP and TDX only among the hardware types', () => {
    const gmem = VM_TYPES.filter((t) => VM_TYPE_TRAITS[t].privateMemoryInGuestMemfd);
    expect(gmem).toEqual(['sw-protected', 'sev-snp', 'tdx']);
  });

  it('picks the port-request path per type', () => {
    expect(VM_TYPES.map((t) => VM_TYPE_TRAITS[t].portRequest)).toEqual([
      'instruction',
      'instruction',
      'instruction',
      'ghcb',
      'ghcb',
      'tdvmcall',
    ]);
  });

  it('tags SEV-family pages with the C-bit and TDX pages with the S-bit', () => {
    expect(VM_TYPE_TRAITS.sev.tagBit).toBe('c-bit');
    expect(VM_TYPE_TRAITS['sev-snp'].tagBit).toBe('c-bit');
    expect(VM_TYPE_TRAITS.tdx.tagBit).toBe('s-bit');
    expect(VM_TYPE_TRAITS.default.tagBit).toBe('none');
  });
});

describe('vmShape', () => {
  it('defaults to a default VM with 4-level paging', () => {
    expect(vmShape()).toEqual(VM_SHAPE_DEFAULT);
    expect(vmShape({ type: 'tdx' })).toEqual({ type: 'tdx', mode: '4-level' });
  });

  it('rejects an unknown type or mode with a message naming it', () => {
    expect(() => vmShape({ type: 'sev-xx' as never })).toThrow(/unknown VM type "sev-xx"/);
    expect(() => vmShape({ mode: '3-level' as never })).toThrow(/unknown guest mode "3-level"/);
  });

  it('describes both paging modes', () => {
    expect(GUEST_MODE_PARAMS['4-level'].vaBits).toBe(48);
    expect(GUEST_MODE_PARAMS['5-level'].levels).toBe(5);
  });
});

describe('VM-type facts the upper layers read', () => {
  test('launchFlow is none exactly for the types that need no launch', () => {
    for (const t of VM_TYPES)
      expect(VM_TYPE_TRAITS[t].launchFlow === 'none', t).toBe(!VM_TYPE_TRAITS[t].needsLaunch);
    expect(VM_TYPES.map((t) => VM_TYPE_TRAITS[t].launchFlow)).toEqual([
      'none',
      'none',
      'sev',
      'sev',
      'snp',
      'tdx',
    ]);
  });

  test('the native ucall transport follows how the guest makes port requests', () => {
    const byPort = { instruction: 'pio', ghcb: 'ghcb', tdvmcall: 'tdvmcall' } as const;
    for (const t of VM_TYPES)
      expect(VM_TYPE_TRAITS[t].ucallTransport, t).toBe(byPort[VM_TYPE_TRAITS[t].portRequest]);
  });

  test('default policies: SEV_POLICY_BIT.ES for sev-es, RSVD_MBO | SMT for sev-snp, 0 elsewhere; only SNP registers its GHCB', () => {
    expect(VM_TYPES.map((t) => VM_TYPE_TRAITS[t].defaultPolicy)).toEqual([
      0,
      0,
      0,
      1 << SEV_POLICY_BIT.ES,
      0x30000,
      0,
    ]);
    expect(VM_TYPES.filter((t) => VM_TYPE_TRAITS[t].registersGhcb)).toEqual(['sev-snp']);
  });
});
