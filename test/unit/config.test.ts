import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { loadConfig, SETTINGS } from '../../src/config/config.js';
import { AirlockError } from '../../src/errors.js';

/** The AirlockError loadConfig throws for a bad `name`: INVALID_CONFIG, and the message names it. */
function refusal(name: string): { name: string; code: string; message: RegExp } {
  return { name: 'AirlockError', code: 'INVALID_CONFIG', message: new RegExp(`\\b${name}\\b`) };
}

describe('loadConfig', () => {
  test('an empty environment gives the documented defaults', () => {
    assert.deepEqual(loadConfig({ HOME: '/home/someone' }), {
      sandbox: {
        dir: '/var/lib/airlock/sandbox',
        idBase: 2_147_483_648,
        idRanges: 4096,
        killGraceMs: 1000,
        runtimePaths: {},
        seccompProfile: undefined,
        egress: { grants: [], hostsFile: undefined, maxBytes: 1024 ** 3, maxConnections: 1000 },
      },
      server: {
        dataDir: '/var/lib/airlock/data',
        host: '127.0.0.1',
        port: 7340,
        leaseTtlMs: 30_000,
        maxAttempts: 3,
        projectQueueLimit: 1000,
        bodyLimitBytes: 4 * 1024 * 1024,
        logLevel: 'info',
        checkpointIntervalMs: 60_000,
        checkpointSink: null,
      },
      client: { url: undefined, token: undefined, configFile: '/home/someone/.config/airlock/client.json' },
    });
  });

  test('reads the server and client settings', () => {
    const config = loadConfig({
      HOME: '/home/someone',
      XDG_CONFIG_HOME: '/xdg',
      AIRLOCK_DATA_DIR: '/srv/data',
      AIRLOCK_LISTEN: '[::1]:0',
      AIRLOCK_LEASE_TTL: '5s',
      AIRLOCK_JOB_ATTEMPTS: '7',
      AIRLOCK_PROJECT_QUEUE_LIMIT: '20',
      AIRLOCK_MAX_BODY: '1M',
      AIRLOCK_LOG_LEVEL: 'warn',
      AIRLOCK_CHECKPOINT_INTERVAL: '0',
      AIRLOCK_CHECKPOINT_SINK: 'dir:/srv/checkpoints',
      AIRLOCK_URL: 'https://airlock.example:7340',
      AIRLOCK_TOKEN: 'alk_x',
    });
    assert.deepEqual(config.server, {
      dataDir: '/srv/data',
      host: '::1',
      port: 0,
      leaseTtlMs: 5000,
      maxAttempts: 7,
      projectQueueLimit: 20,
      bodyLimitBytes: 1024 * 1024,
      logLevel: 'warn',
      checkpointIntervalMs: 0,
      checkpointSink: 'dir:/srv/checkpoints',
    });
    assert.deepEqual(config.client, {
      url: 'https://airlock.example:7340',
      token: 'alk_x',
      configFile: '/xdg/airlock/client.json',
    });
    assert.equal(
      loadConfig({ AIRLOCK_CLIENT_CONFIG: '/etc/airlock/client.json' }).client.configFile,
      '/etc/airlock/client.json',
    );
  });

  test('refuses bad server and client settings with the setting named', () => {
    for (const [name, value] of [
      ['AIRLOCK_LISTEN', '7340'],
      ['AIRLOCK_LISTEN', 'host:99999'],
      ['AIRLOCK_LEASE_TTL', '10ms'],
      ['AIRLOCK_JOB_ATTEMPTS', '0'],
      ['AIRLOCK_MAX_BODY', '1K'],
      ['AIRLOCK_LOG_LEVEL', 'loud'],
      ['AIRLOCK_URL', 'ftp://x'],
      ['AIRLOCK_DATA_DIR', 'relative'],
      ['AIRLOCK_CLIENT_CONFIG', 'relative.json'],
    ] as const) {
      assert.throws(
        () => loadConfig({ [name]: value }),
        (error: unknown) =>
          error instanceof AirlockError && error.code === 'INVALID_CONFIG' && error.message.startsWith(name),
        `${name}=${value}`,
      );
    }
  });

  test('reads every setting', () => {
    const config = loadConfig({
      AIRLOCK_SANDBOX_DIR: '/srv/airlock',
      AIRLOCK_SANDBOX_ID_BASE: String(65_536 * 100),
      AIRLOCK_SANDBOX_ID_RANGES: '10',
      AIRLOCK_KILL_GRACE: '500ms',
      AIRLOCK_RUNC: '/opt/runc',
      AIRLOCK_CRUN: '/opt/crun',
      AIRLOCK_RUNSC: '/opt/runsc',
      AIRLOCK_SECCOMP_PROFILE: '/etc/airlock/seccomp.json',
      AIRLOCK_EGRESS_GRANTS: '10.20.0.0/16, fd00:1::/64',
      AIRLOCK_EGRESS_HOSTS: '/etc/airlock/egress-hosts.json',
      AIRLOCK_EGRESS_MAX_BYTES: '256MiB',
      AIRLOCK_EGRESS_MAX_CONNECTIONS: '50',
    });
    assert.deepEqual(config.sandbox, {
      dir: '/srv/airlock',
      idBase: 6_553_600,
      idRanges: 10,
      killGraceMs: 500,
      runtimePaths: { runc: '/opt/runc', crun: '/opt/crun', gvisor: '/opt/runsc' },
      seccompProfile: '/etc/airlock/seccomp.json',
      egress: {
        grants: ['10.20.0.0/16', 'fd00:1::/64'],
        hostsFile: '/etc/airlock/egress-hosts.json',
        maxBytes: 256 * 1024 ** 2,
        maxConnections: 50,
      },
    });
  });

  test('accepts the edges of the ranges', () => {
    assert.equal(loadConfig({ AIRLOCK_KILL_GRACE: '60s' }).sandbox.killGraceMs, 60_000);
    assert.equal(loadConfig({ AIRLOCK_KILL_GRACE: '0' }).sandbox.killGraceMs, 0);
    assert.equal(loadConfig({ AIRLOCK_SANDBOX_ID_BASE: '65536' }).sandbox.idBase, 65_536);
    // The lowest base leaves room for 65534 ranges below the largest valid ID.
    assert.equal(
      loadConfig({ AIRLOCK_SANDBOX_ID_BASE: '65536', AIRLOCK_SANDBOX_ID_RANGES: '65534' }).sandbox.idRanges,
      65_534,
    );
  });

  test('AIRLOCK (no underscore) is not a setting and is allowed', () => {
    assert.equal(loadConfig({ AIRLOCK: '1' }).sandbox.dir, '/var/lib/airlock/sandbox');
  });

  test('variables that do not start with AIRLOCK_ are ignored', () => {
    assert.deepEqual(
      loadConfig({ PATH: '/bin', AIRLOCKED: 'x', airlock_sandbox_dir: 'relative' }),
      loadConfig({}),
    );
  });

  test('an unknown AIRLOCK_ variable is refused, naming it', () => {
    assert.throws(() => loadConfig({ AIRLOCK_FOO: '1' }), refusal('AIRLOCK_FOO'));
    // A typo of a real setting is the case this guards against.
    assert.throws(() => loadConfig({ AIRLOCK_SANDBOX_DIRS: '/x' }), refusal('AIRLOCK_SANDBOX_DIRS'));
    assert.throws(() => loadConfig({ AIRLOCK_: '1' }), refusal('AIRLOCK_'));
  });

  const invalid: [string, string][] = [
    ['AIRLOCK_SANDBOX_DIR', 'var/lib/airlock'],
    ['AIRLOCK_SANDBOX_DIR', './state'],
    ['AIRLOCK_SANDBOX_DIR', '/var/lib/air\0lock'],
    ['AIRLOCK_SANDBOX_ID_BASE', 'lots'],
    ['AIRLOCK_SANDBOX_ID_BASE', '-65536'],
    ['AIRLOCK_SANDBOX_ID_BASE', '0'],
    ['AIRLOCK_SANDBOX_ID_BASE', '65535'],
    ['AIRLOCK_SANDBOX_ID_BASE', '65536.0'],
    ['AIRLOCK_SANDBOX_ID_BASE', '0x80000000'],
    ['AIRLOCK_SANDBOX_ID_BASE', '4294967296'],
    ['AIRLOCK_SANDBOX_ID_RANGES', '0'],
    ['AIRLOCK_SANDBOX_ID_RANGES', '65536'],
    ['AIRLOCK_SANDBOX_ID_RANGES', '1.5'],
    ['AIRLOCK_SANDBOX_ID_RANGES', 'many'],
    ['AIRLOCK_KILL_GRACE', 'soon'],
    ['AIRLOCK_KILL_GRACE', '-1s'],
    ['AIRLOCK_KILL_GRACE', '61s'],
    ['AIRLOCK_KILL_GRACE', '2m'],
    ['AIRLOCK_RUNC', 'runc'],
    ['AIRLOCK_CRUN', 'bin/crun'],
    ['AIRLOCK_RUNSC', 'runsc'],
    ['AIRLOCK_SECCOMP_PROFILE', 'profile.json'],
    ['AIRLOCK_EGRESS_GRANTS', '0.0.0.0/0'],
    ['AIRLOCK_EGRESS_GRANTS', '10.1.2.3/16'],
    ['AIRLOCK_EGRESS_HOSTS', 'hosts.json'],
    ['AIRLOCK_EGRESS_MAX_BYTES', 'lots'],
    ['AIRLOCK_EGRESS_MAX_CONNECTIONS', '0'],
  ];
  for (const [name, value] of invalid) {
    test(`refuses ${name}=${JSON.stringify(value)} with INVALID_CONFIG naming ${name}`, () => {
      assert.throws(() => loadConfig({ [name]: value }), refusal(name));
    });
  }

  test('refuses ID ranges that pass the largest valid ID', () => {
    assert.throws(
      () => loadConfig({ AIRLOCK_SANDBOX_ID_BASE: String(0xfff0_0000), AIRLOCK_SANDBOX_ID_RANGES: '16' }),
      refusal('AIRLOCK_SANDBOX_ID_RANGES'),
    );
    // One range fewer fits.
    assert.equal(
      loadConfig({ AIRLOCK_SANDBOX_ID_BASE: String(0xfff0_0000), AIRLOCK_SANDBOX_ID_RANGES: '15' }).sandbox
        .idRanges,
      15,
    );
  });

  test('refuses AIRLOCK_SANDBOX_ID_BASE that is not a multiple of 65536', () => {
    for (const value of ['2147483649', '2147516416', '100000']) {
      assert.throws(() => loadConfig({ AIRLOCK_SANDBOX_ID_BASE: value }), refusal('AIRLOCK_SANDBOX_ID_BASE'));
    }
  });
});

describe('docs/configuration.md', () => {
  // From dist/test/unit/config.test.js to the repository's docs/.
  const docUrl = new URL('../../../docs/configuration.md', import.meta.url);

  function documentedNames(): Set<string> {
    const text = readFileSync(docUrl, 'utf8');
    return new Set(text.match(/AIRLOCK_[A-Z_]+/g) ?? []);
  }

  test('documents every setting', () => {
    const documented = documentedNames();
    const missing = Object.keys(SETTINGS).filter((name) => !documented.has(name));
    assert.deepEqual(missing, [], `settings missing from docs/configuration.md: ${missing.join(', ')}`);
  });

  test('documents no setting that does not exist', () => {
    const unknown = [...documentedNames()].filter((name) => !(name in SETTINGS));
    assert.deepEqual(unknown, [], `docs/configuration.md names unknown settings: ${unknown.join(', ')}`);
  });
});
