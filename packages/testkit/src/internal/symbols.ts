// The symbol table a backend gets for a loaded guest image.

import type { LoadedImage } from '@kvmtest/guest-memory';

/** The symbol table handed to the backend: global name → GVA in this VM's copy. */
export function symbolMap(image: LoadedImage): Map<string, bigint> {
  return new Map([...image.symbols].map(([name, s]) => [name, s.gva]));
}
