import type { RuntimeName } from '../sandbox/job.js';
import type { ProbeResult } from '../sandbox/selftest/selftest.js';
import type { Selftest, SelftestOutcome } from './ports.js';

/**
 * The worker's selftest round: the probe battery (src/sandbox/selftest) under each runtime
 * the host has, runc first. runc is the default runtime and its probes also check what all
 * runtimes share (seccomp profile, cgroups, ID ranges, the host image): if it fails, the
 * worker takes no jobs at all. Another runtime is offered only if its own battery passed —
 * a gVisor that fails its probes is left out, not trusted.
 */

export interface RuntimeSelftestDeps {
  /** The runtimes the engine can start here (SandboxEngine.runtimes()). */
  readonly runtimes: () => readonly { name: RuntimeName; available: boolean; reason: string | null }[];
  /** Runs the battery under one runtime (runSelftest with the worker's host paths). */
  readonly probe: (runtime: RuntimeName, signal: AbortSignal) => Promise<{ probes: readonly ProbeResult[] }>;
}

const REQUIRED: RuntimeName = 'runc';

export function runtimeSelftest(deps: RuntimeSelftestDeps): Selftest {
  return async (signal) => {
    const statuses = deps.runtimes();
    const required = statuses.find((status) => status.name === REQUIRED);
    if (required === undefined || !required.available) {
      return {
        ok: false,
        runtimes: [],
        failedProbes: [
          `${REQUIRED}/available: ${required?.reason ?? `${REQUIRED} is unknown to the engine`}`,
        ],
      };
    }
    const order = [required, ...statuses.filter((status) => status.name !== REQUIRED && status.available)];
    const runtimes: RuntimeName[] = [];
    const failedProbes: string[] = [];
    for (const { name } of order) {
      if (signal.aborted) break;
      const report = await deps.probe(name, signal);
      const failed = report.probes.filter((probe) => !probe.pass);
      if (failed.length === 0 && report.probes.length > 0) runtimes.push(name);
      else if (failed.length === 0) failedProbes.push(`${name}/probes: no probe ran`);
      for (const probe of failed) failedProbes.push(`${name}/${probe.name}: ${probe.detail}`);
      if (name === REQUIRED && !runtimes.includes(REQUIRED)) break;
    }
    const outcome: SelftestOutcome = { ok: runtimes.includes(REQUIRED), runtimes, failedProbes };
    return outcome;
  };
}
