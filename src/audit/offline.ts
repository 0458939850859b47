import type { AuditVerification } from '../api/types.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { verifyChain } from './audit-log.js';

/**
 * `airlock audit verify --database FILE`: checks the chain in a copy of the SQLite
 * database (a backup handed to an auditor) without a server. Opened read-only.
 */
export async function verifyAuditDatabase(path: string): Promise<AuditVerification> {
  const store = SqliteStore.open({ path, readonly: true });
  try {
    return await verifyChain(store);
  } finally {
    await store.close();
  }
}
