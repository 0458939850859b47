import { AirlockError } from '../errors.js';
import {
  type Descriptor,
  type LayoutSource,
  parseDescriptor,
  parseJsonObject,
  readSmallBlob,
  readSmallFile,
} from './layout.js';

/**
 * From a layout's index.json to the one image it holds: its manifest, config and layers,
 * each descriptor checked, each JSON document bounded and verified against its digest.
 *
 * Which manifest: the index (and at most one nested index, as buildx and skopeo write) may
 * list several; the candidates are the image manifests for linux on this host's CPU
 * architecture (or without a platform). Exactly one must remain, or the operator names
 * one with --manifest DIGEST. Airlock never guesses between two images.
 */

export interface ImageLimits {
  /** Largest index, manifest or config JSON. */
  readonly maxJsonBytes: number;
  readonly maxLayers: number;
  /** Total bytes of the layers, decompressed (what the unpacked tree can take, roughly). */
  readonly maxUnpackedBytes: number;
  /** Entries of all layers together. */
  readonly maxEntries: number;
  /** Longest name of a layer entry or link target. */
  readonly maxPathBytes: number;
}

const MiB = 1024 * 1024;
export const DEFAULT_IMAGE_LIMITS: ImageLimits = Object.freeze({
  maxJsonBytes: 4 * MiB,
  maxLayers: 128,
  maxUnpackedBytes: 8 * 1024 * MiB,
  maxEntries: 500_000,
  maxPathBytes: 4096,
});

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export type LayerCompression = 'gzip' | 'none';

/** Layer media types accepted, and how each is compressed. */
export const LAYER_MEDIA_TYPES: Readonly<Record<string, LayerCompression>> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

const INDEX_TYPES: readonly string[] = [MEDIA.ociIndex, MEDIA.dockerList];
const MANIFEST_TYPES: readonly string[] = [MEDIA.ociManifest, MEDIA.dockerManifest];
const CONFIG_TYPES: readonly string[] = [MEDIA.ociConfig, MEDIA.dockerConfig];

export interface Layer extends Descriptor {
  readonly compression: LayerCompression;
  /** sha256 of the uncompressed tar, from the config's rootfs.diff_ids. */
  readonly diffId: string;
}

export interface ImagePlan {
  readonly manifest: Descriptor;
  readonly config: Descriptor;
  readonly layers: readonly Layer[];
  /** "linux/amd64". */
  readonly platform: string;
}

function refuse(message: string): never {
  throw new AirlockError('IMAGE_INVALID', message);
}

/** The OCI name of this host's CPU architecture. */
export function hostArchitecture(arch: string = process.arch): string {
  return ({ x64: 'amd64', ia32: '386', arm: 'arm' } as Record<string, string>)[arch] ?? arch;
}

function descriptorsOf(value: unknown, what: string, limits: ImageLimits): Descriptor[] {
  if (!Array.isArray(value)) refuse(`${what} has no manifests list`);
  if (value.length > 1024) refuse(`${what} lists more than 1024 manifests`);
  return value.map((item, index) =>
    parseDescriptor(item, `${what} manifests[${index}]`, limits.maxJsonBytes),
  );
}

function platformFits(descriptor: Descriptor, architecture: string): boolean {
  const platform = descriptor.platform;
  if (platform === undefined) return true;
  return platform.os === 'linux' && platform.architecture === architecture;
}

/** Reads index.json (and one nested index) and picks the manifest. */
export async function selectManifest(
  source: LayoutSource,
  limits: ImageLimits,
  wanted?: string,
  architecture: string = hostArchitecture(),
): Promise<Descriptor> {
  const marker = parseJsonObject(await readSmallFile(source, 'oci-layout', 4096), 'oci-layout');
  if (marker.imageLayoutVersion !== '1.0.0')
    refuse(
      `oci-layout says imageLayoutVersion ${JSON.stringify(marker.imageLayoutVersion)}; only 1.0.0 is known`,
    );
  const index = parseJsonObject(await readSmallFile(source, 'index.json', limits.maxJsonBytes), 'index.json');
  const manifests: Descriptor[] = [];
  for (const descriptor of descriptorsOf(index.manifests, 'index.json', limits)) {
    if (INDEX_TYPES.includes(descriptor.mediaType)) {
      const nested = parseJsonObject(
        await readSmallBlob(source, descriptor, 'nested index', limits.maxJsonBytes),
        `nested index ${descriptor.digest}`,
      );
      for (const inner of descriptorsOf(nested.manifests, `nested index ${descriptor.digest}`, limits)) {
        if (INDEX_TYPES.includes(inner.mediaType))
          refuse(`nested index ${descriptor.digest} nests another index; one level of nesting is supported`);
        if (MANIFEST_TYPES.includes(inner.mediaType)) manifests.push(inner);
      }
    } else if (MANIFEST_TYPES.includes(descriptor.mediaType)) {
      manifests.push(descriptor);
    }
  }
  if (wanted !== undefined) {
    const found = manifests.find((descriptor) => descriptor.digest === wanted);
    if (found === undefined) refuse(`the layout has no image manifest ${wanted}`);
    return found;
  }
  const candidates = manifests.filter((descriptor) => platformFits(descriptor, architecture));
  const unique = [...new Map(candidates.map((descriptor) => [descriptor.digest, descriptor])).values()];
  if (unique.length === 0)
    refuse(
      `the layout has no image manifest for linux/${architecture} (${manifests.length} manifests in all)`,
    );
  if (unique.length > 1)
    refuse(
      `the layout has ${unique.length} image manifests for linux/${architecture}: choose one with --manifest (${unique.map((d) => d.digest).join(', ')})`,
    );
  return unique[0] as Descriptor;
}

