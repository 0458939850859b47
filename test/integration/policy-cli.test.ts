import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { JobSpecV1 } from '../../src/api/types.js';
import { DEFAULT_POLICY } from '../../src/policy/cedar-text.js';
import { scriptDigestOf } from '../../src/policy/risk.js';
import { type CliRun, runCli } from './helpers.js';
import { type CliProcess, call, startCli, startTestServer, type TestServer } from './server-helpers.js';

/**
 * `airlock policy …` and `airlock profile …` end to end: the real CLI against a real server.
 * Two admins, "admin" (the bootstrap token) and "bob": every change is proposed by one and
 * must be approved by the other. The steps build on each other, in order: the default
 * policy as v1; a proposal (v2) refused to its own author, approved by bob, diffed; a
 * rollback (v3) to v1; a rule rolled out in audit mode (v4), its would-denials counted, then
 * enforced; malformed proposals; a project's profile and one script's, enforced at submit;
 * a profile suggested from past runs. Jobs are only submitted (no worker: they stay queued).
 */

const NO_LEGACY = `
@id("no-legacy")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { context.project == "legacy" };
`;
const NO_SHADOWED = `
@id("no-shadowed")
forbid (principal, action == Airlock::Action::"job.submit", resource)
when { context.project == "shadowed" };
`;

function refused(run: CliRun, code: string): void {
  assert.equal(run.code, 125, `expected ${code}, got exit ${run.code}: ${run.stdout}${run.stderr}`);
  assert.match(run.stderr, new RegExp(`^airlock: ${code}: `, 'm'), run.stderr);
}

function ok(run: CliRun): CliRun {
  assert.equal(run.code, 0, `exit ${run.code}: ${run.stderr}`);
  return run;
}

