import { execFile, execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startEgressProxy } from '../src/network/egress-proxy.js';
import type { SandboxEngine } from '../src/sandbox/engine.js';
import { type PairedResult, paired } from './stats.js';

/**
 * What egress through Airlock costs a build (issue #6: at most 1.1× the same fetches without
 * the proxy). The "build" is an `npm ci` stand-in: N package tarballs (gzip, 40 small source
 * files each, ~60 KiB compressed) fetched one after another with curl and unpacked, from a
 * registry stand-in on this host's loopback. Measured side by side, in pairs:
 *
 *  1. in the sandbox: the fetch-and-unpack loop through the whole egress path (HTTP_PROXY →
 *     forwarder on 127.0.0.1:3128 → bind-mounted Unix socket → the job's proxy → registry),
 *     against the same loop in the same kind of sandbox reading the same tarballs with
 *     curl from the job's own disk (file://). The loop times itself inside the job, so
 *     sandbox start and teardown, equal on both sides, are left out. This bound is stricter
 *     than "without the proxy": the baseline has no network at all (no HTTP, no TCP);
 *  2. on the host, no sandbox: the loop through the egress proxy (TCP listener) against
 *     the same loop straight to the registry: the proxy's own share.
 */

export interface EgressBenchOptions {
  readonly engine: SandboxEngine;
  readonly pairs: number;
  readonly packages: number;
  readonly log: (message: string) => void;
}

const HOST = 'registry.bench.test';

function packageFiles(index: number): { name: string; text: string }[] {
  return Array.from({ length: 40 }, (_, file) => {
    const lines = Array.from(
      { length: 60 },
      (_, line) =>
        `export function f${file}_${line}(x) { return x * ${index + line} + ${file}; } // pkg ${index}`,
    );
    return { name: `lib/file-${file}.js`, text: `${lines.join('\n')}\n` };
  });
}

/** The loop, timing itself (ms) on its last line. */
function loopScript(packages: number, source: string, curlFlags: string): string {
  return [
    'set -e',
    'start=$(date +%s%N)',
    `i=0; while [ $i -lt ${packages} ]; do`,
    '  mkdir -p nm/p$i',
    `  curl -fsS ${curlFlags} "${source}/pkg-$i.tgz" | tar xz -C nm/p$i`,
    '  i=$((i + 1))',
    'done',
    'end=$(date +%s%N)',
    'echo "files $(find nm -type f | wc -l)"',
    'echo "loop_ms $(( (end - start) / 1000000 ))"',
  ].join('\n');
}

function loopMs(output: string, packages: number): number {
  const files = Number(/files (\d+)/.exec(output)?.[1]);
  if (files !== packages * 40)
    throw new Error(`the build unpacked ${files} files, not ${packages * 40}: ${output.slice(-400)}`);
  const ms = Number(/loop_ms (\d+)/.exec(output)?.[1]);
  if (!Number.isFinite(ms)) throw new Error(`no timing in the job's output: ${output.slice(-400)}`);
  return ms;
}

