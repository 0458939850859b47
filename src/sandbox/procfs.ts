import { readdir, readFile } from 'node:fs/promises';

/** Host processes found through /proc: who runs as a job's host IDs, who names a job. */

/** Host processes whose command line contains `text`. */
export async function processesNaming(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) pids.push(Number(name));
  }
  return pids;
}

/** Host processes whose real or effective UID lies in [from, to). */
export async function processesWithUidIn(from: number, to: number): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const status = await readFile(`/proc/${name}/status`, 'utf8').catch(() => '');
    const uids = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status);
    if (uids === null) continue;
    const real = Number(uids[1]);
    const effective = Number(uids[2]);
    if ((real >= from && real < to) || (effective >= from && effective < to)) pids.push(Number(name));
  }
  return pids;
}