describe('airlock policy / airlock profile', () => {
  let server: TestServer;
  let dir: string;
  let alice: NodeJS.ProcessEnv;
  let bob: NodeJS.ProcessEnv;
  /** As the bootstrap admin ("admin"). */
  const asAdmin = (...args: string[]): Promise<CliRun> => runCli(args, alice);
  const asBob = (...args: string[]): Promise<CliRun> => runCli(args, bob);
  const file = async (name: string, content: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  };
  const submit = (spec: Record<string, unknown>) => server.call('POST', '/v1/jobs', server.admin, spec);
  const job = (project: string, extra: Record<string, unknown> = {}) => ({
    version: 1,
    project,
    command: ['true'],
    ...extra,
  });
  const status = async () => JSON.parse(ok(await asAdmin('policy', 'status', '--json')).stdout);

  before(async () => {
    server = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'airlock-policy-cli-'));
    const created = await server.call('POST', '/v1/tokens', server.admin, {
      principal: 'bob',
      role: 'admin',
      projects: ['*'],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    alice = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: server.admin, HOME: dir };
    bob = { AIRLOCK_URL: server.url, AIRLOCK_TOKEN: created.body.secret, HOME: dir };
  });
  after(async () => {
    await server?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  test('the default policy is version 1, in force, shown exactly as shipped', async () => {
    const text = ok(await asAdmin('policy', 'status')).stdout;
    assert.match(
      text,
      /^Policy in force: v1 \(sha256:[0-9a-f]{12}\), written by system, approved by system/m,
    );
    assert.match(text, /^Audit mode: none$/m);
    assert.match(text, /^Pending proposals:\n {2}none$/m);
    const json = await status();
    assert.equal(json.policy.enforce.version, 1);
    assert.equal(json.policy.audit, null);
    assert.deepEqual(json.pending, []);
    assert.equal(ok(await asAdmin('policy', 'show')).stdout, DEFAULT_POLICY);
    const shown = JSON.parse(ok(await asAdmin('policy', 'show', '--version', '1', '--json')).stdout);
    assert.equal(shown.content, DEFAULT_POLICY);
    assert.equal(shown.author, 'system');
    assert.match(
      ok(await asAdmin('policy', 'diff', '--default')).stdout,
      /^no differences between policy v1/,
    );
    // Nothing pending to compare with.
    refused(await asAdmin('policy', 'diff'), 'NOT_FOUND');
  });

  test('a proposal waits for another admin: its author cannot approve it; bob can', async () => {
    const path = await file('no-legacy.cedar', DEFAULT_POLICY + NO_LEGACY);
    const proposed = ok(await asAdmin('policy', 'propose', path, '--rationale', 'retire the legacy project'));
    assert.match(
      proposed.stdout,
      /^proposed policy v2 \(sha256:[0-9a-f]{12}, mode enforce\), against v1 in force$/m,
    );
    assert.match(proposed.stdout, /another admin approves it: airlock policy approve 2$/m);

    const versions = JSON.parse(ok(await asAdmin('policy', 'history', '--json')).stdout).versions;
    assert.deepEqual(
      versions.map((v: { version: number; state: string; author: string }) => [v.version, v.state, v.author]),
      [
        [2, 'proposed', 'admin'],
        [1, 'approved', 'system'],
      ],
    );
    const table = ok(await asAdmin('policy', 'history')).stdout.split('\n');
    assert.match(table[0] ?? '', /^VERSION +STATE +MODE +AUTHOR +APPROVED BY +WHEN +ROLLBACK OF +RATIONALE$/);
    assert.match(table[1] ?? '', /^v2 +proposed +enforce +admin +- +\S+ \S+ +- +retire the legacy project$/);
    assert.match(table[2] ?? '', /^v1 +in force +enforce +system +system /);
    assert.match(
      ok(await asAdmin('policy', 'status')).stdout,
      /policy v2 +enforce +admin .*airlock policy approve 2/,
    );

    const diff = ok(await asAdmin('policy', 'diff')).stdout;
    assert.match(
      diff,
      /^--- policy v1 \(in force\)\n\+\+\+ policy v2 \(proposed by admin\)\n@@ -\d+,3 \+\d+,7 @@\n/,
    );
    const added = diff.split('\n').filter((line) => line.startsWith('+') && !line.startsWith('+++'));
    assert.deepEqual(
      added,
      NO_LEGACY.trimEnd()
        .split('\n')
        .map((line) => `+${line}`),
    );
    assert.equal(
      diff.split('\n').filter((line) => line.startsWith('-') && !line.startsWith('---')).length,
      0,
    );

    refused(await asAdmin('policy', 'approve', '2'), 'SEPARATION_OF_DUTIES');
    assert.equal((await submit(job('legacy'))).status, 201, 'not in force before approval');

    const approved = ok(await asBob('policy', 'approve', '2'));
    assert.match(approved.stdout, /^policy v2 approved by bob: now in force for every request$/m);
    assert.equal((await status()).policy.enforce.version, 2);
    const denied = await submit(job('legacy'));
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error.code, 'POLICY_DENIED');
    assert.match(denied.body.error.message, /no-legacy/);

    // Named versions, and the build's default against the version in force.
    const named = ok(await asAdmin('policy', 'diff', '1', '2')).stdout;
    assert.match(named, /^--- policy v1 \(approved by system\)\n\+\+\+ policy v2 \(approved by bob\)\n/);
    assert.match(named, /^\+@id\("no-legacy"\)$/m);
    const againstDefault = ok(await asAdmin('policy', 'diff', '--default')).stdout;
    assert.match(againstDefault, /^--- policy v2 \(in force\)\n\+\+\+ the default policy of Airlock /);
    assert.match(againstDefault, /^-@id\("no-legacy"\)$/m);
    const asJson = JSON.parse(ok(await asAdmin('policy', 'diff', '1', '2', '--json')).stdout);
    assert.equal(asJson.changed, true);
    assert.equal(asJson.older.version, 1);
    assert.equal(asJson.newer.version, 2);
    assert.equal(asJson.diff, named);
  });

  test('a rollback is a proposal like any other; once approved the old text is in force', async () => {
    const proposed = ok(await asAdmin('policy', 'rollback', '1', '--rationale', 'legacy is back'));
    assert.match(
      proposed.stdout,
      /^proposed policy v3 \(sha256:[0-9a-f]{12}, mode enforce, a rollback to v1\)/m,
    );
    assert.match(proposed.stdout, /another admin approves it: airlock policy approve 3$/m);
    assert.equal((await status()).policy.enforce.version, 2, 'nothing changes before approval');
    refused(await asAdmin('policy', 'approve', '3'), 'SEPARATION_OF_DUTIES');
    ok(await asBob('policy', 'approve', '3'));

    assert.equal(ok(await asAdmin('policy', 'show')).stdout, DEFAULT_POLICY);
    const v3 = JSON.parse(ok(await asAdmin('policy', 'show', '--json')).stdout);
    const v1 = JSON.parse(ok(await asAdmin('policy', 'show', '--version', '1', '--json')).stdout);
    assert.equal(v3.version, 3);
    assert.equal(v3.rollbackOf, 1);
    assert.equal(v3.contentHash, v1.contentHash);
    const table = ok(await asAdmin('policy', 'history')).stdout.split('\n');
    assert.match(table[1] ?? '', /^v3 +in force +enforce +admin +bob +\S+ \S+ +v1 +legacy is back$/);
    assert.match(table[2] ?? '', /^v2 +approved +enforce +admin +bob /);
    assert.equal((await submit(job('legacy'))).status, 201);
  });

  test('audit mode: would-denials are counted and nothing is refused, until it is enforced', async () => {
    const path = await file('no-shadowed.cedar', DEFAULT_POLICY + NO_SHADOWED);
    const proposed = ok(
      await asAdmin('policy', 'propose', path, '--mode', 'audit', '--rationale', 'try: no jobs for shadowed'),
    );
    assert.match(
      proposed.stdout,
      /^proposed policy v4 \(sha256:[0-9a-f]{12}, mode audit\), against v3 in force$/m,
    );
    assert.match(proposed.stdout, /then airlock policy enforce 4$/m);
    assert.match(
      ok(await asBob('policy', 'approve', '4')).stdout,
      /^policy v4 approved by bob: in audit mode/m,
    );
    const initially = await status();
    assert.equal(initially.policy.enforce.version, 3);
    assert.equal(initially.policy.audit.version, 4);

    for (const project of ['shadowed', 'shadowed', 'other']) {
      const submitted = await submit(job(project));
      assert.equal(submitted.status, 201, `${project}: ${JSON.stringify(submitted.body)}`);
    }
    const counts = (await status()).policy.audit.counts;
    assert.deepEqual(
      counts.find((row: { action: string }) => row.action === 'job.submit'),
      { action: 'job.submit', evaluated: 3, wouldDeny: 2 },
    );
    const text = ok(await asAdmin('policy', 'status')).stdout;
    assert.match(text, /^Audit mode: v4 \(sha256:[0-9a-f]{12}\), written by admin, approved by bob/m);
    assert.match(text, /^ {2}job\.submit +3 +2 of 3 \(67%\)$/m);
    assert.match(text, /^ {2}would deny \d+ of \d+ requests/m);
    assert.match(text, /enforce it \(an admin other than admin\): airlock policy enforce 4$/m);

    refused(await asAdmin('policy', 'enforce', '4'), 'SEPARATION_OF_DUTIES');
    assert.match(
      ok(await asBob('policy', 'enforce', '4')).stdout,
      /^policy v4 switched from audit mode to enforce/,
    );
    const enforced = await status();
    assert.equal(enforced.policy.enforce.version, 4);
    assert.equal(enforced.policy.audit, null);
    const denied = await submit(job('shadowed'));
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error.code, 'POLICY_DENIED');
    assert.match(denied.body.error.message, /no-shadowed/);
  });

  test('malformed proposals and options are refused, and nothing is proposed', async () => {
    const broken = await file('broken.cedar', 'permit (principal, action, resource) when { ');
    refused(await asAdmin('policy', 'propose', broken, '--rationale', 'broken'), 'POLICY_INVALID');
    refused(
      await asAdmin('policy', 'propose', join(dir, 'missing.cedar'), '--rationale', 'x'),
      'INVALID_OPTION',
    );
    const huge = await file('huge.cedar', `// ${'x'.repeat(256 * 1024)}\n`);
    const tooLarge = await asAdmin('policy', 'propose', huge, '--rationale', 'x');
    refused(tooLarge, 'INVALID_OPTION');
    assert.match(tooLarge.stderr, /larger than 256 KiB/);
    refused(await asAdmin('policy', 'propose', dir, '--rationale', 'x'), 'INVALID_OPTION');
    const valid = await file('valid.cedar', DEFAULT_POLICY);
    refused(await asAdmin('policy', 'propose', valid, '--rationale', '   '), 'INVALID_OPTION');
    const noRationale = await asAdmin('policy', 'propose', valid);
    assert.equal(noRationale.code, 125);
    assert.match(noRationale.stderr, /--rationale/);
    const badMode = await asAdmin('policy', 'propose', valid, '--mode', 'maybe', '--rationale', 'x');
    assert.equal(badMode.code, 125);
    assert.match(badMode.stderr, /maybe/);
    refused(await asAdmin('policy', 'approve', 'two'), 'INVALID_OPTION');
    refused(await asAdmin('policy', 'show', '--version', '0'), 'INVALID_OPTION');
    refused(await asAdmin('policy', 'diff', '1', '2', '--default'), 'INVALID_OPTION');
    // Errors under --json are JSON on stdout.
    const missing = await asAdmin('policy', 'approve', '99', '--json');
    assert.equal(missing.code, 125);
    assert.equal(JSON.parse(missing.stdout).error.code, 'NOT_FOUND');
    const versions = JSON.parse(ok(await asAdmin('policy', 'history', '--json')).stdout).versions;
    assert.equal(versions[0].version, 4, 'no version was added');
  });

  test("a project's profile: approved by another admin, then every job beyond it is refused", async () => {
    const shownDefault = ok(await asAdmin('profile', 'show', 'web'));
    assert.match(shownDefault.stderr, /no profile is set for web: the default profile applies/);
    assert.deepEqual(JSON.parse(shownDefault.stdout).runtimes.sort(), ['crun', 'gvisor', 'runc']);

    // Two equal keys (JSON.parse keeps the last one) are refused before anything is sent; not JSON, by the server.
    const twice = await file('twice.json', '{"resources": {"memoryMiB": 256, "memoryMiB": 4096}}');
    const refusedTwice = await asAdmin('profile', 'propose', 'web', twice, '--rationale', 'x');
    refused(refusedTwice, 'INVALID_OPTION');
    assert.match(refusedTwice.stderr, /the key "memoryMiB" twice/);
    refused(
      await asAdmin('profile', 'propose', 'web', await file('bad.json', '{"runtimes": '), '--rationale', 'x'),
      'POLICY_INVALID',
    );
    refused(
      await asAdmin(
        'profile',
        'propose',
        'web',
        await file('big.json', '{"resources": {"memoryMiB": -1}}'),
        '--rationale',
        'x',
      ),
      'POLICY_INVALID',
    );

    const path = await file(
      'web.json',
      JSON.stringify({
        runtimes: ['runc', 'gvisor'],
        resources: { memoryMiB: 256 },
        egress: [],
        secrets: [],
      }),
    );
    const proposed = ok(await asAdmin('profile', 'propose', 'web', path, '--rationale', 'web stays small'));
    assert.match(
      proposed.stdout,
      /^proposed profile web v1 \(sha256:[0-9a-f]{12}\), replacing the default profile$/m,
    );
    assert.match(proposed.stdout, /airlock profile approve web 1$/m);
    refused(await asAdmin('profile', 'approve', 'web', '1'), 'SEPARATION_OF_DUTIES');
    assert.match(
      ok(await asBob('profile', 'approve', 'web', '1')).stdout,
      /^profile web v1 approved by bob: now in force for the jobs of web$/m,
    );

    const tooBig = await submit(job('web', { resources: { memoryMiB: 512 } }));
    assert.equal(tooBig.status, 403);
    assert.equal(tooBig.body.error.code, 'PROFILE_EXCEEDED');
    assert.match(tooBig.body.error.message, /resources\.memoryMiB 512 \(at most 256\)/);
    assert.equal((await submit(job('web', { resources: { memoryMiB: 64 } }))).status, 201);

    assert.equal(JSON.parse(ok(await asAdmin('profile', 'show', 'web')).stdout).resources.memoryMiB, 256);
    assert.match(
      ok(await asAdmin('policy', 'status')).stdout,
      /^Profiles:\n {2}SCOPE +VERSION\n {2}web +v1$/m,
    );
    const history = ok(await asAdmin('profile', 'history', 'web')).stdout.split('\n');
    assert.match(history[1] ?? '', /^v1 +in force +enforce +admin +bob +\S+ \S+ +- +web stays small$/);
  });

  test('profile suggest: the smallest profile covering the runs, and the grants they left unused', async () => {
    const suggested = ok(await asAdmin('profile', 'suggest', 'web'));
    const profile = JSON.parse(suggested.stdout);
    assert.deepEqual(profile.runtimes, ['runc']);
    assert.equal(profile.resources.memoryMiB, 64);
    assert.match(suggested.stderr, /covering the last 1 runs of web \(in force: profile v1\)/);
    assert.match(suggested.stderr, /granted but unused in the last 1 runs — consider retiring:\n/);
    assert.match(suggested.stderr, /^ {2}runtime gvisor$/m);
    assert.match(suggested.stderr, /^ {2}resources\.memoryMiB 256 \(at most 64 used\)$/m);
    const asJson = JSON.parse(
      ok(await asAdmin('profile', 'suggest', 'web', '--runs', '10', '--json')).stdout,
    );
    assert.equal(asJson.runs, 1);
    assert.equal(asJson.current, 1);
    assert.deepEqual(asJson.unused, ['runtime gvisor', 'resources.memoryMiB 256 (at most 64 used)']);
    refused(await asAdmin('profile', 'suggest', 'web', '--runs', '0'), 'INVALID_OPTION');

    // The suggestion as printed is a profile ready to propose; diffed against the one in force.
    const path = await file('web-suggested.json', suggested.stdout);
    ok(await asAdmin('profile', 'propose', 'web', path, '--rationale', 'as used'));
    const diff = ok(await asBob('profile', 'diff', 'web')).stdout;
    assert.match(diff, /^--- profile web v1 \(in force\)\n\+\+\+ profile web v2 \(proposed by admin\)\n/);
    assert.match(diff, /^- {4}"memoryMiB": 256$/m);
    assert.match(diff, /^\+ {4}"memoryMiB": 64,$/m);
    assert.match(diff, /^- {4}"gvisor",$/m);
    // Withdrawn by its author (a rejection by another admin: see the last test).
    assert.match(
      ok(await asAdmin('profile', 'reject', 'web', '2', '--reason', 'too tight')).stdout,
      /^profile web v2 withdrawn by its author$/m,
    );
    const history = ok(await asAdmin('profile', 'history', 'web')).stdout.split('\n');
    assert.match(history[1] ?? '', /^v2 +withdrawn +enforce +admin +- /);
    assert.match(history[2] ?? '', /^v1 +in force /);
    refused(await asBob('profile', 'approve', 'web', '2'), 'POLICY_CONFLICT');
  });

  test("one script's profile (--script) applies to that script only", async () => {
    const big = job('web', { command: ['make', 'build'], resources: { memoryMiB: 1024 } });
    const digest = scriptDigestOf(big as unknown as JobSpecV1);
    assert.equal((await submit(big)).body.error.code, 'PROFILE_EXCEEDED');
    const path = await file(
      'web-build.json',
      JSON.stringify({ runtimes: ['runc'], resources: { memoryMiB: 1024 } }),
    );
    const proposed = ok(
      await asAdmin(
        'profile',
        'propose',
        'web',
        path,
        '--script',
        digest,
        '--rationale',
        'the build needs 1 GiB',
      ),
    );
    assert.match(proposed.stdout, new RegExp(`^proposed profile web@${digest} v1 `, 'm'));
    assert.match(proposed.stdout, new RegExp(`airlock profile approve web 1 --script ${digest}$`, 'm'));
    const approved = ok(await asBob('profile', 'approve', 'web', '1', '--script', digest));
    assert.match(
      approved.stdout,
      new RegExp(`now in force for the jobs of web that run script ${digest}$`, 'm'),
    );

    assert.equal((await submit(big)).status, 201);
    const other = await submit(job('web', { command: ['make', 'test'], resources: { memoryMiB: 1024 } }));
    assert.equal(other.body.error.code, 'PROFILE_EXCEEDED');
    const shown = JSON.parse(
      ok(await asAdmin('profile', 'show', 'web', '--script', digest, '--json')).stdout,
    );
    assert.equal(shown.scope, `web@${digest}`);
    assert.equal(JSON.parse(shown.content).resources.memoryMiB, 1024);
    refused(await asAdmin('profile', 'show', 'web', '--script', 'sha256:abc'), 'INVALID_OPTION');
    refused(await asAdmin('profile', 'show', 'Web'), 'INVALID_OPTION');
  });
});

