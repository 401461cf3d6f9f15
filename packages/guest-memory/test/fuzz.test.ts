// Bad-input fuzz of every public function of guest-memory (see test-support/fuzz-kit.ts):
// only GuestMemoryError or deliberate TypeError/RangeError, no state change after a rejection.
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { junk, K, runFuzz } from '../../../test-support/fuzz-kit.js';
import {
  AddressSpace,
  GuestImage,
  GuestMemoryError,
  type LoadedImage,
  loadImage,
  PageAllocator,
  PageTables,
  PhysicalMemory,
  walk,
} from '../src/index.js';

interface State {
  memory: PhysicalMemory;
  space: AddressSpace;
  image: LoadedImage;
  tables: PageTables;
}

const SIZE = 0x10_0000n;
const gpa = K.u64(fc.oneof(fc.bigInt({ min: 0n, max: SIZE + 0x2000n }), fc.constantFrom(0x1000n, 0x3000n)));
const gva = K.u64(
  fc.oneof(fc.bigInt({ min: 0n, max: 0x40_0000n }), fc.constantFrom(0x2000n, 0x7fff_ffff_f000n)),
);
const pageSize = K.oneOf(undefined, 0x1000n, 0x20_0000n, 0x4000_0000n);
const name = K.string(fc.constantFrom('a', 'b', 'missing', ''));
const slot = K.int(0, 0xffff_ffff);
const visibility = fc.constantFrom(undefined, 'private', 'shared');

/** The value, or the error's message when it throws (a scribbled page table cannot be listed). */
function attempt<T>(f: () => T): T | string {
  try {
    return f();
  } catch (e) {
    return (e as Error).message;
  }
}

function checksum(bytes: Uint8Array): number {
  const w = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
  let h = 0;
  for (let i = 0; i < w.length; i++) h = (Math.imul(h, 31) + w[i]!) | 0;
  return h;
}

