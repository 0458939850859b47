import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildOciSpec, type SandboxPlan } from '../../src/sandbox/bundle.js';
import { validateJob } from '../../src/sandbox/job.js';
import type { OciMount, OciSpec } from '../../src/sandbox/oci-spec.js';
import { loadSeccompProfile } from '../../src/sandbox/seccomp.js';

/**
 * The hardening baseline of every bundle (DESIGN §4), checked item by item on the spec that
 * buildOciSpec() writes: namespaces, IDs, process, mounts, cgroup resources and devices.
 */

const MiB = 1024 * 1024;
const seccomp = loadSeccompProfile().seccomp;

function plan(overrides: Partial<SandboxPlan> = {}): SandboxPlan {
  return {
    job: validateJob({ command: ['true'] }),
    rootfsPath: '/r',
    mounts: { imageBinds: ['/usr', '/lib32'], workspaceDir: '/w/work', tmpDir: '/w/tmp', shmBytes: 64 << 20 },
    ids: { base: 2_147_483_648, size: 65_536 },
    cgroupsPath: '/airlock/x/ctr',
    cgroupVersion: 1,
    seccomp,
    ...overrides,
  };
}

function mountAt(spec: OciSpec, destination: string): OciMount {
  const found = spec.mounts.filter((mount) => mount.destination === destination);
  assert.equal(found.length, 1, `exactly one mount at ${destination}`);
  return found[0] as OciMount;
}

function sizeOption(mount: OciMount): string | undefined {
  return mount.options.find((option) => option.startsWith('size='));
}

describe('buildOciSpec: namespaces and IDs', () => {
  const spec = buildOciSpec(plan());

  test('exactly the seven namespaces, none joined by path', () => {
    assert.deepEqual(spec.linux.namespaces.map((ns) => ns.type).sort(), [
      'cgroup',
      'ipc',
      'mount',
      'network',
      'pid',
      'user',
      'uts',
    ]);
    for (const ns of spec.linux.namespaces) assert.equal(ns.path, undefined, ns.type);
  });

  test("container IDs 0..65535 map to the job's host range, for users and groups", () => {
    const mapping = [{ containerID: 0, hostID: 2_147_483_648, size: 65_536 }];
    assert.deepEqual(spec.linux.uidMappings, mapping);
    assert.deepEqual(spec.linux.gidMappings, mapping);
  });
});

describe('buildOciSpec: process', () => {
  const job = validateJob({
    command: ['sh', '-c', 'pwd'],
    env: { PWD: '/etc', GREETING: 'hi', HOME: '/home/job' },
    resources: { diskBytes: 64 * MiB, pids: 100 },
  });
  const spec = buildOciSpec(plan({ job }));
  const { process } = spec;

  test('runs the command as uid/gid 1000 with no supplementary groups and no terminal', () => {
    assert.deepEqual(process.args, ['sh', '-c', 'pwd']);
    assert.equal(process.user.uid, 1000);
    assert.equal(process.user.gid, 1000);
    assert.deepEqual(process.user.additionalGids, []);
    assert.equal(process.terminal, false);
  });

  test('no new privileges and all five capability sets empty', () => {
    assert.equal(process.noNewPrivileges, true);
    assert.deepEqual(process.capabilities, {
      bounding: [],
      effective: [],
      inheritable: [],
      permitted: [],
      ambient: [],
    });
  });

  test('rlimits: bounded files, no core dumps, files up to the disk, processes up to pids', () => {
    const limit = (type: string) => process.rlimits.find((rlimit) => rlimit.type === type);
    const nofile = limit('RLIMIT_NOFILE');
    assert.ok(nofile && nofile.soft > 0 && nofile.hard >= nofile.soft);
    assert.deepEqual(limit('RLIMIT_CORE'), { type: 'RLIMIT_CORE', hard: 0, soft: 0 });
    assert.deepEqual(limit('RLIMIT_FSIZE'), { type: 'RLIMIT_FSIZE', hard: 64 * MiB, soft: 64 * MiB });
    assert.deepEqual(limit('RLIMIT_NPROC'), { type: 'RLIMIT_NPROC', hard: 100, soft: 100 });
    // Charged to the host's root user too: bounded per job (decision 0005).
    assert.deepEqual(limit('RLIMIT_SIGPENDING'), { type: 'RLIMIT_SIGPENDING', hard: 1024, soft: 1024 });
    assert.deepEqual(limit('RLIMIT_MEMLOCK'), { type: 'RLIMIT_MEMLOCK', hard: 0, soft: 0 });
  });

  test('oomScoreAdj 1000: the job dies first under host memory pressure', () => {
    assert.equal(process.oomScoreAdj, 1000);
  });

  test("the working directory is /workspace whatever the job's env says", () => {
    assert.equal(process.cwd, '/workspace');
  });

  test("env has PATH, HOME and TMPDIR, and the job's own values win", () => {
    const env = new Map(
      process.env.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]),
    );
    assert.ok(env.get('PATH')?.includes('/usr/bin'));
    assert.equal(env.get('TMPDIR'), '/tmp');
    assert.equal(env.get('HOME'), '/home/job');
    assert.equal(env.get('GREETING'), 'hi');
    assert.equal(env.get('PWD'), '/etc');
    // One entry per name: an override replaces the default, it does not sit beside it.
    assert.equal(env.size, process.env.length);
  });

  test('a job without env gets HOME=/tmp', () => {
    const plain = buildOciSpec(plan());
    assert.ok(plain.process.env.includes('HOME=/tmp'));
  });
});

