import { type TSchema, Type } from '@sinclair/typebox';
import { MAX_IMAGE_REF } from '../images/reference.js';
import { JOB_STATES, TOKEN_ROLES } from './types.js';

/**
 * The JSON schemas of every request and response: one source for validation (Ajv, with
 * unknown fields refused and no type coercion) and for the OpenAPI document. Every string,
 * array and map has a bound (DESIGN §5.6). They describe the types in ./types.ts.
 */

const NAME = '^[a-z0-9][a-z0-9._-]{0,63}$';
const KiB = 1024;

export const Name = Type.String({ pattern: NAME, maxLength: 64 });
const Runtime = Type.Union([Type.Literal('runc'), Type.Literal('crun'), Type.Literal('gvisor')]);
const closed = { additionalProperties: false } as const;

export const JobSpecSchema = Type.Object(
  {
    version: Type.Literal(1),
    project: Name,
    environment: Type.Optional(Name),
    runtime: Type.Optional(Runtime),
    // "host" or NAME@sha256:<64 hex> (src/images/reference.ts checks the grammar with a precise message).
    image: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_IMAGE_REF })),
    command: Type.Array(Type.String({ maxLength: 128 * KiB }), { minItems: 1, maxItems: 4096 }),
    env: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,255}$' }),
        Type.String({ maxLength: 128 * KiB }),
        {
          maxProperties: 1024,
        },
      ),
    ),
    resources: Type.Optional(
      Type.Object(
        {
          cpus: Type.Optional(Type.Number({ minimum: 0.01, maximum: 256 })),
          memoryMiB: Type.Optional(Type.Integer({ minimum: 16, maximum: 1024 * 1024 })),
          pids: Type.Optional(Type.Integer({ minimum: 8, maximum: 65_536 })),
          timeoutSeconds: Type.Optional(Type.Number({ minimum: 0.1, maximum: 7 * 24 * 3600 })),
          diskMiB: Type.Optional(Type.Integer({ minimum: 16, maximum: 16 * 1024 * 1024 })),
          outputKiB: Type.Optional(Type.Integer({ minimum: 0, maximum: 1024 * 1024 })),
        },
        closed,
      ),
    ),
    network: Type.Optional(
      Type.Union([
        Type.Literal('none'),
        Type.Object(
          { egress: Type.Array(Type.String({ minLength: 1, maxLength: 300 }), { maxItems: 1024 }) },
          closed,
        ),
      ]),
    ),
    inputs: Type.Optional(
      Type.Array(
        Type.Object(
          {
            path: Type.String({ minLength: 1, maxLength: 4096 }),
            content: Type.Optional(Type.String()),
            contentBase64: Type.Optional(Type.String()),
            mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o777 })),
          },
          closed,
        ),
        { maxItems: 10_000 },
      ),
    ),
    outputs: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { maxItems: 256 })),
  },
  { ...closed, $id: 'JobSpecV1' },
);

const Iso = Type.String({ format: 'date-time' });
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

/** Attempts kept per job in its result and audit trail (the proxy's own record bound). */
export const MAX_EGRESS_ATTEMPTS = 1000;
const EgressCount = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

const egressAttemptFields = {
  at: Iso,
  destination: Nullable(Type.String({ maxLength: 320 })),
  protocol: Nullable(Type.Union([Type.Literal('connect'), Type.Literal('http')])),
  resolved: Nullable(Type.String({ maxLength: 64 })),
  allowed: Type.Boolean(),
  reason: Type.String({ pattern: '^[a-z-]{1,40}$' }),
  detail: Nullable(Type.String({ maxLength: 320 })),
  bytesUp: EgressCount,
  bytesDown: EgressCount,
  durationMs: EgressCount,
};
const EgressAttemptSchema = Type.Object(egressAttemptFields, closed);

const EgressReportSchema = Type.Object(
  {
    allow: Type.Array(Type.String({ minLength: 1, maxLength: 300 }), { maxItems: 1024 }),
    attempts: Type.Array(EgressAttemptSchema, { maxItems: MAX_EGRESS_ATTEMPTS }),
    totals: Type.Object(
      {
        bytesUp: EgressCount,
        bytesDown: EgressCount,
        connections: EgressCount,
        refused: EgressCount,
        droppedRecords: EgressCount,
        unrecorded: EgressCount,
        exhausted: Nullable(Type.String({ pattern: '^[a-z-]{1,40}$' })),
      },
      closed,
    ),
  },
  closed,
);