export async function egressBench(
  options: EgressBenchOptions,
): Promise<{ rows: PairedResult[]; lines: string[] }> {
  const { engine, pairs, packages, log } = options;
  const work = await mkdtemp('/var/tmp/airlock-bench-egress-');
  const tarballs: Buffer[] = [];
  for (let index = 0; index < packages; index += 1) {
    const dir = join(work, 'src', `pkg-${index}`);
    for (const file of packageFiles(index)) {
      await mkdir(join(dir, 'lib'), { recursive: true });
      await writeFile(join(dir, file.name), file.text);
    }
    const tgz = join(work, 'pkgs', `pkg-${index}.tgz`);
    await mkdir(join(work, 'pkgs'), { recursive: true });
    execFileSync('tar', ['czf', tgz, '-C', dir, '.']);
    tarballs.push(await readFile(tgz));
  }
  const totalKiB = Math.round(tarballs.reduce((sum, t) => sum + t.length, 0) / 1024);
  const registry = createServer((request, response) => {
    const index = Number(/^\/pkg-(\d+)\.tgz$/.exec(request.url ?? '')?.[1] ?? Number.NaN);
    const body = tarballs[index];
    if (body === undefined) {
      response.statusCode = 404;
      response.end();
      return;
    }
    response.setHeader('content-type', 'application/gzip');
    response.end(body);
  });
  await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve));
  const port = (registry.address() as AddressInfo).port;
  const hostProxy = await startEgressProxy({
    allow: [`${HOST}:${port}`],
    listen: { host: '127.0.0.1', port: 0 },
    resolve: async () => ['127.0.0.1'],
    grantAddresses: ['127.0.0.1/32'],
    maxConnections: 1_000_000,
  });
  const egressSettings = {
    resolve: async (host: string) => (host === HOST ? ['127.0.0.1'] : []),
    grantAddresses: ['127.0.0.1/32'],
  };
  const resources = { timeoutMs: 300_000, pids: 256 };
  try {
    const viaProxy = async (): Promise<number> => {
      let output = '';
      const result = await engine.run(
        {
          command: ['sh', '-c', loopScript(packages, `http://${HOST}:${port}`, '')],
          egress: [`${HOST}:${port}`],
          resources,
        },
        { onOutput: (_s, chunk) => (output += chunk.toString()), egressSettings },
      );
      if (result.exitCode !== 0)
        throw new Error(`the build through the proxy exited ${result.exitCode}: ${output.slice(-400)}`);
      await engine.settle();
      return loopMs(output, packages);
    };
    const local = async (): Promise<number> => {
      let output = '';
      const result = await engine.run(
        {
          command: ['sh', '-c', loopScript(packages, 'file:///workspace/pkgs', '')],
          inputDir: work,
          resources,
        },
        { onOutput: (_s, chunk) => (output += chunk.toString()) },
      );
      if (result.exitCode !== 0)
        throw new Error(`the local build exited ${result.exitCode}: ${output.slice(-400)}`);
      await engine.settle();
      return loopMs(output, packages);
    };
    const hostLoop = async (source: string, flags: string): Promise<number> => {
      const dir = await mkdtemp(join(work, 'host-'));
      try {
        // Asynchronous: the registry and the proxy answer from this very process.
        const { stdout } = await promisify(execFile)('sh', ['-c', loopScript(packages, source, flags)], {
          cwd: dir,
          encoding: 'utf8',
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        });
        return loopMs(stdout, packages);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    };
    const hostDirect = () => hostLoop(`http://127.0.0.1:${port}`, "--noproxy '*'");
    const hostProxied = () =>
      hostLoop(`http://${HOST}:${port}`, `--proxy ${hostProxy.address.replace(/^http:\/\//, '')}`);

    log(`egress: ${packages} packages, ${totalKiB} KiB of tarballs; warming up`);
    await viaProxy();
    await local();
    await hostDirect();
    await hostProxied();
    const sandboxPairs: { airlock: number; bare: number }[] = [];
    const hostPairs: { airlock: number; bare: number }[] = [];
    for (let i = 0; i < pairs; i += 1) {
      if (i % 2 === 0) sandboxPairs.push({ bare: await local(), airlock: await viaProxy() });
      else sandboxPairs.push({ airlock: await viaProxy(), bare: await local() });
      if (i % 2 === 0) hostPairs.push({ bare: await hostDirect(), airlock: await hostProxied() });
      else hostPairs.push({ airlock: await hostProxied(), bare: await hostDirect() });
    }
    const rows = [
      paired(
        `egress build (${packages} packages fetched + unpacked), sandbox: through forwarder + proxy vs local files`,
        sandboxPairs,
      ),
      paired(`egress build, host: through the egress proxy vs straight to the registry`, hostPairs),
    ];
    const totals = hostProxy.totals();
    return {
      rows,
      lines: [
        `Egress (issue #6): ${packages} tarballs, ${totalKiB} KiB, fetched one after another with curl and unpacked; ` +
          `the loop timed inside the job. Host proxy saw ${totals.connections} connections, ${totals.refused} refused.`,
      ],
    };
  } finally {
    await hostProxy.close();
    registry.close();
    await rm(work, { recursive: true, force: true });
  }
}
