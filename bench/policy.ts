import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { JobSpecV1 } from '../src/api/types.js';
import { MerkleAuditLog } from '../src/audit/audit-log.js';
import type { Principal } from '../src/auth/principal.js';
import { JobEvents } from '../src/jobs/events.js';
import { JobService } from '../src/jobs/service.js';
import { admitJob } from '../src/policy/admission.js';
import { DEFAULT_POLICY } from '../src/policy/cedar-text.js';
import { PolicyDocuments } from '../src/policy/documents.js';
import { CedarEngine } from '../src/policy/engine.js';
import { factsOfSpec } from '../src/policy/facts.js';
import { PolicyGate } from '../src/policy/gate.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';

/**
 * What policy adds to a submit (issue 4: under 1 ms at the median). Measured on a real
 * SQLite store holding the project's history, with the default policy in force:
 *  - the Cedar decision alone (request built, evaluated against the pre-parsed set);
 *  - the whole admission step of a submit: the policy in force read, risk from the
 *    project's history (first run of the script, recent resources), the profile looked
 *    up, the decision — everything policy does inside the submit transaction;
 *  - the same with a second version rolled out in audit mode (two evaluations, a counter);
 *  - beside them, a whole in-process submit (transaction, audit append, fsync), so the
 *    share policy takes of a submit is a ratio measured in the same run.
 */

export interface PolicyBenchOptions {
  readonly history: number;
  readonly samples: number;
  readonly log: (message: string) => void;
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const us = (ms: number): string => `${(ms * 1000).toFixed(0)} µs`;

export async function policyBench(options: PolicyBenchOptions): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-policy-bench-'));
  const store = SqliteStore.open({ path: join(dir, 'data', 'airlock.db') });
  try {
    const audit = new MerkleAuditLog({ hmacKey: randomBytes(32) });
    const engine = new CedarEngine();
    const gate = new PolicyGate({ store, audit, engine });
    const documents = new PolicyDocuments({ store, audit, gate });
    await documents.bootstrap('bench');
    const jobs = new JobService({
      store,
      audit,
      policy: gate,
      events: new JobEvents(),
      maxAttempts: 3,
      projectQueueLimit: 1_000_000,
    });
    const who: Principal = {
      tokenId: 'tok_bench',
      name: 'bench',
      role: 'submitter',
      projects: ['bench'],
      source: '127.0.0.1',
    };
    const spec = (i: number): JobSpecV1 => ({
      version: 1,
      project: 'bench',
      command: ['sh', '-c', `make test-${i % 50}`],
      resources: { memoryMiB: 256 + (i % 4) * 128 },
    });
    options.log(`policy: ${options.history} jobs of history`);
    for (let i = 0; i < options.history; i++) await jobs.submit(who, spec(i), null);

    const time = async (
      count: number,
      work: (i: number) => Promise<unknown> | unknown,
    ): Promise<number[]> => {
      const samples: number[] = [];
      for (let i = 0; i < count; i++) {
        const start = performance.now();
        await work(i);
        samples.push(performance.now() - start);
      }
      return samples;
    };
    const active = await store.read(async (tx) => gate.active(tx));
    const facts = factsOfSpec(spec(1), null);
    // Warm-up: the first evaluation of a set is not what a steady server pays.
    await time(200, () =>
      gate.decide(active, who, 'job.submit', { kind: 'project', project: 'bench' }, facts),
    );
    const decide = await time(options.samples, () =>
      gate.decide(active, who, 'job.submit', { kind: 'project', project: 'bench' }, facts),
    );
    const admission = await time(options.samples, (i) =>
      store.read(async (tx) => admitJob(gate, tx, who, spec(i), null, Date.now())),
    );
    const submits = await time(Math.min(options.samples, 500), (i) => jobs.submit(who, spec(i), null));

    // A second version rolled out in audit mode: both evaluated, the shadow counted.
    const admin: Principal = { tokenId: 'tok_a', name: 'alice', role: 'admin', projects: ['*'], source: '' };
    const proposal = await documents.propose(admin, {
      kind: 'policy',
      scope: '',
      mode: 'audit',
      content: `${DEFAULT_POLICY}\n@id("bench-shadow") forbid (principal, action == Airlock::Action::"job.submit", resource) when { context.project == "other" };\n`,
      rationale: 'bench',
    });
    await documents.approve({ ...admin, name: 'bob' }, 'policy', '', proposal.version);
    const shadowed = await time(options.samples, (i) =>
      store.transaction(async (tx) => admitJob(gate, tx, who, spec(i), null, Date.now())),
    );

    const median = (values: number[]) => percentile(values, 50);
    const share = median(admission) / median(submits);
    return [
      `Policy per submit (default policy, ${options.history} jobs of project history, ${options.samples} samples each):`,
      '',
      '| step | median | p99 |',
      '|---|---|---|',
      `| Cedar decision alone (request built and evaluated) | ${us(median(decide))} | ${us(percentile(decide, 99))} |`,
      `| admission: policy in force read, risk from history, profile, decision | ${us(median(admission))} | ${us(percentile(admission, 99))} |`,
      `| admission with a second version in audit mode (two evaluations, a counter) | ${us(median(shadowed))} | ${us(percentile(shadowed, 99))} |`,
      `| a whole in-process submit (transaction, audit append, fsync) | ${us(median(submits))} | ${us(percentile(submits, 99))} |`,
      '',
      `Policy adds ${us(median(admission))} per submit at the median (target: under 1 ms): ${(share * 100).toFixed(0)}% of an in-process submit measured in the same run.`,
    ];
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}
