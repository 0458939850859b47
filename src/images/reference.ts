import { AirlockError } from '../errors.js';

/**
 * The name of a job's image: `host` (the worker's own /usr, read-only) or a digest-pinned
 * image `NAME@sha256:<64 hex>`. The digest is the SHA-256 of the image's OCI manifest: it
 * names the exact content (config and every layer, by their own digests), so two workers
 * that run `web-base@sha256:ab…` run the same bytes. NAME is a label for people; the digest
 * alone decides what runs. Tags (`debian:12`) are refused: a tag moves, a digest does not.
 */

export const HOST_IMAGE = 'host';

/** Lower case, digits and `._-/` separators, like an OCI repository name; at most 128. */
export const IMAGE_NAME_PATTERN = '^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$';
const IMAGE_NAME = new RegExp(IMAGE_NAME_PATTERN);
const DIGEST = /^sha256:[0-9a-f]{64}$/;
export const MAX_IMAGE_NAME = 128;
/** NAME@sha256:<64 hex>: at most 128 + 1 + 71. */
export const MAX_IMAGE_REF = MAX_IMAGE_NAME + 1 + 71;

export interface PinnedImage {
  readonly kind: 'pinned';
  readonly name: string;
  /** `sha256:<64 hex>`, the manifest's digest. */
  readonly digest: string;
  /** `name@digest`, as written. */
  readonly ref: string;
}

export type ImageRef = { readonly kind: 'host'; readonly ref: 'host' } | PinnedImage;

function invalid(message: string): never {
  throw new AirlockError('INVALID_JOB', message);
}

/** Checks an image name given on its own (for `airlock image import --name`). */
export function checkImageName(name: string): string {
  if (name.length === 0 || name.length > MAX_IMAGE_NAME || !IMAGE_NAME.test(name))
    invalid(
      `image name must be lower-case letters and digits separated by . _ - or /, at most ${MAX_IMAGE_NAME} characters`,
    );
  return name;
}

/** Parses `host` or `NAME@sha256:<64 hex>`; anything else is INVALID_JOB with the reason. */
export function parseImageRef(value: unknown): ImageRef {
  if (value === undefined || value === HOST_IMAGE) return { kind: 'host', ref: HOST_IMAGE };
  if (typeof value !== 'string') invalid('image must be a string');
  if (value.length > MAX_IMAGE_REF) invalid(`image is longer than ${MAX_IMAGE_REF} characters`);
  const at = value.indexOf('@');
  if (at < 0)
    invalid('image must be "host" or pinned by digest as NAME@sha256:<64 hex> (tags are not accepted)');
  const name = value.slice(0, at);
  const digest = value.slice(at + 1);
  checkImageName(name);
  if (!DIGEST.test(digest)) invalid('image digest must be sha256: followed by 64 lower-case hex digits');
  return { kind: 'pinned', name, digest, ref: value };
}

/** The digest's 64 hex digits, as used for directory names in the image cache. */
export function digestHex(digest: string): string {
  if (!DIGEST.test(digest)) invalid('image digest must be sha256: followed by 64 lower-case hex digits');
  return digest.slice('sha256:'.length);
}
