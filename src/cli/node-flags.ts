/**
 * Flags Airlock's own Node.js processes run with (the `airlock` executable's first line,
 * the `./airlock` wrapper, and the worker `airlock up` starts all pass them; a test keeps the
 * three in step). `--max-semi-space-size=4`: V8's young generation capped at 4 MiB per
 * semi-space instead of 16. A long-running server keeps what its young generation once grew
 * to resident; with the default an idle server holds about 20 MiB more (docs/performance.md).
 * Short-lived objects are collected a little more often.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
