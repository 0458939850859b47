import { createHash } from 'node:crypto';
import { describeError } from '../errors.js';
import type { WorkspaceEntry } from '../sandbox/workspace.js';
import { compileGlobs } from './glob.js';

/**
 * After the run, before the job's disk is removed: the workspace files that match the
 * job's `outputs` patterns, with their SHA-256 and size (JobRunResult.outputs).
 *
 * The workspace is the job's and hostile (DESIGN §5.7). It is read only through the
 * sandbox's WorkspaceReader, which lists without following links and reads regular files
 * only, refusing a link anywhere on the path: a job cannot make the worker hash /etc/shadow
 * by leaving a "dist/x -> /etc/shadow" link. Every amount is bounded (entries walked, files
 * reported, bytes per file), and what was left out is said in the job's own log, not hidden.
 */

export interface OutputBounds {
  readonly maxFiles: number;
  readonly maxListEntries: number;
  readonly maxFileBytes: number;
}

export const OUTPUT_BOUNDS: OutputBounds = Object.freeze({
  /** Files reported at most (JobRunResult.outputs). */
  maxFiles: 10_000,
  /** Workspace entries walked at most, directories included. */
  maxListEntries: 100_000,
  /**
   * Largest file hashed: WorkspaceReader reads a file whole into memory, so a larger output
   * is named in the log and left out rather than held in the worker's memory.
   */
  maxFileBytes: 256 * 1024 * 1024,
});

/** Files named one by one when they cannot be reported; the rest are counted. */
const MAX_FILE_NOTES = 20;

/** What outputs need of the workspace (WorkspaceReader; a fake in tests). */
export interface WorkspaceFiles {
  list(maxEntries: number): Promise<WorkspaceEntry[]>;
  readFile(path: string, maxBytes: number): Promise<Buffer>;
}

export interface OutputFile {
  path: string;
  sha256: string;
  size: number;
}

/**
 * The matching regular files, sorted by path. Never throws: a problem (a file that cannot
 * be read, a bound reached) becomes a line passed to `note`, meant for the job's log.
 */
export async function collectOutputs(
  workspace: WorkspaceFiles,
  patterns: readonly string[],
  note: (line: string) => void,
  bounds: OutputBounds = OUTPUT_BOUNDS,
): Promise<OutputFile[]> {
  if (patterns.length === 0) return [];
  let entries: WorkspaceEntry[];
  try {
    entries = await workspace.list(bounds.maxListEntries);
  } catch (error) {
    note(`[airlock] outputs: the workspace could not be listed: ${describeError(error)}`);
    return [];
  }
  if (entries.length >= bounds.maxListEntries)
    note(
      `[airlock] outputs: the workspace has more than ${bounds.maxListEntries} entries; only those seen are matched`,
    );
  const matches = compileGlobs(patterns);
  const paths = entries
    .filter((entry) => entry.type === 'file' && matches(entry.path))
    .map((entry) => entry.path)
    .sort();
  if (paths.length > bounds.maxFiles)
    note(
      `[airlock] outputs: ${paths.length} files match; only the first ${bounds.maxFiles} (by path) are reported`,
    );
  const out: OutputFile[] = [];
  let leftOut = 0;
  for (const path of paths.slice(0, bounds.maxFiles)) {
    try {
      const data = await workspace.readFile(path, bounds.maxFileBytes);
      out.push({ path, sha256: createHash('sha256').update(data).digest('hex'), size: data.length });
    } catch (error) {
      // The notes bypass the job's output cap, so they are bounded too.
      leftOut += 1;
      if (leftOut <= MAX_FILE_NOTES) note(`[airlock] outputs: ${path} left out: ${describeError(error)}`);
    }
  }
  if (leftOut > MAX_FILE_NOTES)
    note(`[airlock] outputs: ${leftOut - MAX_FILE_NOTES} more matching files left out`);
  return out;
}
