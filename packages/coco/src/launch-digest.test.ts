import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  SevLaunchDigest,
  SNP_PAGE_TYPE,
  SNP_VMSA_GPA,
  SnpLaunchDigest,
  sevLaunchMeasureBlob,
  sevLaunchMeasurement,
  TdxMrtd,
} from './index.js';

const page = (fill: number) => new Uint8Array(4096).fill(fill);
const le64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};
const le32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};

describe('SevLaunchDigest (kvmtest-defined chain)', () => {
  it('starts at 32 zero bytes and chains SHA-256 over type, key, length and bytes', () => {
    expect(new SevLaunchDigest().digest()).toEqual(new Uint8Array(32));
    const data = new Uint8Array([1, 2, 3]);
    const d = new SevLaunchDigest().updateData(0x1000n, data).updateVmsa(0, page(7));
    const ld1 = createHash('sha256')
      .update(Buffer.concat([Buffer.alloc(32), Buffer.from([1]), le64(0x1000n), le32(3), data]))
      .digest();
    const ld2 = createHash('sha256')
      .update(Buffer.concat([ld1, Buffer.from([2]), le64(0n), le32(4096), page(7)]))
      .digest();
    expect(Buffer.from(d.digest())).toEqual(ld2);
  });

  it('depends on order, GPA and contents', () => {
    const a = new SevLaunchDigest().updateData(0n, page(1)).updateData(0x1000n, page(2)).digest();
    const b = new SevLaunchDigest().updateData(0x1000n, page(2)).updateData(0n, page(1)).digest();
    const c = new SevLaunchDigest().updateData(0n, page(1)).updateData(0x2000n, page(2)).digest();
    expect(a).not.toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('is deterministic for any sequence of updates', () => {
    const op = fc.record({
      gpa: fc.bigInt({ min: 0n, max: (1n << 52n) - 1n }),
      bytes: fc.uint8Array({ maxLength: 64 }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 5 }), (ops) => {
        const run = () => ops.reduce((d, o) => d.updateData(o.gpa, o.bytes), new SevLaunchDigest()).digest();
        expect(run()).toEqual(run());
      }),
      { numRuns: 50 },
    );
  });
});

describe('sevLaunchMeasurement', () => {
  it('is HMAC-SHA256(TIK, 0x04 ‖ major ‖ minor ‖ build ‖ policy LE ‖ LD ‖ MNONCE)', () => {
    const ld = new Uint8Array(32).fill(0xaa);
    const mnonce = new Uint8Array(16).fill(0x55);
    const tik = new Uint8Array(16).fill(0x11);
    const ctx = { apiMajor: 1, apiMinor: 55, build: 21, policy: 0x5 };
    const expected = createHmac('sha256', tik)
      .update(Buffer.concat([Buffer.from([4, 1, 55, 21]), le32(5), ld, mnonce]))
      .digest();
    expect(Buffer.from(sevLaunchMeasurement(ld, mnonce, tik, ctx))).toEqual(expected);
    const blob = sevLaunchMeasureBlob(ld, mnonce, tik, ctx);
    expect(blob.length).toBe(48);
    expect(Buffer.from(blob.subarray(32))).toEqual(Buffer.from(mnonce));
  });

  it('rejects inputs of the wrong length', () => {
    const ctx = { apiMajor: 0, apiMinor: 0, build: 0, policy: 0 };
    expect(() =>
      sevLaunchMeasurement(new Uint8Array(31), new Uint8Array(16), new Uint8Array(16), ctx),
    ).toThrow(/launch digest is 32 bytes, got 31/);
    expect(() =>
      sevLaunchMeasurement(new Uint8Array(32), new Uint8Array(16), new Uint8Array(32), ctx),
    ).toThrow(/TIK/);
  });
});

describe('SnpLaunchDigest', () => {
  it('hashes the 0x70-byte PAGE_INFO of each page', () => {
    const contents = page(0x42);
    const d = new SnpLaunchDigest().updatePage(0x10000n, SNP_PAGE_TYPE.NORMAL, contents);
    const info = Buffer.concat([
      Buffer.alloc(48),
      createHash('sha384').update(contents).digest(),
      Buffer.from([0x70, 0x00, 1, 0, 0, 0, 0, 0]),
      le64(0x10000n),
    ]);
    expect(info.length).toBe(0x70);
    expect(Buffer.from(d.digest())).toEqual(createHash('sha384').update(info).digest());
  });

  it('uses zero contents for ZERO, UNMEASURED, SECRETS and CPUID pages, ignoring bytes', () => {
    for (const t of [
      SNP_PAGE_TYPE.ZERO,
      SNP_PAGE_TYPE.UNMEASURED,
      SNP_PAGE_TYPE.SECRETS,
      SNP_PAGE_TYPE.CPUID,
    ]) {
      const a = new SnpLaunchDigest().updatePage(0x2000n, t).digest();
      const b = new SnpLaunchDigest().updatePage(0x2000n, t, page(9)).digest();
      expect(a).toEqual(b);
      const info = Buffer.concat([Buffer.alloc(96), Buffer.from([0x70, 0, t, 0, 0, 0, 0, 0]), le64(0x2000n)]);
      expect(Buffer.from(a)).toEqual(createHash('sha384').update(info).digest());
    }
  });

  it('chains: the second PAGE_INFO starts with the first digest', () => {
    const first = new SnpLaunchDigest().updatePage(0n, SNP_PAGE_TYPE.ZERO).digest();
    const both = new SnpLaunchDigest()
      .updatePage(0n, SNP_PAGE_TYPE.ZERO)
      .updatePage(SNP_VMSA_GPA, SNP_PAGE_TYPE.VMSA, page(3))
      .digest();
    const info = Buffer.concat([
      Buffer.from(first),
      createHash('sha384').update(page(3)).digest(),
      Buffer.from([0x70, 0, 2, 0, 0, 0, 0, 0]),
      le64(0xffff_ffff_f000n),
    ]);
    expect(Buffer.from(both)).toEqual(createHash('sha384').update(info).digest());
  });

  it('rejects unaligned GPAs, unknown types and missing contents', () => {
    expect(() => new SnpLaunchDigest().updatePage(0x10n, SNP_PAGE_TYPE.ZERO)).toThrow(
      /0x10 is not 4 KiB aligned/,
    );
    expect(() => new SnpLaunchDigest().updatePage(0n, 7 as never)).toThrow(/page type 7/);
    expect(() => new SnpLaunchDigest().updatePage(0n, SNP_PAGE_TYPE.NORMAL)).toThrow(
      /4096 bytes are required/,
    );
    expect(() => new SnpLaunchDigest().updatePage(0n, SNP_PAGE_TYPE.NORMAL, new Uint8Array(10))).toThrow(
      /is 4096 bytes, got 10/,
    );
  });
});

describe('TdxMrtd', () => {
  const block = (tag: string, gpa: bigint) => {
    const b = Buffer.alloc(128);
    b.write(tag, 0, 'ascii');
    b.writeBigUInt64LE(gpa, 16);
    return b;
  };

  it('is one SHA-384 over MEM.PAGE.ADD and MR.EXTEND blocks and the measured chunks', () => {
    const bytes = new Uint8Array(4096).map((_, i) => i & 0xff);
    const m = new TdxMrtd().addPage(0x80_0000n).extendPage(0x80_0000n, bytes);
    const h = createHash('sha384').update(block('MEM.PAGE.ADD', 0x80_0000n));
    for (let off = 0; off < 4096; off += 256) {
      h.update(block('MR.EXTEND', 0x80_0000n + BigInt(off))).update(bytes.subarray(off, off + 256));
    }
    expect(Buffer.from(m.digest())).toEqual(h.digest());
  });

  it('lets digest() be read mid-way without disturbing later updates', () => {
    const m = new TdxMrtd().addPage(0n);
    const early = m.digest();
    m.addPage(0x1000n);
    expect(m.digest()).not.toEqual(early);
    expect(m.digest()).toEqual(new TdxMrtd().addPage(0n).addPage(0x1000n).digest());
    expect(new TdxMrtd().digest()).toEqual(new Uint8Array(createHash('sha384').digest()));
  });

  it('rejects unaligned addresses and wrong chunk sizes', () => {
    expect(() => new TdxMrtd().addPage(0x800n)).toThrow(/not 4 KiB aligned/);
    expect(() => new TdxMrtd().extendChunk(0x80n, new Uint8Array(256))).toThrow(/not 256-byte aligned/);
    expect(() => new TdxMrtd().extendChunk(0x100n, new Uint8Array(128))).toThrow(/is 256 bytes, got 128/);
  });
});
