/**
 * Sizes ("256M", "1G", "512MiB", "1048576") and durations ("90", "30s", "2m", "1h",
 * "500ms") as people write them on a command line or in an environment variable.
 * Sizes are binary (1K = 1024 bytes). Anything else is refused with the accepted forms.
 */

const SIZE = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/i;
const SIZE_FACTORS: Record<string, number> = { b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Bytes, or null when `text` is not a size. Fractions are allowed ("1.5G") and rounded down to a byte. */
export function parseSize(text: string): number | null {
  const match = SIZE.exec(text.trim());
  if (match === null || match[1] === undefined) return null;
  const unit = (match[2] ?? 'b').toLowerCase()[0] ?? 'b';
  const factor = SIZE_FACTORS[unit];
  if (factor === undefined) return null;
  const value = Math.floor(Number(match[1]) * factor);
  return Number.isSafeInteger(value) ? value : null;
}

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i;
const DURATION_FACTORS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds, or null when `text` is not a duration. A bare number is seconds. */
export function parseDuration(text: string): number | null {
  const match = DURATION.exec(text.trim());
  if (match === null || match[1] === undefined) return null;
  const factor = DURATION_FACTORS[(match[2] ?? 's').toLowerCase()];
  if (factor === undefined) return null;
  const value = Math.round(Number(match[1]) * factor);
  return Number.isSafeInteger(value) ? value : null;
}

export const SIZE_FORMS = 'a number of bytes or a size such as 512K, 256M, 1G, 1.5GiB';
export const DURATION_FORMS = 'seconds (90) or a duration such as 500ms, 30s, 2m, 1h';
