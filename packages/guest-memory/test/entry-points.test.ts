// Named cases of bad input at guest-memory's public entry points (the fuzz in fuzz.test.ts finds the class).
import { describe, expect, it } from 'vitest';
import { AddressSpace, GuestImage, loadImage, PhysicalMemory } from '../src/index.js';

function space(): AddressSpace {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size: 0x40_0000n });
  return new AddressSpace({ memory });
}

describe('typed-errors-name-the-value', () => {
  it('Region.contains refuses null instead of answering true', () => {
    const s = space();
    expect(() => s.memory.regions()[0]!.contains(null as never)).toThrow(
      new TypeError('GPA must be a bigint, got null'),
    );
  });
  it('mapRange refuses a number page size instead of mixing bigint and number', () => {
    expect(() => space().mapRange(0x10_0000n, 0x10_0000n, 0x1000n, { pageSize: 4096 as never })).toThrow(
      /flags.pageSize must be 4096n, 2097152n or 1073741824n, got number 4096/,
    );
  });
  it('an address space needs a PhysicalMemory; a read of 2^53 − 1 bytes is refused before any allocation', () => {
    expect(() => new AddressSpace({ memory: undefined as never })).toThrow(
      /options.memory must be a PhysicalMemory, got undefined/,
    );
    expect(() => space().memory.read(0n, 2 ** 53 - 1)).toThrow(expect.objectContaining({ code: 'UNBACKED' }));
  });
  it('an image symbol name must be a string', () => {
    const li = loadImage(space(), new GuestImage('g', [{ name: 'x', size: 8 }]));
    expect(() => li.symbol(1n as never)).toThrow(
      new TypeError('global name must be a string, got bigint 1n'),
    );
  });
});
