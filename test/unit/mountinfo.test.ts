import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type MountEntry,
  mountsBelow,
  parseMountInfo,
  unescapeMountField,
} from '../../src/sandbox/mountinfo.js';

/** Lines as /proc/self/mountinfo writes them: zero or more optional fields before " - ". */
const MOUNTINFO = [
  '27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard',
  '22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw',
  '31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:11 master:3 - cgroup2 cgroup2 rw,nsdelegate',
  '88 27 7:3 / /var/lib/airlock/jobs/al-1/disk rw,nosuid,nodev,noatime - ext4 /dev/loop3 rw',
  '90 27 8:1 /data /mnt/my\\040disk rw,relatime - ext4 /dev/sdb\\0401 rw,errors=remount-ro',
  '',
].join('\n');

describe('parseMountInfo', () => {
  const entries = parseMountInfo(MOUNTINFO);

  test('reads every mount line and skips the empty one', () => {
    assert.equal(entries.length, 7);
  });

  test('takes mount point, type, source and super options from the right fields', () => {
    assert.deepEqual(entries[0], {
      mountPoint: '/',
      type: 'ext4',
      source: '/dev/vda',
      superOptions: ['rw', 'discard'],
    });
    assert.deepEqual(entries[3], {
      mountPoint: '/sys/fs/cgroup/cpu,cpuacct',
      type: 'cgroup',
      source: 'cgroup',
      superOptions: ['rw', 'cpu', 'cpuacct'],
    });
  });

  test('copes with several optional fields', () => {
    assert.equal(entries[4]?.type, 'cgroup2');
    assert.equal(entries[4]?.mountPoint, '/sys/fs/cgroup/unified');
  });

  test('unescapes \\040 in the mount point and the source', () => {
    assert.equal(entries[6]?.mountPoint, '/mnt/my disk');
    assert.equal(entries[6]?.source, '/dev/sdb 1');
  });

  test('ignores lines without the " - " separator', () => {
    assert.deepEqual(parseMountInfo('garbage\n27 1 254:0 / / rw'), []);
  });
});

test('unescapeMountField decodes octal escapes: space, tab, newline, backslash', () => {
  assert.equal(unescapeMountField('a\\040b\\011c\\012d\\134e'), 'a b\tc\nd\\e');
  assert.equal(unescapeMountField('plain'), 'plain');
});

describe('mountsBelow', () => {
  const at = (mountPoint: string): MountEntry => ({
    mountPoint,
    type: 'ext4',
    source: 'x',
    superOptions: [],
  });
  const entries = [
    '/',
    '/x',
    '/x/job',
    '/x/job/disk',
    '/x/job/disk/sub/deeper',
    '/x/job/a',
    '/x/jobs2',
    '/x/jobs2/disk',
    '/x/job-other',
    '/y/x/job',
  ].map(at);

  test('returns the directory and what is below it, deepest first, nothing beside it', () => {
    const found = mountsBelow('/x/job', entries);
    assert.deepEqual(
      new Set(found),
      new Set(['/x/job', '/x/job/disk', '/x/job/disk/sub/deeper', '/x/job/a']),
    );
    assert.equal(found.at(-1), '/x/job', 'the directory itself is unmounted last');
    // A mount always comes before the mount it sits on.
    for (const [i, point] of found.entries()) {
      for (const later of found.slice(i + 1))
        assert.ok(!later.startsWith(`${point}/`), `${later} after ${point}`);
    }
  });

  test('a directory with nothing mounted gives nothing', () => {
    assert.deepEqual(mountsBelow('/z', entries), []);
  });

  test('reads this process mount table by default', () => {
    assert.ok(mountsBelow('/').includes('/'));
  });
});