/** A worker's batch of egress attempts, streamed while the job runs (at most 100 a call). */
export const EgressBatchSchema = Type.Object(
  {
    fence: Type.Integer({ minimum: 1 }),
    attempts: Type.Array(Type.Object({ ...egressAttemptFields, seq: Type.Integer({ minimum: 1 }) }, closed), {
      minItems: 1,
      maxItems: 100,
    }),
  },
  closed,
);

export const JobRunResultSchema = Type.Object(
  {
    exitCode: Nullable(Type.Integer({ minimum: -1, maximum: 255 })),
    signal: Nullable(Type.String({ maxLength: 32 })),
    timedOut: Type.Boolean(),
    oomKilled: Type.Boolean(),
    cancelled: Type.Boolean(),
    wallMs: Type.Number({ minimum: 0 }),
    cpuMs: Type.Number({ minimum: 0 }),
    peakMemoryBytes: Type.Number({ minimum: 0 }),
    outputBytes: Type.Number({ minimum: 0 }),
    outputTruncated: Type.Boolean(),
    runtime: Runtime,
    startFailure: Nullable(
      Type.Object(
        {
          kind: Type.Union([Type.Literal('command-not-found'), Type.Literal('not-executable')]),
          message: Type.String({ maxLength: 4096 }),
        },
        closed,
      ),
    ),
    outputs: Type.Array(
      Type.Object(
        {
          path: Type.String({ minLength: 1, maxLength: 4096 }),
          sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
          size: Type.Integer({ minimum: 0 }),
        },
        closed,
      ),
      { maxItems: 10_000 },
    ),
    sandbox: Type.Optional(
      Type.Object(
        {
          configSha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
          seccompSha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
          /** The manifest digest of the job's pinned image (absent for image: host). */
          imageDigest: Type.Optional(Type.String({ pattern: '^sha256:[0-9a-f]{64}$' })),
        },
        closed,
      ),
    ),
    egress: Type.Optional(EgressReportSchema),
  },
  closed,
);

const JobState = Type.Union(JOB_STATES.map((state) => Type.Literal(state)));

export const JobRecordSchema = Type.Object({
  id: Type.String(),
  project: Type.String(),
  environment: Type.String(),
  state: JobState,
  spec: Type.Unsafe({ $ref: 'JobSpecV1#' }),
  submittedBy: Type.String(),
  createdAt: Iso,
  updatedAt: Iso,
  startedAt: Nullable(Iso),
  finishedAt: Nullable(Iso),
  attempts: Type.Integer(),
  maxAttempts: Type.Integer(),
  worker: Nullable(Type.String()),
  cancelRequested: Type.Boolean(),
  result: Nullable(JobRunResultSchema),
  reason: Nullable(Type.String()),
  exitStatus: Nullable(Type.Integer()),
  /** What the airlock found at submit: signer, origin, risk, script digest, policy decision. */
  trust: Nullable(
    Type.Object({
      signer: Nullable(
        Type.Object({
          key: Type.String(),
          fingerprint: Type.String(),
          owner: Type.String(),
          release: Type.Boolean(),
        }),
      ),
      origin: Nullable(
        Type.Object({
          issuer: Type.String(),
          subject: Type.String(),
          repository: Type.String(),
          ref: Type.String(),
          workflow: Type.String(),
          environment: Type.String(),
        }),
      ),
      risk: Type.Object({
        score: Type.Integer({ minimum: 0, maximum: 100 }),
        factors: Type.Array(Type.String()),
      }),
      scriptDigest: Type.String(),
      policy: Type.Object({
        version: Type.Integer(),
        hash: Type.String(),
        policies: Type.Array(Type.String()),
      }),
      profile: Nullable(Type.Object({ scope: Type.String(), version: Type.Integer() })),
      runtime: Type.Optional(
        Type.Object({
          name: Runtime,
          source: Type.Union([Type.Literal('spec'), Type.Literal('default'), Type.Literal('policy')]),
          reason: Type.String(),
        }),
      ),
      image: Type.Optional(
        Nullable(Type.Object({ ref: Type.String(), digest: Type.String(), approved: Type.Boolean() })),
      ),
    }),
  ),
});

