// The memory-encryption engine: a cheap keyed keystream, tweaked by the host page, XOR'ed over the
// bytes of a private page. Deterministic (no Math.random, no clock). The tweak is the identity of the
// host page (ArrayBuffer id + page index inside it), like the physical-address tweak of the real
// engine, so the same page reads back the same wherever a memslot maps it — and a copy of the
// ciphertext to another page does not decrypt.

/** A 64-bit memory-encryption key as two u32 halves (the VEK of one firmware guest context). */
export interface SevKey {
  readonly lo: number;
  readonly hi: number;
}

const PAGE_SHIFT = 12;
const PAGE_MASK = 0xfff;

const bufferIds = new WeakMap<ArrayBufferLike, number>();
let nextBufferId = 1;

// One-entry caches for the hot path (a guest touching the same buffer and page again and again).
let lastAb: ArrayBufferLike | undefined;
let lastAbId = 0;

/** A small stable number naming a host ArrayBuffer (part of the page tweak and of synthetic uaddrs). */
export function bufferId(ab: ArrayBufferLike): number {
  if (ab === lastAb) return lastAbId;
  let id = bufferIds.get(ab);
  if (id === undefined) {
    id = nextBufferId++;
    bufferIds.set(ab, id);
  }
  lastAb = ab;
  lastAbId = id;
  return id;
}

// A 32-bit avalanche finaliser (the "lowbias32" constants): the SplitMix idea on 32-bit lanes, so the
// keystream needs no BigInt arithmetic on the hot path.
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Derives a key from a 64-bit seed split in two u32 halves (SplitMix-style, deterministic). */
export function deriveKey(seedLo: number, seedHi: number): SevKey {
  const lo = mix32((seedLo ^ Math.imul(seedHi, 0x9e3779b1)) + 0x632be5ab);
  const hi = mix32((seedHi ^ Math.imul(lo, 0x85ebca77)) + 0x4cf5ad43);
  return { lo, hi: hi === lo ? hi ^ 0x5bd1e995 : hi };
}

let seedKey: SevKey | undefined;
let seedBuf = -1;
let seedPage = -1;
let seedValue = 0;

// Per-page seed: key, host buffer, page index.
function pageSeed(key: SevKey, buf: number, page: number): number {
  if (key === seedKey && buf === seedBuf && page === seedPage) return seedValue;
  seedKey = key;
  seedBuf = buf;
  seedPage = page;
  seedValue = mix32(mix32(key.lo ^ Math.imul(buf, 0x9e3779b1)) ^ Math.imul(page + 1, 0x85ebca77) ^ key.hi);
  return seedValue;
}

const pads = new WeakMap<SevKey, Uint32Array>();

let padKey: SevKey | undefined;
let padValue: Uint32Array = new Uint32Array(0);

// The key's pad: 1024 keyed words, one per word of a page (built once per key).
function padOf(key: SevKey): Uint32Array {
  if (key === padKey) return padValue;
  let pad = pads.get(key);
  if (pad === undefined) {
    pad = new Uint32Array(1024);
    for (let w = 0; w < 1024; w++) pad[w] = mix32((key.hi + Math.imul(w + 1, 0xc2b2ae3d)) ^ key.lo);
    pads.set(key, pad);
  }
  padKey = key;
  padValue = pad;
  return pad;
}

