// @kvmtest/kvm-sim — the embedded simulated KVM: implements the @kvmtest/kvm contract with the Linux
// kernel's rules for VMs, memslots, guest_memfd, memory attributes, vCPUs and KVM_RUN.

export type { ResolvedConfig, SimConfig } from './internal/config.js';
export { resolveConfig, SIM_CONFIG_DEFAULTS } from './internal/config.js';
export type { SimStats } from './internal/kvm.js';
export { createSimKvm, simStats } from './internal/sim.js';
export type { SnpLaunchReport } from './internal/sev/snp-arch-ops.js';
export { snpLaunchReport, snpRmpEntry } from './internal/sev/snp-arch-ops.js';
export type { TdxReport, TdxVcpuReport } from './internal/tdx/report.js';
export { tdxReport, tdxVcpuReport } from './internal/tdx/report.js';
