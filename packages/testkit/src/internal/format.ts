// printf-style formatting for host-side messages (testAssert, testFail): the conversions the
// selftests use — %d %i %u %x %X %o %c %s %p %% with flags (# 0 - + space), width, precision and
// length modifiers (h hh l ll z j t, accepted and ignored: values are bigint or number already).

import { argTypeError, describeValue } from '@kvmtest/kvm';

/** A value a format string may consume. */
export type FormatValue = bigint | number | string | boolean | null | undefined;

const SPEC = /%([#0\- +]*)(\d+|\*)?(?:\.(\d+|\*))?(hh|h|ll|l|z|j|t|L)?([diuxXocsp%])/g;

function toBig(v: FormatValue, conv: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return BigInt(v);
    throw new TypeError(`format %${conv} needs an integer, got number ${v}`);
  }
  if (typeof v === 'boolean') return v ? 1n : 0n;
  throw new TypeError(`format %${conv} needs an integer, got ${v === null ? 'null' : typeof v}`);
}

function pad(
  body: string,
  sign: string,
  prefix: string,
  flags: string,
  width: number,
  numeric: boolean,
): string {
  const len = sign.length + prefix.length + body.length;
  if (len >= width) return sign + prefix + body;
  if (flags.includes('-')) return sign + prefix + body + ' '.repeat(width - len);
  if (numeric && flags.includes('0')) return sign + prefix + '0'.repeat(width - len) + body;
  return ' '.repeat(width - len) + sign + prefix + body;
}

/**
 * Formats `fmt` with `values` the way the selftests' printf does. Integers may be bigint or number;
 * `%u`/`%x` of a negative value print its 64-bit two's complement. Missing values print as
 * `<missing>`, extra values are appended after a space so nothing is silently lost.
 */
export function formatString(fmt: string, ...values: readonly FormatValue[]): string {
  if (typeof fmt !== 'string') throw argTypeError('formatString', 'fmt', 'a string', fmt);
  let i = 0;
  const next = (): FormatValue | typeof MISSING => (i < values.length ? values[i++] : MISSING);
  const out = fmt.replace(
    SPEC,
    (_m, flags: string, w: string | undefined, p: string | undefined, _len, conv: string) => {
      if (conv === '%') return '%';
      let width = 0;
      if (w === '*') {
        const v = next();
        width = v === MISSING ? 0 : Math.max(0, starValue(v, 'width'));
      } else if (w !== undefined) width = boundedSize(Number(w), 'width', fmt);
      let precision: number | undefined;
      if (p === '*') {
        const v = next();
        const n = v === MISSING ? -1 : starValue(v, 'precision');
        precision = n < 0 ? undefined : n;
      } else if (p !== undefined) precision = boundedSize(Number(p), 'precision', fmt);
      const v = next();
      if (v === MISSING) return '<missing>';
      switch (conv) {
        case 's': {
          let s = typeof v === 'bigint' ? `0x${v.toString(16)}` : text(v);
          if (precision !== undefined) s = s.slice(0, precision);
          return pad(s, '', '', flags, width, false);
        }
        case 'c': {
          const c =
            typeof v === 'string' ? v.slice(0, 1) : String.fromCharCode(Number(toBig(v, conv) & 0xffn));
          return pad(c, '', '', flags, width, false);
        }
        case 'd':
        case 'i': {
          const n = BigInt.asIntN(64, toBig(v, conv));
          const sign = n < 0n ? '-' : flags.includes('+') ? '+' : flags.includes(' ') ? ' ' : '';
          let body = (n < 0n ? -n : n).toString(10);
          if (precision !== undefined) body = body.padStart(precision, '0');
          return pad(body, sign, '', flags, width, precision === undefined);
        }
        default: {
          // u, x, X, o, p: unsigned 64-bit.
          const n = BigInt.asUintN(64, toBig(v, conv));
          const radix = conv === 'o' ? 8 : conv === 'u' ? 10 : 16;
          let body = n.toString(radix);
          if (conv === 'X') body = body.toUpperCase();
          if (precision !== undefined) body = body.padStart(precision, '0');
          let prefix = '';
          if (conv === 'p' || (flags.includes('#') && n !== 0n && (conv === 'x' || conv === 'X')))
            prefix = conv === 'X' ? '0X' : '0x';
          if (flags.includes('#') && conv === 'o' && !body.startsWith('0')) body = `0${body}`;
          return pad(body, '', prefix, flags, width, precision === undefined);
        }
      }
    },
  );
  if (i < values.length)
    return `${out} ${values
      .slice(i)
      .map((v) => text(v))
      .join(' ')}`;
  return out;
}

const MISSING = Symbol('missing');

/** Widest field and longest precision formatString pads to: a message is for people, not megabytes. */
export const FORMAT_MAX_WIDTH = 4096;

function boundedSize(n: number, what: string, fmt: string): number {
  if (n > FORMAT_MAX_WIDTH)
    throw new RangeError(
      `formatString: ${what} ${n} in ${JSON.stringify(fmt.slice(0, 60))} is more than ${FORMAT_MAX_WIDTH}`,
    );
  return n;
}

// A `*` width or precision taken from the values: an integer up to FORMAT_MAX_WIDTH; a negative one
// counts as none (no padding; no precision).
function starValue(v: FormatValue, what: string): number {
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n))
    throw argTypeError('formatString', `* ${what}`, 'an integer', v);
  return boundedSize(n, what, '*');
}

/** String(v) that never throws (an object without toString is described instead). */
function text(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return String(v);
  try {
    return String(v);
  } catch {
    return describeValue(v);
  }
}

/** `0x…` of a bigint or number (negative as its 64-bit two's complement, as `%#lx` would print). */
export function hex64(v: bigint | number): string {
  const n = BigInt.asUintN(64, typeof v === 'bigint' ? v : BigInt(v));
  return `0x${n.toString(16)}`;
}