/**
 * A regression test: rejecting a proposal made by another admin once took a second policy
 * decision (a store read) inside the store transaction of PolicyDocuments.reject, and the
 * SQLite store runs one read or transaction at a time — so the rejection waited for itself
 * and every later request behind it. The server runs in a child process here, so that a
 * wedged one can be killed.
 */
describe('rejecting a proposal of another admin', () => {
  let server: CliProcess | undefined;
  let dir: string | undefined;
  after(async () => {
    await server?.kill('SIGKILL');
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  test('is answered, and the server goes on answering', async () => {
    dir = await mkdtemp(join(tmpdir(), 'airlock-policy-reject-'));
    const env = {
      AIRLOCK_DATA_DIR: join(dir, 'data'),
      AIRLOCK_CLIENT_CONFIG: join(dir, 'client.json'),
      AIRLOCK_LISTEN: '127.0.0.1:0',
      AIRLOCK_LOG_LEVEL: 'warn',
      HOME: dir,
    };
    server = startCli(['server'], env);
    const url = (await server.waitFor(/listening on http:\/\/\S+/, 60_000)).replace('listening on ', '');
    const admin = (JSON.parse(await readFile(env.AIRLOCK_CLIENT_CONFIG, 'utf8')) as { token: string }).token;
    const bob = (
      await call(url, 'POST', '/v1/tokens', admin, { principal: 'bob', role: 'admin', projects: ['*'] })
    ).body.secret as string;
    const proposed = await call(url, 'POST', '/v1/policies/proposals', admin, {
      kind: 'policy',
      scope: '',
      content: DEFAULT_POLICY + NO_LEGACY,
      rationale: 'to be rejected',
    });
    assert.equal(proposed.status, 201, JSON.stringify(proposed.body));
    const rejected = await runCli(
      ['policy', 'reject', String(proposed.body.version), '--reason', 'no'],
      { AIRLOCK_URL: url, AIRLOCK_TOKEN: bob, HOME: dir },
      10_000,
    );
    assert.equal(rejected.code, 0, `exit ${rejected.code ?? rejected.signal}: ${rejected.stderr}`);
    assert.match(rejected.stdout, /^policy v2 rejected by bob$/m);
    const health = await fetch(`${url}/v1/policies/status`, {
      headers: { authorization: `Bearer ${admin}` },
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(health.status, 200);
  });
});
