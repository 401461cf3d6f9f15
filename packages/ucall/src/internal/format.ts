// The guest's printf: the grammar and output of the selftests' guest_vsnprintf
// (tools/testing/selftests/kvm/lib/guest_sprintf.c), over JavaScript values instead of a va_list.

const ZEROPAD = 1;
const SIGN = 2;
const PLUS = 4;
const SPACE = 8;
const LEFT = 16;
const SMALL = 32;
const SPECIAL = 64;

function describe(v: unknown): string {
  if (typeof v === 'string') return `string ${JSON.stringify(v)}`;
  if (typeof v === 'bigint') return `bigint ${v}n`;
  if (v === null) return 'null';
  if (typeof v === 'object' || typeof v === 'function') return typeof v;
  return `${typeof v} ${String(v)}`;
}

function toInteger(v: unknown, conv: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  if (typeof v === 'boolean') return v ? 1n : 0n;
  throw new TypeError(
    `printf conversion ${conv} needs an integer (bigint or safe-integer number), got ${describe(v)}`,
  );
}

/** Thrown inside formatting when the output would pass its limit; caught at the entry points. */
class Overflow {
  constructor(readonly text: string) {}
}

/** Output with a hard cap: every append checks the room first, so a width of 10^9 costs no more than 10. */
class Out {
  text = '';
  constructor(readonly limit: number) {}
  add(s: string): void {
    if (this.text.length + s.length > this.limit) throw new Overflow(this.text);
    this.text += s;
  }
  /** `count` copies of `ch` (nothing for count <= 0), refused before any work when they do not fit. */
  pad(ch: string, count: number): void {
    if (!(count > 0)) return;
    if (count > this.limit - this.text.length) throw new Overflow(this.text);
    this.text += ch.repeat(count);
  }
}

// number() of guest_sprintf.c, with its `while (size-- > 0)` loops as counted pads (same output, its
// `size--` side effects included: a loop that ran leaves size at -1).
function number(
  out: Out,
  num: bigint,
  base: 8 | 10 | 16,
  sizeIn: number,
  precisionIn: number,
  typeIn: number,
): void {
  let type = typeIn;
  let size = sizeIn;
  let precision = precisionIn;
  if (type & LEFT) type &= ~ZEROPAD;
  const c = type & ZEROPAD ? '0' : ' ';
  let sign = '';
  if (type & SIGN) {
    if (num < 0n) {
      sign = '-';
      num = -num;
      size--;
    } else if (type & PLUS) {
      sign = '+';
      size--;
    } else if (type & SPACE) {
      sign = ' ';
      size--;
    }
  }
  // SPECIAL prints its prefix for every value, 0 included (no `num != 0` test in number()).
  if (type & SPECIAL) {
    if (base === 16) size -= 2;
    else if (base === 8) size--;
  }
  let digits = num.toString(base);
  if (!(type & SMALL)) digits = digits.toUpperCase();
  const i = digits.length;
  if (i > precision) precision = i;
  size -= precision;
  const drain = (ch: string): void => {
    out.pad(ch, size);
    size = -1;
  };
  if (!(type & (ZEROPAD | LEFT))) drain(' ');
  out.add(sign);
  if (type & SPECIAL) {
    if (base === 8) out.add('0');
    else if (base === 16) out.add('0x');
  }
  if (!(type & LEFT)) drain(c);
  out.pad('0', precision - i);
  out.add(digits);
  drain(' ');
}

const isDigit = (ch: string | undefined) => ch !== undefined && ch >= '0' && ch <= '9';

/**
 * Formats like the guest's printf (GUEST_PRINTF / __GUEST_ASSERT), with the selftests' guest_vsnprintf
 * grammar: flags `-+ #0`, width and precision (digits or `*`), qualifiers `h`, `l`, `ll` (`L` is read
 * as no qualifier, as there), conversions `d i u x X o c s p %`. C widths apply: no qualifier = 32-bit
 * (`%d` int, `%u`/`%x` unsigned), `h` = 16-bit, `l`/`ll` = 64-bit; `%p` is `0x` + 14 hex digits;
 * `%#X` prints `0x` then upper-case digits; an unknown conversion prints `%` and its letter. Integers are
 * bigint, safe-integer numbers or booleans; `%s` takes strings (numbers, bigints, booleans via String);
 * `%c` a char code or a one-character string. Throws TypeError for a missing or unusable argument and for
 * `%n`. The output is bounded before it is built: more than `maxLength` characters (default
 * GUEST_PRINTF_MAX_LENGTH) is a RangeError, found in time independent of the widths and precisions asked
 * for. ucallFmt applies the 1024-byte buffer rule (an ABORT, as guest_vsnprintf's `str < end` assert).
 */
export function formatGuestString(
  fmt: string,
  values: readonly unknown[],
  maxLength: number = GUEST_PRINTF_MAX_LENGTH,
): string {
  if (typeof maxLength !== 'number' || !Number.isSafeInteger(maxLength) || maxLength < 0)
    throw new RangeError(
      `formatGuestString: maxLength must be a non-negative safe integer, got ${describe(maxLength)}`,
    );
  const r = formatGuestBounded(fmt, values, maxLength);
  if (r.overflow)
    throw new RangeError(
      `formatGuestString: the output of printf format ${quote(fmt)} passes maxLength ${maxLength} characters`,
    );
  return r.text;
}

/** Most characters formatGuestString returns unless told otherwise (64 KiB: 64 ucall buffers). */
export const GUEST_PRINTF_MAX_LENGTH = 65_536;

/** A format string for messages: quoted, and cut to 200 characters. */
function quote(fmt: string): string {
  return JSON.stringify(fmt.length > 200 ? `${fmt.slice(0, 200)}…` : fmt);
}

