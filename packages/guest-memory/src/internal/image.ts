// Guest image symbols: the globals a guest program shares with the host, laid out 8-byte aligned
// and packed into pages, loaded per address space (each VM gets its own copy, as with an ELF image
// loaded into each VM by kvm_vm_elf_load).

import type { AddressSpace, Visibility } from './address-space.js';
import { describe, GUEST_MEMORY_ERROR, GuestMemoryError, toU64 } from './errors.js';
import type { Gpa, Gva } from './address.js';

/** A global variable of a guest image: name, size in bytes, optional initial bytes (rest zero). */
export interface GuestGlobal {
  name: string;
  size: number;
  init?: Uint8Array;
}

/** Where a loaded global lives in one address space. */
export interface GlobalSymbol {
  name: string;
  gva: Gva;
  gpa: Gpa;
  size: number;
}

/** Options of loadImage: visibility of the image pages (default: the space's), lowest GVA, memslot (default the code slot). */
export interface LoadImageOptions {
  visibility?: Visibility;
  minGva?: Gva;
  slot?: number;
}

const ALIGN = 8;

/** A guest image's symbol table: validated globals (unique names, size > 0, init fits) and their layout. */
export class GuestImage {
  readonly name: string;
  readonly globals: readonly GuestGlobal[];
  /** Byte offset of each global from the image base (8-byte aligned, in declaration order). */
  readonly offsets: ReadonlyMap<string, number>;
  /** Bytes the globals occupy (before rounding up to pages). */
  readonly size: number;

  constructor(name: string, globals: readonly GuestGlobal[]) {
    if (typeof name !== 'string') throw new TypeError(`image name must be a string, got ${typeof name}`);
    if (!Array.isArray(globals)) throw new TypeError('image globals must be an array');
    const seen = new Map<string, number>();
    const copies: GuestGlobal[] = [];
    let off = 0;
    for (const g of globals) {
      if (typeof g !== 'object' || g === null)
        throw new TypeError(`image ${name}: each global must be an object`);
      if (typeof g.name !== 'string') throw new TypeError(`image ${name}: global name must be a string`);
      if (typeof g.size !== 'number')
        throw new TypeError(`image ${name}: global ${g.name} size must be a number`);
      if (g.init !== undefined && !(g.init instanceof Uint8Array))
        throw new TypeError(`image ${name}: global ${g.name} init must be a Uint8Array`);
      if (g.name === '')
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.BAD_GLOBAL,
          `image ${name}: a global has an empty name`,
          {
            image: name,
          },
        );
      if (seen.has(g.name))
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.BAD_GLOBAL,
          `image ${name}: global ${g.name} is declared twice (names must be unique)`,
          { image: name, global: g.name },
        );
      if (!Number.isSafeInteger(g.size) || g.size <= 0)
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.BAD_GLOBAL,
          `image ${name}: global ${g.name} has size ${g.size}; sizes must be positive integers`,
          { image: name, global: g.name, size: g.size },
        );
      if (g.init !== undefined && g.init.length > g.size)
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.BAD_GLOBAL,
          `image ${name}: global ${g.name} has ${g.init.length} init bytes but size ${g.size} (init must fit)`,
          { image: name, global: g.name, size: g.size, initBytes: g.init.length },
        );
      seen.set(g.name, off);
      copies.push(
        Object.freeze(
          g.init ? { name: g.name, size: g.size, init: g.init.slice() } : { name: g.name, size: g.size },
        ),
      );
      off = Math.ceil((off + g.size) / ALIGN) * ALIGN;
    }
    this.name = name;
    this.globals = Object.freeze(copies);
    this.offsets = seen;
    this.size = off;
  }

  /** The initial bytes of the whole image (init bytes at their offsets, zeros elsewhere). */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    for (const g of this.globals) if (g.init) out.set(g.init, this.offsets.get(g.name)!);
    return out;
  }
}

/** A guest image loaded into one address space: its symbol table and host access to this copy of the globals. */
export class LoadedImage {
  readonly image: GuestImage;
  readonly space: AddressSpace;
  /** GVA of the image base (its first global). */
  readonly base: Gva;
  readonly symbols: ReadonlyMap<string, GlobalSymbol>;

