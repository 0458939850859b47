import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildProgram, CommanderError } from './cli/program.js';
import { loadConfig } from './config/config.js';
import { AirlockError, describeError } from './errors.js';

/**
 * The composition root: the one place that reads the configuration and wires the parts
 * together. Nothing else reads process.env or builds an engine.
 */

function packageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Runs the `airlock` command line and returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  // Every file and directory Airlock makes is given its mode explicitly (0600 for secrets,
  // 0711/0755 for what the jobs' user namespaces must traverse). A stricter umask (077 on
  // some hardened hosts) would silently close the latter and break every sandbox.
  process.umask(0o022);
  const { stdout, stderr } = process;
  const interrupt = new AbortController();
  const onSignal = (): void => interrupt.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A reader that goes away (`airlock sandbox ... | head`) stops the job like Ctrl-C would,
  // instead of crashing Airlock mid-job and leaving the sandbox to the next sweep.
  const onPipeError = (error: NodeJS.ErrnoException): void => {
    if (error.code === 'EPIPE') interrupt.abort();
  };
  // Kept until the process exits: a write still pending when main() returns may fail too.
  stdout.on('error', onPipeError);
  stderr.on('error', onPipeError);
  let code = 0;
  const json = argv.includes('--json');
  try {
    const config = loadConfig();
    const program = buildProgram(
      {
        stdout,
        stderr,
        interrupted: interrupt.signal,
        version: packageVersion(),
        config,
        cliEntry: fileURLToPath(new URL('./cli/bin.js', import.meta.url)),
        openEngine: async (options) => {
          // Loaded on use: client commands (`airlock run`) never load the sandbox engine.
          const { SandboxEngine } = await import('./sandbox/engine.js');
          const { loadSeccompProfile } = await import('./sandbox/seccomp.js');
          const { hostsFileResolver } = await import('./network/hosts-file.js');
          const egress = config.sandbox.egress;
          return SandboxEngine.open({
            root: config.sandbox.dir,
            idBase: config.sandbox.idBase,
            idRanges: config.sandbox.idRanges,
            killGraceMs: config.sandbox.killGraceMs,
            runtimePaths: config.sandbox.runtimePaths,
            seccomp: loadSeccompProfile(config.sandbox.seccompProfile),
            egress: {
              grantAddresses: egress.grants,
              maxBytes: egress.maxBytes,
              maxConnections: egress.maxConnections,
              ...(egress.hostsFile !== undefined ? { resolve: hostsFileResolver(egress.hostsFile) } : {}),
            },
            // One-shot commands prepare no disk ahead; a worker asks for its concurrency.
            preparedSlots: options?.preparedSlots ?? 0,
          });
        },
      },
      (result) => {
        code = result;
      },
    );
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    code = reportError(error, json);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return code;
}

/** Maps any error to its exit code, once, and prints it (as JSON under --json). */
function reportError(error: unknown, json: boolean): number {
  if (error instanceof CommanderError) {
    // Help and version exit 0; a usage error was already printed by commander.
    return error.exitCode === 0 ? 0 : 125;
  }
  const airlockError =
    error instanceof AirlockError
      ? error
      : new AirlockError('INTERNAL', describeError(error), { cause: error });
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ error: { code: airlockError.code, message: airlockError.message } })}\n`,
    );
  } else {
    process.stderr.write(`airlock: ${airlockError.code}: ${airlockError.message}\n`);
  }
  return airlockError.exitCode;
}
