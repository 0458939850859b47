/** Summaries of paired measurements: each pair is (airlock, bare) from the same moment. */

export interface Summary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) throw new RangeError('no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median =
    sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
  return { median, min: sorted[0] ?? 0, max: sorted[sorted.length - 1] ?? 0, n: sorted.length };
}

export interface PairedResult {
  readonly name: string;
  readonly airlockMs: Summary;
  readonly bareMs: Summary;
  /** Per-pair ratio airlock / bare. */
  readonly ratio: Summary;
}

export function paired(name: string, pairs: readonly { airlock: number; bare: number }[]): PairedResult {
  return {
    name,
    airlockMs: summarize(pairs.map((pair) => pair.airlock)),
    bareMs: summarize(pairs.map((pair) => pair.bare)),
    ratio: summarize(pairs.map((pair) => pair.airlock / pair.bare)),
  };
}

export function formatRow(result: PairedResult): string {
  const ms = (value: number): string => value.toFixed(1);
  const x = (value: number): string => `${value.toFixed(2)}×`;
  return `| ${result.name} | ${result.ratio.n} | ${ms(result.airlockMs.median)} | ${ms(result.bareMs.median)} | ${x(result.ratio.median)} | ${x(result.ratio.min)} | ${x(result.ratio.max)} |`;
}

export const TABLE_HEADER = [
  '| measurement | pairs | Airlock median ms | bare median ms | ratio median | ratio min | ratio max |',
  '|---|---|---|---|---|---|---|',
].join('\n');