export const JobListSchema = Type.Object({
  jobs: Type.Array(JobRecordSchema),
  nextCursor: Nullable(Type.String()),
});

export const JobIdParams = Type.Object({ id: Type.String({ pattern: '^job_[a-z2-7]{26}$' }) }, closed);
export const TokenIdParams = Type.Object({ id: Type.String({ pattern: '^tok_[0-9a-f]{16}$' }) }, closed);

export const JobListQuery = Type.Object(
  {
    project: Type.Optional(Name),
    state: Type.Optional(JobState),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,3}$' })),
    cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })),
  },
  closed,
);

export const LogsQuery = Type.Object(
  {
    after: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })),
    follow: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  },
  closed,
);

const Role = Type.Union(TOKEN_ROLES.map((role) => Type.Literal(role)));

export const TokenInfoSchema = Type.Object({
  id: Type.String(),
  principal: Type.String(),
  role: Role,
  projects: Type.Array(Type.String()),
  createdAt: Iso,
  createdBy: Type.String(),
  expiresAt: Nullable(Iso),
  revokedAt: Nullable(Iso),
  requestKey: Nullable(Type.String()),
});

export const TokenCreateSchema = Type.Object(
  {
    principal: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$' }),
    role: Role,
    projects: Type.Array(Type.Union([Name, Type.Literal('*')]), {
      minItems: 1,
      maxItems: 256,
      uniqueItems: true,
    }),
    expiresInSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 10 * 365 * 24 * 3600 })),
    requestKey: Type.Optional(Type.String({ minLength: 1, maxLength: 16 * 1024 })),
  },
  closed,
);

export const AuditQuery = Type.Object(
  {
    after: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
    last: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
  },
  closed,
);

export const AuditEventSchema = Type.Object({
  seq: Type.Integer(),
  at: Iso,
  actor: Type.String(),
  action: Type.String(),
  target: Type.String(),
  outcome: Type.Union([Type.Literal('succeeded'), Type.Literal('denied'), Type.Literal('failed')]),
  reason: Type.String(),
  source: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
  prevHash: Type.String(),
  hash: Type.String(),
});

const Count = Type.String({ pattern: '^(0|[1-9][0-9]{0,14})$' });
const Base64Hash = Type.String({ pattern: '^[A-Za-z0-9+/]{43}=$' });

export const AuditVerifyQuery = Type.Object(
  { treeSize: Type.Optional(Count), rootHash: Type.Optional(Base64Hash) },
  closed,
);

export const InclusionQuery = Type.Object({ seq: Count, treeSize: Type.Optional(Count) }, closed);
export const ConsistencyQuery = Type.Object({ from: Count, to: Count }, closed);

export const CheckpointSchema = Type.Object({
  treeSize: Type.Integer(),
  rootHash: Type.String(),
  madeAt: Iso,
  exportedAt: Nullable(Iso),
  /** The signed note (C2SP tlog-checkpoint), exactly as signed. */
  note: Type.String(),
});

export const AuditKeysSchema = Type.Object({
  origin: Type.String(),
  keys: Type.Array(
    Type.Object({
      verifierKey: Type.String(),
      keyId: Type.String(),
      createdAt: Iso,
      retiredAt: Nullable(Iso),
    }),
  ),
});

export const InclusionProofSchema = Type.Object({
  seq: Type.Integer(),
  leafIndex: Type.Integer(),
  treeSize: Type.Integer(),
  entry: Type.String(),
  leafHash: Type.String(),
  rootHash: Type.String(),
  proof: Type.Array(Type.String()),
});

export const ConsistencyProofSchema = Type.Object({
  from: Type.Integer(),
  to: Type.Integer(),
  fromRoot: Type.String(),
  toRoot: Type.String(),
  proof: Type.Array(Type.String()),
});

export const AuditHashRequest = Type.Object({ value: Type.String({ maxLength: 4096 }) }, closed);

export const SigningKeyAddSchema = Type.Object(
  {
    project: Name,
    owner: Type.String({ minLength: 1, maxLength: 128 }),
    publicKey: Type.String({ minLength: 1, maxLength: 16 * 1024 }),
    release: Type.Optional(Type.Boolean()),
  },
  closed,
);

