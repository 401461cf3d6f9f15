// The guest agent's connection to LinuxVcpu: an AgentRunner per vCPU with a guest program, reached
// through kvm-linux's entry hook (hooks.ts), and the AgentVcpuHost adapter over LinuxVcpu (seen
// through its LinuxVcpuCore interface, ../core.ts).

import { type Exit, isKvmError } from '@kvmtest/kvm';
import { setEntryHook } from '../hooks.js';
import type { LinuxRunOptions, LinuxVcpuCore } from '../core.js';
import { runOnce } from '../vcpu.js';
import type { AgentVcpuHost } from './host.js';
import { AgentRunner } from './runner.js';
import { xsaveSupport } from './xprobe.js';

/** The AgentVcpuHost of a LinuxVcpu. */
function hostOf(vcpu: LinuxVcpuCore, opts: { timeoutMs?: number }): AgentVcpuHost {
  return {
    id: vcpu.id,
    vm: vcpu.vm,
    runView: vcpu.runView,
    runOnce(): Exit | undefined {
      try {
        runOnce(vcpu, opts.timeoutMs === undefined ? undefined : { timeoutMs: opts.timeoutMs });
        return undefined;
      } catch (e) {
        // The watchdog ended a run that never exited: the guest's budget of wall time was spent,
        // the run ends with `intr` as the simulator's budget does, and the next run resumes it.
        if (isKvmError(e) && e.code === 'EINTR' && (e.details as { watchdog?: boolean }).watchdog === true)
          return { reason: 'intr', budgetExhausted: true };
        throw e;
      }
    },
    decodeExit(): Exit {
      const e = vcpu.decodeRunExit();
      // IN / MMIO-read data the host fills into `e.data` reach kvm_run before the next KVM_RUN.
      vcpu.setExitForHost(e);
      return e;
    },
    getSregsRaw: () => vcpu.getSregsRaw(),
    setSregsRaw: (s) => vcpu.setSregsRaw(s),
    getRegs: () => vcpu.getRegs(),
    setRegs: (r) => vcpu.setRegs(r),
    hostBytes: (gpa, length) => vcpu.vm.hostBytes(gpa, length),
    guestSymbols: () => vcpu.vm.guestSymbols,
    xsaveSupport: () => xsaveSupport(vcpu.vm.kvm),
    stateWrites: () => vcpu.stateWrites,
    get timeoutMs() {
      return opts.timeoutMs ?? vcpu.vm.runTimeoutMs;
    },
  };
}

/** Per-run options the hook passes on (the watchdog deadline). */
const runOptions = new WeakMap<LinuxVcpuCore, { timeoutMs?: number }>();

/** The agent runner of `vcpu`, made on first use. */
export function agentRunnerOf(vcpu: LinuxVcpuCore): AgentRunner {
  let r = vcpu.agentState;
  if (!(r instanceof AgentRunner)) {
    const opts: { timeoutMs?: number } = {};
    runOptions.set(vcpu, opts);
    r = new AgentRunner(hostOf(vcpu, opts));
    vcpu.agentState = r;
  }
  return r as AgentRunner;
}

/** Makes LinuxVcpu run guest programs through the agent (setEntry / run with a program). */
export function registerGuestAgent(): void {
  setEntryHook({
    setEntry(vcpu, program) {
      agentRunnerOf(vcpu).setEntry(program);
    },
    run(vcpu: LinuxVcpuCore, opts: LinuxRunOptions): Promise<Exit> {
      if (opts.immediateExit) {
        // KVM_RUN with immediate_exit: pending I/O completes, then EINTR; the previous exit stays
        // (arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl_run()). There is no `intr` exit to resolve with.
        try {
          runOnce(vcpu, { immediateExit: true });
        } catch (e) {
          return Promise.reject(e);
        }
        return Promise.reject(
          new Error(
            `vCPU ${vcpu.id}: KVM_RUN with immediate_exit returned without EINTR (not a kernel behaviour)`,
          ),
        );
      }
      const runner = agentRunnerOf(vcpu);
      const o = runOptions.get(vcpu)!;
      if (opts.timeoutMs === undefined) delete o.timeoutMs;
      else o.timeoutMs = opts.timeoutMs;
      return runner.run().then((e) => {
        if (vcpu.exit !== e) vcpu.setExitForHost(e);
        return e;
      });
    },
  });
}