/**
 * formatGuestString that stops at `limit` characters: `{ text, overflow: false }` when the whole
 * output fits, else `{ text: the part that fit, overflow: true }`. Argument errors still throw.
 */
export function formatGuestBounded(
  fmt: string,
  values: readonly unknown[],
  limit: number,
): { text: string; overflow: boolean } {
  if (typeof fmt !== 'string') throw new TypeError(`printf format must be a string, got ${describe(fmt)}`);
  if (!Array.isArray(values)) throw new TypeError(`printf values must be an array, got ${describe(values)}`);
  const out = new Out(limit);
  try {
    formatInto(out, fmt, values);
  } catch (e) {
    if (e instanceof Overflow) return { text: e.text, overflow: true };
    throw e;
  }
  return { text: out.text, overflow: false };
}

function formatInto(out: Out, fmt: string, values: readonly unknown[]): void {
  let next = 0;
  const arg = (conv: string): unknown => {
    if (next >= values.length)
      throw new TypeError(
        `printf format ${quote(fmt)} needs an argument for ${conv} (argument ${next + 1}) but only ${values.length} were given`,
      );
    return values[next++];
  };
  const n = fmt.length;
  for (let p = 0; p < n; p++) {
    const ch = fmt[p]!;
    if (ch !== '%') {
      out.add(ch);
      continue;
    }
    let flags = 0;
    for (;;) {
      p++;
      const f = fmt[p];
      if (f === '-') flags |= LEFT;
      else if (f === '+') flags |= PLUS;
      else if (f === ' ') flags |= SPACE;
      else if (f === '#') flags |= SPECIAL;
      else if (f === '0') flags |= ZEROPAD;
      else break;
    }
    let fieldWidth = -1;
    if (isDigit(fmt[p])) {
      fieldWidth = 0;
      while (isDigit(fmt[p])) fieldWidth = fieldWidth * 10 + (fmt.charCodeAt(p++) - 48);
    } else if (fmt[p] === '*') {
      p++;
      fieldWidth = Number(BigInt.asIntN(32, toInteger(arg('*'), '*')));
      if (fieldWidth < 0) {
        fieldWidth = -fieldWidth;
        flags |= LEFT;
      }
    }
    let precision = -1;
    if (fmt[p] === '.') {
      p++;
      if (isDigit(fmt[p])) {
        precision = 0;
        while (isDigit(fmt[p])) precision = precision * 10 + (fmt.charCodeAt(p++) - 48);
      } else if (fmt[p] === '*') {
        p++;
        precision = Number(BigInt.asIntN(32, toInteger(arg('.*'), '.*')));
      }
      if (precision < 0) precision = 0;
    }
    let qualifier = '';
    const q = fmt[p];
    if (q === 'h' || q === 'l' || q === 'L') {
      qualifier = q;
      p++;
    }
    // %ll* is %l* (64-bit builds only), as in guest_vsnprintf.
    if (qualifier === 'l' && fmt[p] === 'l') p++;
    const conv = fmt[p];
    let base: 8 | 10 | 16 = 10;
    switch (conv) {
      case 'c': {
        const v = arg('%c');
        const code =
          typeof v === 'string' && v.length > 0 ? v.charCodeAt(0) & 0xff : Number(toInteger(v, '%c') & 0xffn);
        // `while (--field_width > 0)` twice: the padding is width - 1 spaces, on one side.
        if (!(flags & LEFT)) out.pad(' ', fieldWidth - 1);
        out.add(String.fromCharCode(code));
        if (flags & LEFT) out.pad(' ', fieldWidth - 1);
        continue;
      }
      case 's': {
        const v = arg('%s');
        if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'bigint' && typeof v !== 'boolean')
          throw new TypeError(`printf conversion %s needs a string, got ${describe(v)}`);
        let s = String(v);
        if (precision >= 0 && s.length > precision) s = s.slice(0, precision);
        const len = s.length;
        if (!(flags & LEFT)) out.pad(' ', fieldWidth - len);
        out.add(s);
        if (flags & LEFT) out.pad(' ', fieldWidth - len);
        continue;
      }
      case 'p': {
        if (fieldWidth === -1) {
          fieldWidth = 16;
          flags |= SPECIAL | SMALL | ZEROPAD;
        }
        number(out, BigInt.asUintN(64, toInteger(arg('%p'), '%p')), 16, fieldWidth, precision, flags);
        continue;
      }
      case 'n':
        throw new TypeError(
          `printf conversion %n is not supported (it stores through a pointer) in ${quote(fmt)}`,
        );
      case '%':
        out.add('%');
        continue;
      case 'o':
        base = 8;
        break;
      case 'x':
        flags |= SMALL;
        base = 16;
        break;
      case 'X':
        base = 16;
        break;
      case 'd':
      case 'i':
        flags |= SIGN;
        break;
      case 'u':
        break;
      default:
        out.add('%');
        if (conv !== undefined) out.add(conv);
        else p--;
        continue;
    }
    const raw = toInteger(arg(`%${qualifier}${conv}`), `%${qualifier}${conv}`);
    let num: bigint;
    if (qualifier === 'l') num = flags & SIGN ? BigInt.asIntN(64, raw) : BigInt.asUintN(64, raw);
    else if (qualifier === 'h') num = flags & SIGN ? BigInt.asIntN(16, raw) : BigInt.asUintN(16, raw);
    else num = flags & SIGN ? BigInt.asIntN(32, raw) : BigInt.asUintN(32, raw);
    number(out, num, base, fieldWidth, precision, flags);
  }
}
