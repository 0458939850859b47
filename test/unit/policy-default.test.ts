import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AuditLog } from '../../src/audit/audit-log.js';
import type { Action, Principal } from '../../src/auth/principal.js';
import { isAirlockError } from '../../src/errors.js';
import { DEFAULT_POLICY } from '../../src/policy/cedar-text.js';
import { CedarEngine } from '../../src/policy/engine.js';
import { PolicyGate } from '../../src/policy/gate.js';
import type { JobFacts, PolicyTarget } from '../../src/policy/request.js';
import type { Store } from '../../src/store/store.js';

/**
 * The default policy as a table: request → expected decision and the policies that decide.
 * Each row is one least-privilege promise of docs/policy.md; removing a policy from the
 * default set fails the rows that name it.
 */

const engine = new CedarEngine();
const compiled = engine.compile(DEFAULT_POLICY);
const active = { enforce: { version: 1, compiled }, audit: null };
// decide() reads nothing from the store or the audit log: the gate is used here for its
// role ceiling and its decision, which are pure.
const gate = new PolicyGate({
  store: {} as Store,
  audit: {} as AuditLog,
  engine,
  now: () => Date.UTC(2026, 10, 29, 12),
});

function principal(role: Principal['role'], extra: Partial<Principal> = {}): Principal {
  return { tokenId: 'tok_0', name: `${role}-1`, role, projects: ['web'], source: '127.0.0.1', ...extra };
}

function job(overrides: Partial<JobFacts> = {}): JobFacts {
  return {
    project: 'web',
    environment: 'dev',
    runtime: 'runc',
    image: 'host',
    imageDigest: '',
    imageApproved: false,
    signer: null,
    resources: { cpus: 1, memoryMiB: 512, pids: 256, timeoutSeconds: 60, diskMiB: 1024, outputKiB: 1024 },
    egress: [],
    secrets: [],
    risk: { score: 45, factors: ['unsigned', 'new-script'] },
    scriptDigest: `sha256:${'0'.repeat(64)}`,
    profile: { runtimes: ['runc', 'crun', 'gvisor'], egress: [], secrets: [] },
    ...overrides,
  };
}

const DIGEST = `sha256:${'ab'.repeat(32)}`;
/** A digest-pinned image, approved or not (context.imageDigest, context.imageApproved). */
const pinned = (approved: boolean): Partial<JobFacts> => ({
  image: `web-base@${DIGEST}`,
  imageDigest: DIGEST,
  imageApproved: approved,
});
const release = { key: 'key_1', fingerprint: 'SHA256:x', owner: 'ops', release: true };
const plainKey = { ...release, release: false };
const project: PolicyTarget = { kind: 'project', project: 'web' };
const service: PolicyTarget = { kind: 'service' };
const aJob: PolicyTarget = {
  kind: 'job',
  id: 'job_x',
  project: 'web',
  environment: 'dev',
  submittedBy: 'someone',
};

interface Row {
  readonly name: string;
  readonly who: Principal;
  readonly action: Action;
  readonly target: PolicyTarget;
  readonly job: JobFacts | null;
  /** Expected: 'allow', or the forbids that decide ([] = no permit matched). */
  readonly expect: 'allow' | readonly string[];
  /** A refusal by the role ceiling (FORBIDDEN) before Cedar is asked. */
  readonly forbiddenByRole?: boolean;
}

