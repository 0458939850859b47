import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { SandboxEngine } from '../../src/sandbox/engine.js';
import type { RuntimeName } from '../../src/sandbox/job.js';
import { openTestEngine, outputCollector, runtimeSkipReason } from './helpers.js';

/**
 * The other system-call ABIs of an x86-64 host: a 64-bit program may still make i386 calls
 * (int 0x80), where socketcall() carries the socket family in memory, out of a filter's
 * reach. The filter names only x86-64, so under runc such a call kills the process
 * (decision 0005); gVisor serves int 0x80 as a 64-bit call. Either way no vsock socket.
 */

const PROGRAM = `
#include <stdio.h>
#include <sys/stat.h>
static long int80(long nr, long a, long b, long c) {
  long ret;
  __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
  return ret;
}
/* Static and non-PIE: the argument block sits below 4 GiB, reachable from the i386 ABI. */
static unsigned int args[3] = {40 /* AF_VSOCK */, 1 /* SOCK_STREAM */, 0};
int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  printf("started\\n");
  long fd = int80(102 /* socketcall */, 1 /* SYS_SOCKET */, (long)(unsigned long)args, 0);
  struct stat st;
  if (fd >= 0 && fstat((int)fd, &st) == 0 && S_ISSOCK(st.st_mode)) printf("VSOCK CREATED\\n");
  printf("socketcall returned %ld\\n", fd);
  return 0;
}
`;

function compilerReason(): string | null {
  if (process.arch !== 'x64') return `the i386 ABI exists only on x86-64 (this is ${process.arch})`;
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    const libc = execFileSync('gcc', ['-print-file-name=libc.a'], { encoding: 'utf8' }).trim();
    if (!libc.startsWith('/'))
      return 'libc.a is missing (apt-get install libc6-dev) to build the static test program';
    return null;
  } catch {
    return 'gcc is missing (apt-get install gcc libc6-dev) to build the test program';
  }
}

const noCompiler = compilerReason();

describe('i386 system calls from a 64-bit job', { skip: noCompiler ?? false, timeout: 120_000 }, () => {
  let dir: string;
  let engine: SandboxEngine;
  let cleanup: () => Promise<void>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'airlock-abi-'));
    await writeFile(join(dir, 'int80.c'), PROGRAM);
    execFileSync('gcc', ['-O1', '-static', '-no-pie', '-o', join(dir, 'int80'), join(dir, 'int80.c')]);
    ({ engine, cleanup } = await openTestEngine('abi', { preparedSlots: 0 }));
  });
  after(async () => {
    await cleanup?.();
    await rm(dir, { recursive: true, force: true });
  });

  for (const runtime of ['runc', 'gvisor'] as RuntimeName[]) {
    const skip = runtimeSkipReason(runtime);
    test(`${runtime}: socketcall(SYS_SOCKET, AF_VSOCK) creates no socket`, {
      skip: skip ?? false,
    }, async () => {
      const out = outputCollector();
      const result = await engine.run(
        { runtime, command: ['./int80'], inputDir: dir },
        { onOutput: out.onOutput },
      );
      assert.match(out.stdout(), /started/);
      assert.doesNotMatch(out.stdout(), /VSOCK CREATED/);
      if (runtime === 'runc') {
        // Outside the filter's architectures: the kernel kills the process at the call.
        assert.equal(result.signal, 'SIGSYS', `stdout: ${out.stdout()}`);
      } else {
        assert.equal(result.exitCode, 0, out.stderr());
      }
    });
  }
});
