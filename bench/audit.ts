import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MerkleAuditLog, verifyLog } from '../src/audit/audit-log.js';
import { StoredTree } from '../src/audit/merkle.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';

/**
 * The audit log's costs as it grows (issue 5): the cost of one append (median and p99) at
 * 1K, 10K, 100K and 1M entries — inside a transaction (the log's own work: encoding, hashes,
 * entry and tree-node inserts) and as a transaction of its own (plus the commit's fsync, what
 * one audited action pays) — the time to verify the whole log, and the size and time of
 * inclusion and consistency proofs. The log is grown between milestones in transactions of
 * 1000 appends; only the samples at each milestone are timed.
 */

export interface AuditBenchOptions {
  readonly entries: number;
  readonly log: (message: string) => void;
}

const SAMPLE_IN_TX = 2000;
const SAMPLE_OWN_TX = 200;
const PROOFS = 500;
const BATCH = 1000;

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const us = (ms: number): string => `${(ms * 1000).toFixed(1)} µs`;

function event(i: number) {
  return {
    actor: 'bench',
    action: 'job.submit',
    target: `job:job_${String(i).padStart(26, '0')}`,
    outcome: 'succeeded' as const,
    source: '127.0.0.1',
    details: {
      project: 'bench',
      environment: 'dev',
      runtime: 'runc',
      command: ['true'],
      requestHash: 'ab'.repeat(32),
    },
  };
}

export async function auditBench(options: AuditBenchOptions): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-audit-bench-'));
  const store = SqliteStore.open({ path: join(dir, 'data', 'airlock.db') });
  const audit = new MerkleAuditLog({ hmacKey: randomBytes(32) });
  const milestones = [1_000, 10_000, 100_000, 1_000_000].filter((m) => m <= options.entries);
  let size = 0;
  const grow = async (count: number, timed: number[] | null): Promise<void> => {
    while (count > 0) {
      const batch = Math.min(BATCH, count);
      await store.transaction(async (tx) => {
        for (let i = 0; i < batch; i++) {
          const start = performance.now();
          await audit.append(tx, event(size + i));
          timed?.push(performance.now() - start);
        }
      });
      size += batch;
      count -= batch;
    }
  };
  const rows: string[] = [];
  const medians = new Map<number, number>();
  try {
    for (const milestone of milestones) {
      await grow(milestone - size, null);
      options.log(`audit: ${size} entries; timing appends`);
      const inTx: number[] = [];
      await grow(SAMPLE_IN_TX, inTx);
      const ownTx: number[] = [];
      for (let i = 0; i < SAMPLE_OWN_TX; i++) {
        const start = performance.now();
        await store.transaction(async (tx) => {
          await audit.append(tx, event(size));
        });
        ownTx.push(performance.now() - start);
        size += 1;
      }
      const median = percentile(inTx, 50);
      medians.set(milestone, median);
      rows.push(
        `| ${milestone.toLocaleString('en')} | ${us(median)} | ${us(percentile(inTx, 99))} | ${us(percentile(ownTx, 50))} | ${us(percentile(ownTx, 99))} |`,
      );
    }
    options.log(`audit: verifying ${size} entries`);
    const verifyStart = performance.now();
    const verified = await verifyLog(store);
    const verifyMs = performance.now() - verifyStart;
    if (!verified.ok) throw new Error(`the bench log does not verify: ${JSON.stringify(verified.firstBad)}`);

    options.log('audit: proofs');
    const inclusion: number[] = [];
    const consistency: number[] = [];
    let inclusionHashes = 0;
    let consistencyHashes = 0;
    await store.read(async (tx) => {
      for (let i = 0; i < PROOFS; i++) {
        const leaf = Math.floor(Math.random() * size);
        let start = performance.now();
        const proof = await new StoredTree(tx.audit).inclusionProof(leaf, size);
        inclusion.push(performance.now() - start);
        inclusionHashes = Math.max(inclusionHashes, proof.length);
        const old = 1 + Math.floor(Math.random() * (size - 1));
        start = performance.now();
        const link = await new StoredTree(tx.audit).consistencyProof(old, size);
        consistency.push(performance.now() - start);
        consistencyHashes = Math.max(consistencyHashes, link.length);
      }
    });
    const first = medians.get(milestones[0] ?? 0) ?? 0;
    const last = medians.get(milestones.at(-1) ?? 0) ?? 0;
    return [
      `Audit log (bench/audit.ts), grown to ${size.toLocaleString('en')} entries on SQLite (WAL, each transaction synced to disk before it returns):`,
      '',
      '| entries | append in a transaction, median | p99 | append as its own transaction (with fsync), median | p99 |',
      '| --- | --- | --- | --- | --- |',
      ...rows,
      '',
      `Append cost at ${(milestones.at(-1) ?? 0).toLocaleString('en')} entries is ${(last / first).toFixed(2)}× the cost at ${(milestones[0] ?? 0).toLocaleString('en')} (median, in a transaction).`,
      `Full verification of ${verified.entries.toLocaleString('en')} entries (chain, every leaf and tree node, own checkpoints): ${(verifyMs / 1000).toFixed(1)} s (${us(verifyMs / verified.entries)} per entry).`,
      `Inclusion proof at ${size.toLocaleString('en')} entries: at most ${inclusionHashes} hashes (${inclusionHashes * 32} bytes), median ${us(percentile(inclusion, 50))}, p99 ${us(percentile(inclusion, 99))} to build (${PROOFS} random leaves).`,
      `Consistency proof to ${size.toLocaleString('en')} entries: at most ${consistencyHashes} hashes (${consistencyHashes * 32} bytes), median ${us(percentile(consistency, 50))}, p99 ${us(percentile(consistency, 99))} to build (${PROOFS} random old sizes).`,
    ];
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}
