import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  cryptRange,
  decryptCopy,
  deriveKey,
  encryptCopy,
  privateReadBytes,
  privateReadU64,
  privateWriteBytes,
  privateWriteU64,
} from './crypto.js';

const K1 = deriveKey(1, 2);
const K2 = deriveKey(2, 2);

describe('memory-encryption engine', () => {
  it('encryption: is deterministic and keyed: the same key and page give the same ciphertext, another key another (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    const a = new Uint8Array(4096);
    cryptRange(K1, a, 0, 4096);
    const first = a.slice();
    a.fill(0);
    cryptRange(K1, a, 0, 4096);
    expect(a).toEqual(first);
    a.fill(0);
    cryptRange(K2, a, 0, 4096);
    expect(a).not.toEqual(first);
    const b = new Uint8Array(4096);
    cryptRange(K1, b, 0, 4096);
    expect(b).not.toEqual(first); // another host page: another tweak
  });

  it('encryption: is tweaked by the host page: identical plaintext on two pages encrypts differently (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    const m = new Uint8Array(8192);
    cryptRange(K1, m, 0, 8192);
    expect(m.subarray(0, 4096)).not.toEqual(m.subarray(4096));
  });

  it('encryption: a ciphertext copied to another page does not decrypt there (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    const m = new Uint8Array(8192);
    m.fill(0x42, 0, 64);
    cryptRange(K1, m, 0, 64);
    m.copyWithin(4096, 0, 64);
    expect(decryptCopy(K1, m, 4096, 64)).not.toEqual(new Uint8Array(64).fill(0x42));
    expect(decryptCopy(K1, m, 0, 64)).toEqual(new Uint8Array(64).fill(0x42));
  });

  it('encryption: a host write into an encrypted page scrambles what the guest reads (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    const m = new Uint8Array(4096);
    privateWriteU64(K1, m, 16, 42n);
    expect(privateReadU64(K1, m, 16)).toBe(42n);
    m[16] = m[16]! ^ 1;
    expect(privateReadU64(K1, m, 16)).not.toBe(42n);
  });

  it('encryption: the same host page seen through a subarray (another Uint8Array over the buffer) decrypts the same (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    const m = new Uint8Array(16384);
    privateWriteU64(K1, m, 8200, 0xdeadbeefn);
    const view = new Uint8Array(m.buffer, 8192, 4096);
    expect(privateReadU64(K1, view, 8)).toBe(0xdeadbeefn);
  });

  it('encryption, property: every entry point round-trips at any offset, length and alignment (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.integer({ min: 0, max: 9000 }),
        fc.integer({ min: 0, max: 3 }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        (data, off, viewOff, v) => {
          const buf = new Uint8Array(viewOff + 12288).subarray(viewOff);
          const start = off % (buf.length - data.length);
          encryptCopy(K1, data, buf, start);
          expect(decryptCopy(K1, buf, start, data.length)).toEqual(data);
          expect(privateReadBytes(K1, buf, start, data.length)).toEqual(data);
          privateWriteBytes(K2, buf, start, data);
          cryptRange(K2, buf, start, data.length);
          expect(buf.subarray(start, start + data.length)).toEqual(data);
          const u = Math.min(start, buf.length - 8);
          privateWriteU64(K2, buf, u, v);
          expect(privateReadU64(K2, buf, u)).toBe(v);
          const bytes = decryptCopy(K2, buf, u, 8);
          expect(new DataView(bytes.buffer).getBigUint64(0, true)).toBe(v);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('encryption: rejects ranges outside the buffer with RangeError (the firmware encryption arch/x86/kvm/svm/sev.c: sev_launch_update_data() requests)', () => {
    expect(() => cryptRange(K1, new Uint8Array(8), 4, 8)).toThrow(RangeError);
    expect(() => decryptCopy(K1, new Uint8Array(8), 4, 8)).toThrow(RangeError);
  });
});