describe('buildOciSpec: filesystem', () => {
  const spec = buildOciSpec(plan());

  test('the root is read-only and mount events stay private', () => {
    assert.deepEqual(spec.root, { path: '/r', readonly: true });
    assert.equal(spec.linux.rootfsPropagation, 'private');
    assert.equal(spec.hostname, 'sandbox');
  });

  test('masks the /proc and /sys entries that leak host memory, keys or activity', () => {
    for (const path of [
      '/proc/kcore',
      '/proc/keys',
      '/proc/interrupts',
      '/sys/firmware',
      '/sys/devices/virtual/powercap',
      '/proc/timer_list',
      '/proc/sched_debug',
    ]) {
      assert.ok(spec.linux.maskedPaths.includes(path), path);
    }
  });

  test('keeps the dangerous /proc knobs read-only', () => {
    for (const path of ['/proc/sys', '/proc/sysrq-trigger', '/proc/bus', '/proc/fs', '/proc/irq']) {
      assert.ok(spec.linux.readonlyPaths.includes(path), path);
    }
  });

  test('/dev is a small tmpfs, nosuid and noexec', () => {
    const dev = mountAt(spec, '/dev');
    assert.equal(dev.type, 'tmpfs');
    for (const option of ['nosuid', 'noexec']) assert.ok(dev.options.includes(option), option);
    assert.ok(sizeOption(dev), 'a size= option');
  });

  test('/dev/shm is a tmpfs, nosuid, nodev, noexec, capped at the plan size', () => {
    const shm = mountAt(spec, '/dev/shm');
    assert.equal(shm.type, 'tmpfs');
    for (const option of ['nosuid', 'nodev', 'noexec']) assert.ok(shm.options.includes(option), option);
    assert.equal(sizeOption(shm), `size=${64 << 20}`);
  });

  test('/proc and /sys are fresh, nosuid, nodev, noexec; /sys read-only', () => {
    const proc = mountAt(spec, '/proc');
    const sys = mountAt(spec, '/sys');
    assert.equal(proc.type, 'proc');
    assert.equal(sys.type, 'sysfs');
    for (const mount of [proc, sys]) {
      for (const option of ['nosuid', 'nodev', 'noexec']) assert.ok(mount.options.includes(option), option);
    }
    assert.ok(sys.options.includes('ro'));
  });

  test('every image directory is bound read-only, nosuid, nodev at its own path', () => {
    for (const dir of ['/usr', '/lib32']) {
      const bind = mountAt(spec, dir);
      assert.equal(bind.type, 'bind');
      assert.equal(bind.source, dir);
      for (const option of ['ro', 'nosuid', 'nodev'])
        assert.ok(bind.options.includes(option), `${dir} ${option}`);
      assert.ok(!bind.options.includes('rw'), dir);
      // rbind would let a host submount below /usr escape the read-only flag.
      assert.ok(!bind.options.includes('rbind'), dir);
    }
  });

  test("/workspace and /tmp are binds of the plan's directories, nosuid and nodev", () => {
    const workspace = mountAt(spec, '/workspace');
    const tmp = mountAt(spec, '/tmp');
    assert.equal(workspace.source, '/w/work');
    assert.equal(tmp.source, '/w/tmp');
    for (const mount of [workspace, tmp]) {
      assert.equal(mount.type, 'bind');
      for (const option of ['nosuid', 'nodev']) assert.ok(mount.options.includes(option), option);
    }
  });

  test('nothing from the host other than the plan is mounted; no runtime socket', () => {
    const sources = spec.mounts.filter((mount) => mount.type === 'bind').map((mount) => mount.source);
    assert.deepEqual(sources.sort(), ['/lib32', '/usr', '/w/tmp', '/w/work']);
    for (const mount of spec.mounts) {
      assert.ok(!mount.source.startsWith('/var/run') && !mount.source.startsWith('/run'), mount.source);
      assert.doesNotMatch(mount.source, /docker\.sock|containerd/);
    }
  });
});