// Keystream word `w` (0..1023) of the page whose seed is `seed`: the key's pad word, tweaked per page.
function ksWord(pad: Uint32Array, seed: number, w: number): number {
  return pad[w]! ^ Math.imul(seed, (w << 1) | 1);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * XORs the keystream of `key` over `len` bytes of `mem` from `start` — encryption and decryption are
 * the same operation. Works in place; any alignment, any length, across pages.
 */
export function cryptRange(key: SevKey, mem: Uint8Array, start: number, len: number): void {
  if (len <= 0) return;
  if (start < 0 || start + len > mem.length)
    throw new RangeError(
      `cryptRange: [${start}, ${start + len}) is outside the buffer (length ${mem.length})`,
    );
  const buf = bufferId(mem.buffer);
  const pad = padOf(key);
  const base = mem.byteOffset;
  let abs = base + start;
  const end = abs + len;
  const ab = mem.buffer;
  while (abs < end) {
    const page = abs >>> PAGE_SHIFT;
    const seed = pageSeed(key, buf, page);
    const pageEnd = Math.min(end, (page + 1) << PAGE_SHIFT);
    // Leading unaligned bytes.
    while (abs < pageEnd && (abs & 3) !== 0) {
      xorByte(mem, abs - base, abs, pad, seed);
      abs++;
    }
    const words = (pageEnd - abs) >>> 2;
    if (words > 0 && LITTLE_ENDIAN) {
      const u32 = new Uint32Array(ab as ArrayBuffer, abs, words);
      const w0 = (abs & PAGE_MASK) >>> 2;
      for (let i = 0; i < words; i++) u32[i] = u32[i]! ^ pad[w0 + i]! ^ Math.imul(seed, ((w0 + i) << 1) | 1);
      abs += words << 2;
    }
    while (abs < pageEnd) {
      xorByte(mem, abs - base, abs, pad, seed);
      abs++;
    }
  }
}

function xorByte(mem: Uint8Array, rel: number, abs: number, pad: Uint32Array, seed: number): void {
  const w = ksWord(pad, seed, (abs & PAGE_MASK) >>> 2);
  mem[rel] = mem[rel]! ^ ((w >>> ((abs & 3) << 3)) & 0xff);
}

/** Encrypts `len` bytes in place (an alias of cryptRange, named for the call sites). */
export const encryptInPlace = cryptRange;
/** Decrypts `len` bytes in place (an alias of cryptRange, named for the call sites). */
export const decryptInPlace = cryptRange;

/** Decrypts `len` bytes at `mem[start]` into a new array, leaving the ciphertext in place. */
export function decryptCopy(key: SevKey, mem: Uint8Array, start: number, len: number): Uint8Array {
  if (start < 0 || start + len > mem.length)
    throw new RangeError(
      `decryptCopy: [${start}, ${start + len}) is outside the buffer (length ${mem.length})`,
    );
  const out = new Uint8Array(len);
  out.set(mem.subarray(start, start + len));
  // Re-tweak by the source page: XOR the same keystream the source bytes carry.
  const ks = new Uint8Array(len);
  keystreamInto(key, mem, start, ks);
  for (let i = 0; i < len; i++) out[i] = out[i]! ^ ks[i]!;
  return out;
}

/** Encrypts `plain` into `mem[start..]` with the keystream of that host location. */
export function encryptCopy(key: SevKey, plain: Uint8Array, mem: Uint8Array, start: number): void {
  const len = plain.length;
  if (start < 0 || start + len > mem.length)
    throw new RangeError(
      `encryptCopy: [${start}, ${start + len}) is outside the buffer (length ${mem.length})`,
    );
  const ks = new Uint8Array(len);
  keystreamInto(key, mem, start, ks);
  for (let i = 0; i < len; i++) mem[start + i] = plain[i]! ^ ks[i]!;
}

// The keystream bytes covering mem[start .. start+out.length).
function keystreamInto(key: SevKey, mem: Uint8Array, start: number, out: Uint8Array): void {
  const buf = bufferId(mem.buffer);
  const pad = padOf(key);
  let abs = mem.byteOffset + start;
  let page = -1;
  let seed = 0;
  for (let i = 0; i < out.length; i++, abs++) {
    const p = abs >>> PAGE_SHIFT;
    if (p !== page) {
      page = p;
      seed = pageSeed(key, buf, p);
    }
    out[i] = (ksWord(pad, seed, (abs & PAGE_MASK) >>> 2) >>> ((abs & 3) << 3)) & 0xff;
  }
}

const SCRATCH = new DataView(new ArrayBuffer(8));

/**
 * Guest read of a private u64 (C-bit set): the plaintext of 8 bytes at `mem[start]`, little-endian.
 * The hot path of a guest touching its encrypted memory.
 */
export function privateReadU64(key: SevKey, mem: Uint8Array, start: number): bigint {
  const abs = mem.byteOffset + start;
  if (
    (abs & 3) === 0 &&
    (abs + 7) >>> PAGE_SHIFT === abs >>> PAGE_SHIFT &&
    start >= 0 &&
    start + 8 <= mem.length
  ) {
    const seed = pageSeed(key, bufferId(mem.buffer), abs >>> PAGE_SHIFT);
    const pad = padOf(key);
    const w = (abs & PAGE_MASK) >>> 2;
    const lo =
      (mem[start]! | (mem[start + 1]! << 8) | (mem[start + 2]! << 16) | (mem[start + 3]! << 24)) ^
      ksWord(pad, seed, w);
    const hi =
      (mem[start + 4]! | (mem[start + 5]! << 8) | (mem[start + 6]! << 16) | (mem[start + 7]! << 24)) ^
      ksWord(pad, seed, w + 1);
    SCRATCH.setUint32(0, lo, true);
    SCRATCH.setUint32(4, hi, true);
    return SCRATCH.getBigUint64(0, true);
  }
  const b = decryptCopy(key, mem, start, 8);
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

/** Guest write of a private u64 (C-bit set): stores the ciphertext of `value` at `mem[start]`. */
export function privateWriteU64(key: SevKey, mem: Uint8Array, start: number, value: bigint): void {
  const v = BigInt.asUintN(64, value);
  const abs = mem.byteOffset + start;
  if (
    (abs & 3) === 0 &&
    (abs + 7) >>> PAGE_SHIFT === abs >>> PAGE_SHIFT &&
    start >= 0 &&
    start + 8 <= mem.length
  ) {
    const seed = pageSeed(key, bufferId(mem.buffer), abs >>> PAGE_SHIFT);
    const pad = padOf(key);
    const w = (abs & PAGE_MASK) >>> 2;
    const lo = (Number(v & 0xffff_ffffn) ^ ksWord(pad, seed, w)) >>> 0;
    const hi = (Number(v >> 32n) ^ ksWord(pad, seed, w + 1)) >>> 0;
    mem[start] = lo & 0xff;
    mem[start + 1] = (lo >>> 8) & 0xff;
    mem[start + 2] = (lo >>> 16) & 0xff;
    mem[start + 3] = lo >>> 24;
    mem[start + 4] = hi & 0xff;
    mem[start + 5] = (hi >>> 8) & 0xff;
    mem[start + 6] = (hi >>> 16) & 0xff;
    mem[start + 7] = hi >>> 24;
    return;
  }
  const plain = new Uint8Array(8);
  for (let i = 0; i < 8; i++) plain[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  encryptCopy(key, plain, mem, start);
}

/** Guest read of `len` private bytes (C-bit set): their plaintext. */
export function privateReadBytes(key: SevKey, mem: Uint8Array, start: number, len: number): Uint8Array {
  return decryptCopy(key, mem, start, len);
}

/** Guest write of private bytes (C-bit set): stores their ciphertext. */
export function privateWriteBytes(key: SevKey, mem: Uint8Array, start: number, data: Uint8Array): void {
  encryptCopy(key, data, mem, start);
}

/**
 * Decrypts `len` bytes at `mem[start]` into `out[0..len)` without allocating (the guest CPU's read
 * path for a private page).
 */
export function decryptInto(key: SevKey, mem: Uint8Array, start: number, out: Uint8Array, len: number): void {
  if (start < 0 || start + len > mem.length || len > out.length)
    throw new RangeError(
      `decryptInto: [${start}, ${start + len}) is outside the buffer (length ${mem.length})`,
    );
  xorStream(key, mem, start, mem, start, out, 0, len);
}

/** Encrypts `data[0..len)` into `mem[start..]` without allocating (the guest CPU's write path). */
export function encryptFrom(
  key: SevKey,
  data: Uint8Array,
  mem: Uint8Array,
  start: number,
  len = data.length,
): void {
  if (start < 0 || start + len > mem.length || len > data.length)
    throw new RangeError(
      `encryptFrom: [${start}, ${start + len}) is outside the buffer (length ${mem.length})`,
    );
  xorStream(key, mem, start, data, 0, mem, start, len);
}

// dst[dOff+i] = src[sOff+i] ^ keystream(mem location start+i), for i < len.
function xorStream(
  key: SevKey,
  mem: Uint8Array,
  start: number,
  src: Uint8Array,
  sOff: number,
  dst: Uint8Array,
  dOff: number,
  len: number,
): void {
  const buf = bufferId(mem.buffer);
  const pad = padOf(key);
  let abs = mem.byteOffset + start;
  let page = -1;
  let seed = 0;
  let word = -1;
  let ks = 0;
  for (let i = 0; i < len; i++, abs++) {
    const p = abs >>> PAGE_SHIFT;
    if (p !== page) {
      page = p;
      seed = pageSeed(key, buf, p);
      word = -1;
    }
    const w = (abs & PAGE_MASK) >>> 2;
    if (w !== word) {
      word = w;
      ks = ksWord(pad, seed, w);
    }
    dst[dOff + i] = src[sOff + i]! ^ ((ks >>> ((abs & 3) << 3)) & 0xff);
  }
}