it('rejects every bad argument of every public function with a typed error and changes nothing', async () => {
  const fig = await runFuzz<State>({
    package: 'guest-memory',
    runs: 80,
    callsPerRun: 60,
    setup() {
      const memory = new PhysicalMemory();
      memory.addRegion({ slot: 0, gpa: 0n, size: SIZE });
      const space = new AddressSpace({ memory, pageTableMinGpa: 0x8_0000n, protectedByDefault: false });
      const image = loadImage(
        space,
        new GuestImage('fuzz', [
          { name: 'a', size: 8 },
          { name: 'b', size: 16, init: new Uint8Array(16).fill(7) },
        ]),
      );
      const other = new PhysicalMemory();
      other.addRegion({ slot: 0, gpa: 0n, size: 0x10_000n });
      let next = 0x1000n;
      const tables = new PageTables(other, { levels: 4, physBits: 52 }, () => {
        next += 0x1000n;
        if (next >= 0x10_000n) throw new RangeError('fuzz: no more table pages');
        return next;
      });
      return { memory, space, image, tables };
    },
    snapshot(s) {
      return [
        s.memory.regions().map((r) => [r.slot, r.gpa, r.size, checksum(r.backing)]),
        attempt(() => s.space.pageTables.mappings().length),
        attempt(() => s.tables.mappings().length),
        s.space.allocator.protectedRanges(0),
        [...Array(16)].map((_, i) => s.memory.regions()[0]?.isPageFree(i * 16)),
      ];
    },
    isPackageError: (e) => e instanceof GuestMemoryError,
    targets: [
      {
        name: 'new PhysicalMemory().addRegion',
        params: [
          K.any(
            fc.record({
              slot: fc.integer({ min: 0, max: 3 }),
              gpa: fc.constantFrom(0n, SIZE),
              size: fc.constantFrom(0x1000n, 0x3000n),
            }),
          ),
        ],
        call: (_s, [spec]) => new PhysicalMemory().addRegion(spec as never),
      },
      {
        name: 'addRegion',
        params: [
          K.options(
            fc.record({
              slot: fc.integer({ min: 0, max: 3 }),
              gpa: fc.constantFrom(SIZE, SIZE * 2n),
              size: fc.constantFrom(0x1000n, 0x3000n),
              flags: fc.constantFrom(undefined, { readonly: true }),
            }),
          ),
        ],
        call: (s, [spec]) => s.memory.addRegion(spec as never),
      },
      {
        name: 'removeRegion',
        params: [K.any(fc.integer({ min: 1, max: 3 }))],
        call: (s, [n]) => (n === 0 ? undefined : s.memory.removeRegion(n as number)),
      },
      { name: 'getRegion', params: [slot], call: (s, [n]) => s.memory.getRegion(n as number) },
      { name: 'findRegion', params: [gpa], call: (s, [g]) => s.memory.findRegion(g as bigint) },
      {
        name: 'read',
        params: [gpa, K.count(0x3000)],
        call: (s, [g, n]) => s.memory.read(g as bigint, n as number),
      },
      {
        name: 'write',
        params: [gpa, K.bytes()],
        call: (s, [g, d]) => s.memory.write(g as bigint, d as Uint8Array),
      },
      { name: 'readU8', params: [gpa], call: (s, [g]) => s.memory.readU8(g as bigint) },
      { name: 'readU16', params: [gpa], call: (s, [g]) => s.memory.readU16(g as bigint) },
      { name: 'readU32', params: [gpa], call: (s, [g]) => s.memory.readU32(g as bigint) },
      { name: 'readU64', params: [gpa], call: (s, [g]) => s.memory.readU64(g as bigint) },
      {
        name: 'writeU8',
        params: [gpa, K.int(0, 0xff)],
        call: (s, [g, v]) => s.memory.writeU8(g as bigint, v as number),
      },
      {
        name: 'writeU16',
        params: [gpa, K.int(0, 0xffff)],
        call: (s, [g, v]) => s.memory.writeU16(g as bigint, v as number),
      },
      {
        name: 'writeU32',
        params: [gpa, K.int(0, 0xffff_ffff)],
        call: (s, [g, v]) => s.memory.writeU32(g as bigint, v as number),
      },
      {
        name: 'writeU64',
        params: [gpa, K.u64()],
        call: (s, [g, v]) => s.memory.writeU64(g as bigint, v as bigint),
      },
      {
        name: 'Region.contains',
        params: [gpa],
        call: (s, [g]) => s.memory.regions()[0]!.contains(g as bigint),
      },
      {
        name: 'Region.isPageFree',
        params: [K.count(300)],
        call: (s, [i]) => s.memory.regions()[0]!.isPageFree(i as number),
      },
      {
        name: 'Region.isPageProtected',
        params: [K.count(300)],
        call: (s, [i]) => s.memory.regions()[0]!.isPageProtected(i as number),
      },
      {
        name: 'allocator.alloc',
        params: [
          K.options(
            fc.record(
              {
                slot: fc.constantFrom(0, 1),
                pages: fc.integer({ min: 1, max: 4 }),
                minGpa: fc.constantFrom(undefined, 0x2000n),
                protected: fc.boolean(),
              },
              { requiredKeys: ['slot'] },
            ),
          ),
        ],
        call: (s, [o]) => s.space.allocator.alloc(o as never),
      },
      {
        name: 'allocator.free',
        params: [gpa, K.int(1, 4)],
        call: (s, [g, n]) => s.space.allocator.free(g as bigint, n as number),
      },
      {
        name: 'allocator.isProtected',
        params: [gpa],
        call: (s, [g]) => s.space.allocator.isProtected(g as bigint),
      },
      {
        name: 'allocator.protectedRanges',
        params: [slot],
        call: (s, [n]) => s.space.allocator.protectedRanges(n as number),
      },
      {
        name: 'new PageAllocator',
        params: [
          { good: fc.constant(new PhysicalMemory()), bad: (m: unknown) => !(m instanceof PhysicalMemory) },
        ],
        call: (_s, [m]) => new PageAllocator(m as never),
      },
      {
        name: 'vaddrAlloc',
        params: [
          K.u64(fc.bigInt({ min: 1n, max: 0x6000n })),
          K.options(
            fc.record(
              {
                minGva: fc.constantFrom(undefined, 0x10_000n),
                visibility,
                slot: fc.constantFrom(undefined, 0, 1),
                writable: fc.boolean(),
                nx: fc.boolean(),
              },
              { requiredKeys: [] },
            ),
          ),
        ],
        call: (s, [n, o]) => s.space.vaddrAlloc(n as bigint, o as never),
      },
      { name: 'vaddrFree', params: [gva], call: (s, [g]) => s.space.vaddrFree(g as bigint) },
      {
        name: 'mapRange',
        params: [
          gva,
          gpa,
          K.u64(fc.constantFrom(0x1000n, 0x2000n, 0x20_0000n)),
          K.options(
            fc.record(
              {
                pageSize: fc.constantFrom(undefined, 0x1000n, 0x20_0000n),
                visibility,
                writable: fc.boolean(),
                nx: fc.boolean(),
              },
              { requiredKeys: [] },
            ),
          ),
        ],
        call: (s, [a, b, n, o]) => s.space.mapRange(a as bigint, b as bigint, n as bigint, o as never),
      },
      { name: 'gvaToGpa', params: [gva], call: (s, [g]) => s.space.gvaToGpa(g as bigint) },
      { name: 'isPrivate', params: [gpa], call: (s, [g]) => s.space.isPrivate(g as bigint) },
      {
        name: 'new AddressSpace',
        params: [
          K.options(
            fc.record(
              { memory: fc.constant(new PhysicalMemory()), levels: fc.constantFrom(4, 5) },
              { requiredKeys: [] },
            ),
          ),
        ],
        call: (_s, [o]) => new AddressSpace(o as never),
      },
      {
        name: 'PageTables.map',
        params: [
          gva,
          gpa,
          pageSize,
          K.options(fc.record({ writable: fc.boolean(), tagged: fc.constant(false) }, { requiredKeys: [] })),
        ],
        call: (s, [a, b, p, f]) => s.tables.map(a as bigint, b as bigint, p as never, f as never),
      },
      { name: 'PageTables.unmap', params: [gva], call: (s, [a]) => s.tables.unmap(a as bigint) },
      {
        name: 'PageTables.walk',
        params: [
          gva,
          K.options(
            fc.record({ write: fc.boolean(), user: fc.boolean(), fetch: fc.boolean() }, { requiredKeys: [] }),
          ),
        ],
        call: (s, [a, k]) => s.tables.walk(a as bigint, k as never),
      },
      { name: 'PageTables.translate', params: [gva], call: (s, [a]) => s.tables.translate(a as bigint) },
      {
        name: 'walk',
        params: [K.any(junk), gva],
        call: (s, [_m, a]) =>
          walk(s.space.memory, s.space.pageTables.root, a as bigint, s.space.pageTables.params),
      },
      {
        name: 'new PageTables',
        params: [K.options(fc.record({ levels: fc.constantFrom(4, 5), physBits: fc.constantFrom(40, 52) }))],
        call: (_s, [p]) => new PageTables(new PhysicalMemory(), p as never, () => 0x1000n),
      },
      {
        name: 'new GuestImage',
        params: [
          name,
          K.any(
            fc.array(fc.record({ name: fc.constantFrom('x', 'y'), size: fc.integer({ min: 1, max: 16 }) }), {
              maxLength: 2,
            }),
          ),
        ],
        call: (_s, [n, g]) => new GuestImage(n as string, g as never),
      },
      {
        name: 'loadImage',
        params: [
          K.any(fc.constant(undefined)),
          K.any(fc.constant(new GuestImage('z', [{ name: 'z', size: 8 }]))),
        ],
        call: (s, [_x, img]) => loadImage(s.space, img as never),
      },
      { name: 'image.symbol', params: [name], call: (s, [n]) => s.image.symbol(n as string) },
      { name: 'image.globalGva', params: [name], call: (s, [n]) => s.image.globalGva(n as string) },
      { name: 'image.readGlobal', params: [name], call: (s, [n]) => s.image.readGlobal(n as string) },
      {
        name: 'image.writeGlobal',
        params: [name, K.bytes(20)],
        call: (s, [n, b]) => s.image.writeGlobal(n as string, b as Uint8Array),
      },
      { name: 'image.readGlobalU64', params: [name], call: (s, [n]) => s.image.readGlobalU64(n as string) },
      {
        name: 'image.writeGlobalU64',
        params: [name, K.u64()],
        call: (s, [n, v]) => s.image.writeGlobalU64(n as string, v as bigint),
      },
    ],
  });
  expect(fig.examples, `seed ${fig.seed}`).toEqual([]);
  expect(fig.engine + fig.wrongSuccesses + fig.changedAfterRejection).toBe(0);
}, 60_000);
