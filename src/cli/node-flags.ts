/**
 * Flags Airlock's own Node.js processes run with (the `airlock` executable's first line,
 * the `./airlock` wrapper, and the worker `airlock up` starts all pass them; a test keeps the
 * three in step). `--max-semi-space-size=4`: V8's young generation capped at 4 MiB per
 * semi-space instead of 16. A long-running server keeps what its young generation once grew
 * to resident; with the default an idle server holds about 20 MiB more (docs/performance.md).
 * Short-lived objects are collected a little more often. `--v8-pool-size=1`: one V8 worker
 * thread for background garbage collection and compilation instead of one per core; each
 * thread keeps its own allocations resident, about 9 MiB less for an idle server here
 * (docs/performance.md). On a control plane that shares its cores with sandboxes, more
 * background threads would mostly compete with the jobs.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--v8-pool-size=1'];
