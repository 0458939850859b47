import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type CgroupLayout,
  cgroupScope,
  describeLayout,
  JobCgroup,
  jobCgroupDirs,
  layoutFromMounts,
} from '../../src/sandbox/cgroup.js';
import { parseMountInfo } from '../../src/sandbox/mountinfo.js';

/** A mountinfo line for a cgroup hierarchy (super options carry the controllers). */
function cgroupLine(
  id: number,
  mountPoint: string,
  type: 'cgroup' | 'cgroup2',
  superOptions: string,
): string {
  return `${id} 31 0:${id} / ${mountPoint} rw,nosuid,nodev,noexec,relatime shared:${id} - ${type} ${type} ${superOptions}`;
}

const BASE_LINES = [
  '27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
];

const V1_NAMES = ['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'blkio', 'pids'];

/** A v1 host with each controller in its own hierarchy, a named systemd one, and optionally a hybrid v2. */
function v1Mounts(options: { unified?: boolean; without?: string } = {}): string {
  const lines = [...BASE_LINES];
  let id = 40;
  for (const name of V1_NAMES) {
    if (name !== options.without)
      lines.push(cgroupLine(id++, `/sys/fs/cgroup/${name}`, 'cgroup', `rw,${name}`));
  }
  lines.push(cgroupLine(id++, '/sys/fs/cgroup/systemd', 'cgroup', 'rw,xattr,name=systemd'));
  if (options.unified === true)
    lines.push(cgroupLine(id++, '/sys/fs/cgroup/unified', 'cgroup2', 'rw,nsdelegate'));
  return lines.join('\n');
}

function controllersOf(map: Record<string, string>): (dir: string) => string {
  return (dir) => {
    const text = map[dir];
    if (text === undefined) throw new Error(`unexpected read of ${dir}`);
    return text;
  };
}

describe('layoutFromMounts', () => {
  test('hybrid v1+v2: version 1, each controller at its hierarchy, v2 controllers read', () => {
    const layout = layoutFromMounts(
      parseMountInfo(v1Mounts({ unified: true })),
      controllersOf({ '/sys/fs/cgroup/unified': 'hugetlb\n' }),
    );
    assert.equal(layout.version, 1);
    assert.ok(layout.version === 1);
    assert.deepEqual(layout.controllers, {
      memory: '/sys/fs/cgroup/memory',
      cpu: '/sys/fs/cgroup/cpu',
      cpuacct: '/sys/fs/cgroup/cpuacct',
      pids: '/sys/fs/cgroup/pids',
      freezer: '/sys/fs/cgroup/freezer',
    });
    assert.deepEqual(layout.unified, { mount: '/sys/fs/cgroup/unified', controllers: ['hugetlb'] });
    // Every cgroup hierarchy is kept for clean-up, and nothing that is not one.
    assert.deepEqual(
      [...layout.allMounts].sort(),
      [
        ...V1_NAMES.map((name) => `/sys/fs/cgroup/${name}`),
        '/sys/fs/cgroup/systemd',
        '/sys/fs/cgroup/unified',
      ].sort(),
    );
  });

  test('a hybrid v2 hierarchy without controllers has an empty list', () => {
    const layout = layoutFromMounts(
      parseMountInfo(v1Mounts({ unified: true })),
      controllersOf({ '/sys/fs/cgroup/unified': '' }),
    );
    assert.ok(layout.version === 1);
    assert.deepEqual(layout.unified?.controllers, []);
  });

  test('legacy v1 without a v2 hierarchy has unified null', () => {
    const layout = layoutFromMounts(parseMountInfo(v1Mounts()), controllersOf({}));
    assert.ok(layout.version === 1);
    assert.equal(layout.unified, null);
  });

  test('co-mounted cpu,cpuacct maps both controllers to the one directory', () => {
    const text = [
      ...BASE_LINES,
      cgroupLine(40, '/sys/fs/cgroup/cpu,cpuacct', 'cgroup', 'rw,cpu,cpuacct'),
      cgroupLine(41, '/sys/fs/cgroup/cpuset', 'cgroup', 'rw,cpuset'),
      cgroupLine(42, '/sys/fs/cgroup/memory', 'cgroup', 'rw,memory'),
      cgroupLine(43, '/sys/fs/cgroup/pids', 'cgroup', 'rw,pids'),
      cgroupLine(44, '/sys/fs/cgroup/freezer', 'cgroup', 'rw,freezer'),
    ].join('\n');
    const layout = layoutFromMounts(parseMountInfo(text), controllersOf({}));
    assert.ok(layout.version === 1);
    assert.equal(layout.controllers.cpu, '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(layout.controllers.cpuacct, '/sys/fs/cgroup/cpu,cpuacct');
    // "cpuset" is not "cpu".
    assert.notEqual(layout.controllers.cpu, '/sys/fs/cgroup/cpuset');
  });

  test('pure v2: version 2 at the cgroup2 mount', () => {
    const text = [
      ...BASE_LINES.slice(0, 1),
      cgroupLine(30, '/sys/fs/cgroup', 'cgroup2', 'rw,nsdelegate'),
    ].join('\n');
    const layout = layoutFromMounts(parseMountInfo(text), controllersOf({}));
    assert.deepEqual(layout, { version: 2, mount: '/sys/fs/cgroup', allMounts: ['/sys/fs/cgroup'] });
  });

  test('no cgroup mount at all is HOST_UNSUPPORTED', () => {
    assert.throws(() => layoutFromMounts(parseMountInfo(BASE_LINES.join('\n')), controllersOf({})), {
      name: 'AirlockError',
      code: 'HOST_UNSUPPORTED',
    });
  });

  for (const missing of ['freezer', 'memory', 'pids', 'cpu', 'cpuacct']) {
    test(`a v1 host without the ${missing} controller is HOST_UNSUPPORTED naming it`, () => {
      assert.throws(
        () => layoutFromMounts(parseMountInfo(v1Mounts({ unified: true, without: missing })), () => ''),
        { name: 'AirlockError', code: 'HOST_UNSUPPORTED', message: new RegExp(`"${missing}"`) },
      );
    });
  }
});

describe('describeLayout', () => {
  const controllers = {
    memory: '/m',
    cpu: '/c',
    cpuacct: '/c',
    pids: '/p',
    freezer: '/f',
  };

  test('names each layout', () => {
    assert.equal(
      describeLayout({ version: 2, mount: '/sys/fs/cgroup', allMounts: [] }),
      'cgroup v2 (unified) at /sys/fs/cgroup',
    );
    assert.equal(
      describeLayout({ version: 1, controllers, allMounts: [], unified: null }),
      'cgroup v1 (legacy)',
    );
    assert.equal(
      describeLayout({
        version: 1,
        controllers,
        allMounts: [],
        unified: { mount: '/u', controllers: ['hugetlb'] },
      }),
      'cgroup v1+v2 hybrid (v2 at /u has hugetlb)',
    );
    assert.equal(
      describeLayout({ version: 1, controllers, allMounts: [], unified: { mount: '/u', controllers: [] } }),
      'cgroup v1+v2 hybrid (v2 at /u has no controllers)',
    );
  });
});

describe('cgroup scope and job cgroup', () => {
  const layout: CgroupLayout = {
    version: 2,
    mount: '/sys/fs/cgroup',
    allMounts: ['/sys/fs/cgroup', '/sys/fs/cgroup/systemd'],
  };

  test('each state directory gets its own group under airlock/, the same one every time', () => {
    const a = cgroupScope(layout, '/a');
    const b = cgroupScope(layout, '/b');
    assert.notEqual(a.group, b.group);
    assert.match(a.group, /^airlock\/[^/]+$/);
    assert.match(b.group, /^airlock\/[^/]+$/);
    assert.equal(cgroupScope(layout, '/a').group, a.group);
    assert.equal(a.layout, layout);
  });

  test("the container's cgroup path is /<scope>/<job>/ctr", () => {
    const scope = cgroupScope(layout, '/var/lib/airlock/sandbox');
    const cgroup = new JobCgroup(scope, 'al-0123456789abcdef');
    assert.equal(cgroup.containerPath, `/${scope.group}/al-0123456789abcdef/ctr`);
  });

  test("the job's cgroup directory is in every hierarchy", () => {
    const scope = cgroupScope(layout, '/a');
    assert.deepEqual(jobCgroupDirs(scope, 'al-1'), [
      `/sys/fs/cgroup/${scope.group}/al-1`,
      `/sys/fs/cgroup/systemd/${scope.group}/al-1`,
    ]);
  });
});