const submitter = principal('submitter');
const TABLE: readonly Row[] = [
  {
    name: 'unsigned dev job',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job(),
    expect: 'allow',
  },
  {
    name: 'unsigned staging job',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'staging' }),
    expect: ['unsigned-only-in-dev'],
  },
  {
    name: 'signed staging job',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'staging', signer: plainKey, risk: { score: 15, factors: ['new-script'] } }),
    expect: 'allow',
  },
  {
    name: 'unsigned prod job under gvisor',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'prod', runtime: 'gvisor' }),
    expect: ['prod-needs-release-key', 'unsigned-only-in-dev'],
  },
  {
    name: 'prod job signed by a key that is not a release key',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'prod', runtime: 'gvisor', signer: plainKey, risk: { score: 30, factors: [] } }),
    expect: ['prod-needs-release-key'],
  },
  {
    name: 'prod job signed by a release key under runc',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'prod', runtime: 'runc', signer: release, risk: { score: 30, factors: [] } }),
    expect: ['prod-needs-gvisor'],
  },
  {
    name: 'prod job signed by a release key under gvisor',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'prod', runtime: 'gvisor', signer: release, risk: { score: 30, factors: [] } }),
    expect: 'allow',
  },
  {
    name: 'even an admin cannot run unsigned code in prod',
    who: principal('admin'),
    action: 'job.submit',
    target: project,
    job: job({ environment: 'prod', runtime: 'gvisor' }),
    expect: ['prod-needs-release-key', 'unsigned-only-in-dev'],
  },
  {
    name: 'risk 60 under runc',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ risk: { score: 60, factors: ['unsigned', 'new-script', 'egress'] } }),
    expect: ['high-risk-needs-gvisor'],
  },
  {
    name: 'risk 59 under runc',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ risk: { score: 59, factors: [] } }),
    expect: 'allow',
  },
  {
    name: 'risk 60 under gvisor',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ runtime: 'gvisor', risk: { score: 60, factors: [] } }),
    expect: 'allow',
  },
  {
    name: 'egress the profile does not list',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ egress: ['registry.npmjs.org:443'] }),
    expect: ['egress-within-profile'],
  },
  {
    name: 'egress the profile lists',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({
      egress: ['registry.npmjs.org:443'],
      profile: { runtimes: ['runc'], egress: ['registry.npmjs.org:443'], secrets: [] },
    }),
    expect: 'allow',
  },
  {
    name: 'a secret the profile does not list',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ secrets: ['npm-token'] }),
    expect: ['secrets-within-profile'],
  },
  {
    name: 'dev memory above its ceiling',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ resources: { ...job().resources, memoryMiB: 8192 } }),
    expect: ['dev-ceilings'],
  },
  {
    name: 'dev CPUs above its ceiling (thousandths compared)',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ resources: { ...job().resources, cpus: 2.001 } }),
    expect: ['dev-ceilings'],
  },
  {
    name: 'dev CPUs a hair above the ceiling (rounded up, not to nearest)',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ resources: { ...job().resources, cpus: 2.0004 } }),
    expect: ['dev-ceilings'],
  },
  {
    name: 'dev CPUs exactly at the ceiling',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ resources: { ...job().resources, cpus: 2 } }),
    expect: 'allow',
  },
  {
    name: 'dev output above its ceiling',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ resources: { ...job().resources, outputKiB: 16385 } }),
    expect: ['dev-ceilings'],
  },
  {
    name: 'staging memory within its ceiling',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({
      environment: 'staging',
      signer: plainKey,
      resources: { ...job().resources, memoryMiB: 8192 },
    }),
    expect: 'allow',
  },
  {
    name: 'prod timeout above its ceiling',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({
      environment: 'prod',
      runtime: 'gvisor',
      signer: release,
      resources: { ...job().resources, timeoutSeconds: 14401 },
    }),
    expect: ['prod-ceilings'],
  },
  {
    name: 'an environment the policy does not know',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ environment: 'qa', signer: plainKey }),
    expect: ['known-environments'],
  },
  {
    name: 'a workload identity submitting to dev',
    who: principal('submitter', {
      origin: {
        issuer: 'https://ci.example',
        subject: 'repo:org/web:ref:refs/heads/main',
        repository: 'org/web',
        ref: 'refs/heads/main',
        workflow: 'ci',
        environment: '',
      },
    }),
    action: 'job.submit',
    target: project,
    job: job(),
    expect: 'allow',
  },
  {
    name: 'an unapproved pinned image in dev',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ ...pinned(false), risk: { score: 15, factors: ['unapproved-image'] } }),
    expect: 'allow',
  },
  {
    name: 'an unapproved pinned image in staging, signed',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({
      ...pinned(false),
      environment: 'staging',
      signer: plainKey,
      risk: { score: 15, factors: [] },
    }),
    expect: ['approved-images-outside-dev'],
  },
  {
    name: 'an approved pinned image in staging, signed',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({ ...pinned(true), environment: 'staging', signer: plainKey, risk: { score: 15, factors: [] } }),
    expect: 'allow',
  },
  {
    name: 'an unapproved pinned image in prod, release key, gvisor',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({
      ...pinned(false),
      environment: 'prod',
      runtime: 'gvisor',
      signer: release,
      risk: { score: 30, factors: [] },
    }),
    expect: ['approved-images-outside-dev'],
  },
  {
    name: 'an approved pinned image in prod, release key, gvisor',
    who: submitter,
    action: 'job.submit',
    target: project,
    job: job({
      ...pinned(true),
      environment: 'prod',
      runtime: 'gvisor',
      signer: release,
      risk: { score: 30, factors: [] },
    }),
    expect: 'allow',
  },
  {
    name: 'a viewer reads a job',
    who: principal('viewer'),
    action: 'job.read',
    target: aJob,
    job: job(),
    expect: 'allow',
  },
  {
    name: 'a submitter cancels a job',
    who: submitter,
    action: 'job.cancel',
    target: aJob,
    job: job(),
    expect: 'allow',
  },
  {
    name: 'an admin manages tokens',
    who: principal('admin'),
    action: 'token.manage',
    target: service,
    job: null,
    expect: 'allow',
  },
  {
    name: 'an admin approves policy',
    who: principal('admin'),
    action: 'policy.approve',
    target: service,
    job: null,
    expect: 'allow',
  },
  {
    name: 'a submitter reads policy',
    who: submitter,
    action: 'policy.read',
    target: service,
    job: null,
    expect: 'allow',
  },
  {
    name: 'a viewer reads image approvals',
    who: principal('viewer'),
    action: 'image.read',
    target: service,
    job: null,
    expect: 'allow',
  },
  {
    name: 'a submitter reads image approvals',
    who: submitter,
    action: 'image.read',
    target: service,
    job: null,
    expect: 'allow',
  },
  {
    name: 'an admin approves an image',
    who: principal('admin'),
    action: 'image.manage',
    target: service,
    job: null,
    expect: 'allow',
  },
  {
    name: 'a submitter approves an image',
    who: submitter,
    action: 'image.manage',
    target: service,
    job: null,
    expect: [],
    forbiddenByRole: true,
  },
  {
    name: 'a viewer submits',
    who: principal('viewer'),
    action: 'job.submit',
    target: project,
    job: job(),
    expect: [],
    forbiddenByRole: true,
  },
  {
    name: 'a submitter manages tokens',
    who: submitter,
    action: 'token.manage',
    target: service,
    job: null,
    expect: [],
    forbiddenByRole: true,
  },
  {
    name: 'a submitter approves policy',
    who: submitter,
    action: 'policy.approve',
    target: service,
    job: null,
    expect: [],
    forbiddenByRole: true,
  },
];

