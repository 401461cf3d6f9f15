// The package's one error class: a code from a table and the values that broke the rule.

/** Error codes of @kvmtest/coco, each with the rule it stands for. */
export const COCO_ERROR_CODE = {
  /** A field does not fit its bit-field or allowed range. */
  FIELD_RANGE: 'FIELD_RANGE',
  /** A value has a bit set that the layout reserves (must be zero). */
  RESERVED_BITS: 'RESERVED_BITS',
  /** A must-be-one bit is clear, or a combination of bits is not allowed. */
  INVALID_COMBINATION: 'INVALID_COMBINATION',
  /** A code (GHCB MSR request, exit code, field name, page type) is not one this package knows. */
  UNKNOWN_CODE: 'UNKNOWN_CODE',
  /** A byte buffer has the wrong length. */
  BAD_LENGTH: 'BAD_LENGTH',
  /** An address is not aligned as the rule requires. */
  UNALIGNED: 'UNALIGNED',
} as const;

/** One of the codes of {@link COCO_ERROR_CODE}. */
export type CocoErrorCode = keyof typeof COCO_ERROR_CODE;

/** Error thrown by @kvmtest/coco codecs: `code` says which rule, `details` holds the values. */
export class CocoError extends Error {
  override readonly name = 'CocoError';
  readonly code: CocoErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: CocoErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.details = Object.freeze({ ...details });
  }
}