export const SigningKeyInfoSchema = Type.Object({
  id: Type.String(),
  project: Type.String(),
  owner: Type.String(),
  keyType: Type.String(),
  publicKey: Type.String(),
  fingerprint: Type.String(),
  release: Type.Boolean(),
  createdAt: Iso,
  createdBy: Type.String(),
  revokedAt: Nullable(Iso),
});

/** POST /v1/jobs/signed: a payload (the signed bytes, base64) and its signature. */
export const SignedJobSchema = Type.Object(
  {
    payload: Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', minLength: 4 }),
    signature: Type.Union([
      Type.Object(
        { format: Type.Literal('sshsig'), value: Type.String({ minLength: 1, maxLength: 16 * 1024 }) },
        closed,
      ),
      Type.Object(
        {
          format: Type.Literal('ed25519'),
          key: Type.String({ pattern: '^SHA256:[A-Za-z0-9+/]{43}$' }),
          value: Type.String({ pattern: '^[A-Za-z0-9+/]{86}==$' }),
        },
        closed,
      ),
    ]),
  },
  closed,
);

export const AuditVerificationSchema = Type.Object({
  ok: Type.Boolean(),
  entries: Type.Integer(),
  firstBad: Nullable(
    Type.Object({
      seq: Type.Integer(),
      kind: Type.Union(
        [
          'entry-missing',
          'chain-broken',
          'entry-changed',
          'tree-changed',
          'tail-cut',
          'checkpoint-mismatch',
          'older-than-checkpoint',
        ].map((kind) => Type.Literal(kind)),
      ),
      reason: Type.String(),
    }),
  ),
  head: Nullable(Type.Object({ seq: Type.Integer(), hash: Type.String() })),
  treeSize: Type.Integer(),
  rootHash: Type.String(),
  checkpointsChecked: Type.Integer(),
  against: Nullable(
    Type.Object({ treeSize: Type.Integer(), rootHash: Type.String(), matched: Type.Boolean() }),
  ),
});

export const ClaimSchema = Type.Object(
  {
    worker: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$' }),
    runtimes: Type.Array(Runtime, { minItems: 1, maxItems: 3, uniqueItems: true }),
    waitMs: Type.Integer({ minimum: 0, maximum: 30_000 }),
    start: Type.Optional(Type.Boolean()),
  },
  closed,
);

export const ClaimedJobSchema = Type.Object({
  jobId: Type.String(),
  fence: Type.Integer(),
  attempt: Type.Integer(),
  leaseTtlMs: Type.Integer(),
  leaseExpiresAt: Iso,
  state: Type.Union([Type.Literal('leased'), Type.Literal('running')]),
  spec: Type.Unsafe({ $ref: 'JobSpecV1#' }),
});

const Fence = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });

export const FencedSchema = Type.Object(
  { fence: Fence, reason: Type.Optional(Type.String({ maxLength: 1024 })) },
  closed,
);

export const LeaseStatusSchema = Type.Object({ leaseExpiresAt: Iso, cancel: Type.Boolean() });

/** At most 64 chunks of at most 64 KiB each (base64: 4/3 of that). */
export const LogChunksSchema = Type.Object(
  {
    fence: Fence,
    chunks: Type.Array(
      Type.Object(
        {
          seq: Type.Integer({ minimum: 1, maximum: 10_000_000 }),
          stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]),
          data: Type.String({ maxLength: 87_384, pattern: '^[A-Za-z0-9+/]*={0,2}$' }),
        },
        closed,
      ),
      { minItems: 1, maxItems: 64 },
    ),
  },
  closed,
);

export const ResultReportSchema = Type.Object(
  {
    fence: Fence,
    outcome: Type.Union([Type.Literal('completed'), Type.Literal('error')]),
    result: Nullable(JobRunResultSchema),
    error: Nullable(
      Type.Object(
        { code: Type.String({ pattern: '^[A-Z_]{1,64}$' }), message: Type.String({ maxLength: 4096 }) },
        closed,
      ),
    ),
  },
  closed,
);

export const StateSchema = Type.Object({ state: JobState });

export const ErrorSchema = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String() }),
});

export const WhoAmISchema = Type.Object({
  tokenId: Type.String(),
  principal: Type.String(),
  role: Role,
  projects: Type.Array(Type.String()),
});