describe('the default policy, as a table', () => {
  for (const row of TABLE)
    test(`${row.name} → ${row.expect === 'allow' ? 'allow' : `deny ${row.expect.join(', ') || '(no permit)'}`}`, () => {
      const run = () => gate.decide(active, row.who, row.action, row.target, row.job);
      if (row.expect === 'allow') {
        const decision = run();
        assert.equal(decision.allowed, true);
        assert.equal(decision.version, 1);
        assert.equal(decision.hash, compiled.hash);
        assert.ok(decision.policies.length > 0, 'an allow names the permit that matched');
        return;
      }
      const expected = row.expect;
      assert.throws(run, (error: unknown) => {
        if (row.forbiddenByRole === true) return isAirlockError(error, 'FORBIDDEN');
        if (!isAirlockError(error, 'POLICY_DENIED')) return false;
        for (const id of expected) assert.match(error.message, new RegExp(id));
        return true;
      });
    });

  test('the role ceiling holds even if a policy permits more', () => {
    const lenient = engine.compile('@id("all") permit (principal, action, resource);');
    assert.throws(
      () =>
        gate.decide(
          { enforce: { version: 2, compiled: lenient }, audit: null },
          principal('viewer'),
          'job.submit',
          project,
          job(),
        ),
      (error: unknown) => isAirlockError(error, 'FORBIDDEN'),
    );
  });

  test('a policy in audit mode is evaluated beside the one in force and refuses nothing', () => {
    const stricter = engine.compile(
      `${DEFAULT_POLICY}\n@id("no-web") forbid (principal, action == Airlock::Action::"job.submit", resource) when { context.project == "web" };`,
    );
    const decision = gate.decide(
      { enforce: { version: 1, compiled }, audit: { version: 2, compiled: stricter } },
      submitter,
      'job.submit',
      project,
      job(),
    );
    assert.equal(decision.allowed, true);
    assert.deepEqual(decision.shadow, {
      version: 2,
      hash: stricter.hash,
      allowed: false,
      policies: ['no-web'],
    });
  });
});

