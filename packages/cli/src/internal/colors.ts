// Colours per the conventions: NO_COLOR (no-color.org: present and not empty → no colour) wins,
// then FORCE_COLOR ('0' or 'false' → none, anything else → colour even into a pipe), else colour
// only on a terminal. The escape codes come from Node's util.styleText.
import { styleText } from 'node:util';

type Env = Readonly<Record<string, string | undefined>>;

/** True when output to a sink with this TTY-ness should be coloured under `env`. */
export function colorEnabled(isTTY: boolean, env: Env = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined) return !(force === '0' || force === 'false');
  return isTTY;
}

/** The styles the reporters use. */
export type Style = 'green' | 'red' | 'yellow' | 'dim' | 'bold';

/** A styling function: `paint('red', text)` colours when enabled, returns `text` otherwise. */
export type Paint = (style: Style, text: string) => string;

/** The painter for a sink. */
export function painter(enabled: boolean): Paint {
  return enabled ? (style, text) => styleText(style, text) : (_style, text) => text;
}
