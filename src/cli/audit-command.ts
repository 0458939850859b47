import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditEvent, AuditVerification } from '../api/types.js';
import { connect } from '../client/connect.js';
import { EXIT_INTERRUPTED } from '../client/follow.js';
import { printable, shortTime } from '../client/format.js';
import { AirlockError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';

/** `airlock audit tail [-n N] [-f] [--json]` and `airlock audit verify [--against FILE] [--database FILE] [--json]`. */

export interface AuditTailOptions {
  lines?: string;
  follow?: boolean;
  json?: boolean;
}

const MAX_TAIL = 10_000;
const PAGE = 1000;
/** How often `audit tail -f` asks for new events (the API has no audit stream). */
const FOLLOW_POLL_MS = 1000;

export function formatEvent(event: AuditEvent): string {
  const target = event.target === '' ? '-' : event.target;
  const reason = event.reason === '' ? '' : ` ${event.reason}`;
  return `${printable(`${event.seq} ${shortTime(event.at)} ${event.outcome} ${event.actor} ${event.action} ${target}${reason}`)}\n`;
}

function writeEvents(context: CliContext, events: readonly AuditEvent[], json: boolean): void {
  for (const event of events) context.stdout.write(json ? `${JSON.stringify(event)}\n` : formatEvent(event));
}

export async function auditTailCommand(
  context: CliContext,
  options: AuditTailOptions,
): Promise<CommandResult> {
  let count = 20;
  if (options.lines !== undefined) {
    if (!/^\d+$/.test(options.lines) || Number(options.lines) > MAX_TAIL)
      throw new AirlockError(
        'INVALID_OPTION',
        `-n: must be a whole number from 0 to ${MAX_TAIL}, got "${options.lines}"`,
      );
    count = Number(options.lines);
  }
  const json = options.json === true;
  const api = await connect(context.config.client);
  const signal = context.interrupted;
  try {
    // ?last=N: the newest N events in one call (each read is itself audited, so the head moves).
    let last: number | undefined;
    if (count > 0) {
      const page = await api.auditEvents({ last: count }, signal);
      writeEvents(context, page.events, json);
      last = page.events.at(-1)?.seq;
    } else {
      last = (await api.auditEvents({ last: 1 }, signal)).events.at(-1)?.seq;
    }
    while (options.follow === true) {
      const page = await api.auditEvents(
        { ...(last !== undefined ? { after: last } : {}), limit: PAGE },
        signal,
      );
      writeEvents(context, page.events, json);
      last = page.events.at(-1)?.seq ?? last;
      if (page.events.length < PAGE) await sleep(FOLLOW_POLL_MS, undefined, { signal });
    }
  } catch (error) {
    if (signal.aborted) return EXIT_INTERRUPTED;
    throw error;
  }
  return 0;
}

export function describeVerification(result: AuditVerification): string {
  const against =
    result.against === null
      ? ''
      : result.against.matched
        ? `; matches the checkpoint given (${result.against.treeSize} entries)`
        : '';
  if (result.ok) {
    const head = result.head === null ? 'empty' : `head seq ${result.head.seq}`;
    return `audit log verified: ${result.entries} entries, ${head}, root ${result.rootHash}, ${result.checkpointsChecked} of its own checkpoints matched${against}\n`;
  }
  const bad = result.firstBad;
  return printable(
    `audit log BROKEN: ${bad === null ? 'no entry named' : `${bad.kind} at entry ${bad.seq}: ${bad.reason}`} (${result.entries} entries checked)`,
  ).concat('\n');
}

/** Exit 0 when the log verifies, 1 when it is broken (an error reaching the server: 125). */
export async function auditVerifyCommand(
  context: CliContext,
  options: { json?: boolean; database?: string; against?: string; key?: string[] },
): Promise<CommandResult> {
  let result: AuditVerification;
  const { againstCheckpoint } = await import('./audit-proof-command.js');
  if (options.database !== undefined) {
    // Offline: a copy of the database (a backup handed to an auditor), opened read-only.
    const { verifyAuditDatabase, databaseKeys } = await import('../audit/offline.js');
    const database = options.database;
    let against: Awaited<ReturnType<typeof againstCheckpoint>> | undefined;
    if (options.against !== undefined) {
      against = await againstCheckpoint(context, options.against, options, null, async () => {
        context.stderr.write(
          'airlock: checking the checkpoint against the keys the database names (pin them with --key for a check that does not trust the database)\n',
        );
        return databaseKeys(database);
      });
    }
    result = await verifyAuditDatabase(database, against);
  } else {
    const api = await connect(context.config.client);
    const against =
      options.against === undefined
        ? undefined
        : await againstCheckpoint(context, options.against, options, api);
    result = await api.auditVerify(
      against === undefined
        ? undefined
        : { treeSize: against.treeSize, rootHash: against.rootHash.toString('base64') },
    );
  }
  context.stdout.write(options.json === true ? `${JSON.stringify(result)}\n` : describeVerification(result));
  return result.ok ? 0 : 1;
}
