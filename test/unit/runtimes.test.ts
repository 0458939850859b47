import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildOciSpec } from '../../src/sandbox/bundle.js';
import type { CgroupLayout } from '../../src/sandbox/cgroup.js';
import { RUNTIME_NAMES, validateJob } from '../../src/sandbox/job.js';
import {
  classifyStartFailure,
  findExecutable,
  RUNTIME_DRIVERS,
  runtimeLogErrors,
} from '../../src/sandbox/runtimes.js';
import { loadSeccompProfile } from '../../src/sandbox/seccomp.js';

describe('classifyStartFailure', () => {
  // Messages as the runtimes really write them.
  const cases: [string, string, string][] = [
    [
      'runc: command not in PATH',
      'runc run failed: unable to start container process: exec: "nosuchcmd": executable file not found in $PATH',
      'command-not-found',
    ],
    [
      'runc: absolute path that does not exist',
      'runc run failed: unable to start container process: exec: "/nonexistent": stat /nonexistent: no such file or directory',
      'command-not-found',
    ],
    [
      'runc: file without execute permission',
      'runc run failed: unable to start container process: exec: "/workspace/noexec.sh": permission denied',
      'not-executable',
    ],
    [
      'runsc: command not in PATH',
      'running container: starting container: starting root container: starting sandbox: error finding executable "nosuchcmd" in PATH [/usr/local/sbin /usr/bin]: no such file or directory',
      'command-not-found',
    ],
    [
      'runsc: file without execute permission',
      'running container: starting container: starting root container: starting sandbox: creating process: failed to load /workspace/noexec.sh: permission denied',
      'not-executable',
    ],
    [
      'crun: hybrid cgroups',
      'cgroups in hybrid mode not supported, drop all controllers from cgroupv2',
      'runtime-unavailable',
    ],
    ['crun: a mount that fails', 'error mounting "/x": no such file or directory', 'runtime-error'],
    ['anything else', 'container_linux.go:380: starting container process caused: oops', 'runtime-error'],
  ];
  for (const [what, message, kind] of cases) {
    test(`${what} -> ${kind}`, () => {
      assert.deepEqual(classifyStartFailure(message), { kind, message });
    });
  }
});

describe('runtimeLogErrors', () => {
  test("keeps error and fatal messages, drops info and warnings and plain lines but crun's hybrid refusal", () => {
    const log = [
      '{"level":"info","msg":"starting","time":"2024-01-01T00:00:00Z"}',
      '{"level":"warning","msg":"cgroup v1 is deprecated, error-prone"}',
      '{"level":"error","msg":"exec failed: permission denied"}',
      '',
      '{"level":"fatal","msg":"cannot continue"}',
      'crun: error parsing options',
      'just a plain line',
      'cgroups in hybrid mode not supported, drop all controllers from cgroupv2',
      '{"level":"error","msg":42}',
      '   ',
    ].join('\n');
    assert.deepEqual(runtimeLogErrors(log), [
      'exec failed: permission denied',
      'cannot continue',
      'cgroups in hybrid mode not supported, drop all controllers from cgroupv2',
    ]);
  });

  test('an empty log has no errors', () => {
    assert.deepEqual(runtimeLogErrors(''), []);
  });

  test('does not throw on JSON that is not an object', () => {
    assert.deepEqual(runtimeLogErrors('null\n42\n"error"'), []);
  });
});

describe('RuntimeDriver.hostIncompatibility', () => {
  const v1Controllers = {
    memory: '/sys/fs/cgroup/memory',
    cpu: '/sys/fs/cgroup/cpu,cpuacct',
    cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
    pids: '/sys/fs/cgroup/pids',
    freezer: '/sys/fs/cgroup/freezer',
  };
  const hybrid = (controllers: string[]): CgroupLayout => ({
    version: 1,
    controllers: v1Controllers,
    allMounts: [...Object.values(v1Controllers), '/sys/fs/cgroup/unified'],
    unified: { mount: '/sys/fs/cgroup/unified', controllers },
  });
  const legacy: CgroupLayout = { version: 1, controllers: v1Controllers, allMounts: [], unified: null };
  const unified: CgroupLayout = { version: 2, mount: '/sys/fs/cgroup', allMounts: ['/sys/fs/cgroup'] };

  test('crun refuses a hybrid host whose v2 hierarchy has controllers, and says so', () => {
    const reason = RUNTIME_DRIVERS.crun.hostIncompatibility(hybrid(['hugetlb']));
    assert.equal(typeof reason, 'string');
    assert.match(reason ?? '', /hybrid/);
    assert.match(reason ?? '', /hugetlb/);
  });

  test('crun runs on a hybrid host with an empty v2 hierarchy, on cgroup v1 and on cgroup v2', () => {
    assert.equal(RUNTIME_DRIVERS.crun.hostIncompatibility(hybrid([])), null);
    assert.equal(RUNTIME_DRIVERS.crun.hostIncompatibility(legacy), null);
    assert.equal(RUNTIME_DRIVERS.crun.hostIncompatibility(unified), null);
  });

  test('runc and gvisor have no known incompatibility with any layout', () => {
    for (const layout of [hybrid(['hugetlb']), legacy, unified]) {
      assert.equal(RUNTIME_DRIVERS.runc.hostIncompatibility(layout), null);
      assert.equal(RUNTIME_DRIVERS.gvisor.hostIncompatibility(layout), null);
    }
  });
});

