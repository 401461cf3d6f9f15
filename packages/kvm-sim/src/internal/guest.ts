// The guest CPU: the `Guest` a vCPU's program runs against. Every memory access translates its GVA
// through the guest's own page tables (CR3, CR4.LA57) with guest-memory's `walk` over this CPU's
// physical view, then asks the arch how the GPA is served (shared / private / encrypted / fault).
// A small TLB keeps recent translations; it survives KVM_RUN entry (see enterRun) and is flushed
// by control-register and EFER changes, whenever the VM's memslots or attributes change, and when
// the guest writes a page it walked as a page table.
//
// Synchronous accessors never exit: they cannot suspend the program, so an access that needs the
// host (an MMIO read or write, a memory-fault exit) cannot be resumed from them:
//   * an MMIO access through a sync accessor (no memslot behind the GPA, or a write to a READONLY
//     slot) ends the program with internal-error (GUEST_CRASH) naming `readAsync` / `writeAsync`;
//   * a memory-fault from a sync accessor is returned as the `memory-fault` exit, and the program is
//     unwound: later runs report internal-error saying it cannot resume and naming the async form.
//   * a budget running out inside a sync operation unwinds the same way (`intr`, budgetExhausted,
//     then internal-error on later runs); inside an async operation the run ends with `intr` and
//     the next run continues where it stopped.
// The async accessors (`readAsync`, `writeAsync`, `mmioRead`, `mmioWrite`) take such exits as an
// instruction does: an `mmio` exit completed by the host's data, or a `memory-fault` exit after
// which the access is retried (the kernel re-executes the faulting instruction).
//
// Every async operation is also where a running guest gives the event loop back: after a quantum
// of operations drawn by the scheduler (sched.ts) it waits for a macrotask, so host tasks run
// meanwhile; a kick (SimVcpu.kick) takes effect there, ending the run with EINTR.

//
// The class is built in layers, one concern per file: guest-cpu.ts (state, run bookkeeping,
// exceptions), guest-mem.ts (memory and TLB), guest-control.ts (CPUID, MSRs, control registers,
// XSAVE), guest-exits.ts (port I/O, MMIO, hypercalls), and here the confidential-computing
// instructions (VMGEXIT, TDCALL, PVALIDATE) and the ArchCpu physical access.

import { type Guest, type TdcallRegs, VECTOR } from '@kvmtest/kvm';
import type { ArchCpu } from './arch/ops.js';

import { SKIP, RETRY, type TlbEntry, type PageAccess, hex } from './guest-util.js';
import { GuestExits } from './guest-exits.js';

export { GuestUnwind } from './guest-util.js';

/** The Guest of one simulated vCPU. */
export class SimGuest extends GuestExits implements Guest, ArchCpu {
  // vmgexit and tdcall are not async, nor are their steps: guarded's promise and the arch's are passed
  // on as they are (each async layer that returns a promise costs a promise and microtask hops per
  // exit). A step that throws (raise, acting outside a run) throws inside guarded's try, which
  // handles it exactly as the rejection of an async step.

  vmgexit(): Promise<void> {
    return this.guarded(undefined, () => this.vmgexitStep());
  }

  /** One VMGEXIT attempt: the budget pause when the budget ran out, then the arch's handler. */
  protected vmgexitStep(): Promise<void> {
    if (this.tickAsync('vmgexit')) return this.budgetPause().then(() => this.vmgexitArch());
    return this.vmgexitArch();
  }

  protected vmgexitArch(): Promise<void> {
    const f = this.vcpu.vm.ops.vmgexit;
    if (f === undefined)
      this.raise({
        vector: VECTOR.UD,
        errorCode: undefined,
        detail: 'VMGEXIT outside an SEV-ES/SNP guest',
      });
    return f.call(this.vcpu.vm.ops, this);
  }

  tdcall(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    if (typeof leaf !== 'bigint')
      return Promise.reject(new TypeError(`tdcall: leaf must be a bigint, got ${typeof leaf}`));
    if (typeof regs !== 'object' || regs === null)
      return Promise.reject(new TypeError('tdcall: regs must be an object'));
    return this.guarded<TdcallRegs>({}, () => this.tdcallStep(leaf, regs));
  }

  /** One TDCALL attempt: the budget pause when the budget ran out, then the TDX module. */
  protected tdcallStep(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    if (this.tickAsync('tdcall')) return this.budgetPause().then(() => this.tdcallArch(leaf, regs));
    return this.tdcallArch(leaf, regs);
  }

  protected tdcallArch(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    const f = this.vcpu.vm.ops.tdcall;
    if (f === undefined)
      this.raise({ vector: VECTOR.UD, errorCode: undefined, detail: 'TDCALL outside a TD' });
    return f.call(this.vcpu.vm.ops, this, leaf, regs);
  }

  pvalidate(gva: bigint, validate: boolean): number {
    if (typeof validate !== 'boolean')
      throw new TypeError(`pvalidate: validate must be a boolean, got ${typeof validate}`);
    for (;;) {
      this.tick('pvalidate');
      const f = this.vcpu.vm.ops.pvalidate;
      const op = `pvalidate(${hex(gva)})`;
      try {
        if (f === undefined)
          this.raise({
            vector: VECTOR.UD,
            errorCode: undefined,
            detail: 'PVALIDATE outside an SEV-SNP guest',
          });
        this.pvalidating = true;
        let e: TlbEntry | undefined;
        try {
          e = this.entry(gva, false, 'pvalidate');
        } finally {
          this.pvalidating = false;
        }
        if (e === undefined) return 0;
        return f.call(this.vcpu.vm.ops, this, e.gpaPage | (gva & 0xfffn), validate);
      } catch (err) {
        if (err === SKIP) return 0;
        if (err === RETRY) continue;
        void op;
        throw err;
      }
    }
  }

  // ---- ArchCpu physical access --------------------------------------------------------------

  readPhys(gpa: bigint, length: number, tagged: boolean): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const at = gpa + BigInt(done);
      const off = Number(at & 0xfffn);
      const n = Math.min(length - done, 4096 - off);
      const p = this.page(at, false, tagged, false);
      if (p.kind !== 'ram') this.physFail(p, at);
      else if (p.cipher !== undefined) {
        const part = new Uint8Array(n);
        p.cipher.decrypt(p.bytes, p.base, off, part, n);
        out.set(part, done);
      } else out.set(p.bytes.subarray(p.base + off, p.base + off + n), done);
      done += n;
    }
    return out;
  }

  writePhys(gpa: bigint, data: Uint8Array, tagged: boolean): void {
    let done = 0;
    while (done < data.length) {
      const at = gpa + BigInt(done);
      const off = Number(at & 0xfffn);
      const n = Math.min(data.length - done, 4096 - off);
      const p = this.page(at, true, tagged, false);
      if (p.kind !== 'ram') this.physFail(p, at);
      else if (p.cipher !== undefined) p.cipher.encrypt(p.bytes, p.base, off, data.subarray(done, done + n));
      else p.bytes.set(data.subarray(done, done + n), p.base + off);
      done += n;
    }
    this.flush();
  }

  protected physFail(p: PageAccess, gpa: bigint): never {
    if (p.kind === 'fault')
      this.unwind(p.exit, `a physical access at GPA ${hex(gpa)} needed a memory-fault exit`);
    if (p.kind === 'exception') this.raise(p.e);
    return this.crash(`a physical access by the CPU reached GPA ${hex(gpa)}, which no memslot backs`);
  }
}
