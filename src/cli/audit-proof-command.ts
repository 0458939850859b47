import { randomBytes } from 'node:crypto';
import { open, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AuditCheckpoint, AuditKeys } from '../api/types.js';
import { leafHash, verifyConsistency, verifyInclusion } from '../audit/merkle.js';
import {
  type Checkpoint,
  type NoteVerifier,
  openNote,
  parseCheckpoint,
  parseVerifierKey,
  rotationsIn,
} from '../audit/note.js';
import type { ApiClient } from '../client/api-client.js';
import { connect } from '../client/connect.js';
import { printable } from '../client/format.js';
import { AirlockError, describeError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock audit checkpoint | prove | consistency | witness | hash | rotate-key`: signed
 * checkpoints and the proofs of RFC 9162, checked here on the client — a proof the client
 * did not verify proves nothing. Trusted keys come from --key (pinned by the operator), else
 * from the witness state, else from the server (trust on first use; said so on stderr).
 */

const MAX_CHECKPOINT_FILE = 64 * 1024;

export interface KeyOptions {
  key?: string[];
  json?: boolean;
}

async function readCheckpointFile(path: string): Promise<string> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (error) {
    throw new AirlockError('INVALID_OPTION', `cannot read the checkpoint ${path}: ${describeError(error)}`);
  }
  if (text.length > MAX_CHECKPOINT_FILE)
    throw new AirlockError('CHECKPOINT_INVALID', `${path} is larger than a checkpoint can be`);
  return text.toString('utf8');
}

/** The verifiers to trust: --key, else the server's keys (current and retired), said so on stderr. */
async function trustedKeys(
  context: CliContext,
  options: KeyOptions,
  api: ApiClient | null,
): Promise<NoteVerifier[]> {
  if (options.key !== undefined && options.key.length > 0) return options.key.map(parseVerifierKey);
  if (api === null)
    throw new AirlockError('INVALID_OPTION', '--key VERIFIER_KEY is needed to check a checkpoint offline');
  const keys: AuditKeys = await api.auditKeys();
  context.stderr.write(
    'airlock: checking against the keys the server names (pin them with --key for a check that does not trust the server)\n',
  );
  return keys.keys.map((key) => parseVerifierKey(key.verifierKey));
}

/** Opens a signed checkpoint: its signature by a trusted key, then its body. */
export function openCheckpoint(
  note: string,
  verifiers: readonly NoteVerifier[],
): Checkpoint & { signedBy: readonly string[]; extensions: readonly string[] } {
  const opened = openNote(note, verifiers);
  return { ...parseCheckpoint(opened.text), signedBy: opened.signedBy };
}

function b64(text: string, what: string): Buffer {
  const value = Buffer.from(text, 'base64');
  if (value.length !== 32)
    throw new AirlockError('CHECKPOINT_INVALID', `the server sent a malformed ${what}`);
  return value;
}

export async function auditCheckpointCommand(
  context: CliContext,
  options: { latest?: boolean; json?: boolean },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const checkpoint = options.latest === true ? await api.latestCheckpoint() : await api.makeCheckpoint();
  context.stdout.write(options.json === true ? `${JSON.stringify(checkpoint)}\n` : checkpoint.note);
  return 0;
}

export async function auditRotateKeyCommand(
  context: CliContext,
  options: { json?: boolean },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const checkpoint = await api.rotateAuditKey();
  const keys = await api.auditKeys();
  const current = keys.keys.filter((key) => key.retiredAt === null).map((key) => key.verifierKey);
  if (options.json === true) context.stdout.write(`${JSON.stringify({ checkpoint, current })}\n`);
  else
    context.stdout.write(
      `new checkpoint key: ${current.join(' ')}\nthe checkpoint below is signed by the old and the new key:\n${checkpoint.note}`,
    );
  return 0;
}

export async function auditHashCommand(context: CliContext, value: string): Promise<CommandResult> {
  let text = value;
  // "-": read the value from stdin, so a secret stays out of argv and shell history.
  if (value === '-') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > 4096)
        throw new AirlockError('INVALID_OPTION', 'the value on stdin is longer than 4096 bytes');
      chunks.push(chunk);
    }
    text = Buffer.concat(chunks)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  }
  const api = await connect(context.config.client);
  context.stdout.write(`${await api.auditHash(text)}\n`);
  return 0;
}

function wholeNumber(text: string, what: string): number {
  if (!/^(0|[1-9][0-9]{0,14})$/.test(text))
    throw new AirlockError(
      'INVALID_OPTION',
      `${what}: expected a whole number, got "${printable(text.slice(0, 40))}"`,
    );
  return Number(text);
}

/** `audit prove SEQ`: the entry's inclusion proof, verified against a signed checkpoint. */
export async function auditProveCommand(
  context: CliContext,
  seqText: string,
  options: KeyOptions & { checkpoint?: string },
): Promise<CommandResult> {
  const seq = wholeNumber(seqText, 'ENTRY');
  const api = await connect(context.config.client);
  const verifiers = await trustedKeys(context, options, api);
  let note: string;
  if (options.checkpoint !== undefined) note = await readCheckpointFile(options.checkpoint);
  else {
    let latest: AuditCheckpoint = await api.latestCheckpoint();
    if (latest.treeSize < seq) latest = await api.makeCheckpoint();
    note = latest.note;
  }
  const checkpoint = openCheckpoint(note, verifiers);
  const proof = await api.inclusionProof(seq, checkpoint.treeSize);
  const entry = Buffer.from(proof.entry, 'base64');
  const leaf = leafHash(entry);
  const ok =
    proof.treeSize === checkpoint.treeSize &&
    proof.leafIndex === seq - 1 &&
    verifyInclusion(
      seq - 1,
      checkpoint.treeSize,
      leaf,
      proof.proof.map((hash) => b64(hash, 'proof hash')),
      checkpoint.rootHash,
    );
  if (options.json === true)
    context.stdout.write(
      `${JSON.stringify({ ok, checkpoint: note, proof, entry: entry.toString('utf8') })}\n`,
    );
  else if (ok)
    context.stdout.write(
      printable(
        `entry ${seq} is in the log: inclusion proof of ${proof.proof.length} hashes verified against the checkpoint of ${checkpoint.treeSize} entries signed by ${checkpoint.signedBy.join(', ')}\nentry: ${entry.toString('utf8')}`,
      ).concat('\n'),
    );
  else
    context.stdout.write(
      `entry ${seq}: the inclusion proof does NOT verify against the signed checkpoint of ${checkpoint.treeSize} entries: the log the server holds is not the one that was signed\n`,
    );
  return ok ? 0 : 1;
}

/** A side of `audit consistency`: a tree size (root from the server) or a checkpoint file (signed root). */
async function side(
  text: string,
  verifiers: () => Promise<NoteVerifier[]>,
): Promise<{ size: number; root: Buffer | null; label: string }> {
  if (/^[0-9]+$/.test(text)) return { size: wholeNumber(text, 'size'), root: null, label: `size ${text}` };
  const checkpoint = openCheckpoint(await readCheckpointFile(text), await verifiers());
  return {
    size: checkpoint.treeSize,
    root: checkpoint.rootHash,
    label: `${text} (${checkpoint.treeSize} entries)`,
  };
}

export async function auditConsistencyCommand(
  context: CliContext,
  oldText: string,
  newText: string,
  options: KeyOptions,
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  let verifiers: NoteVerifier[] | null = null;
  const keys = async (): Promise<NoteVerifier[]> => {
    verifiers ??= await trustedKeys(context, options, api);
    return verifiers;
  };
  const older = await side(oldText, keys);
  const newer = await side(newText, keys);
  if (older.size > newer.size)
    throw new AirlockError(
      'INVALID_OPTION',
      `OLD (${older.size} entries) is larger than NEW (${newer.size})`,
    );
  const proof = await api.consistencyProof(older.size, newer.size);
  const oldRoot = older.root ?? b64(proof.fromRoot, 'root');
  const newRoot = newer.root ?? b64(proof.toRoot, 'root');
  const ok = verifyConsistency(
    older.size,
    newer.size,
    proof.proof.map((hash) => b64(hash, 'proof hash')),
    oldRoot,
    newRoot,
  );
  if (options.json === true) context.stdout.write(`${JSON.stringify({ ok, ...proof })}\n`);
  else
    context.stdout.write(
      ok
        ? `consistent: the log at ${newer.label} extends the log at ${older.label} (proof of ${proof.proof.length} hashes)${older.root === null || newer.root === null ? '; a size given as a number is checked against the root the server reports, not a signed one' : ''}\n`
        : `NOT consistent: the log at ${newer.label} does not extend the log at ${older.label}: history was rewritten\n`,
    );
  return ok ? 0 : 1;
}

interface WitnessState {
  version: 1;
  origin: string;
  /** Verifier keys this witness trusts. */
  keys: string[];
  /** The last checkpoint it accepted, as signed. */
  checkpoint: string;
}

async function readState(path: string): Promise<WitnessState | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AirlockError(
      'INVALID_OPTION',
      `cannot read the witness state ${path}: ${describeError(error)}`,
    );
  }
  const state = JSON.parse(text) as WitnessState;
  if (
    state.version !== 1 ||
    typeof state.checkpoint !== 'string' ||
    !Array.isArray(state.keys) ||
    typeof state.origin !== 'string'
  )
    throw new AirlockError('INVALID_OPTION', `${path} is not a witness state file`);
  return state;
}

/** Whole or not at all: a temporary file, fsync, rename, fsync of the directory. */
async function writeState(path: string, state: WitnessState): Promise<void> {
  const temporary = join(dirname(path), `.${randomBytes(6).toString('hex')}.witness`);
  const handle = await open(temporary, 'wx', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(state, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
  const directory = await open(dirname(path), 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/**
 * `audit witness --state FILE`: keeps the last checkpoint it accepted and accepts a new one
 * only if it is signed by a key it trusts and the log at the new size provably extends the
 * log at the old one. A key rotation is followed only through a note signed by a trusted key.
 */
export async function auditWitnessCommand(
  context: CliContext,
  options: KeyOptions & { state: string; checkpoint?: string },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const state = await readState(options.state);
  const pinned = (options.key ?? []).map(parseVerifierKey);
  // Trusted: what the state pinned plus --key. Only on a first run without --key are the
  // server's current keys taken (trust on first use, said so), and then only those that
  // actually signed the first checkpoint.
  let verifiers: NoteVerifier[];
  if (state !== null) verifiers = [...state.keys.map(parseVerifierKey), ...pinned];
  else if (pinned.length > 0) verifiers = pinned;
  else {
    const { keys } = await api.auditKeys();
    context.stderr.write(
      'airlock: first run: trusting the current key the server names (pin it with --key for a witness that does not trust the server)\n',
    );
    verifiers = keys.filter((key) => key.retiredAt === null).map((key) => parseVerifierKey(key.verifierKey));
  }
  const note =
    options.checkpoint !== undefined
      ? await readCheckpointFile(options.checkpoint)
      : (await api.latestCheckpoint()).note;
  const refuse = (why: string): CommandResult => {
    context.stdout.write(printable(`REFUSED: ${why}`).concat('\n'));
    return 1;
  };
  let next: ReturnType<typeof openCheckpoint>;
  try {
    next = openCheckpoint(note, verifiers);
  } catch (error) {
    if (error instanceof AirlockError && error.code === 'CHECKPOINT_INVALID') return refuse(error.message);
    throw error;
  }
  // The log's checkpoints are signed by keys named after the log.
  if (!next.signedBy.some((key) => parseVerifierKey(key).name === next.origin))
    return refuse(`the checkpoint of ${next.origin} is not signed by a key of that log`);
  if (state !== null) {
    if (next.origin !== state.origin)
      return refuse(`the checkpoint is of log ${next.origin}, not ${state.origin}`);
    const previous = openCheckpoint(state.checkpoint, state.keys.map(parseVerifierKey));
    if (next.treeSize < previous.treeSize)
      return refuse(
        `the new checkpoint covers ${next.treeSize} entries, fewer than the ${previous.treeSize} already seen: the log was truncated or restored from an older copy`,
      );
    const proof = await api.consistencyProof(previous.treeSize, next.treeSize);
    const ok = verifyConsistency(
      previous.treeSize,
      next.treeSize,
      proof.proof.map((hash) => b64(hash, 'proof hash')),
      previous.rootHash,
      next.rootHash,
    );
    if (!ok)
      return refuse(
        `the checkpoint of ${next.treeSize} entries is not consistent with the one of ${previous.treeSize} seen before: history was rewritten`,
      );
  }
  // Keep the keys that signed; follow a rotation only as the signed text states it (a
  // signature line can be appended by anyone, the text only by a trusted key).
  let trusted = state === null ? [...next.signedBy] : [...new Set(verifiers.map((v) => v.text))];
  for (const rotation of rotationsIn(next.extensions)) {
    const successor = parseVerifierKey(rotation.next);
    if (successor.name !== next.origin)
      return refuse(`the rotation names a key of another log: ${successor.name}`);
    trusted = [...trusted.filter((key) => key !== rotation.old), successor.text];
  }
  await writeState(options.state, {
    version: 1,
    origin: next.origin,
    keys: [...new Set(trusted)],
    checkpoint: note,
  });
  context.stdout.write(
    state === null
      ? `witness: first checkpoint accepted (${next.treeSize} entries of ${next.origin}); trusting ${trusted.join(', ')}\n`
      : `witness: checkpoint of ${next.treeSize} entries accepted: consistent with the last one seen\n`,
  );
  return 0;
}

/** The outside checkpoint for `audit verify --against FILE`, its signature checked first. */
export async function againstCheckpoint(
  context: CliContext,
  path: string,
  options: KeyOptions,
  api: ApiClient | null,
  offlineKeys?: () => Promise<string[]>,
): Promise<{ treeSize: number; rootHash: Buffer }> {
  const note = await readCheckpointFile(path);
  const verifiers =
    api === null && (options.key === undefined || options.key.length === 0) && offlineKeys !== undefined
      ? (await offlineKeys()).map(parseVerifierKey)
      : await trustedKeys(context, options, api);
  const checkpoint = openCheckpoint(note, verifiers);
  return { treeSize: checkpoint.treeSize, rootHash: checkpoint.rootHash };
}
