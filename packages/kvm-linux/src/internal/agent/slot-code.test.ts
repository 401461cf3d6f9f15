// The slot send's emitted code, read back with objdump where binutils exist: every address and
// value reaches its instruction whichever encoding its size asks for (the real-vCPU tests in
// agent.test.ts run the short forms).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { haveBinutils } from './assemble.js';
import type { SlotSend } from '@kvmtest/kvm';
import { emitSlotCode, SLOT_CODE_MAX_BYTES, SLOT_CODE_MAX_DATA, SlotCodeBuffer } from './slot-code.js';

function disassemble(code: Uint8Array, at: bigint): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'kvmtest-slot-code-'));
  try {
    const bin = join(dir, 'code.bin');
    writeFileSync(bin, code);
    const text = execFileSync(
      'objdump',
      ['-D', '-b', 'binary', '-mi386:x86-64', '-M', 'intel', `--adjust-vma=0x${at.toString(16)}`, bin],
      { encoding: 'utf8' },
    );
    return text
      .split('\n')
      .filter((l) => /^\s*[0-9a-f]+:\t/.test(l))
      .map((l) => l.split('\t')[2]?.replace(/\s+/g, ' ').trim() ?? '')
      .filter((l) => l !== '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('slot send code', () => {
  const data = new Uint8Array(12);
  data.set([0xef, 0xbe, 0xad, 0xde, 0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0]);
  const at = 0xffff_ff80_0001_2000n;

  it.skipIf(!haveBinutils())(
    'addresses beyond 32 bits through RSI and values beyond imm32 through RAX',
    () => {
      const out = new Uint8Array(4096);
      const c = emitSlotCode(
        {
          poolGlobal: 0xffff_ff80_1234_5678n,
          pool: 0x1_0000_0000n,
          countGlobal: 0x6008n,
          count: 8n,
          bit: 70,
          slot: 0x1_0000_0040n,
          data,
          value: 0x1_8000_0040n,
          selectorGlobal: 0x6010n,
          selector: 0xffff_ffffn,
          port: 0x1000,
        },
        out,
      )!;
      const asm = disassemble(out.subarray(0, c.length), at);
      expect(asm.slice(0, 14)).toEqual([
        'mov QWORD PTR [rbx],r12',
        'movabs rcx,0x100000000',
        'movabs rsi,0xffffff8012345678',
        'cmp QWORD PTR [rsi],rcx',
        expect.stringMatching(/^jne /),
        'cmp QWORD PTR ds:0x6008,0x8',
        expect.stringMatching(/^jne /),
        'movabs rsi,0x100000008',
        'lock bts QWORD PTR [rsi],0x6',
        expect.stringMatching(/^jb /),
        'movabs rdi,0x100000040',
        // 12 bytes: the qword at 0 (beyond imm32), then the last qword, at 4.
        'movabs rax,0x12345678deadbeef',
        'mov QWORD PTR [rdi+0x0],rax',
        'mov QWORD PTR [rdi+0x4],0x12345678',
      ]);
      // The value stays in RAX for its check against 0xffffffff (mailbox +0xb8) and the OUT.
      expect(asm.slice(14, 20)).toEqual([
        'movabs rsi,0x180000040',
        'mov rax,QWORD PTR [rsi]',
        'movabs rcx,0xffffffff',
        'cmp QWORD PTR ds:0x6010,rcx',
        expect.stringMatching(/^jne /),
        'cmp rax,QWORD PTR [rbx+0xb8]',
      ]);
      const out_ = asm.indexOf('out dx,eax');
      expect(asm.slice(out_ - 1, out_ + 5)).toEqual([
        'mov edx,0x1000',
        'out dx,eax',
        'movabs rsi,0x100000008',
        'lock btr QWORD PTR [rsi],0x6',
        'mov edx,0x7ff0',
        'jmp QWORD PTR [rbx]',
      ]);
    },
  );

  it('leaves slots longer than it takes to the copy ladder', () => {
    const base = {
      poolGlobal: 0n,
      pool: 0n,
      countGlobal: 0n,
      count: 1n,
      bit: 0,
      slot: 0n,
      value: 0n,
      selectorGlobal: 0n,
      selector: 0n,
      port: 0x1000,
    };
    expect(
      emitSlotCode({ ...base, data: new Uint8Array(SLOT_CODE_MAX_DATA + 1) }, new Uint8Array(4096)),
    ).toBeUndefined();
    expect(emitSlotCode({ ...base, data: new Uint8Array(0) }, new Uint8Array(4096))).toBeUndefined();
    expect(
      emitSlotCode({ ...base, data: new Uint8Array(SLOT_CODE_MAX_DATA) }, new Uint8Array(4096)),
    ).toBeDefined();
  });

  it('rewrites only the stored values for the next send of the same slot, and emits anew when a value changes form', () => {
    const req = (bytes: number[], over: Partial<SlotSend> = {}): SlotSend => ({
      poolGlobal: 0x6000n,
      pool: 0x7000n,
      countGlobal: 0x6008n,
      count: 8n,
      bit: 1,
      slot: 0x7100n,
      data: Uint8Array.from(bytes),
      value: 0x7148n,
      selectorGlobal: 0x6010n,
      selector: 0n,
      port: 0x1000,
      ...over,
    });
    const fresh = (r: SlotSend) => {
      const out = new Uint8Array(SLOT_CODE_MAX_BYTES);
      const c = emitSlotCode(r, out)!;
      return [...out.subarray(0, c.length)];
    };
    const out = new Uint8Array(SLOT_CODE_MAX_BYTES);
    const buf = new SlotCodeBuffer(out);
    const seq = [
      req(Array.from({ length: 65 }, (_, i) => i)),
      req(Array.from({ length: 65 }, (_, i) => 2 * i)), // same forms: patched
      req(Array.from({ length: 65 }, (_, i) => (i === 7 ? 0x80 : 0))), // qword 0 now needs 64 bits
      req(Array.from({ length: 65 }, (_, i) => (i === 7 ? 0x80 : 1))),
      req(
        Array.from({ length: 65 }, () => 0),
        { bit: 2 },
      ), // another bit: emitted anew
      req([1, 2, 3]),
      req([4, 5, 6]),
      req(Array.from({ length: 64 }, () => 0xff)),
    ];
    for (const r of seq) {
      const c = buf.write(r)!;
      expect([...out.subarray(0, c.length)]).toEqual(fresh(r));
    }
  });
});
