// Address kinds as compile-time brands. A guest-physical address, a guest-virtual address and a
// byte offset into a memslot's host backing are all plain bigints/numbers at runtime; their types
// carry an optional tag under one shared key, so a literal or an arithmetic result (plain bigint)
// fits any of them, while a value typed as one kind does not fit another (the tags' literal types
// clash: `Type '"gva"' is not assignable to type '"gpa"'`). Nothing here exists at runtime but the
// identity constructors.

/** Type-only key of the address-kind tag; no value exists at runtime. */
declare const addressKind: unique symbol;

/** A guest-physical address (GPA): what memslots, page-table entries and ucall slots hold. */
export type Gpa = bigint & { readonly [addressKind]?: 'gpa' };

/** A guest-virtual address (GVA): what guest code dereferences, translated by the guest's page tables. */
export type Gva = bigint & { readonly [addressKind]?: 'gva' };

/** A byte offset into a memslot's host backing (a host-virtual address relative to the region's start). */
export type HostOffset = number & { readonly [addressKind]?: 'host-offset' };

/** Marks a bigint as a guest-physical address (identity at runtime; no check, no allocation). */
export function gpa(x: bigint): Gpa {
  return x as Gpa;
}

/** Marks a bigint as a guest-virtual address (identity at runtime; no check, no allocation). */
export function gva(x: bigint): Gva {
  return x as Gva;
}

/** Marks a number as a byte offset into a memslot's host backing (identity at runtime). */
export function hostOffset(x: number): HostOffset {
  return x as HostOffset;
}
