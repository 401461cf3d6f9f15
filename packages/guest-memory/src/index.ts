// @kvmtest/guest-memory — guest physical memory, physical page allocator, x86-64 page tables
// written into guest memory, GVA allocator and guest-image globals. Depends on nothing.

export { type Gpa, type Gva, gpa, gva, type HostOffset, hostOffset } from './internal/address.js';
export {
  KVM_GUEST_PAGE_TABLE_MIN_PADDR,
  KVM_UTIL_MIN_PFN,
  KVM_UTIL_MIN_VADDR,
  PAGE_SHIFT,
  PAGE_SIZE,
  PAGE_SIZE_1G,
  PAGE_SIZE_2M,
  PAGE_SIZE_4K,
} from './internal/constants.js';
export {
  GUEST_MEMORY_ERROR,
  GuestMemoryError,
  type GuestMemoryErrorCode,
  hex,
  toU64,
  U64_MAX,
} from './internal/errors.js';
export {
  PhysicalMemory,
  type PhysReader,
  type PhysWriter,
  Region,
  type RegionFlags,
  type RegionSpec,
} from './internal/physical.js';
export { type AllocOptions, PageAllocator } from './internal/allocator.js';
export {
  type AccessKind,
  type MapFlags,
  PageTables,
  type PageSize,
  type PagingParams,
  PTE,
  type WalkFault,
  type WalkResult,
  walk,
} from './internal/paging.js';
export {
  AddressSpace,
  type AddressSpaceOptions,
  type MapRangeFlags,
  type TagPolicy,
  type VaddrAllocOptions,
  type Visibility,
} from './internal/address-space.js';
export {
  type GlobalSymbol,
  type GuestGlobal,
  GuestImage,
  type LoadImageOptions,
  LoadedImage,
  loadImage,
} from './internal/image.js';