describe('RuntimeDriver.adaptSpec', () => {
  const job = validateJob({ command: ['true'], resources: { pids: 100 } });
  const spec = () =>
    buildOciSpec({
      job,
      rootfsPath: '/r',
      mounts: { imageBinds: ['/usr'], workspaceDir: '/w/work', tmpDir: '/w/tmp', shmBytes: 1 << 20 },
      ids: { base: 2 ** 31, size: 65_536 },
      cgroupsPath: '/airlock/x/ctr',
      cgroupVersion: 2,
      seccomp: loadSeccompProfile(undefined, 'x64').seccomp,
    });

  test('runc and crun use the bundle as it is', () => {
    const input = spec();
    assert.equal(RUNTIME_DRIVERS.runc.adaptSpec(input), input);
    assert.equal(RUNTIME_DRIVERS.crun.adaptSpec(input), input);
  });

  test('gvisor returns a copy and leaves its input alone', () => {
    const input = spec();
    const before = structuredClone(input);
    const adapted = RUNTIME_DRIVERS.gvisor.adaptSpec(input);
    assert.notEqual(adapted, input);
    assert.deepEqual(input, before);
  });

  test('gvisor lets clone3 through to its own kernel (which answers ENOSYS) and keeps clone filtered', () => {
    const adapted = RUNTIME_DRIVERS.gvisor.adaptSpec(spec());
    const clone3 = adapted.linux.seccomp.syscalls.filter((rule) => rule.names.includes('clone3'));
    assert.deepEqual(clone3, [{ names: ['clone3'], action: 'SCMP_ACT_ALLOW' }]);
    const clone = adapted.linux.seccomp.syscalls.filter((rule) => rule.names.includes('clone'));
    assert.ok(clone.length > 0);
    for (const rule of clone) assert.ok((rule.args ?? []).length > 0, 'clone stays conditional');
  });

  test("gvisor raises the host pids limit to the driver's hostPids, above the job's", () => {
    const adapted = RUNTIME_DRIVERS.gvisor.adaptSpec(spec());
    assert.equal(adapted.linux.resources.pids.limit, RUNTIME_DRIVERS.gvisor.hostPids(100));
    assert.ok(RUNTIME_DRIVERS.gvisor.hostPids(100) > 100);
    // The job itself is still held to its own limit inside gVisor's kernel.
    const nproc = adapted.process.rlimits.find((rlimit) => rlimit.type === 'RLIMIT_NPROC');
    assert.equal(nproc?.hard, 100);
  });

  test('gvisor changes nothing else', () => {
    const input = spec();
    const adapted = RUNTIME_DRIVERS.gvisor.adaptSpec(input);
    const strip = (s: typeof input) => ({
      ...s,
      linux: {
        ...s.linux,
        resources: { ...s.linux.resources, pids: { limit: 0 } },
        seccomp: {
          ...s.linux.seccomp,
          syscalls: s.linux.seccomp.syscalls.filter((r) => !r.names.includes('clone3')),
        },
      },
    });
    assert.deepEqual(strip(adapted), strip(input));
  });

  test('runc and crun host pids equal the job pids', () => {
    assert.equal(RUNTIME_DRIVERS.runc.hostPids(100), 100);
    assert.equal(RUNTIME_DRIVERS.crun.hostPids(100), 100);
  });
});

describe('RuntimeDriver arguments', () => {
  test('every driver is registered under its own name', () => {
    assert.deepEqual(Object.keys(RUNTIME_DRIVERS).sort(), [...RUNTIME_NAMES].sort());
    for (const name of RUNTIME_NAMES) assert.equal(RUNTIME_DRIVERS[name].name, name);
  });

  test('gvisor applies the OCI seccomp profile and has no network', () => {
    const args = RUNTIME_DRIVERS.gvisor.globalArgs('/state', null);
    assert.ok(args.includes('--oci-seccomp'));
    assert.ok(args.includes('--network=none'));
  });

  test('every driver uses its own state root and logs JSON only when asked', () => {
    for (const name of RUNTIME_NAMES) {
      const driver = RUNTIME_DRIVERS[name];
      assert.ok(driver.globalArgs('/state/x', null).join(' ').includes('/state/x'), name);
      assert.ok(!driver.globalArgs('/state/x', null).join(' ').includes('json'), name);
      const logged = driver.globalArgs('/state/x', '/log/file').join(' ');
      assert.ok(logged.includes('/log/file') && logged.includes('json'), name);
      assert.ok(driver.runArgs('/bundle', 'al-1').includes('/bundle'), name);
      assert.deepEqual(driver.killArgs('al-1', 'KILL').slice(-2), ['al-1', 'KILL'], name);
      assert.ok(driver.killArgs('al-1', 'KILL').includes('--all'), `${name} kills every process`);
    }
  });
});

describe('findExecutable', () => {
  test('finds sh in PATH', () => {
    const path = findExecutable('sh');
    assert.ok(path !== null);
    assert.ok(path.startsWith('/') && path.endsWith('/sh'), path);
  });

  test('returns null for a name that is nowhere', () => {
    assert.equal(findExecutable('airlock-no-such-program-7f3a'), null);
  });

  test('searches only the given PATH', () => {
    assert.equal(findExecutable('sh', '/nonexistent-dir'), null);
    assert.equal(findExecutable('sh', ''), null);
  });

  test('checks an absolute path as it is', () => {
    const sh = findExecutable('sh');
    assert.ok(sh);
    assert.equal(findExecutable(sh, ''), sh);
    assert.equal(findExecutable('/nonexistent/sh'), null);
  });

  test('a file that is not executable is not found', () => {
    assert.equal(findExecutable('/etc/passwd'), null);
  });
});
