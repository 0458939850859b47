import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { copyFile, lstat, mkdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import { SANDBOX_HOSTNAME } from './bundle.js';
import { JOB_GID, JOB_UID, TMP_PATH, WORKSPACE_PATH } from './process.js';

/**
 * The root filesystem of `image: host`: the host's /usr (and /bin, /lib, /lib64, /sbin as
 * links or binds, as the host has them) read-only, plus a generated /etc that holds what
 * the host's userland needs to work and nothing of the host's secrets or identity.
 *
 * It is built once per Airlock process into <root>/rootfs/host-<digest>/, shared read-only by
 * every job (each job gets its own mount namespace view of it, never write access), and
 * rebuilt when its content would change (a package update adding an alternative, say).
 */

/** Top-level host directories that may hold the userland; /usr always does. */
const USERLAND_DIRS = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'] as const;

/**
 * What is copied from the host's /etc, and why. Anything not listed is absent, in
 * particular shadow, gshadow, sudoers, ssh/ (host keys), machine-id, hostname, resolv.conf,
 * subuid/subgid, and every service's credentials.
 */
const ETC_COPIED: readonly { path: string; why: string }[] = [
  { path: 'alternatives', why: 'Debian alternatives: without them awk, editor, cc... are dangling links' },
  { path: 'ld.so.cache', why: 'the dynamic loader finds libraries in /usr/lib through it' },
  { path: 'ld.so.conf', why: 'read by ldconfig-aware tools' },
  { path: 'ld.so.conf.d', why: 'read by ldconfig-aware tools' },
  { path: 'ssl/certs', why: 'public CA certificates for TLS (links into /usr/share/ca-certificates)' },
  { path: 'ssl/openssl.cnf', why: 'OpenSSL configuration; /etc/ssl/private (host keys) is not copied' },
  { path: 'ca-certificates.crt', why: 'CA bundle on some distributions' },
  { path: 'protocols', why: 'public protocol numbers (netbase), read by getprotobyname' },
  { path: 'services', why: 'public port names (netbase), read by getservbyname' },
  { path: 'mime.types', why: 'public MIME table used by some build tools' },
  { path: 'os-release', why: 'distribution name and version, read by build tools to pick packages' },
  { path: 'debian_version', why: 'distribution version, read by build tools' },
  { path: 'perl', why: "Debian's perl site configuration" },
];

export const GENERATED_ETC: Readonly<Record<string, string>> = Object.freeze({
  // Only the job's own user, root (unmapped on the host: shows as nobody) and nobody.
  passwd: [
    'root:x:0:0:root:/nonexistent:/usr/sbin/nologin',
    `job:x:${JOB_UID}:${JOB_GID}:Airlock job:${TMP_PATH}:/bin/sh`,
    'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
    '',
  ].join('\n'),
  group: ['root:x:0:', `job:x:${JOB_GID}:`, 'nogroup:x:65534:', ''].join('\n'),
  hosts: [
    `127.0.0.1\tlocalhost ${SANDBOX_HOSTNAME}`,
    `::1\tlocalhost ip6-localhost ip6-loopback ${SANDBOX_HOSTNAME}`,
    '',
  ].join('\n'),
  hostname: `${SANDBOX_HOSTNAME}\n`,
  // No nameserver: the sandbox has no network, so there is no resolver to point at. glibc
  // then tries 127.0.0.1 once, where nothing listens, and fails at once.
  'resolv.conf': '# Airlock sandbox: no network, no resolver.\noptions attempts:1 timeout:1\n',
  'nsswitch.conf': [
    'passwd: files',
    'group: files',
    'shadow: files',
    'hosts: files dns',
    'networks: files',
    'protocols: files',
    'services: files',
    'ethers: files',
    'rpc: files',
    '',
  ].join('\n'),
  timezone: 'Etc/UTC\n',
  shells: '/bin/sh\n/bin/bash\n/usr/bin/bash\n',
});

export interface HostImage {
  /** The root directory to name in the bundle (read-only). */
  readonly rootfs: string;
  /** Host directories to bind read-only at the same path. */
  readonly binds: readonly string[];
  readonly digest: string;
}

interface Entry {
  readonly path: string;
  readonly kind: 'dir' | 'file' | 'link';
  /** Link target, or the content of a generated file. */
  readonly data: string;
  /** For a file copied from the host: where from, and its size and mtime (the digest uses those). */
  readonly source?: {
    readonly path: string;
    readonly size: number;
    readonly mtimeMs: number;
    readonly ctimeMs: number;
  };
}

/**
 * The entries for host path etc/<rel> and everything below it, in sorted order. Synchronous
 * on purpose: it runs once when an engine opens and walks ~700 small entries, which plain
 * system calls do in a few milliseconds and promises in tens.
 */
function visitEtc(hostEtc: string, rel: string): Entry[] {
  const source = join(hostEtc, rel);
  let info: import('node:fs').Stats;
  try {
    info = lstatSync(source);
  } catch {
    return []; // absent on this host: fine
  }
  if (info.isSymbolicLink()) return [{ path: rel, kind: 'link', data: readlinkSync(source) }];
  if (info.isDirectory()) {
    const names = readdirSync(source).sort();
    return [
      { path: rel, kind: 'dir', data: '' },
      ...names.flatMap((name) => visitEtc(hostEtc, join(rel, name))),
    ];
  }
  // Only world-readable regular files: anything the host keeps private stays out.
  if (!info.isFile() || (info.mode & 0o004) === 0 || info.size > 16 * 1024 * 1024) return [];
  return [
    {
      path: rel,
      kind: 'file',
      data: '',
      source: { path: source, size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs },
    },
  ];
}

async function collectEtc(hostEtc: string): Promise<Entry[]> {
  const entries: Entry[] = [];
  for (const item of ETC_COPIED) {
    const parent = item.path.split('/').slice(0, -1).join('/');
    if (parent !== '' && !entries.some((entry) => entry.path === parent)) {
      entries.push({ path: parent, kind: 'dir', data: '' });
    }
    entries.push(...visitEtc(hostEtc, item.path));
  }
  for (const [name, content] of Object.entries(GENERATED_ETC))
    entries.push({ path: name, kind: 'file', data: content });
  entries.push({ path: 'localtime', kind: 'link', data: '/usr/share/zoneinfo/Etc/UTC' });
  // df, mount and friends read /etc/mtab.
  entries.push({ path: 'mtab', kind: 'link', data: '../proc/self/mounts' });
  return entries;
}

export interface HostImagePlan {
  readonly binds: string[];
  readonly links: { name: string; target: string }[];
  readonly etc: Entry[];
}

export async function planHostImage(hostRoot = '/'): Promise<HostImagePlan> {
  if (!existsSync(join(hostRoot, 'usr', 'bin'))) {
    throw new AirlockError(
      'HOST_UNSUPPORTED',
      `${join(hostRoot, 'usr')} has no bin/: "image: host" needs the host's /usr`,
    );
  }
  const binds = ['/usr'];
  const links: { name: string; target: string }[] = [];
  for (const name of USERLAND_DIRS) {
    const path = join(hostRoot, name);
    let info: import('node:fs').Stats;
    try {
      info = await lstat(path);
    } catch {
      continue;
    }
    if (info.isSymbolicLink()) links.push({ name, target: await readlink(path) });
    else if (info.isDirectory()) binds.push(`/${name}`);
  }
  return { binds, links, etc: await collectEtc(join(hostRoot, 'etc')) };
}

/** Bumped when writeTree() lays the root out differently (1: /run/airlock added). */
const TREE_LAYOUT = 1;

export function digestOfPlan(plan: HostImagePlan): string {
  const hash = createHash('sha256');
  hash.update(`layout ${TREE_LAYOUT}\0`);
  hash.update(JSON.stringify({ binds: plan.binds, links: plan.links }));
  for (const entry of plan.etc) {
    hash.update(`\0${entry.kind}\0${entry.path}\0${entry.data}\0`);
    // A copied file is identified by its size and times; ctime changes on every write and cannot be set back.
    if (entry.source !== undefined)
      hash.update(`${entry.source.size}:${entry.source.mtimeMs}:${entry.source.ctimeMs}`);
  }
  return hash.digest('hex').slice(0, 16);
}

/** Builds (or reuses) the shared root of `image: host` under `dir`. */
export async function buildHostImage(dir: string, hostRoot = '/'): Promise<HostImage> {
  const plan = await planHostImage(hostRoot);
  const digest = digestOfPlan(plan);
  const rootfs = join(dir, `host-${digest}`);
  // A tree is renamed into place only once complete, so an existing directory is a complete one.
  if (!existsSync(rootfs)) {
    const temp = join(dir, `.build-${randomBytes(6).toString('hex')}`);
    try {
      await writeTree(temp, plan);
      await rename(temp, rootfs);
    } catch (error) {
      await rm(temp, { recursive: true, force: true });
      if (!existsSync(rootfs)) {
        throw new AirlockError(
          'SANDBOX_SETUP_FAILED',
          `cannot build the host image root: ${(error as Error).message}`,
          {
            cause: error,
          },
        );
      }
      // Another Airlock process built the same image at the same moment: use theirs.
    }
  }
  return { rootfs, binds: plan.binds, digest };
}

async function writeTree(root: string, plan: HostImagePlan): Promise<void> {
  // World-readable and traversable (the job's user namespace must reach every mount point),
  // owned by host root, which the job's user namespace does not map: nothing here is the job's.
  await mkdir(root, { mode: 0o755 });
  for (const dir of [
    'proc',
    'dev',
    'sys',
    'usr',
    'etc',
    'var',
    'run',
    // Mount point of a job's egress directory (egress.ts): present, so no runtime writes here.
    'run/airlock',
    TMP_PATH.slice(1),
    WORKSPACE_PATH.slice(1),
  ]) {
    await mkdir(join(root, dir), { mode: 0o755 });
  }
  for (const dir of plan.binds) if (dir !== '/usr') await mkdir(join(root, dir), { mode: 0o755 });
  for (const link of plan.links) await symlink(link.target, join(root, link.name));
  await symlink('../tmp', join(root, 'var', 'tmp'));
  const etc = join(root, 'etc');
  for (const entry of plan.etc) {
    const target = join(etc, entry.path);
    if (entry.kind === 'dir') await mkdir(target, { recursive: true, mode: 0o755 });
    else if (entry.kind === 'link') await symlink(entry.data, target);
    else if (entry.source !== undefined) await copyFile(entry.source.path, target);
    else await writeFile(target, entry.data, { mode: 0o644 });
  }
}
