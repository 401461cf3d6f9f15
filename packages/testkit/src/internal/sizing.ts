// How big slot 0 is (selftests' vm_nr_pages_required): a base of 512 pages, a 5-page stack per
// vCPU, page-table headroom for everything plus the caller's extra pages, and the ucall pool.

import type { Gva } from '@kvmtest/guest-memory';
import { argTypeError, KVM_LIMITS } from '@kvmtest/kvm';
import { UCALL_DEFAULT_SLOTS, UCALL_MAX_SLOTS, ucallPoolLayout } from '@kvmtest/ucall';
import { shown } from './check.js';
import { TestkitError } from './errors.js';

/** Pages of memory every VM starts with (selftests' 512 base pages, DEFAULT_GUEST_PHY_PAGES). */
export const BASE_GUEST_PAGES = 512;
/** Pages of each vCPU's stack (DEFAULT_STACK_PGS). */
export const DEFAULT_STACK_PAGES = 5;
/** Lowest GVA of vCPU stacks (DEFAULT_GUEST_STACK_VADDR_MIN). */
export const DEFAULT_GUEST_STACK_VADDR_MIN: Gva = 0xab6000n;
/** 8-byte page-table entries per 4 KiB page (PTES_PER_MIN_PAGE). */
export const PTES_PER_PAGE = 512;

const PAGE = 4096;

/** Pages the ucall pool (and one GHCB page per vCPU) needs: ucall_nr_pages_required plus the GHCBs. */
export function ucallPagesRequired(slots: number = UCALL_DEFAULT_SLOTS, nrVcpus = 0): number {
  if (typeof nrVcpus !== 'number' || !Number.isSafeInteger(nrVcpus) || nrVcpus < 0)
    throw argTypeError('ucallPagesRequired', 'nrVcpus', 'a non-negative integer', nrVcpus);
  if (nrVcpus > UCALL_MAX_SLOTS)
    throw new RangeError(
      `ucallPagesRequired: nrVcpus ${nrVcpus} is more than ${UCALL_MAX_SLOTS} (one GHCB page each)`,
    );
  return Math.ceil(ucallPoolLayout(slots).size / PAGE) + nrVcpus;
}

/** Options of vmNrPagesRequired. */
export interface PagesRequiredOptions {
  /** Pages the caller will allocate beyond the defaults (only sizes page-table headroom, as in the selftests). */
  extraPages?: number;
  /** Pages the ucall pool needs; default ucallPagesRequired() (512 slots, no GHCB pages). */
  ucallPages?: number;
}

/**
 * Pages of slot 0 for `nrVcpus` runnable vCPUs (vm_nr_pages_required): 512 + 5 per vCPU, plus
 * (pages + extra) / 512 * 2 page-table pages, plus the ucall pool. Zero vCPUs is refused:
 * a VM that never has vCPUs is made with vmCreateBarebones().
 */
export function vmNrPagesRequired(nrVcpus: number, opts: PagesRequiredOptions = {}): number {
  if (typeof opts !== 'object' || opts === null)
    throw argTypeError('vmNrPagesRequired', 'opts', 'an options object', opts);
  if (!Number.isSafeInteger(nrVcpus) || nrVcpus < 0)
    throw new TestkitError('BAD_ARGUMENT', `vCPU count ${shown(nrVcpus)} must be a non-negative integer`, {
      nrVcpus,
    });
  if (nrVcpus === 0)
    throw new TestkitError(
      'BAD_ARGUMENT',
      'vCPU count 0: use vmCreateBarebones() for VMs that never have vCPUs',
      { nrVcpus },
    );
  if (nrVcpus > KVM_LIMITS.MAX_VCPUS)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `vCPU count ${nrVcpus} exceeds KVM_MAX_VCPUS (${KVM_LIMITS.MAX_VCPUS})`,
      { nrVcpus, max: KVM_LIMITS.MAX_VCPUS },
    );
  const extra = opts.extraPages ?? 0;
  if (!Number.isSafeInteger(extra) || extra < 0)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `extra page count ${shown(extra)} must be a non-negative integer`,
      {
        extra,
      },
    );
  let pages = BASE_GUEST_PAGES + nrVcpus * DEFAULT_STACK_PAGES;
  pages += Math.floor((pages + extra) / PTES_PER_PAGE) * 2;
  const ucallPages = opts.ucallPages ?? ucallPagesRequired(UCALL_DEFAULT_SLOTS);
  if (typeof ucallPages !== 'number' || !Number.isSafeInteger(ucallPages) || ucallPages < 0)
    throw argTypeError('vmNrPagesRequired', 'opts.ucallPages', 'a non-negative integer', ucallPages);
  pages += ucallPages;
  return pages;
}