  /** @internal LoadedImages are made by loadImage. */
  constructor(space: AddressSpace, image: GuestImage, base: Gva, symbols: ReadonlyMap<string, GlobalSymbol>) {
    this.space = space;
    this.image = image;
    this.base = base;
    this.symbols = symbols;
  }

  /** The symbol of global `name`; UNKNOWN_GLOBAL naming the known globals. */
  symbol(name: string): GlobalSymbol {
    if (typeof name !== 'string') throw new TypeError(`global name must be a string, got ${describe(name)}`);
    const s = this.symbols.get(name);
    if (s) return s;
    const known = [...this.symbols.keys()];
    throw new GuestMemoryError(
      GUEST_MEMORY_ERROR.UNKNOWN_GLOBAL,
      `image ${this.image.name} has no global ${JSON.stringify(name)} (globals: ${known.length ? known.join(', ') : 'none'})`,
      { image: this.image.name, name, known },
    );
  }

  /** GVA of global `name` in this address space. */
  globalGva(name: string): Gva {
    return this.symbol(name).gva;
  }

  /** Copy of this address space's bytes of global `name` (read through physical memory). */
  readGlobal(name: string): Uint8Array {
    const s = this.symbol(name);
    return this.space.memory.read(s.gpa, s.size);
  }

  /** Writes `bytes` (at most the global's size) at the start of this address space's copy of global `name`. */
  writeGlobal(name: string, bytes: Uint8Array): void {
    const s = this.symbol(name);
    if (!(bytes instanceof Uint8Array)) throw new TypeError('global bytes must be a Uint8Array');
    if (bytes.length > s.size)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.SIZE_MISMATCH,
        `cannot write ${bytes.length} bytes to global ${name} of ${s.size} bytes`,
        { name, size: s.size, bytes: bytes.length },
      );
    this.space.memory.write(s.gpa, bytes);
  }

  /** Reads the first 8 bytes of global `name` as a little-endian u64 (the global must be ≥ 8 bytes). */
  readGlobalU64(name: string): bigint {
    return this.space.memory.readU64(this.u64Symbol(name).gpa);
  }

  /** Writes a little-endian u64 to the first 8 bytes of global `name` (the global must be ≥ 8 bytes). */
  writeGlobalU64(name: string, v: bigint): void {
    if (typeof name !== 'string') this.symbol(name); // the TypeError naming the bad name
    toU64(v, `value for global ${name}`);
    this.space.memory.writeU64(this.u64Symbol(name).gpa, v);
  }

  private u64Symbol(name: string): GlobalSymbol {
    const s = this.symbol(name);
    if (s.size < 8)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.SIZE_MISMATCH,
        `global ${name} has ${s.size} bytes, too small for a u64 (8 bytes)`,
        { name, size: s.size },
      );
    return s;
  }
}

/** Loads `image` into `space`: allocates and maps pages for its globals, copies their init bytes, returns the symbol table. */
export function loadImage(space: AddressSpace, image: GuestImage, opts: LoadImageOptions = {}): LoadedImage {
  if (!(image instanceof GuestImage)) throw new TypeError('loadImage needs a GuestImage');
  const minGva = opts.minGva === undefined ? undefined : toU64(opts.minGva, 'minimum GVA');
  const symbols = new Map<string, GlobalSymbol>();
  if (image.size === 0) return new LoadedImage(space, image, 0n, symbols);
  const base = space.vaddrAlloc(BigInt(image.size), {
    visibility: opts.visibility,
    slot: opts.slot ?? space.slots.code,
    minGva,
  });
  // vaddrAlloc hands out physically contiguous pages, so one write places every global.
  const baseGpa = space.gvaToGpa(base);
  space.memory.write(baseGpa, image.bytes());
  for (const g of image.globals) {
    const off = BigInt(image.offsets.get(g.name)!);
    symbols.set(g.name, Object.freeze({ name: g.name, gva: base + off, gpa: baseGpa + off, size: g.size }));
  }
  return new LoadedImage(space, image, base, symbols);
}
