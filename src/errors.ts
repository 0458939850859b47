/**
 * The one error type of Airlock. Every failure that crosses a module boundary is an
 * AirlockError with a stable `code` from the closed catalogue below; callers branch on
 * `code`, never on `message`. Each boundary maps it once: the CLI to an exit code, the
 * HTTP API (later) to a status. Programmer misuse stays TypeError / RangeError.
 *
 * docs/errors.md lists every code; test/unit/errors.test.ts fails when the two disagree.
 */

interface ErrorKind {
  /** HTTP status when the error crosses the API boundary. */
  readonly httpStatus: number;
  /** Exit code of `airlock run` / `airlock sandbox` (DESIGN §6): 125 = refused or Airlock's own failure. */
  readonly exitCode: number;
  /** Whether the same request can succeed when tried again later without changes. */
  readonly retryable: boolean;
  /** One line for docs/errors.md. */
  readonly summary: string;
}

export const ERROR_CATALOGUE = {
  INVALID_OPTION: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary: 'A command-line option or its value is malformed or out of range.',
  },
  INVALID_JOB: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary: 'The job description is malformed or asks for more than the bounds allow.',
  },
  INVALID_CONFIG: {
    httpStatus: 500,
    exitCode: 125,
    retryable: false,
    summary: 'The Airlock configuration (AIRLOCK_* variables) is invalid; Airlock refuses to start.',
  },
  INPUT_REJECTED: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary:
      'A workspace input cannot be copied safely (missing, special file, too large or too many files).',
  },
  RUNTIME_UNAVAILABLE: {
    httpStatus: 503,
    exitCode: 125,
    retryable: false,
    summary: 'The requested OCI runtime is not installed or cannot run on this host; the message says why.',
  },
  HOST_UNSUPPORTED: {
    httpStatus: 503,
    exitCode: 125,
    retryable: false,
    summary:
      'This host lacks something every sandbox needs (root, cgroups, a loop device, mkfs.ext4); the message names it.',
  },
  SANDBOX_SETUP_FAILED: {
    httpStatus: 500,
    exitCode: 125,
    retryable: true,
    summary: 'Preparing the sandbox (workspace, bundle, cgroup) failed before the job started.',
  },
  SANDBOX_START_FAILED: {
    httpStatus: 500,
    exitCode: 125,
    retryable: true,
    summary: 'The OCI runtime could not start the container; the message carries the runtime’s own error.',
  },
  SANDBOX_CLEANUP_FAILED: {
    httpStatus: 500,
    exitCode: 125,
    retryable: true,
    summary: 'Something of a finished job (container, mount, cgroup, process) could not be removed.',
  },
  INTERNAL: {
    httpStatus: 500,
    exitCode: 125,
    retryable: false,
    summary: 'An unexpected error inside Airlock (a bug); the message says what failed. Please report it.',
  },
} as const satisfies Record<string, ErrorKind>;

export type AirlockErrorCode = keyof typeof ERROR_CATALOGUE;

export class AirlockError extends Error {
  readonly code: AirlockErrorCode;
  readonly httpStatus: number;
  readonly exitCode: number;
  readonly retryable: boolean;

  constructor(code: AirlockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    const kind: ErrorKind = ERROR_CATALOGUE[code];
    this.name = 'AirlockError';
    this.code = code;
    this.httpStatus = kind.httpStatus;
    this.exitCode = kind.exitCode;
    this.retryable = kind.retryable;
  }
}

export function isAirlockError(value: unknown, code?: AirlockErrorCode): value is AirlockError {
  return value instanceof AirlockError && (code === undefined || value.code === code);
}

/** Message of an unknown thrown value, for wrapping into an AirlockError. */
export function describeError(value: unknown): string {
  if (value instanceof Error) return value.message;
  return String(value);
}
