import { AirlockError } from '../errors.js';

/**
 * The request-body parser: the bytes must be valid UTF-8 (no silent U+FFFD replacement), the
 * JSON at most MAX_DEPTH deep (checked on the text before parsing, so a 1 MB "[[[[…" costs
 * nothing), and no string or key may hold a NUL character (they end up in argv, paths and
 * logs, where NUL truncates). Size is bounded before this runs: Fastify refuses a body over
 * the limit with 413 from its Content-Length, or as soon as a chunked body passes it.
 */

export const MAX_DEPTH = 32;
const decoder = new TextDecoder('utf-8', { fatal: true });

export function parseJsonBody(body: Buffer): unknown {
  let text: string;
  try {
    text = decoder.decode(body);
  } catch {
    throw new AirlockError('INVALID_REQUEST', 'the request body is not valid UTF-8');
  }
  checkDepth(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new AirlockError('INVALID_REQUEST', `the request body is not JSON: ${(error as Error).message}`);
  }
  checkNoNul(value);
  return value;
}

function checkDepth(text: string): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth > MAX_DEPTH)
        throw new AirlockError('INVALID_REQUEST', `the request body nests deeper than ${MAX_DEPTH} levels`);
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
}

function checkNoNul(value: unknown): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    if (typeof item === 'string') {
      if (item.includes('\0'))
        throw new AirlockError('INVALID_REQUEST', 'a string in the request body holds a NUL character');
    } else if (Array.isArray(item)) {
      stack.push(...item);
    } else if (typeof item === 'object' && item !== null) {
      for (const [key, child] of Object.entries(item)) {
        if (key.includes('\0'))
          throw new AirlockError('INVALID_REQUEST', 'a key in the request body holds a NUL character');
        if (key === '__proto__' || key === 'constructor' || key === 'prototype')
          throw new AirlockError('INVALID_REQUEST', `the request body uses the reserved key "${key}"`);
        stack.push(child);
      }
    }
  }
}
