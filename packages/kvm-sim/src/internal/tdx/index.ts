// The TDX model of the simulated kernel (arch/x86/kvm/vmx/main.c: vt_x86_ops): the ops table the arch dispatcher installs for
// `tdx` VMs, and the simulator-only introspection helpers.

export { type TdxGetCpuidData, tdCpuid } from './commands.js';
export { tdxArchOps } from './ops.js';
export {
  type TdxReport,
  type TdxVcpuReport,
  tdxReport,
  tdxSetEventPending,
  tdxVcpuReport,
} from './report.js';
