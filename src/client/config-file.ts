import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { AirlockConfig } from '../config/config.js';
import { AirlockError, describeError } from '../errors.js';

/**
 * The client's settings: the server URL and the API token. AIRLOCK_URL and AIRLOCK_TOKEN
 * override the client config file (AIRLOCK_CLIENT_CONFIG, default
 * ~/.config/airlock/client.json), a JSON object `{"url": "...", "token": "..."}` that
 * `airlock up` writes with writeClientConfig(). The file holds a bearer token, so it is
 * treated like an SSH key: refused unless only its owner can read and write it.
 */

export interface ClientSettings {
  readonly url: string;
  readonly token: string;
}

/** Larger than any real config: a bigger file is not ours (or a device read by mistake). */
export const MAX_CLIENT_CONFIG_BYTES = 64 * 1024;

const FIELDS = new Set(['url', 'token']);

function refuse(message: string, cause?: unknown): never {
  throw new AirlockError('INVALID_CONFIG', message, cause === undefined ? undefined : { cause });
}

/**
 * Reads the client config file: null when it does not exist. Refused (INVALID_CONFIG): a
 * symbolic link or anything but a regular file, a file group or others may read or write
 * (the token could have been read, or the URL swapped for one that collects tokens), more
 * than 64 KiB, not a JSON object, unknown fields, fields that are not non-empty strings.
 */
export async function readClientConfig(path: string): Promise<Partial<ClientSettings> | null> {
  let handle: import('node:fs/promises').FileHandle;
  try {
    // O_NOFOLLOW: a link is refused rather than followed to a file whose mode we did not check;
    // O_NONBLOCK: a FIFO put in its place cannot hang the CLI.
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP')
      refuse(
        `client config ${path} is a symbolic link; replace it with a regular file only you can read (chmod 600 ${path})`,
      );
    refuse(`client config ${path} cannot be opened: ${describeError(error)}`, error);
  }
  let text: string;
  try {
    const info = await handle.stat();
    if (!info.isFile())
      refuse(
        `client config ${path} is not a regular file; replace it with a file only you can read (chmod 600 ${path})`,
      );
    if ((info.mode & 0o066) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
      refuse(
        `client config ${path} can be read or written by group or others (mode ${mode}), so its token may be known to them: run chmod 600 ${path}, and replace the token if others could read it`,
      );
    }
    if (info.size > MAX_CLIENT_CONFIG_BYTES)
      refuse(
        `client config ${path} is larger than ${MAX_CLIENT_CONFIG_BYTES} bytes; it is not a client config`,
      );
    const buffer = Buffer.alloc(MAX_CLIENT_CONFIG_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_CLIENT_CONFIG_BYTES)
        refuse(
          `client config ${path} is larger than ${MAX_CLIENT_CONFIG_BYTES} bytes; it is not a client config`,
        );
    }
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length));
    } catch (error) {
      refuse(`client config ${path} is not UTF-8 text`, error);
    }
  } finally {
    await handle.close();
  }
  return parseClientConfig(path, text);
}

function parseClientConfig(path: string, text: string): Partial<ClientSettings> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    // The parser's message may quote the file, and the file holds the token: not repeated here.
    refuse(`client config ${path} is not valid JSON; expected {"url": "…", "token": "…"}`, error);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    refuse(`client config ${path} must be a JSON object {"url": "…", "token": "…"}`);
  const out: { url?: string; token?: string } = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!FIELDS.has(key))
      refuse(`client config ${path} has an unknown field "${key}"; only "url" and "token" are allowed`);
    if (typeof value !== 'string' || value === '')
      refuse(`client config ${path}: "${key}" must be a non-empty string`);
    if (key === 'url') out.url = value;
    else out.token = value;
  }
  return out;
}

/**
 * The client settings: AIRLOCK_URL and AIRLOCK_TOKEN first, the client config file for
 * what they leave out (the file is not read at all when both are set).
 */
export async function resolveClientSettings(client: AirlockConfig['client']): Promise<ClientSettings> {
  let url = client.url;
  let token = client.token;
  if (url === undefined || token === undefined) {
    const file = await readClientConfig(client.configFile);
    url ??= file?.url;
    token ??= file?.token;
  }
  if (url === undefined || token === undefined) {
    const missing =
      url === undefined && token === undefined
        ? 'no server configured'
        : url === undefined
          ? 'no server URL configured'
          : 'no API token configured';
    refuse(
      `${missing}: run \`airlock up\`, or set AIRLOCK_URL and AIRLOCK_TOKEN (or write them to ${client.configFile})`,
    );
  }
  return { url, token };
}

function checkSettings(settings: ClientSettings): void {
  let parsed: URL;
  try {
    parsed = new URL(settings.url);
  } catch {
    throw new RangeError(`writeClientConfig: url is not a URL: "${settings.url}"`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new RangeError(`writeClientConfig: url must be http:// or https://, got "${settings.url}"`);
  // Same rule as the HTTP client: a token is printable ASCII without spaces.
  if (!/^[\x21-\x7e]+$/.test(settings.token))
    throw new RangeError('writeClientConfig: the token contains characters a token never has');
}

/**
 * Writes the client config file atomically with mode 0600: the directory is created (0700)
 * if missing, the settings go to a new temporary file beside the target (O_EXCL: never an
 * existing file or a planted link), are flushed to disk, and the file is renamed over the
 * target. A reader sees the old file or the new one, never half of one, and never a moment
 * when the token is readable by others. Throws INVALID_CONFIG when it cannot write.
 */
export async function writeClientConfig(path: string, settings: ClientSettings): Promise<void> {
  checkSettings(settings);
  const directory = dirname(path);
  const temporary = join(directory, `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
  try {
    await mkdir(directory, { recursive: true, mode: 0o700 });
    const handle = await open(
      temporary,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      // The umask may have narrowed the mode; never widened it. Set it exactly.
      await handle.chmod(0o600);
      await handle.writeFile(`${JSON.stringify({ url: settings.url, token: settings.token }, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    refuse(`cannot write the client config ${path}: ${describeError(error)}`, error);
  }
  // Make the rename itself durable; a directory that cannot be opened for fsync is not an error.
  const dir = await open(directory, constants.O_RDONLY | constants.O_DIRECTORY).catch(() => null);
  if (dir !== null) {
    await dir.sync().catch(() => undefined);
    await dir.close();
  }
}
