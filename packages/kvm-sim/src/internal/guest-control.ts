// The simulated guest CPU, part 3: control state — CPUID, MSRs, control registers and XSAVE.

import { CR, type CpuidEntry, findCpuid, type ReadableCr, VECTOR, type WritableCr } from '@kvmtest/kvm';
import { kvmCpuid } from './kvm-cpuid.js';
import { loadComponents, saveComponents, XSAVE_AREA_BYTES, xcrProblem, xsaveAreaProblem } from './xsave.js';

import {
  MSR_EFER,
  CR0_DEFINED,
  CR4_DEFINED,
  CR0_MMU_BITS,
  CR4_MMU_BITS,
  hex,
  describeValue,
} from './guest-util.js';
import { GuestMem } from './guest-mem.js';

export abstract class GuestControl extends GuestMem {
  // ---- CPUID and MSRs -----------------------------------------------------------------------

  /** ArchCpu: the vCPU's CPUID table as KVM answers an emulated CPUID (no interception, no budget). */
  cpuidTable(leaf: number, subleaf: number): { eax: number; ebx: number; ecx: number; edx: number } {
    return kvmCpuid(this.vcpu.cpuid, leaf, subleaf);
  }

  cpuid(leaf: number, subleaf = 0): CpuidEntry {
    if (typeof leaf !== 'number' || !Number.isInteger(leaf))
      throw new TypeError(`cpuid: leaf must be an integer, got ${describeValue(leaf)}`);
    if (typeof subleaf !== 'number' || !Number.isInteger(subleaf))
      throw new TypeError(`cpuid: subleaf must be an integer, got ${describeValue(subleaf)}`);
    for (;;) {
      this.tick('cpuid');
      const a = this.intercepted({ kind: 'cpuid', leaf, subleaf }, 'cpuid', leaf);
      if (a === 'retry') continue;
      if (a === 'skip')
        return { function: leaf >>> 0, index: subleaf >>> 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
      const own = this.vcpu.vm.ops.guestCpuid?.(this, leaf >>> 0, subleaf >>> 0);
      if (own !== undefined)
        return {
          function: leaf >>> 0,
          index: subleaf >>> 0,
          flags: 0,
          eax: own.eax,
          ebx: own.ebx,
          ecx: own.ecx,
          edx: own.edx,
        };
      // arch/x86/kvm/cpuid.c: kvm_cpuid(): a vCPU whose CPUID was never set reads zeros for every
      // leaf (no entry, and no CPUID.0 for get_out_of_range_cpuid_entry() to redirect to).
      const r = kvmCpuid(this.vcpu.cpuid, leaf, subleaf);
      return {
        function: leaf >>> 0,
        index: subleaf >>> 0,
        flags: 0,
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
      };
    }
  }

  rdmsr(msr: number): bigint {
    if (typeof msr !== 'number' || !Number.isInteger(msr))
      throw new TypeError(`rdmsr: msr must be an integer, got ${describeValue(msr)}`);
    for (;;) {
      this.tick('rdmsr');
      const a = this.intercepted({ kind: 'rdmsr', msr }, 'rdmsr', msr);
      if (a === 'retry') continue;
      if (a === 'skip') return 0n;
      const v = this.vcpu.vm.ops.readMsr?.(this.vcpu, msr) ?? this.vcpu.msr(msr);
      if (v !== undefined) return v;
      const op = `rdmsr(${hex(msr)})`;
      if (
        this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: 'MSR not implemented' }) ===
        'skip'
      )
        return 0n;
    }
  }

  wrmsr(msr: number, value: bigint): void {
    if (typeof msr !== 'number' || !Number.isInteger(msr))
      throw new TypeError(`wrmsr: msr must be an integer, got ${describeValue(msr)}`);
    if (typeof value !== 'bigint') throw new TypeError(`wrmsr: value must be a bigint, got ${typeof value}`);
    // The operation's name is built only for an exception (a trap or a #GP), not on every write.
    for (;;) {
      this.tick('wrmsr');
      const a = this.intercepted({ kind: 'wrmsr', msr }, 'wrmsr', msr, value);
      if (a === 'retry') continue;
      if (a === 'skip') return;
      let v = BigInt.asUintN(64, value);
      if (this.vcpu.vm.ops.writeMsr?.(this.vcpu, msr, v)) return;
      let why: string | undefined;
      if (msr === MSR_EFER) {
        const e = this.eferWrite(v);
        if ('why' in e) why = e.why;
        else v = e.value;
      }
      if (why === undefined && this.vcpu.writeMsr(msr, v)) return;
      why ??= this.vcpu.msr(msr) === undefined ? 'MSR not implemented' : 'value not valid for this MSR';
      if (
        this.deliver({
          vector: VECTOR.GP,
          errorCode: 0,
          operation: `wrmsr(${hex(msr)}, ${hex(value)})`,
          detail: why,
        }) === 'skip'
      )
        return;
    }
  }

  // ---- control registers ---------------------------------------------------------------------

  readCr(n: ReadableCr): bigint {
    if (n !== 0 && n !== 2 && n !== 3 && n !== 4)
      throw new TypeError(`readCr: control register must be 0, 2, 3 or 4, got ${describeValue(n)}`);
    this.tick('readCr');
    const s = this.vcpu.sregs;
    return n === 0 ? s.cr0 : n === 2 ? s.cr2 : n === 3 ? s.cr3 : s.cr4;
  }

  writeCr(n: WritableCr, value: bigint): void {
    if (n !== 0 && n !== 3 && n !== 4)
      throw new TypeError(`writeCr: control register must be 0, 3 or 4, got ${describeValue(n)}`);
    if (typeof value !== 'bigint')
      throw new TypeError(`writeCr: value must be a bigint, got ${typeof value}`);
    const op = `writeCr(${n}, ${hex(BigInt.asUintN(64, value))})`;
    for (;;) {
      this.tick('writeCr');
      const v = BigInt.asUintN(64, value);
      const why = n === 0 ? this.setCr0(v) : n === 3 ? this.setCr3(v) : this.setCr4(v);
      if (why === undefined) return;
      // MOV to CR with an invalid value: #GP(0), nothing changed (SDM vol. 2 "MOV—Move to/from Control Registers").
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: why }) === 'skip') return;
    }
  }

  // ---- XSAVE ---------------------------------------------------------------------------------

  /** The #UD of an XSAVE-family instruction with CR4.OSXSAVE clear (SDM: XGETBV, XSETBV, XSAVE, XRSTOR). */
  protected osxsaveOff(op: string): 'skip' | 'retry' | undefined {
    if ((this.vcpu.sregs.cr4 & CR.CR4_OSXSAVE) !== 0n) return undefined;
    return this.deliver({
      vector: VECTOR.UD,
      errorCode: undefined,
      operation: op,
      detail: 'CR4.OSXSAVE is clear',
    });
  }

  xgetbv(index: number): bigint {
    if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new TypeError(`xgetbv: index must be a u32, got ${describeValue(index)}`);
    const op = `xgetbv(${index})`;
    for (;;) {
      this.tick('xgetbv');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return 0n;
      if (ud === 'retry') continue;
      // XCR1 (XINUSE) needs CPUID.(0xD,1).EAX.XGETBV_EC1, not modelled: only XCR0 reads.
      if (index === 0) return this.vcpu.xcr0;
      const detail = `XCR${index} does not exist`;
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail }) === 'skip') return 0n;
    }
  }

  xsetbv(index: number, value: bigint): void {
    if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new TypeError(`xsetbv: index must be a u32, got ${describeValue(index)}`);
    if (typeof value !== 'bigint') throw new TypeError(`xsetbv: value must be a bigint, got ${typeof value}`);
    const op = `xsetbv(${index}, ${hex(BigInt.asUintN(64, value))})`;
    for (;;) {
      this.tick('xsetbv');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return;
      if (ud === 'retry') continue;
      const vc = this.intercepted({ kind: 'xsetbv' }, 'xsetbv', index, value);
      if (vc === 'skip') return;
      if (vc === 'retry') continue;
      // arch/x86/kvm/x86.c: kvm_emulate_xsetbv() -> __kvm_set_xcr(); a failure is #GP(0).
      const why = xcrProblem(index, BigInt.asUintN(64, value), this.vcpu.guestSupportedXcr0());
      if (why === undefined) {
        this.vcpu.xcr0 = BigInt.asUintN(64, value);
        return;
      }
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: why }) === 'skip') return;
    }
  }

  xsave(gva: bigint, rfbm: bigint): void {
    const op = `xsave(${hex(gva)}, ${hex(rfbm)})`;
    for (;;) {
      this.tick('xsave');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return;
      if (ud === 'retry') continue;
      if ((gva & 63n) !== 0n) {
        const detail = 'the XSAVE area is not 64-byte aligned';
        if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail }) === 'skip') return;
        continue;
      }
      // Read first: XSAVE leaves the bytes of components outside RFBM (and reserved bytes) as they were.
      const area = this.readBytes(gva, XSAVE_AREA_BYTES);
      saveComponents(this.vcpu.fpu, area, BigInt.asUintN(64, rfbm) & this.vcpu.xcr0);
      this.writeBytes(gva, area);
      return;
    }
  }

  xrstor(gva: bigint, rfbm: bigint): void {
    const op = `xrstor(${hex(gva)}, ${hex(rfbm)})`;
    for (;;) {
      this.tick('xrstor');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return;
      if (ud === 'retry') continue;
      const area = (gva & 63n) === 0n ? this.readBytes(gva, XSAVE_AREA_BYTES) : undefined;
      const why =
        area === undefined ? 'the XSAVE area is not 64-byte aligned' : xsaveAreaProblem(area, this.vcpu.xcr0);
      if (why === undefined) {
        loadComponents(this.vcpu.fpu, area!, BigInt.asUintN(64, rfbm) & this.vcpu.xcr0);
        return;
      }
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: why }) === 'skip') return;
    }
  }

  /** kvm_set_cr0 as the guest's MOV to CR0 meets it; returns the #GP reason, or undefined after the write. */
  protected setCr0(value: bigint): string | undefined {
    const s = this.vcpu.sregs;
    if (value >> 32n !== 0n) return `CR0 bits 63:32 are reserved (${hex(value)})`;
    // Reserved bits in 31:0 are ignored on write; ET is hardwired to 1 on every CPU since the 486DX.
    const cr0 = (value & CR0_DEFINED) | CR.CR0_ET;
    if ((cr0 & CR.CR0_NW) !== 0n && (cr0 & CR.CR0_CD) === 0n) return 'CR0.NW set with CR0.CD clear';
    if ((cr0 & CR.CR0_PG) !== 0n && (cr0 & CR.CR0_PE) === 0n) return 'CR0.PG set with CR0.PE clear';
    const pagingOn = (s.cr0 & CR.CR0_PG) !== 0n;
    const longMode = (s.efer & CR.EFER_LMA) !== 0n;
    if (!pagingOn && (cr0 & CR.CR0_PG) !== 0n && (s.efer & CR.EFER_LME) !== 0n && (s.cr4 & CR.CR4_PAE) === 0n)
      return 'CR0.PG set with EFER.LME but CR4.PAE clear (long mode needs PAE paging)';
    // The program runs as 64-bit code once long mode is active: it cannot turn paging off under itself.
    if (longMode && (cr0 & CR.CR0_PG) === 0n)
      return 'CR0.PG cleared while executing 64-bit code (IA-32e mode)';
    if ((cr0 & CR.CR0_PG) === 0n && (s.cr4 & CR.CR4_PCIDE) !== 0n) return 'CR0.PG cleared with CR4.PCIDE set';
    const old = s.cr0;
    s.cr0 = cr0;
    // Turning paging on with EFER.LME activates IA-32e mode (EFER.LMA is set by the CPU, not by WRMSR).
    if (!pagingOn && (cr0 & CR.CR0_PG) !== 0n && (s.efer & CR.EFER_LME) !== 0n) s.efer |= CR.EFER_LMA;
    if (((old ^ cr0) & CR0_MMU_BITS) !== 0n) this.flush();
    return undefined;
  }

  /** kvm_set_cr3: bits above MAXPHYADDR are #GP (bit 63 is PCID's no-flush hint); every write flushes the TLB. */
  protected setCr3(value: bigint): string | undefined {
    const s = this.vcpu.sregs;
    const pcid = (s.cr4 & CR.CR4_PCIDE) !== 0n;
    const cr3 = pcid ? value & ~(1n << 63n) : value;
    const maxPhys = BigInt(this.vm.kvm.config.maxPhysAddr);
    if ((s.efer & CR.EFER_LMA) !== 0n && cr3 >> maxPhys !== 0n)
      return `CR3 ${hex(value)} has bits at or above MAXPHYADDR (${maxPhys})`;
    s.cr3 = (s.efer & CR.EFER_LMA) !== 0n ? cr3 : cr3 & 0xffff_ffffn;
    // No PCID or global pages are modelled: a CR3 load drops every cached translation.
    this.flush();
    return undefined;
  }

  /** kvm_set_cr4 / kvm_is_valid_cr4; returns the #GP reason, or undefined after the write. */
  protected setCr4(value: bigint): string | undefined {
    const s = this.vcpu.sregs;
    const reserved = value & ~CR4_DEFINED;
    if (reserved !== 0n) return `CR4 ${hex(value)} sets reserved bits ${hex(reserved)}`;
    const feature = this.vcpu.cr4FeatureProblem(value);
    if (feature !== undefined) return feature;
    const longMode = (s.efer & CR.EFER_LMA) !== 0n;
    if (longMode && (value & CR.CR4_PAE) === 0n) return 'CR4.PAE cleared in IA-32e mode';
    if (longMode && ((value ^ s.cr4) & CR.CR4_LA57) !== 0n)
      return 'CR4.LA57 changed in IA-32e mode (5-level paging can only be switched with paging off)';
    if (
      (value & CR.CR4_PCIDE) !== 0n &&
      (s.cr4 & CR.CR4_PCIDE) === 0n &&
      (!longMode || (s.cr3 & 0xfffn) !== 0n)
    )
      return 'CR4.PCIDE set outside IA-32e mode or with CR3[11:0] non-zero';
    const old = s.cr4;
    s.cr4 = value;
    if (((old ^ value) & CR4_MMU_BITS) !== 0n) this.flush();
    return undefined;
  }

  /** CPUID of the vCPU's table, with no interception (for the CPU's own feature checks). */
  protected cpuidRegs(leaf: number, subleaf: number): CpuidEntry {
    return (
      findCpuid(this.vcpu.cpuid, leaf, subleaf) ?? {
        function: leaf,
        index: subleaf,
        flags: 0,
        eax: 0,
        ebx: 0,
        ecx: 0,
        edx: 0,
      }
    );
  }

  /**
   * WRMSR(EFER) from the guest (set_efer, not host-initiated): LME cannot change while paging is on,
   * LMA is the CPU's and keeps its value. Returns the value to write, or the #GP reason.
   */
  protected eferWrite(value: bigint): { value: bigint } | { why: string } {
    const s = this.vcpu.sregs;
    if ((s.cr0 & CR.CR0_PG) !== 0n && ((s.efer ^ value) & CR.EFER_LME) !== 0n)
      return { why: 'EFER.LME changed while CR0.PG is set' };
    if ((value & CR.EFER_NXE) !== 0n && (this.cpuidRegs(0x8000_0001, 0).edx & (1 << 20)) === 0)
      return { why: 'EFER.NXE set but CPUID.80000001H:EDX.NX[bit 20] is 0' };
    return { value: (value & ~CR.EFER_LMA) | (s.efer & CR.EFER_LMA) };
  }

  msr(index: number): bigint | undefined {
    return this.vcpu.msr(index);
  }

  setMsr(index: number, value: bigint): void {
    this.vcpu.writeMsr(index, value);
  }
}