/** Reads and checks the manifest and the config; returns what to unpack. */
export async function planImage(
  source: LayoutSource,
  manifest: Descriptor,
  limits: ImageLimits,
  architecture: string = hostArchitecture(),
): Promise<ImagePlan> {
  const body = parseJsonObject(
    await readSmallBlob(source, manifest, 'manifest', limits.maxJsonBytes),
    `manifest ${manifest.digest}`,
  );
  if (body.schemaVersion !== 2) refuse(`manifest ${manifest.digest} is not schemaVersion 2`);
  if (body.mediaType !== undefined && body.mediaType !== manifest.mediaType)
    refuse(
      `manifest ${manifest.digest} says its mediaType is ${JSON.stringify(body.mediaType)}, its descriptor ${manifest.mediaType}`,
    );
  const config = parseDescriptor(body.config, `manifest ${manifest.digest} config`, limits.maxJsonBytes);
  if (!CONFIG_TYPES.includes(config.mediaType))
    refuse(`manifest ${manifest.digest} config has media type ${config.mediaType}, not an image config`);
  if (!Array.isArray(body.layers)) refuse(`manifest ${manifest.digest} has no layers list`);
  if (body.layers.length > limits.maxLayers)
    refuse(
      `manifest ${manifest.digest} has ${body.layers.length} layers, more than the limit of ${limits.maxLayers}`,
    );
  const descriptors = body.layers.map((item: unknown, index: number) =>
    parseDescriptor(item, `layer ${index + 1}`, limits.maxUnpackedBytes),
  );
  for (const [index, layer] of descriptors.entries()) {
    if (layer.mediaType.endsWith('+zstd') || layer.mediaType.endsWith('.zstd'))
      refuse(
        `layer ${index + 1} (${layer.digest}) is zstd-compressed, which this Airlock cannot read: convert the image to gzip layers (skopeo copy --dest-compress-format gzip)`,
      );
    if (LAYER_MEDIA_TYPES[layer.mediaType] === undefined)
      refuse(`layer ${index + 1} (${layer.digest}) has unsupported media type ${layer.mediaType}`);
  }

  const configBody = parseJsonObject(
    await readSmallBlob(source, config, 'config', limits.maxJsonBytes),
    `config ${config.digest}`,
  );
  if (configBody.os !== 'linux') refuse(`the image is for os ${JSON.stringify(configBody.os)}, not linux`);
  if (configBody.architecture !== architecture)
    refuse(
      `the image is for architecture ${JSON.stringify(configBody.architecture)}; this host is ${architecture}`,
    );
  const rootfs = configBody.rootfs as { type?: unknown; diff_ids?: unknown } | undefined;
  if (
    typeof rootfs !== 'object' ||
    rootfs === null ||
    rootfs.type !== 'layers' ||
    !Array.isArray(rootfs.diff_ids)
  )
    refuse(`config ${config.digest} has no rootfs.diff_ids`);
  const diffIds = rootfs.diff_ids as unknown[];
  if (diffIds.length !== descriptors.length)
    refuse(`config ${config.digest} lists ${diffIds.length} diff_ids for ${descriptors.length} layers`);
  const layers = descriptors.map((layer: Descriptor, index: number): Layer => {
    const diffId = diffIds[index];
    if (typeof diffId !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(diffId))
      refuse(`config ${config.digest} diff_ids[${index}] is not a sha256 digest`);
    return { ...layer, compression: LAYER_MEDIA_TYPES[layer.mediaType] as LayerCompression, diffId };
  });
  return { manifest, config, layers, platform: `linux/${architecture}` };
}
