import { type DestinationStream, type Logger, pino } from 'pino';
import type { LogLevel } from './config/config.js';

/**
 * The structured logger of the server and the worker (pino, JSON lines). Redaction is
 * configured here, once: whatever path a token or secret could travel under is censored,
 * so a careless `log.info({ headers })` cannot leak a bearer token. Tests check it.
 */

export const REDACTED_PATHS = [
  'authorization',
  'token',
  'secret',
  'password',
  '*.authorization',
  '*.token',
  '*.secret',
  '*.password',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  'request.headers.authorization',
];

export type { Logger };

export function createLogger(
  level: LogLevel,
  name: string,
  destination: DestinationStream | NodeJS.WritableStream = process.stderr,
): Logger {
  return pino(
    {
      name,
      level,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as DestinationStream,
  );
}
