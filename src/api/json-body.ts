import { isWellFormedText, toWellFormedText } from '../audit/canonical.js';
import { AirlockError } from '../errors.js';

/**
 * The request-body parser: the bytes must be valid UTF-8 (no silent U+FFFD replacement), the
 * JSON at most MAX_DEPTH deep (checked on the text before parsing, so a 1 MB "[[[[…" costs
 * nothing), and no string or key may hold a NUL character (they end up in argv, paths and
 * logs, where NUL truncates) or a lone surrogate (an escape like \ud800 is half a
 * character: it cannot be stored as UTF-8 and would change under the audit log's hash). Size is bounded before this runs: Fastify refuses a body over
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
    // V8's message may quote the offending text, half a surrogate pair included.
    const reason = toWellFormedText((error as Error).message).slice(0, 200);
    throw new AirlockError('INVALID_REQUEST', `the request body is not JSON: ${reason}`);
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
  const checkText = (text: string, what: string): void => {
    if (text.includes('\0'))
      throw new AirlockError('INVALID_REQUEST', `${what} in the request body holds a NUL character`);
    // An escape like \ud800 decodes to half a character: not text, and not storable as UTF-8.
    if (!isWellFormedText(text))
      throw new AirlockError(
        'INVALID_REQUEST',
        `${what} in the request body holds a lone surrogate (\\ud800–\\udfff)`,
      );
  };
  while (stack.length > 0) {
    const item = stack.pop();
    if (typeof item === 'string') {
      checkText(item, 'a string');
    } else if (Array.isArray(item)) {
      stack.push(...item);
    } else if (typeof item === 'object' && item !== null) {
      for (const [key, child] of Object.entries(item)) {
        checkText(key, 'a key');
        if (key === '__proto__' || key === 'constructor' || key === 'prototype')
          throw new AirlockError('INVALID_REQUEST', `the request body uses the reserved key "${key}"`);
        stack.push(child);
      }
    }
  }
}
