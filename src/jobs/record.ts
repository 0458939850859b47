import { randomBytes } from 'node:crypto';
import type { JobRecord } from '../api/types.js';
import type { JobRow } from '../store/store.js';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function toRecord(row: JobRow): JobRecord {
  return {
    id: row.id,
    project: row.project,
    environment: row.environment,
    state: row.state,
    spec: row.spec,
    submittedBy: row.submittedBy,
    createdAt: new Date(row.createdAt).toISOString(),
    updatedAt: new Date(row.updatedAt).toISOString(),
    startedAt: iso(row.startedAt),
    finishedAt: iso(row.finishedAt),
    attempts: row.attempts,
    maxAttempts: row.maxAttempts,
    worker: row.worker,
    cancelRequested: row.cancelRequested,
    result: row.result,
    reason: row.reason,
    exitStatus: row.exitStatus,
    trust: row.trust,
  };
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** "job_" + 26 base32 characters: 128 random bits, unguessable. */
export function newJobId(): string {
  const bytes = randomBytes(17);
  let out = '';
  for (let i = 0; i < 26; i++) {
    const bit = i * 5;
    const byte = bit >> 3;
    const value = (((bytes[byte] ?? 0) << 8) | (bytes[byte + 1] ?? 0)) >> (11 - (bit & 7));
    out += BASE32[value & 31];
  }
  return `job_${out}`;
}

export const JOB_ID_PATTERN = '^job_[a-z2-7]{26}$';
