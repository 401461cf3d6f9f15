// How the guest agent plugs into LinuxVcpu: `setEntry(program)` and `run()` of a vCPU that has a
// guest program go through the registered hook; without one, setEntry fails with a clear error at
// run time and run() is a bare KVM_RUN.

import type { Exit, GuestProgram } from '@kvmtest/kvm';
import type { LinuxRunOptions, LinuxVcpuCore } from './core.js';

/** What the guest agent provides. */
export interface EntryHook {
  /** Called by `vcpu.setEntry(program)` after `vcpu.entry` is set (load the agent, set RIP…). */
  setEntry?(vcpu: LinuxVcpuCore, program: GuestProgram): void;
  /** `vcpu.run()` of a vCPU with a guest program: run it until its next exit the host must see. */
  run(vcpu: LinuxVcpuCore, opts: LinuxRunOptions): Promise<Exit>;
}

let hook: EntryHook | undefined;

/** Registers the guest agent (the last registration wins). */
export function setEntryHook(h: EntryHook | undefined): void {
  hook = h;
}

/** The registered guest agent, if any. */
export function entryHook(): EntryHook | undefined {
  return hook;
}