describe('buildOciSpec: resources', () => {
  const job = validateJob({ command: ['true'], resources: { memoryBytes: 256 * MiB, pids: 50, cpus: 2 } });

  test('memory+swap equals memory: no swap', () => {
    const { memory } = buildOciSpec(plan({ job })).linux.resources;
    assert.equal(memory.limit, 256 * MiB);
    assert.equal(memory.swap, 256 * MiB);
  });

  test('cgroup v1: the OOM killer is disabled (Airlock kills the whole job), no unified keys', () => {
    const { resources } = buildOciSpec(plan({ job, cgroupVersion: 1 })).linux;
    assert.equal(resources.memory.disableOOMKiller, true);
    assert.equal(resources.unified, undefined);
  });

  test('cgroup v2: memory.oom.group so an OOM kill takes every process', () => {
    const { resources } = buildOciSpec(plan({ job, cgroupVersion: 2 })).linux;
    assert.deepEqual(resources.unified, { 'memory.oom.group': '1' });
    assert.notEqual(resources.memory.disableOOMKiller, true);
  });

  test('CPU quota is cpus times the 100 ms period', () => {
    assert.deepEqual(buildOciSpec(plan({ job })).linux.resources.cpu, { quota: 200_000, period: 100_000 });
    const half = validateJob({ command: ['true'], resources: { cpus: 0.5 } });
    assert.deepEqual(buildOciSpec(plan({ job: half })).linux.resources.cpu, {
      quota: 50_000,
      period: 100_000,
    });
  });

  test('pids limit is the job limit', () => {
    assert.deepEqual(buildOciSpec(plan({ job })).linux.resources.pids, { limit: 50 });
  });

  test('devices: deny all first, then exactly null, zero, full, random, urandom, tty', () => {
    const [first, ...rest] = buildOciSpec(plan({ job })).linux.resources.devices;
    assert.deepEqual(first, { allow: false, access: 'rwm' });
    assert.ok(
      first && !('type' in first),
      'the deny-all rule has no type (it covers block and char devices)',
    );
    for (const rule of rest) {
      assert.equal(rule.allow, true);
      assert.equal(rule.type, 'c');
      assert.doesNotMatch(rule.access, /m/, 'no mknod');
    }
    assert.deepEqual(
      rest.map((rule) => `${rule.major}:${rule.minor}`),
      ['1:3', '1:5', '1:7', '1:8', '1:9', '5:0'],
    );
  });
});

describe('buildOciSpec: the rest of the plan', () => {
  test('carries the cgroup path and the seccomp section unchanged', () => {
    const spec = buildOciSpec(plan());
    assert.equal(spec.linux.cgroupsPath, '/airlock/x/ctr');
    assert.deepEqual(spec.linux.seccomp, seccomp);
  });

  test('two specs do not share mutable lists', () => {
    const a = buildOciSpec(plan());
    const b = buildOciSpec(plan());
    a.linux.maskedPaths.pop();
    a.linux.readonlyPaths.pop();
    a.mounts[0]?.options.push('exec');
    assert.ok(b.linux.maskedPaths.includes('/sys/firmware'));
    assert.ok(b.linux.readonlyPaths.includes('/proc/sysrq-trigger'));
    assert.ok(!b.mounts[0]?.options.includes('exec'));
  });
});
