import type { AuditVerification } from '../api/types.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { type AgainstCheckpoint, verifyLog } from './audit-log.js';

/**
 * `airlock audit verify --database FILE [--against CHECKPOINT]`: checks a copy of the SQLite
 * database (a backup handed to an auditor) without a server. Opened read-only.
 */
export async function verifyAuditDatabase(
  path: string,
  against?: AgainstCheckpoint,
): Promise<AuditVerification> {
  const store = SqliteStore.open({ path, readonly: true });
  try {
    return await verifyLog(store, against);
  } finally {
    await store.close();
  }
}

/** The verifier keys a database copy names (public parts only). */
export async function databaseKeys(path: string): Promise<string[]> {
  const store = SqliteStore.open({ path, readonly: true });
  try {
    return (await store.read(async (tx) => tx.audit.keys())).map((key) => key.verifierKey);
  } finally {
    await store.close();
  }
}
