import { join } from "node:path";
import { CheckpointError, ConfigError } from "../errors.js";
import type { CorpusIndex, ShardRange } from "../input/scan.js";

export type { ShardRange };

/** One of N contiguous parts of the input, K from 0 like Kubernetes' JOB_COMPLETION_INDEX. */
export interface ShardSpec {
  readonly index: number;
  readonly count: number;
}

const DIGITS = 5;

/** `shard-00007-of-00064`: sorts by index, and names its split. */
export function shardFolderName(spec: ShardSpec): string {
  const pad = (n: number) => String(n).padStart(DIGITS, "0");
  return `shard-${pad(spec.index)}-of-${pad(spec.count)}`;
}

export function shardDir(parent: string, spec: ShardSpec): string {
  return join(parent, shardFolderName(spec));
}

/** Reads a folder name back: null when it is not a shard's. */
export function parseShardFolder(name: string): ShardSpec | null {
  const m = /^shard-(\d{5,})-of-(\d{5,})$/.exec(name);
  if (!m) return null;
  const index = Number(m[1]);
  const count = Number(m[2]);
  return index < count ? { index, count } : null;
}

/**
 * --shard K/N, or --num_shards N with the index from JOB_COMPLETION_INDEX (an
 * Indexed Job's pod). Null when neither is given.
 */
export function parseShard(
  shard: string | undefined,
  numShards: number | undefined,
  env: NodeJS.ProcessEnv,
): ShardSpec | null {
  if (shard !== undefined && numShards !== undefined) {
    throw new ConfigError("give --shard K/N or --num_shards N, not both");
  }
  if (shard !== undefined) {
    const m = /^(\d+)\/(\d+)$/.exec(String(shard).trim());
    if (!m) throw new ConfigError(`--shard must be K/N, e.g. 3/8 (got "${shard}")`);
    return checked(Number(m[1]), Number(m[2]), "--shard");
  }
  if (numShards === undefined) return null;
  if (!Number.isInteger(numShards) || numShards < 1) {
    throw new ConfigError(`--num_shards must be a positive integer (got ${String(numShards)})`);
  }
  const raw = env.JOB_COMPLETION_INDEX;
  if (raw === undefined || !/^\d+$/.test(raw.trim())) {
    throw new ConfigError(
      `--num_shards needs the shard's index in JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job; got ${raw === undefined ? "nothing" : `"${raw}"`}); or give --shard K/N`,
    );
  }
  return checked(Number(raw.trim()), numShards, "JOB_COMPLETION_INDEX");
}

function checked(index: number, count: number, where: string): ShardSpec {
  if (count < 1 || count > 99_999) {
    throw new ConfigError(`${where}: the number of shards must be 1 to 99999 (got ${count})`);
  }
  if (index >= count) {
    throw new ConfigError(
      `${where}: shard index ${index} is not below the count ${count} (K runs from 0 to N-1)`,
    );
  }
  return { index, count };
}

/** Rows [floor(K·R/N), floor((K+1)·R/N)): every row in exactly one shard, sizes within one. */
export function shardRange(spec: ShardSpec, totalRows: number): ShardRange {
  const bound = (k: number) => Math.floor((k * totalRows) / spec.count);
  const firstRow = bound(spec.index);
  return { ...spec, firstRow, rows: bound(spec.index + 1) - firstRow, totalRows };
}

/**
 * The corpus of one shard: the whole input's identity (size, sha256, skipped
 * lines) with only the shard's rows. Row r of the shard is row firstRow + r of
 * the input, so its files are the rows of the whole run's, in order.
 */
export function shardCorpus(corpus: CorpusIndex, range: ShardRange): CorpusIndex {
  const end = range.firstRow + range.rows;
  if (range.rows === 0) {
    throw new ConfigError(
      `shard ${range.index}/${range.count} has no rows: the input has only ${range.totalRows} paragraphs; use fewer shards`,
    );
  }
  return {
    ...corpus,
    shard: range,
    rows: range.rows,
    offsets: corpus.offsets.subarray(range.firstRow, end),
    byteLengths: corpus.byteLengths.subarray(range.firstRow, end),
    textChars: corpus.textChars.subarray(range.firstRow, end),
    lineNumbers: corpus.lineNumbers.subarray(range.firstRow, end),
  };
}

/** The shard as stored in its checkpoint and metadata. */
export function describeRange(r: ShardRange): string {
  return `shard ${r.index}/${r.count}: rows ${r.firstRow}-${r.firstRow + r.rows - 1} of ${r.totalRows}`;
}

/** Refuses a checkpoint made for another split: names what differs. */
export function rangeDifferences(stored: ShardRange, now: ShardRange): string[] {
  const out: string[] = [];
  if (stored.count !== now.count) out.push(`shard count ${stored.count} → ${now.count}`);
  if (stored.index !== now.index) out.push(`shard index ${stored.index} → ${now.index}`);
  if (stored.totalRows !== now.totalRows) {
    out.push(`input rows ${stored.totalRows} → ${now.totalRows}`);
  }
  if (stored.firstRow !== now.firstRow || stored.rows !== now.rows) {
    out.push(`rows ${stored.firstRow}+${stored.rows} → ${now.firstRow}+${now.rows}`);
  }
  return out;
}

/** The key of the shard's range in its checkpoint's meta table. */
export const SHARD_META_KEY = "shard";

/** What a checkpoint needs to refuse another split: the range it was made for, or none. */
export interface ShardMetaStore {
  metaValue(key: string): string | null;
  setMetaValue(key: string, value: string): void;
}

/**
 * A shard's checkpoint remembers its range; resuming with another split (or
 * an unsharded run on a shard's checkpoint, or the reverse) is refused,
 * naming the difference.
 */
export function checkShardCheckpoint(
  store: ShardMetaStore,
  now: ShardRange | undefined,
  existed: boolean,
): void {
  const raw = store.metaValue(SHARD_META_KEY);
  const stored = raw ? (JSON.parse(raw) as ShardRange) : null;
  if (existed && (stored === null) !== (now === undefined)) {
    const what = stored ? `${describeRange(stored)}` : "the whole input";
    const asked = now ? describeRange(now) : "the whole input";
    throw new CheckpointError(
      `the checkpoint was made for ${what}, this run is for ${asked}; ${HOW_TO_START_OVER}`,
    );
  }
  if (stored && now) {
    const changes = rangeDifferences(stored, now);
    if (changes.length > 0) {
      throw new CheckpointError(
        `the checkpoint was made for another split of the input (${changes.join(", ")}); ${HOW_TO_START_OVER}`,
      );
    }
  }
  if (now && !stored) store.setMetaValue(SHARD_META_KEY, JSON.stringify(now));
}

const HOW_TO_START_OVER = "run with --restart to start over, or use another --output_dir";