describe('the Cedar engine', () => {
  test('a policy set is compiled once per version (cached by hash)', () => {
    assert.equal(engine.compile(DEFAULT_POLICY), compiled);
    assert.equal(compiled.hash.length, 64);
    assert.ok(compiled.policyIds.includes('unsigned-only-in-dev'));
  });

  const invalid: ReadonlyArray<[string, string]> = [
    ['does not parse', 'permit (principal, action, resource'],
    ['a policy without an @id', 'permit (principal, action, resource);'],
    [
      'two policies with one @id',
      '@id("a") permit (principal, action, resource);\n@id("a") forbid (principal, action, resource);',
    ],
    [
      'an attribute the schema does not have',
      '@id("a") forbid (principal, action == Airlock::Action::"job.submit", resource) when { context.nosuch == 1 };',
    ],
    [
      'a type error',
      '@id("a") forbid (principal, action == Airlock::Action::"job.submit", resource) when { context.environment > 3 };',
    ],
    ['a template', '@id("t") permit (principal == ?principal, action, resource);'],
    ['an empty set', '// nothing'],
  ];
  for (const [name, text] of invalid)
    test(`refuses ${name} (POLICY_INVALID)`, () => {
      assert.throws(
        () => engine.compile(text),
        (error: unknown) => isAirlockError(error, 'POLICY_INVALID'),
      );
    });

  test('an evaluation error refuses the request (fail closed), even where a permit matched', () => {
    // Long overflow is an evaluation error; Cedar alone would skip the erroring forbid and allow.
    const overflowing = engine.compile(
      '@id("all") permit (principal, action, resource);\n@id("boom") forbid (principal, action, resource) when { context.risk.score + 9223372036854775807 > 0 };',
    );
    assert.throws(
      () =>
        gate.decide(
          { enforce: { version: 3, compiled: overflowing }, audit: null },
          submitter,
          'job.submit',
          project,
          job({ risk: { score: 1, factors: [] } }),
        ),
      (error: unknown) => isAirlockError(error, 'POLICY_ERROR') && /boom/.test(error.message),
    );
  });

  test('a request that does not match the schema is an error, not a silent deny', () => {
    assert.throws(
      () =>
        engine.decide(compiled, {
          principal: { type: 'Airlock::Principal', id: 'x' },
          action: 'job.submit',
          resource: { type: 'Airlock::Project', id: 'web' },
          context: { environment: 'dev' },
          entities: [],
        }),
      (error: unknown) => isAirlockError(error, 'POLICY_ERROR'),
    );
  });
});

describe('policy text bounds and audit-mode errors', () => {
  test('text nested too deep or a policy too long is refused before Cedar parses it, and the engine goes on', () => {
    const deep = `@id("deep") forbid (principal, action, resource) when { ${'('.repeat(120)}context.signed${')'.repeat(120)} };`;
    const long = `@id("long") forbid (principal, action, resource) when { ${Array(3000).fill('context.signed').join(' && ')} };`;
    for (const text of [deep, long])
      assert.throws(
        () => engine.compile(text),
        (error: unknown) =>
          isAirlockError(error, 'POLICY_INVALID') && /nested deeper|tokens/.test(error.message),
      );
    // Parentheses inside strings and comments do not count.
    assert.doesNotThrow(() =>
      engine.compile(
        `${DEFAULT_POLICY}\n// ${'('.repeat(100)}\n@id("str") forbid (principal, action, resource) when { context.project == "${'('.repeat(100)}" };`,
      ),
    );
    assert.equal(engine.broken, null);
    assert.equal(gate.decide(active, submitter, 'job.submit', project, job()).allowed, true);
  });

  test('a version in audit mode that errors counts as a would-deny and refuses nothing', () => {
    const erroring = engine.compile(
      `${DEFAULT_POLICY}\n@id("boom") forbid (principal, action, resource) when { context.risk.score + 9223372036854775807 > 0 };`,
    );
    const decision = gate.decide(
      { enforce: { version: 1, compiled }, audit: { version: 9, compiled: erroring } },
      submitter,
      'job.submit',
      project,
      job(),
    );
    assert.equal(decision.allowed, true);
    assert.equal(decision.shadow?.allowed, false);
    assert.deepEqual(decision.shadow?.policies, ['(evaluation error)']);
  });
});

describe('a failure inside the WebAssembly module', () => {
  test('marks the engine broken: this and every later decision and compile are refused', async () => {
    const { createRequire } = await import('node:module');
    const real = createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs');
    let trap = false;
    const wrapped = {
      ...real,
      statefulIsAuthorized: (call: unknown) => {
        if (trap) {
          const error = new Error('memory access out of bounds');
          error.name = 'RuntimeError';
          throw error;
        }
        return real.statefulIsAuthorized(call);
      },
    };
    const fragile = new CedarEngine({ module: () => wrapped });
    const set = fragile.compile(DEFAULT_POLICY);
    const fragileGate = new PolicyGate({ store: {} as Store, audit: {} as AuditLog, engine: fragile });
    const decide = () =>
      fragileGate.decide(
        { enforce: { version: 1, compiled: set }, audit: null },
        submitter,
        'job.submit',
        project,
        job(),
      );
    assert.equal(decide().allowed, true);
    trap = true;
    assert.throws(
      decide,
      (error: unknown) => isAirlockError(error, 'POLICY_ERROR') && /restart/.test(error.message),
    );
    assert.match(fragile.broken ?? '', /memory access out of bounds/);
    trap = false;
    // Its memory may be corrupt: nothing is trusted from it again, even what would now work.
    assert.throws(
      decide,
      (error: unknown) => isAirlockError(error, 'POLICY_ERROR') && /failed earlier/.test(error.message),
    );
    assert.throws(
      () =>
        fragile.compile(
          `${DEFAULT_POLICY}\n@id("x") forbid (principal, action, resource) when { context.signed };`,
        ),
      (error: unknown) => isAirlockError(error, 'POLICY_ERROR'),
    );
  });
});
