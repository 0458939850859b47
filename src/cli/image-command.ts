import type { Command } from 'commander';
import { parseSize } from '../config/units.js';
import { AirlockError } from '../errors.js';
import type { ImageRecord } from '../images/cache.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock image import|list|remove`: the image cache of this worker host (docs/images.md).
 * Local commands, run as root on the worker host like `airlock sandbox`; they act on the
 * cache under AIRLOCK_SANDBOX_DIR and talk to no server. The work is in src/images/, loaded
 * only when one of these commands runs.
 */

export interface ImageImportOptions {
  name?: string;
  manifest?: string;
  maxSize?: string;
  maxEntries?: string;
  json?: boolean;
}

function needRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      'the image cache belongs to root (files owned by root, read-only to jobs): run airlock image as root',
    );
}

function positive(option: string, value: number | null): number {
  if (value === null || !Number.isSafeInteger(value) || value <= 0)
    throw new AirlockError('INVALID_OPTION', `--${option} must be a positive number`);
  return value;
}

export async function imageImportCommand(
  context: CliContext,
  path: string,
  options: ImageImportOptions,
): Promise<CommandResult> {
  needRoot();
  const { importImage } = await import('../images/import.js');
  const limits = {
    ...(options.maxSize !== undefined
      ? { maxUnpackedBytes: positive('max-size', parseSize(options.maxSize)) }
      : {}),
    ...(options.maxEntries !== undefined
      ? {
          maxEntries: positive(
            'max-entries',
            /^\d+$/.test(options.maxEntries) ? Number(options.maxEntries) : null,
          ),
        }
      : {}),
  };
  const result = await importImage(context.config.sandbox.dir, path, {
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.manifest !== undefined ? { manifest: options.manifest } : {}),
    limits,
  });
  if (options.json === true) {
    context.stdout.write(
      `${JSON.stringify({ ref: result.ref, imported: result.imported, image: result.record })}\n`,
    );
  } else {
    if (!result.imported) context.stderr.write('airlock: the image was in the cache already\n');
    context.stdout.write(`${result.ref}\n`);
  }
  return 0;
}

function mebibytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)}M`;
}

export async function imageListCommand(
  context: CliContext,
  options: { json?: boolean },
): Promise<CommandResult> {
  needRoot();
  const { listImages } = await import('../images/cache.js');
  const records = await listImages(context.config.sandbox.dir);
  if (options.json === true) {
    context.stdout.write(`${JSON.stringify({ images: records })}\n`);
    return 0;
  }
  const rows = records.map((record: ImageRecord) => [
    record.names.join(','),
    record.digest,
    String(record.layers.length),
    mebibytes(record.unpackedBytes),
    record.importedAt,
  ]);
  const header = ['NAMES', 'DIGEST', 'LAYERS', 'SIZE', 'IMPORTED'];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  for (const row of [header, ...rows])
    context.stdout.write(
      `${row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd()}\n`,
    );
  return 0;
}

export async function imageRemoveCommand(
  context: CliContext,
  ref: string,
  options: { json?: boolean },
): Promise<CommandResult> {
  needRoot();
  const { parseImageRef } = await import('../images/reference.js');
  const { removeImage } = await import('../images/cache.js');
  // NAME@sha256:… or the bare digest: the digest decides.
  const digest = /^sha256:[0-9a-f]{64}$/.test(ref) ? ref : undefined;
  const image = digest === undefined ? parseImageRef(ref) : null;
  if (image !== null && image.kind !== 'pinned')
    throw new AirlockError('INVALID_OPTION', 'name the image to remove as NAME@sha256:… or sha256:…');
  const removed = await removeImage(
    context.config.sandbox.dir,
    digest ?? (image as { digest: string }).digest,
  );
  if (options.json === true) context.stdout.write(`${JSON.stringify({ removed })}\n`);
  else context.stdout.write(`removed ${removed.names.join(',')}@${removed.digest}\n`);
  return 0;
}

export function registerImageCommands(
  program: Command,
  context: CliContext,
  setResult: (code: CommandResult) => void,
): Command {
  const image = program
    .command('image')
    .description(
      "Digest-pinned images (docs/images.md): this worker host's cache (import, list, remove; run as root) and their approvals for policy (approve, revoke, approvals).",
    );
  image
    .command('import')
    .description(
      'Verify an OCI image layout (directory or tar) blob by blob, unpack it safely into the cache, print NAME@sha256:….',
    )
    .argument('<path>', 'an OCI image layout directory, or a tar file of one')
    .option('--name <name>', 'the name to give it (default: from the path)')
    .option('--manifest <digest>', 'the manifest to import when the layout holds several')
    .option('--max-size <size>', 'refuse layers that decompress to more than this (default 8G)')
    .option('--max-entries <n>', 'refuse an image with more files than this (default 500000)')
    .option('--json', 'print {ref, imported, image} as JSON')
    .action(async (path: string, options: ImageImportOptions) => {
      setResult(await imageImportCommand(context, path, options));
    });
  image
    .command('list')
    .description('The images in the cache, newest first.')
    .option('--json', 'print {images} as JSON')
    .action(async (options: { json?: boolean }) => {
      setResult(await imageListCommand(context, options));
    });
  image
    .command('remove')
    .description('Remove an image from the cache (refused while a running job uses it).')
    .argument('<ref>', 'NAME@sha256:<64 hex> or sha256:<64 hex>')
    .option('--json', 'print {removed} as JSON')
    .action(async (ref: string, options: { json?: boolean }) => {
      setResult(await imageRemoveCommand(context, ref, options));
    });
  return image;
}
