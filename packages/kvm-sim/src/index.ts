// @kvmtest/kvm-sim — the embedded simulated KVM: implements the @kvmtest/kvm contract with the Linux
// kernel's rules for VMs, memslots, guest_memfd, memory attributes, vCPUs and KVM_RUN.

export type { ResolvedConfig, SimConfig, SimFeatures, SimHostPreset } from './internal/config.js';
export {
  isSimHostPreset,
  resolveConfig,
  SIM_CONFIG_DEFAULTS,
  SIM_HOST_PRESETS,
  simHostPreset,
} from './internal/config.js';
export type { SimHostHints, SimHostMatch } from './internal/host-match.js';
export { simHostMatching } from './internal/host-match.js';
export type { SimStats } from './internal/kvm.js';
export { setSimSeed, simSeed, simYield } from './internal/sched.js';
export { createSimKvm, simStats } from './internal/sim.js';
export type { SnpLaunchReport } from './internal/sev/snp-arch-ops.js';
export { snpLaunchReport, snpRmpEntry } from './internal/sev/snp-arch-ops.js';
export type { TdxReport, TdxVcpuReport } from './internal/tdx/report.js';
export { tdxReport, tdxVcpuReport } from './internal/tdx/report.js';
