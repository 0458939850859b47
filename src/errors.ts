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
  IMAGE_INVALID: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary:
      'An image layout or layer was refused on import (a blob whose digest or size is wrong, a path that leaves the image, a device node, a bound exceeded); nothing was added to the cache.',
  },
  IMAGE_NOT_FOUND: {
    httpStatus: 404,
    exitCode: 125,
    retryable: false,
    summary:
      "The job's digest-pinned image is not in this worker's image cache (airlock image import it there).",
  },
  IMAGE_IN_USE: {
    httpStatus: 409,
    exitCode: 125,
    retryable: true,
    summary: 'The image cannot be removed while a running job uses it; try again when the job has ended.',
  },
  INVALID_REQUEST: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary:
      'The HTTP request is malformed: not JSON, invalid UTF-8, too deep, a field out of bounds, an unknown field.',
  },
  PAYLOAD_TOO_LARGE: {
    httpStatus: 413,
    exitCode: 125,
    retryable: false,
    summary: 'The request body is larger than the server accepts (AIRLOCK_MAX_BODY); it was not read.',
  },
  UNAUTHENTICATED: {
    httpStatus: 401,
    exitCode: 125,
    retryable: false,
    summary: 'No token, or a token that is unknown, expired or revoked.',
  },
  FORBIDDEN: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary: 'The token is valid but its role may not do this (a viewer cancelling, say).',
  },
  NOT_FOUND: {
    httpStatus: 404,
    exitCode: 125,
    retryable: false,
    summary: 'No such job, token or route — or one outside the projects of the token.',
  },
  RATE_LIMITED: {
    httpStatus: 429,
    exitCode: 125,
    retryable: true,
    summary:
      'Too many failed authentications from this source or for this token; retry after Retry-After seconds.',
  },
  QUEUE_FULL: {
    httpStatus: 429,
    exitCode: 125,
    retryable: true,
    summary: 'The project has as many queued jobs as it may (AIRLOCK_PROJECT_QUEUE_LIMIT); submit later.',
  },
  IDEMPOTENCY_KEY_REUSED: {
    httpStatus: 409,
    exitCode: 125,
    retryable: false,
    summary: 'The Idempotency-Key was used before for a different request body; use a new key.',
  },
  JOB_FINISHED: {
    httpStatus: 409,
    exitCode: 125,
    retryable: false,
    summary: 'The job has already finished, so it cannot be cancelled.',
  },
  LEASE_LOST: {
    httpStatus: 409,
    exitCode: 125,
    retryable: false,
    summary:
      'Worker protocol: the fencing token is stale (the lease expired and the job went elsewhere); the report is refused.',
  },
  SERVER_UNAVAILABLE: {
    httpStatus: 503,
    exitCode: 125,
    retryable: true,
    summary: 'The server is starting or shutting down and takes no new work now.',
  },
  SERVER_UNREACHABLE: {
    httpStatus: 503,
    exitCode: 125,
    retryable: true,
    summary: 'The client could not reach the server at its URL (AIRLOCK_URL or the client config file).',
  },
  SELFTEST_FAILED: {
    httpStatus: 503,
    exitCode: 125,
    retryable: true,
    summary: 'A selftest probe failed: the worker takes no jobs until a selftest passes again.',
  },
  AUDIT_FAILED: {
    httpStatus: 500,
    exitCode: 125,
    retryable: true,
    summary: 'The audit event of an action could not be written, so the action was not done (fail closed).',
  },
  SIGNATURE_KEY_UNKNOWN: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary: "A signed job's key is not registered for its project (airlock keys add); nothing runs.",
  },
  SIGNATURE_KEY_REVOKED: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary: "A signed job's key was revoked; its signatures are no longer accepted.",
  },
  SIGNATURE_INVALID: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary:
      'A job or request signature does not verify: the payload or request was changed or re-aimed, the signature is malformed, or it was made for another purpose.',
  },
  SIGNATURE_REPLAYED: {
    httpStatus: 409,
    exitCode: 125,
    retryable: false,
    summary:
      "A signed job's or signed request's nonce was used before: the same signed request is never accepted twice (sign it anew).",
  },
  SIGNATURE_EXPIRED: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary:
      'A signed job is past its expiry, or a signed request older than 60 s (beyond the clock-skew allowance); sign it anew.',
  },
  SIGNATURE_NOT_YET_VALID: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary:
      "A signed job's or request's time is in the future beyond the clock-skew allowance: check the signer's clock.",
  },
  WORKLOAD_IDENTITY_INVALID: {
    httpStatus: 401,
    exitCode: 125,
    retryable: false,
    summary:
      'An OIDC ID token (workload identity) was refused: unknown issuer, bad signature, wrong audience, expired, or a required claim missing.',
  },
  WORKLOAD_IDENTITY_UNAVAILABLE: {
    httpStatus: 503,
    exitCode: 125,
    retryable: true,
    summary:
      "The issuer's signing keys (JWKS) could not be fetched, so an OIDC ID token could not be checked; it is refused (fail closed).",
  },
  POLICY_DENIED: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary: 'The policy (Cedar) does not allow this request; the message names the policies that decided.',
  },
  POLICY_ERROR: {
    httpStatus: 500,
    exitCode: 125,
    retryable: false,
    summary:
      'The policy could not be evaluated (an evaluation error, a malformed request context); the request is refused (fail closed).',
  },
  PROFILE_EXCEEDED: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary:
      "The job asks for more than its project's permission profile grants; the message names each item.",
  },
  POLICY_INVALID: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary:
      'A proposed policy or profile does not parse, does not validate against the schema, or would lock admins out of governance.',
  },
  SEPARATION_OF_DUTIES: {
    httpStatus: 403,
    exitCode: 125,
    retryable: false,
    summary: 'A policy or profile change must be approved by an admin other than its author.',
  },
  POLICY_CONFLICT: {
    httpStatus: 409,
    exitCode: 125,
    retryable: false,
    summary:
      'The policy or profile changed since this proposal was made (or it is no longer pending); propose again against the current version.',
  },
  CHECKPOINT_INVALID: {
    httpStatus: 400,
    exitCode: 125,
    retryable: false,
    summary:
      'An audit checkpoint or proof is malformed, not signed by a trusted key, or its signature does not verify.',
  },
  CHECKPOINT_EXPORT_FAILED: {
    httpStatus: 502,
    exitCode: 125,
    retryable: true,
    summary:
      'A signed audit checkpoint could not be written to the configured sink (directory, HTTP endpoint or S3 bucket); it is retried.',
  },
  STORE_FAILED: {
    httpStatus: 500,
    exitCode: 125,
    retryable: true,
    summary: 'The database refused or failed an operation; nothing of the request was applied.',
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
