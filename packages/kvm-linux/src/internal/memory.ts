// Host memory for memslots and kvm_run: mmap'd, viewed zero-copy from JS, unmapped only on GC.
//
// A koffi view of mmap'd memory cannot be detached: after munmap any surviving view would read
// or write unmapped (or reused) addresses and crash the process. So a mapping is unmapped only
// when the ArrayBuffer viewing it has been garbage-collected (a FinalizationRegistry), i.e. when
// no JS code can touch it any more. `release()` and VM close drop our references; the memory goes
// back to the kernel at the next GC. A memslot keeps its backing reachable (the VM holds the
// Uint8Array) for as long as the slot exists, so memory a VM maps is never unmapped under it.

import { type UserMemory, KvmError } from '@kvmtest/kvm';
import {
  addressOf,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  sysMmap,
  sysMunmap,
  viewOf,
} from './sys.js';

/** One mapping this package made. */
interface Mapping {
  addr: bigint;
  len: number;
}

/** Mappings by the ArrayBuffer that views them. */
const mappings = new WeakMap<ArrayBuffer, Mapping>();
/** Counts for tests and diagnostics; `recent` holds the last 256 ranges mapped ([start, end)). */
export const mappingStats = { mapped: 0, unmapped: 0, recent: [] as [bigint, bigint][] };

const unmapper = new FinalizationRegistry<Mapping>((m) => {
  try {
    sysMunmap(m.addr, m.len);
    mappingStats.unmapped++;
  } catch {
    // Nothing to do in a finalizer; the mapping leaks (it cannot be touched by JS any more).
  }
});

/** Makes `addr`/`len` (already mapped) into an ArrayBuffer that unmaps the range once collected. */
export function adoptMapping(addr: bigint, len: number): ArrayBuffer {
  const ab = viewOf(addr, len);
  const m = { addr, len };
  mappings.set(ab, m);
  unmapper.register(ab, m);
  mappingStats.mapped++;
  mappingStats.recent.push([addr, addr + BigInt(len)]);
  if (mappingStats.recent.length > 256) mappingStats.recent.shift();
  return ab;
}

/**
 * Replaces a file mapping (kvm_run) with anonymous memory at the same address, so the file (and
 * with it the vCPU and VM) is released now while old views stay valid until they are collected.
 */
export function detachFileMapping(ab: ArrayBuffer): void {
  const m = mappings.get(ab);
  if (!m) return;
  sysMmap(
    m.len,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
    -1,
    0,
    m.addr,
    'mmap(MAP_FIXED)',
  );
}

/** KVM's memslot backing: anonymous, private, page-aligned, zero-filled. */
export function allocateUserMemory(size: number): UserMemory {
  if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0)
    throw new KvmError(
      'EINVAL',
      'allocateUserMemory',
      `size ${size} must be a positive multiple of ${PAGE_SIZE}`,
      {
        size,
      },
    );
  const addr = sysMmap(
    size,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
    -1,
    0,
    0n,
    'mmap',
  );
  const bytes = new Uint8Array(adoptMapping(addr, size));
  let released = false;
  return {
    bytes,
    release() {
      // Idempotent; the mapping itself goes at GC (see the top of this file).
      released ||= true;
    },
    get released() {
      return released;
    },
  } as UserMemory;
}

/**
 * The host address of `view`, which must lie in memory this package mapped (userspace_addr of a
 * memslot); EFAULT otherwise — the kernel could not use a JS heap address either.
 */
export function hostAddressOf(view: Uint8Array, op: string): bigint {
  const m = mappings.get(view.buffer as ArrayBuffer);
  if (!m)
    throw new KvmError(
      'EFAULT',
      op,
      'userspace must be a view of memory from kvm.allocateUserMemory() (other Uint8Arrays are not mmap-backed)',
    );
  return addressOf(view);
}

/** The mapping behind `view`, if this package made it. */
export function mappingOf(view: Uint8Array): Mapping | undefined {
  return mappings.get(view.buffer as ArrayBuffer);
}

/** Unmaps right away (only for memory no view can reach: callers that made the mapping and never exposed it). */
export function unmapNow(addr: bigint, len: number): void {
  sysMunmap(addr, len);
}
