// Whether this host's KVM runs XGETBV, XSAVE and XRSTOR in a 64-bit CPL-0 guest, found by running
// them once in a throwaway VM (cached for the process).
//
// On VMX/SVM the guest executes them natively (XGETBV and XSAVE are not intercepted). PVM runs a
// guest's supervisor code through KVM's instruction emulator, which has XSETBV
// (arch/x86/kvm/emulate.c: em_xsetbv) but neither XGETBV nor XSAVE/XRSTOR: such a guest stops
// with KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION. The agent offers the Guest methods
// only where the instructions run (they are optional in the contract).

import { CR, codeSegment64, dataSegment64, findCpuid, isKvmError } from '@kvmtest/kvm';
import type { LinuxKvmCore } from '../core.js';
import { encodeSegment } from '../sregs.js';
import { SREGS } from '../uapi.js';

/** Which of the XSAVE-family instructions the agent can execute here, and why not where not. */
export interface XsaveSupport {
  xgetbv: boolean;
  xsave: boolean;
  xrstor: boolean;
  /** What stopped the probe (the first instruction that did not run), if anything. */
  reason?: string;
}

let cached: XsaveSupport | undefined;

// xor ecx, ecx; xgetbv; out 0x10, al; mov esi, 0x9000; mov eax, 3; xor edx, edx;
// xsave64 [rsi]; out 0x11, al; xrstor64 [rsi]; out 0x12, al; hlt
const CODE = [
  0x31, 0xc9, 0x0f, 0x01, 0xd0, 0xe6, 0x10, 0xbe, 0x00, 0x90, 0x00, 0x00, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x31,
  0xd2, 0x48, 0x0f, 0xae, 0x26, 0xe6, 0x11, 0x48, 0x0f, 0xae, 0x2e, 0xe6, 0x12, 0xf4,
];
const CODE_GPA = 0x8000;
const PORTS = [0x10, 0x11, 0x12] as const;
const NAMES = ['xgetbv', 'xsave', 'xrstor'] as const;

/** Probes once per process (a VM of 64 KiB and one vCPU, closed before returning). */
export function xsaveSupport(kvm: LinuxKvmCore): XsaveSupport {
  cached ??= probe(kvm);
  return cached;
}

function probe(kvm: LinuxKvmCore): XsaveSupport {
  const none = (reason: string): XsaveSupport => ({ xgetbv: false, xsave: false, xrstor: false, reason });
  const cpuid = kvm.getSupportedCpuid();
  const leaf1 = findCpuid(cpuid, 1);
  // A guest whose CPUID lacks XSAVE cannot set CR4.OSXSAVE (kvm_is_valid_cr4()): the instructions
  // could only raise #UD. PVM is such a host (it also cannot emulate them: see above).
  if (leaf1 === undefined || (leaf1.ecx & (1 << 26)) === 0)
    return none('KVM_GET_SUPPORTED_CPUID does not offer XSAVE (CPUID.1:ECX bit 26) to guests');
  const vm = kvm.createVm();
  try {
    vm.runTimeoutMs = 2000;
    const bytes = kvm.allocateUserMemory(0x10000).bytes;
    const mem = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    mem.setBigUint64(0x1000, 0x2003n, true); // PML4[0] → PDPT
    mem.setBigUint64(0x2000, 0x3003n, true); // PDPT[0] → PD
    mem.setBigUint64(0x3000, 0x83n, true); // PD[0]: 2 MiB at GPA 0
    bytes.set(CODE, CODE_GPA);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: bytes });
    const vcpu = vm.createVcpu(0);
    vcpu.setCpuid(cpuid);
    const raw = vcpu.getSregsRaw();
    const s = new DataView(raw.buffer);
    s.setBigUint64(SREGS.cr0, s.getBigUint64(SREGS.cr0, true) | CR.CR0_PE | CR.CR0_PG, true);
    s.setBigUint64(SREGS.cr3, 0x1000n, true);
    s.setBigUint64(SREGS.cr4, s.getBigUint64(SREGS.cr4, true) | CR.CR4_PAE | CR.CR4_OSXSAVE, true);
    s.setBigUint64(SREGS.efer, s.getBigUint64(SREGS.efer, true) | CR.EFER_LME | CR.EFER_LMA, true);
    encodeSegment(s, SREGS.cs, codeSegment64(8));
    for (const at of [SREGS.ds, SREGS.es, SREGS.ss]) encodeSegment(s, at, dataSegment64(16));
    vcpu.setSregsRaw(raw);
    vcpu.setXcrs([{ xcr: 0, value: 3n }]); // x87 | SSE: what XSAVE saves below
    vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(CODE_GPA), rflags: 2n });
    const out: XsaveSupport = { xgetbv: false, xsave: false, xrstor: false };
    for (let i = 0; i < PORTS.length; i++) {
      const e = vcpu.runSync();
      if (e.reason !== 'io' || e.port !== PORTS[i]) {
        out.reason = `${NAMES[i]} did not run in a 64-bit guest here: the run ended with ${e.reason}${e.reason === 'internal-error' ? ` (${e.detail})` : ''}`;
        return out;
      }
      out[NAMES[i]!] = true;
    }
    return out;
  } catch (e) {
    if (!isKvmError(e)) throw e;
    return none(`the probe VM failed: ${e.message}`);
  } finally {
    vm.close();
  }
}
