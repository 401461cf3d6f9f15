// Host memory behind memslots. A fresh multi-megabyte Uint8Array costs about a microsecond per
// 4 KiB page (the allocator zeroes it, faulting every page in), which would dominate creating a
// VM; so the backings of closed VMs are kept in a small free list and zeroed when reused, which
// costs a plain memset of pages already resident. Only the kit hands backings out and takes them
// back, after the VM that used them is closed.

const MAX_PER_SIZE = 4;
const MAX_TOTAL_BYTES = 64 * 2 ** 20;

const free = new Map<number, Uint8Array[]>();
let freeBytes = 0;
/** Backings more than one VM maps (a migration target shares its source's), with the extra holders. */
const extraHolders = new WeakMap<Uint8Array, number>();

/** One more VM maps `buf` (a migration target of the VM that owns it); each holder releases it once. */
export function retainBacking(buf: Uint8Array): void {
  extraHolders.set(buf, (extraHolders.get(buf) ?? 0) + 1);
}

/** A zero-filled buffer of `bytes` bytes, recycled when one of that size is free. */
export function acquireBacking(bytes: number): Uint8Array {
  const list = free.get(bytes);
  const buf = list?.pop();
  if (buf === undefined) return new Uint8Array(bytes);
  freeBytes -= bytes;
  buf.fill(0);
  return buf;
}

/** Gives a backing back once nothing can reach it any more (its VM is closed). */
export function releaseBacking(buf: Uint8Array): void {
  const extra = extraHolders.get(buf);
  if (extra !== undefined) {
    // Another VM still maps it: recycling now would hand its pages to a new VM.
    if (extra <= 1) extraHolders.delete(buf);
    else extraHolders.set(buf, extra - 1);
    return;
  }
  const bytes = buf.byteLength;
  if (buf.byteOffset !== 0 || buf.buffer.byteLength !== bytes) return;
  if (freeBytes + bytes > MAX_TOTAL_BYTES) return;
  let list = free.get(bytes);
  if (list === undefined) {
    list = [];
    free.set(bytes, list);
  }
  if (list.length >= MAX_PER_SIZE) return;
  list.push(buf);
  freeBytes += bytes;
}
