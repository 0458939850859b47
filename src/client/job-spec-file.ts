import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { AirlockError } from '../errors.js';

/**
 * `airlock submit FILE`: a job spec v1 in JSON or YAML, read and parsed with bounds, then
 * sent as is (the server validates it; unknown fields are its error to report). YAML is
 * parsed as plain data: the YAML 1.2 core schema (no custom or language tags), no merge
 * keys, unique keys, one document, and few aliases — an alias bomb ("billion laughs") is
 * refused, not expanded.
 */

export const MAX_SPEC_FILE_BYTES = 8 * 1024 * 1024;
/** Aliases expanded in all; a real job spec needs a handful, a bomb needs thousands. */
export const MAX_YAML_ALIASES = 32;

function invalid(message: string, cause?: unknown): never {
  throw new AirlockError('INVALID_JOB', message, cause === undefined ? undefined : { cause });
}

export type SpecFormat = 'json' | 'yaml';

/** By extension (.json, .yaml, .yml), else by content: JSON starts with "{". */
export function specFormat(name: string, text: string): SpecFormat {
  const lower = name.toLowerCase();
  if (lower.endsWith('.json')) return 'json';
  if (lower.endsWith('.yaml') || lower.endsWith('.yml')) return 'yaml';
  return text.trimStart().startsWith('{') ? 'json' : 'yaml';
}

/** Parses a spec's text: a JSON or YAML mapping, else INVALID_JOB saying where it failed. */
export async function parseJobSpec(name: string, text: string): Promise<Record<string, unknown>> {
  const source = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const format = specFormat(name, source);
  let value: unknown;
  if (format === 'json') {
    try {
      value = JSON.parse(source);
    } catch (error) {
      invalid(`${name} is not valid JSON: ${(error as Error).message}`, error);
    }
    // JSON.parse keeps the last of two equal keys: a reviewer reading the first would sign or
    // submit another command than the one they read. YAML specs refuse them too (uniqueKeys).
    const duplicate = duplicateJsonKey(source);
    if (duplicate !== null) invalid(`${name} has the key "${duplicate}" twice in one object`);
  } else {
    // Loaded only for YAML: `airlock run` and JSON specs never pay for the parser.
    const { parseDocument } = await import('yaml');
    let document: ReturnType<typeof parseDocument>;
    try {
      document = parseDocument(source, {
        version: '1.2',
        schema: 'core',
        merge: false,
        uniqueKeys: true,
        strict: true,
        prettyErrors: true,
        stringKeys: true,
      });
    } catch (error) {
      // Deep nesting can exhaust the stack; any parser failure is the file's fault.
      invalid(`${name} cannot be parsed as YAML: ${(error as Error).message}`, error);
    }
    const problem = document.errors[0] ?? document.warnings[0];
    if (problem !== undefined) invalid(`${name} is not valid YAML for a job spec: ${problem.message}`);
    try {
      value = document.toJS({ maxAliasCount: MAX_YAML_ALIASES });
    } catch (error) {
      invalid(
        `${name} cannot be used: ${(error as Error).message} (at most ${MAX_YAML_ALIASES} alias expansions are allowed)`,
        error,
      );
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    invalid(`${name} must hold one job spec: a mapping with version, project, command…`);
  return value as Record<string, unknown>;
}

function decode(name: string, bytes: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (error) {
    invalid(`${name} is not UTF-8 text`, error);
  }
}

function tooLarge(name: string): never {
  invalid(`${name} is larger than ${MAX_SPEC_FILE_BYTES} bytes; a job spec is at most 8 MiB`);
}

/** Reads a spec file (or "-": standard input) of at most 8 MiB. */
export async function readJobSpecFile(
  path: string,
  stdin: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string> = process.stdin,
): Promise<Record<string, unknown>> {
  if (path === '-') {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of stdin) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk);
      total += bytes.length;
      if (total > MAX_SPEC_FILE_BYTES) tooLarge('standard input');
      chunks.push(bytes);
    }
    return parseJobSpec('standard input', decode('standard input', Buffer.concat(chunks, total)));
  }
  let handle: import('node:fs/promises').FileHandle;
  try {
    // O_NONBLOCK: a FIFO given by mistake cannot hang the CLI at open.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    invalid(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) invalid(`${path} is not a regular file`);
    if (info.size > MAX_SPEC_FILE_BYTES) tooLarge(path);
    const buffer = Buffer.alloc(MAX_SPEC_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_SPEC_FILE_BYTES) tooLarge(path);
    }
    // Awaited here, inside the try: a rejection must not wait unhandled while `finally` closes.
    return await parseJobSpec(path, decode(path, buffer.subarray(0, length)));
  } finally {
    await handle.close();
  }
}

/** The first key that appears twice in one object of valid JSON text, or null. */
export function duplicateJsonKey(text: string): string | null {
  // A stack of objects (a key set each) and arrays (null); a string directly after "{" or
  // after "," inside an object is a key.
  const stack: Array<Set<string> | null> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        const keys = stack.at(-1);
        if (keys instanceof Set) {
          if (keys.has(key)) return key;
          keys.add(key);
        }
        expectKey = false;
      }
      i = end;
    } else if (c === '{') {
      stack.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      stack.push(null);
      expectKey = false;
    } else if (c === '}' || c === ']') {
      stack.pop();
      expectKey = false;
    } else if (c === ',') {
      expectKey = stack.at(-1) instanceof Set;
    }
  }
  return null;
}
