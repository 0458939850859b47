import { describeLayout } from '../sandbox/cgroup.js';
import type { SandboxEngine } from '../sandbox/engine.js';
import type { RuntimeName } from '../sandbox/job.js';
import { runSelftest } from '../sandbox/selftest/selftest.js';
import { type CliContext, type CommandResult, withEngine } from './io.js';
import { parseRuntime } from './options.js';

/** `airlock selftest [--runtime R] [--json]`: the probe battery, one line per probe. */

export interface SelftestCommandOptions {
  runtime?: string;
  json?: boolean;
}

export async function selftestCommand(
  context: CliContext,
  options: SelftestCommandOptions,
): Promise<CommandResult> {
  const runtime: RuntimeName = parseRuntime('runtime', options.runtime ?? 'runc');
  return withEngine(context, (engine) => selftestWith(context, engine, runtime, options));
}

async function selftestWith(
  context: CliContext,
  engine: SandboxEngine,
  runtime: RuntimeName,
  options: SelftestCommandOptions,
): Promise<CommandResult> {
  const status = engine.runtimes().find((entry) => entry.name === runtime);
  if (status !== undefined && !status.available) {
    const message = status.reason ?? `${runtime} cannot run here`;
    if (options.json === true)
      context.stdout.write(`${JSON.stringify({ runtime, available: false, reason: status.reason })}\n`);
    else context.stderr.write(`airlock selftest: ${message}\n`);
    return 1;
  }
  if (options.json !== true) {
    context.stdout.write(
      `airlock selftest: runtime ${runtime}; ${describeLayout(engine.cgroupLayout)}; seccomp ${engine.seccompDigest.slice(0, 19)}\n`,
    );
    for (const entry of engine.runtimes()) {
      context.stdout.write(
        `  runtime ${entry.name}: ${entry.available ? `available (${entry.path})` : `unavailable: ${entry.reason}`}\n`,
      );
    }
  }
  const report = await runSelftest(engine, {
    runtime,
    hostPaths: [engine.stateDir],
    signal: context.interrupted,
    onProbe: (probe) => {
      if (options.json !== true)
        context.stdout.write(`${probe.pass ? 'PASS' : 'FAIL'}  ${probe.name.padEnd(28)} ${probe.detail}\n`);
    },
  });
  if (options.json === true) {
    context.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    const verdict =
      report.failed === 0
        ? 'all probes passed'
        : `${report.failed} probe(s) FAILED: do not run jobs on this host`;
    context.stdout.write(
      `${report.passed}/${report.probes.length} passed in ${(report.wallMs / 1000).toFixed(1)} s: ${verdict}\n`,
    );
  }
  return report.failed === 0 ? 0 : 1;
}
