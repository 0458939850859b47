import { randomInt } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import type { IdRange } from './namespaces.js';
import { processesWithUidIn } from './procfs.js';
import { isOwnerTempFile, type Owner, ownerAlive, readOwner, writeOwner } from './state.js';

/**
 * Per-job host UID/GID ranges (DESIGN §4: concurrent jobs never share a host UID).
 * The pool is `count` ranges of 65536 IDs starting at `base` (a multiple of 65536), far
 * above the IDs of host users and of /etc/subuid ranges. Range n (IDs n*65536 ...) is leased
 * by creating <ids>/<n> exclusively (link(2) of a complete record), so no two Airlock
 * processes on one host ever hand out the same range, whatever state directory they use.
 */

export const RANGE_SIZE = 65_536;

export interface IdPool {
  readonly dir: string;
  readonly base: number;
  readonly count: number;
}

export interface IdLease extends IdRange {
  readonly slot: number;
  release(): Promise<void>;
}

export function rangeOfSlot(pool: IdPool, slot: number): IdRange {
  return { base: pool.base + slot * RANGE_SIZE, size: RANGE_SIZE };
}

export function checkIdPool(base: number, count: number): void {
  // Aligned ranges: lease names are host range numbers, so pools with different bases must
  // never cut ranges at different places (they would overlap).
  if (!Number.isInteger(base) || base < RANGE_SIZE || base % RANGE_SIZE !== 0) {
    throw new RangeError('ID pool base must be a multiple of 65536, at least 65536');
  }
  if (!Number.isInteger(count) || count < 1) throw new RangeError('ID pool count must be a positive integer');
  // 2^32-1 is the invalid ID (-1); the last usable ID must stay below it.
  if (base + count * RANGE_SIZE > 0xffff_fffe)
    throw new RangeError('ID pool extends past the largest valid ID');
}

export async function leaseIdRange(pool: IdPool, owner: Owner, jobId: string): Promise<IdLease> {
  // Random probing keeps allocation O(1) while the pool is mostly free; a bounded number of
  // attempts, then a full scan, so a nearly full pool still finds its last free slot.
  const tryOrder: number[] = [];
  for (let i = 0; i < 32; i += 1) tryOrder.push(randomInt(pool.count));
  for (let slot = 0; slot < pool.count; slot += 1) tryOrder.push(slot);
  for (const slot of tryOrder) {
    // Named by the host range number, so pools with different bases still exclude each other.
    const path = join(pool.dir, String(pool.base / RANGE_SIZE + slot));
    try {
      await writeOwner(path, owner, { jobId });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new AirlockError('SANDBOX_SETUP_FAILED', `cannot lease a host UID range in ${pool.dir}`, {
        cause: error,
      });
    }
    const range = rangeOfSlot(pool, slot);
    return {
      ...range,
      slot,
      release: async () => {
        // Only our own record: a second release must not free a range another job leased since.
        let record: { jobId?: unknown; pid?: unknown } | null = null;
        try {
          record = JSON.parse(readFileSync(path, 'utf8')) as { jobId?: unknown; pid?: unknown };
        } catch {
          // gone or unreadable: not ours to remove
        }
        if (record?.jobId === jobId && record.pid === owner.pid) {
          try {
            unlinkSync(path);
          } catch {
            // gone meanwhile
          }
        }
      },
    };
  }
  throw new AirlockError(
    'SANDBOX_SETUP_FAILED',
    `all ${pool.count} host UID ranges are in use; wait for jobs to finish or raise AIRLOCK_SANDBOX_ID_RANGES`,
  );
}

/**
 * Removes leases whose owner process is gone and whose range no process uses any more. A dead
 * owner's job may still run (its own installation's sweep has not killed it yet): its range
 * stays leased until then, so it is never handed to a second job while the first still runs.
 */
export async function sweepIdLeases(pool: IdPool): Promise<number> {
  let removed = 0;
  let names: string[];
  try {
    names = await readdir(pool.dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const path = join(pool.dir, name);
    if (isOwnerTempFile(name)) {
      // A temp record is only ever half-way through writeOwner(); a minute old means its writer died.
      const age = await stat(path).then(
        (info) => Date.now() - info.mtimeMs,
        () => 0,
      );
      if (age > 60_000) await unlink(path).catch(() => undefined);
      continue;
    }
    const owner = await readOwner(path);
    if (owner !== null && ownerAlive(owner)) continue;
    const range = Number(name);
    if (Number.isSafeInteger(range) && range > 0) {
      const base = range * RANGE_SIZE;
      if ((await processesWithUidIn(base, base + RANGE_SIZE)).length > 0) continue;
    }
    await unlink(path).catch(() => undefined);
    removed += 1;
  }
  return removed;
}
