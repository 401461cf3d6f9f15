// ucallMovePool: the destination of an intra-host migration takes over the source's pool.
import { describe, expect, it } from 'vitest';
import { UcallError, ucallInit, ucallMovePool, ucallPoolOf } from '../src/index.js';
import { createFakeVm } from './support/fake-kvm.js';

describe('ucallMovePool', () => {
  it('re-homes the pool on the destination VM; the source has none afterwards', () => {
    const src = createFakeVm({ type: 'sev' });
    const dst = createFakeVm({ type: 'sev' });
    const pool = ucallInit(src.target);
    expect(ucallMovePool(src.target.vm, dst.target.vm)).toBe(pool);
    expect(ucallPoolOf(dst.target.vm)).toBe(pool);
    expect(pool.vm).toBe(dst.target.vm);
    expect(ucallPoolOf(src.target.vm)).toBeUndefined();
    let e: unknown;
    try {
      ucallMovePool(src.target.vm, dst.target.vm);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(UcallError);
    expect((e as UcallError).code).toBe('NO_POOL');
  });
  it('refuses a destination that already has a pool', () => {
    const a = createFakeVm({ type: 'default' });
    const b = createFakeVm({ type: 'default' });
    ucallInit(a.target);
    ucallInit(b.target);
    expect(() => ucallMovePool(a.target.vm, b.target.vm)).toThrow(/already has/);
  });
});
