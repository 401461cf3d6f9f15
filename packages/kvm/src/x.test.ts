import { expect, test } from 'vitest';
import { placeholder } from './index.js';
class D {
  disposed = false;
  [Symbol.dispose]() {
    this.disposed = true;
  }
}
test('source condition and using', () => {
  const d = new D();
  {
    using x = d;
    expect(x.disposed).toBe(false);
  }
  expect(d.disposed).toBe(true);
  expect(placeholder).toBe(2);
});
