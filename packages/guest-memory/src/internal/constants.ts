// Page sizes and the selftests' layout constants.

import type { Gpa, Gva } from './address.js';

/** Base page size in bytes (x86-64 4 KiB page). */
export const PAGE_SIZE = 4096;
/** log2(PAGE_SIZE). */
export const PAGE_SHIFT = 12;
/** 4 KiB page size as a bigint, usable as a PageSize. */
export const PAGE_SIZE_4K = 0x1000n as const;
/** 2 MiB (PDE leaf) page size as a bigint. */
export const PAGE_SIZE_2M = 0x20_0000n as const;
/** 1 GiB (PDPTE leaf) page size as a bigint. */
export const PAGE_SIZE_1G = 0x4000_0000n as const;
/** Lowest GPA of page-table pages in selftests (KVM_GUEST_PAGE_TABLE_MIN_PADDR). */
export const KVM_GUEST_PAGE_TABLE_MIN_PADDR: Gpa = 0x18_0000n;
/** Lowest GVA handed out by the GVA allocator in selftests (KVM_UTIL_MIN_VADDR). */
export const KVM_UTIL_MIN_VADDR: Gva = 0x2000n;
/** Lowest PFN handed out for data pages in selftests (KVM_UTIL_MIN_PFN). */
export const KVM_UTIL_MIN_PFN = 2;
