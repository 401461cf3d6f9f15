// A sparse bitmap: chunks of 4096 bits are allocated on the first set bit, so the bookkeeping of a
// 1 GiB memslot with a handful of used pages costs a few hundred bytes, not 32 KiB.

const CHUNK_SHIFT = 12;
const CHUNK_BITS = 1 << CHUNK_SHIFT;
const CHUNK_WORDS = CHUNK_BITS >>> 5;

/** Bit set over `size` bits; absent chunks read as all-clear. */
export class SparseBitmap {
  readonly size: number;
  private readonly chunks: (Uint32Array | undefined)[];

  constructor(size: number) {
    this.size = size;
    this.chunks = new Array<Uint32Array | undefined>(Math.ceil(size / CHUNK_BITS)).fill(undefined);
  }

  get(i: number): boolean {
    const chunk = this.chunks[i >>> CHUNK_SHIFT];
    return chunk !== undefined && ((chunk[(i >>> 5) & (CHUNK_WORDS - 1)]! >>> (i & 31)) & 1) === 1;
  }

  /** Sets (value true) or clears bits [start, start + n). */
  fill(start: number, n: number, value: boolean): void {
    for (let i = start, end = start + n; i < end; ) {
      const c = i >>> CHUNK_SHIFT;
      let chunk = this.chunks[c];
      const chunkEnd = Math.min(end, (c + 1) << CHUNK_SHIFT);
      if (chunk === undefined) {
        if (!value) {
          i = chunkEnd;
          continue;
        }
        chunk = new Uint32Array(CHUNK_WORDS);
        this.chunks[c] = chunk;
      }
      for (; i < chunkEnd; i++) {
        const w = (i >>> 5) & (CHUNK_WORDS - 1);
        if (value) chunk[w] = chunk[w]! | (1 << (i & 31));
        else chunk[w] = chunk[w]! & ~(1 << (i & 31));
      }
    }
  }

  /** True when every bit in [start, start + n) is set. */
  allSet(start: number, n: number): boolean {
    for (let i = start, end = start + n; i < end; i++) if (!this.get(i)) return false;
    return true;
  }

  /** Lowest index ≥ from starting a run of n clear bits, or -1. */
  findClearRun(from: number, n: number): number {
    const size = this.size;
    let runStart = -1;
    let runLen = 0;
    let i = from;
    while (i < size) {
      const c = i >>> CHUNK_SHIFT;
      const chunk = this.chunks[c];
      if (chunk === undefined) {
        const chunkEnd = Math.min(size, (c + 1) << CHUNK_SHIFT);
        if (runStart < 0) runStart = i;
        runLen += chunkEnd - i;
        i = chunkEnd;
        if (runLen >= n) return runStart;
        continue;
      }
      const w = chunk[(i >>> 5) & (CHUNK_WORDS - 1)]!;
      if ((i & 31) === 0 && w === 0xffff_ffff) {
        runStart = -1;
        runLen = 0;
        i += 32;
        continue;
      }
      if ((i & 31) === 0 && w === 0) {
        const next = Math.min(size, i + 32);
        if (runStart < 0) runStart = i;
        runLen += next - i;
        i = next;
        if (runLen >= n) return runStart;
        continue;
      }
      if (((w >>> (i & 31)) & 1) === 0) {
        if (runStart < 0) runStart = i;
        if (++runLen >= n) return runStart;
      } else {
        runStart = -1;
        runLen = 0;
      }
      i++;
    }
    return -1;
  }

  /** Number of clear bits in [from, size) and the longest run of them. */
  clearStats(from: number): { clear: number; longestRun: number } {
    let clear = 0;
    let run = 0;
    let longestRun = 0;
    for (let i = from; i < this.size; i++) {
      const c = i >>> CHUNK_SHIFT;
      if (this.chunks[c] === undefined && (i & (CHUNK_BITS - 1)) === 0) {
        const n = Math.min(CHUNK_BITS, this.size - i);
        clear += n;
        run += n;
        if (run > longestRun) longestRun = run;
        i += n - 1;
        continue;
      }
      if (this.get(i)) run = 0;
      else {
        clear++;
        if (++run > longestRun) longestRun = run;
      }
    }
    return { clear, longestRun };
  }

  /** Runs [start, start + length) of set bits, in order (skips absent chunks). */
  setRuns(): Array<{ start: number; length: number }> {
    const runs: Array<{ start: number; length: number }> = [];
    let runStart = -1;
    for (let c = 0; c < this.chunks.length; c++) {
      const chunk = this.chunks[c];
      const base = c << CHUNK_SHIFT;
      const chunkEnd = Math.min(this.size, base + CHUNK_BITS);
      if (chunk === undefined) {
        if (runStart >= 0) runs.push({ start: runStart, length: base - runStart });
        runStart = -1;
        continue;
      }
      for (let i = base; i < chunkEnd; i++) {
        const set = ((chunk[(i >>> 5) & (CHUNK_WORDS - 1)]! >>> (i & 31)) & 1) === 1;
        if (set && runStart < 0) runStart = i;
        else if (!set && runStart >= 0) {
          runs.push({ start: runStart, length: i - runStart });
          runStart = -1;
        }
      }
    }
    if (runStart >= 0) runs.push({ start: runStart, length: this.size - runStart });
    return runs;
  }
}
