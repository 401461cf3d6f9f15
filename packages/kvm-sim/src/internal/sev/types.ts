// What the SEV command and event modules (./commands.ts, ./snp-commands.ts, ./enc-context.ts,
// ./es.ts) share without importing one another: the host's SEV support as they use it (SevPlatform,
// ./platform.ts, implements it and calls them) and the command copy a handler works on. Types only.

import type { SevCpuInfo } from '@kvmtest/coco';
import type { AsidPool } from './asid.js';
import type { SevFirmware } from './firmware.js';
import type { SnpFirmware } from './snp-firmware.js';
import type { SnpRmp } from './snp-state.js';
import type { SevHostView } from './views.js';

/** The local copy of `struct kvm_sev_cmd` a handler works on (`error` is copied back, arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl()). */
export interface SevCmdCopy {
  readonly id: number;
  readonly data: unknown;
  readonly sevFd: number;
  error: number;
}

/** The host's SEV support as the command handlers use it (SevPlatform). */
export interface SevPlatformCore {
  /** CPUID 0x8000001F as decoded at hardware setup (C-bit, ASID ranges). */
  readonly info: SevCpuInfo;
  /** `sev_enabled` after hardware setup. */
  readonly sevEnabled: boolean;
  /** `sev_es_enabled` after hardware setup. */
  readonly sevEsEnabled: boolean;
  /** `sev_supported_vmsa_features` (KVM_X86_SEV_VMSA_FEATURES). */
  readonly supportedVmsaFeatures: bigint;
  /** RLIMIT_MEMLOCK in pages for SEV pinning. */
  readonly memlockLimitPages: number;
  readonly asids: AsidPool;
  readonly firmware: SevFirmware;
  /** The SNP half of the firmware. */
  readonly snp: SnpFirmware;
  /** The host's Reverse Map Table. */
  readonly rmp: SnpRmp;
  /** The process's descriptor table. */
  readonly host: SevHostView;
  /** `sev_asid_new` (a recycle runs DF_FLUSH in the firmware). */
  allocateAsid(es: boolean): number | 'ENOTTY' | 'EBUSY';
}
