// Kvm.allocateUserMemory for the simulator: zero-filled ArrayBuffers, recycled by size.
//
// A released allocation goes back to a per-size pool, and is handed out again only when no
// memslot of a VM that is still alive maps any part of it (a VM keeps its memslots until it is
// destroyed, so memory a live VM maps is never given to another owner), zero-filled again.

import { KvmError, type UserMemory } from '@kvmtest/kvm';

const PAGE = 4096;
/** Bytes kept in the pool at most; beyond that, released memory is left to the GC. */
const POOL_LIMIT = 64 << 20;

/** Who can say whether a buffer still backs a memslot of a live VM. */
export interface SlotOwner {
  mapsBuffer(buffer: ArrayBufferLike): boolean;
}

/** The per-Kvm pool of released allocations. */
export class UserMemoryPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooledBytes = 0;

  constructor(private readonly owner: SlotOwner) {}

  allocate(size: number): UserMemory {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE !== 0)
      throw new KvmError(
        'EINVAL',
        'allocateUserMemory',
        `size ${size} must be a positive multiple of ${PAGE}`,
        {
          size,
        },
      );
    return this.handle(this.reuse(size) ?? new ArrayBuffer(size));
  }

  private reuse(size: number): ArrayBuffer | undefined {
    const list = this.free.get(size);
    if (!list) return undefined;
    for (let i = 0; i < list.length; i++) {
      const buf = list[i]!;
      if (this.owner.mapsBuffer(buf)) continue;
      list.splice(i, 1);
      this.pooledBytes -= size;
      new Uint8Array(buf).fill(0);
      return buf;
    }
    return undefined;
  }

  private handle(buf: ArrayBuffer): UserMemory {
    let released = false;
    const bytes = new Uint8Array(buf);
    return {
      bytes,
      release: () => {
        if (released) return;
        released = true;
        if (this.pooledBytes + buf.byteLength > POOL_LIMIT) return;
        const list = this.free.get(buf.byteLength);
        if (list) list.push(buf);
        else this.free.set(buf.byteLength, [buf]);
        this.pooledBytes += buf.byteLength;
      },
    };
  }
}
