// The simulated guest CPU, part 4: exits — port I/O, MMIO, hypercalls, HLT and UD2.

import { type Exit, type HypercallExit, type IoSize, KVM_HC, VECTOR } from '@kvmtest/kvm';

import {
  KVM_ENOSYS,
  KVM_EINVAL,
  KVM_EOPNOTSUPP,
  hex,
  le,
  leBytes,
  IO_LIMIT,
  describeValue,
  checkPort,
  checkMmio,
} from './guest-util.js';
import { GuestControl } from './guest-control.js';

export abstract class GuestExits extends GuestControl {
  // ---- exits --------------------------------------------------------------------------------

  protected readonly pio = new Map<number, Uint8Array>();

  /**
   * The data area of a port-I/O exit. Like the kvm_run PIO page it is reused: an exit's `data` is
   * valid until the next run, as the contract's `vcpu.exit` is.
   */
  protected pioData(size: number): Uint8Array {
    let d = this.pio.get(size);
    if (d === undefined) {
      d = new Uint8Array(size);
      this.pio.set(size, d);
    }
    return d;
  }

  exitToHost<E extends Exit>(exit: E): Promise<E> {
    return this.vcpu.exitToHost(exit, (e) => e) as Promise<E>;
  }

  out(port: number, size: IoSize, value: number): Promise<void> {
    // Not async: the common case (budget left, the arch does not trap the OUT) returns the exit's own
    // promise, one promise and one microtask hop fewer per exit. The checks are outLoop's first
    // iteration, in its order; a throw becomes a rejection, as from an async function.
    try {
      checkPort('out', port, size);
      if (typeof value !== 'number' || !Number.isInteger(value))
        throw new TypeError(`out: value must be an integer, got ${describeValue(value)}`);
      // OUT writes AL, AX or EAX: a value that does not fit the access is a caller bug, not a truncation.
      if (value < 0 || value >= IO_LIMIT[size])
        throw new RangeError(
          `out: value ${value} does not fit a ${size}-byte port access (0..0x${(IO_LIMIT[size] - 1).toString(16)})`,
        );
      if (this.tickAsync('out')) return this.outLoop(port, size, value, true);
      const a = this.intercepted({ kind: 'io', port, size, in: false }, 'out', port);
      if (a === 'retry') return this.outLoop(port, size, value, false);
      if (a === 'skip') return Promise.resolve();
      return this.outExit(port, size, value);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** out's general loop; `spent` when the caller's tick of this iteration already ran out of budget. */
  protected async outLoop(port: number, size: IoSize, value: number, spent: boolean): Promise<void> {
    for (;;) {
      if (spent || this.tickAsync('out')) await this.budgetPause();
      spent = false;
      const a = this.intercepted({ kind: 'io', port, size, in: false }, 'out', port);
      if (a === 'retry') continue;
      if (a === 'skip') return;
      await this.outExit(port, size, value);
      return;
    }
  }

  /** The OUT exit: the value's `size` LE bytes in the reused PIO data area; resolves on the next run. */
  protected outExit(port: number, size: IoSize, value: number): Promise<void> {
    const data = this.pioData(size);
    let v = value >>> 0;
    for (let i = 0; i < size; i++, v >>>= 8) data[i] = v & 0xff;
    return this.vcpu.exitToHost({
      reason: 'io',
      direction: 'out',
      port,
      size,
      count: 1,
      data,
    }) as Promise<void>;
  }

  async in(port: number, size: IoSize): Promise<number> {
    checkPort('in', port, size);
    for (;;) {
      if (this.tickAsync('in')) await this.budgetPause();
      const a = this.intercepted({ kind: 'io', port, size, in: true }, 'in', port);
      if (a === 'retry') continue;
      if (a === 'skip') return 0;
      const data = this.pioData(size).fill(0);
      const exit = { reason: 'io', direction: 'in', port, size, count: 1, data } as const;
      return (await this.vcpu.exitToHost(exit, (e) => {
        const d = (e as { data?: unknown }).data;
        return d instanceof Uint8Array ? Number(le(d.subarray(0, size))) : 0;
      })) as number;
    }
  }

  async mmioWrite(gpa: bigint, size: number, value: bigint): Promise<void> {
    checkMmio('mmioWrite', gpa, size);
    if (typeof value !== 'bigint')
      throw new TypeError(`mmioWrite: value must be a bigint, got ${typeof value}`);
    const data = leBytes(BigInt.asUintN(size * 8, value), size);
    await this.mmio('mmioWrite', gpa, size, data);
  }

  async mmioRead(gpa: bigint, size: number): Promise<bigint> {
    checkMmio('mmioRead', gpa, size);
    return le(await this.mmio('mmioRead', gpa, size, undefined));
  }

  /** A guest-physical access that may exit: MMIO when nothing backs it, memory-fault (then retried). */
  protected async mmio(
    op: string,
    gpa: bigint,
    size: number,
    data: Uint8Array | undefined,
  ): Promise<Uint8Array> {
    const write = data !== undefined;
    const operation = `${op}(${hex(gpa)})`;
    for (;;) {
      if (this.tickAsync(op)) await this.budgetPause();
      const a = this.intercepted({ kind: 'mmio', gpa, size, write }, operation);
      if (a === 'retry') continue;
      if (a === 'skip') return new Uint8Array(size);
      const p = this.page(gpa, write, false, false);
      if (p.kind === 'fault') {
        await this.vcpu.exitToHost(p.exit);
        continue;
      }
      if (p.kind === 'exception') {
        if (this.deliver({ ...p.e, operation }) === 'skip') return new Uint8Array(size);
        continue;
      }
      if (p.kind === 'ram' && (gpa & 0xfffn) + BigInt(size) <= 4096n) {
        const off = Number(gpa & 0xfffn);
        const start = p.base + off;
        if (write) {
          if (p.cipher !== undefined) p.cipher.encrypt(p.bytes, p.base, off, data);
          else p.bytes.set(data, start);
          return data;
        }
        const out = new Uint8Array(size);
        if (p.cipher !== undefined) p.cipher.decrypt(p.bytes, p.base, off, out, size);
        else out.set(p.bytes.subarray(start, start + size));
        return out;
      }
      const exit = {
        reason: 'mmio',
        gpa,
        isWrite: write,
        len: size,
        data: write ? data.slice() : new Uint8Array(size),
      } as const;
      return (await this.vcpu.exitToHost(exit, (e) => {
        const d = (e as { data?: unknown }).data;
        const out = new Uint8Array(size);
        if (d instanceof Uint8Array) out.set(d.subarray(0, size));
        return out;
      })) as Uint8Array;
    }
  }

  async hypercall(nr: bigint, args: readonly bigint[] = []): Promise<bigint> {
    if (typeof nr !== 'bigint') throw new TypeError(`hypercall: nr must be a bigint, got ${typeof nr}`);
    if (!Array.isArray(args) || args.length > 4 || args.some((a) => typeof a !== 'bigint'))
      throw new TypeError('hypercall: args must be up to 4 bigints (RBX, RCX, RDX, RSI)');
    return this.guarded(0n, async () => {
      for (;;) {
        if (this.tickAsync('hypercall')) await this.budgetPause();
        const a = this.intercepted({ kind: 'hypercall' }, `hypercall(${nr})`);
        if (a === 'retry') continue;
        if (a === 'skip') return 0n;
        break;
      }
      const r = this.vcpu.regs;
      r.rax = BigInt.asUintN(64, nr);
      [r.rbx, r.rcx, r.rdx, r.rsi] = [0, 1, 2, 3].map((i) => BigInt.asUintN(64, args[i] ?? 0n)) as [
        bigint,
        bigint,
        bigint,
        bigint,
      ];
      const ops = this.vcpu.vm.ops;
      if (ops.hypercall !== undefined) {
        const h = await ops.hypercall(this, r.rax, [r.rbx, r.rcx, r.rdx, r.rsi]);
        if (h.handled) {
          r.rax = BigInt.asUintN(64, h.rax);
          return r.rax;
        }
      }
      r.rax = BigInt.asUintN(64, await this.x86Hypercall(r.rax, r.rbx, r.rcx, r.rdx));
      return r.rax;
    });
  }

  /** x86.c kvm_emulate_hypercall for a 64-bit, CPL0 guest. */
  protected async x86Hypercall(nr: bigint, a0: bigint, a1: bigint, a2: bigint): Promise<bigint> {
    switch (nr) {
      case BigInt(KVM_HC.VAPIC_POLL_IRQ):
      case BigInt(KVM_HC.KICK_CPU):
      case BigInt(KVM_HC.SCHED_YIELD):
        return 0n;
      case BigInt(KVM_HC.SEND_IPI):
        // kvm_pv_send_ipi with no in-kernel APIC map (no irqchip is modelled).
        return -KVM_EOPNOTSUPP;
      case BigInt(KVM_HC.MAP_GPA_RANGE): {
        if (!this.vcpu.vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE)) return -KVM_ENOSYS;
        const gfn = a0 >> 12n;
        if ((a0 & 0xfffn) !== 0n || a1 === 0n || BigInt.asUintN(64, gfn + a1) <= gfn) return -KVM_EINVAL;
        const exit: HypercallExit = { reason: 'hypercall', nr, args: [a0, a1, a2], ret: 0n, longmode: true };
        return (await this.vcpu.exitToHost(exit, (e) => {
          const ret = (e as { ret?: unknown }).ret;
          return typeof ret === 'bigint' ? ret : 0n;
        })) as bigint;
      }
      default:
        return -KVM_ENOSYS;
    }
  }

  async hlt(): Promise<void> {
    for (;;) {
      if (this.tickAsync('hlt')) await this.budgetPause();
      const a = this.intercepted({ kind: 'hlt' }, 'hlt');
      if (a === 'retry') continue;
      if (a === 'skip') return;
      await this.vcpu.exitToHost({ reason: 'hlt' });
      return;
    }
  }

  ud2(): never {
    for (;;) {
      this.tick('ud2');
      const a = this.deliver({
        vector: VECTOR.UD,
        errorCode: undefined,
        operation: 'ud2',
        detail: 'UD2 executed',
      });
      if (a === 'skip') return undefined as never;
    }
  }
}
