import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { isComplete } from "../checks/complete.js";
import { ExitError } from "../errors.js";
import { RowReader } from "../input/rows.js";
import { type CorpusIndex, scanInput } from "../input/scan.js";
import { partialPath, writeFileAtomic } from "../output/atomic.js";
import type { OutputDtype } from "../output/dtype.js";
import { finalizeModel, type OutputPaths, type OutputSpec } from "../output/finalize.js";
import { OUTPUT_FORMATS, type OutputFormat } from "../output/formats.js";
import { withFolderLock } from "../output/lock.js";
import { type MetadataBody, type ModelMetadata, quantization } from "../output/metadata.js";
import { NpyMatrixFile } from "../output/npy.js";
import { writeRowHashes } from "../reuse/hashes.js";
import { checkShardNpy, type FoundShard, findShards, type ShardModel } from "./shards.js";

export interface MergeOptions {
  /** The shards' parent: the merged files go here. */
  readonly outputDir: string;
  readonly outputFormat: readonly OutputFormat[];
  readonly outputDtype: OutputDtype;
  /** Overrides the input path the shards recorded (moved since, or another mount on this pod). */
  readonly inputFile: string | null;
  readonly toolVersion: string;
  readonly note: (line: string) => void;
}

export interface MergeResult {
  readonly models: { stem: string; rows: number; merged: boolean }[];
}

/** Marks the folder's merged files as the merge's own: a later merge may replace them. */
export const MERGE_MARKER = "embed-multi.merge.json";

/** Rows copied from a shard's matrix into the merged one at a time. */
const COPY_ROWS = 4096;

/**
 * Writes, from finished shards, the files one unsharded run would have
 * written. The shards' float32 matrices are copied, a chunk at a time, into a
 * working matrix at their row offsets; then the run's own finalizing derives
 * every output from it (compact dtypes with ranges over all rows). Every step
 * writes a temporary file and renames it and the same shards give the same
 * bytes, so a merge killed at any point is run again to the same files.
 */
export function merge(options: MergeOptions): Promise<MergeResult> {
  return withFolderLock(options.outputDir, () => mergeLocked(options));
}

async function mergeLocked(options: MergeOptions): Promise<MergeResult> {
  const dir = options.outputDir;
  const shards = findShards(dir);
  const stems = sameModels(shards);
  const spec: OutputSpec = {
    outputFormat: [...options.outputFormat],
    outputDtype: options.outputDtype,
  };
  claimFolder(dir, stems, shards);
  const result: MergeResult = { models: [] };
  for (const stem of stems) {
    const parts = shards.map((s) => {
      const m = s.models.get(stem);
      if (!m) throw new Error(`${s.folder} lost ${stem}`);
      return m;
    });
    checkParts(shards, stem, parts);
    const paths = mergedPaths(dir, stem);
    if (isComplete(paths, spec) && sameSources(paths, shards)) {
      options.note(
        `${stem}: already merged (${spec.outputFormat.join(", ")} in ${spec.outputDtype})`,
      );
      result.models.push({ stem, rows: totalRows(parts), merged: false });
      continue;
    }
    for (const [i, part] of parts.entries()) checkShardNpy(shards[i] as FoundShard, stem, part);
    const first = parts[0] as ShardModel;
    const corpus = await scanWhole(first.metadata, options.inputFile);
    options.note(`${stem}: merging ${shards.length} shards, ${corpus.rows} rows`);
    // Files of an earlier merge in other formats: the folder holds what the metadata lists.
    for (const format of OUTPUT_FORMATS) {
      if (!spec.outputFormat.includes(format)) rmSync(paths[format], { force: true });
    }
    await mergeModel(paths, spec, shards, parts, corpus, options.toolVersion);
    result.models.push({ stem, rows: corpus.rows, merged: true });
  }
  return result;
}

async function mergeModel(
  paths: OutputPaths,
  spec: OutputSpec,
  shards: readonly FoundShard[],
  parts: readonly ShardModel[],
  corpus: CorpusIndex,
  toolVersion: string,
): Promise<void> {
  const first = parts[0] as ShardModel;
  const dim = first.metadata.embedding_dim;
  // Created afresh every time: a copy killed halfway is simply made again.
  const matrix = NpyMatrixFile.create(paths.workingNpy, corpus.rows, dim);
  const reader = new RowReader(corpus);
  try {
    const buffer = Buffer.alloc(COPY_ROWS * dim * 4);
    const rowNumbers = new Uint32Array(COPY_ROWS);
    for (const part of parts) {
      const shard = part.metadata.shard;
      if (!shard) throw new Error("a shard without its range");
      const source = NpyMatrixFile.reopen(part.npy, shard.rows, dim);
      if (!source) throw new ExitError(`${part.npy} is not of shape (${shard.rows}, ${dim})`);
      try {
        for (let r = 0; r < shard.rows; r += COPY_ROWS) {
          const count = Math.min(COPY_ROWS, shard.rows - r);
          const bytes = source.readRows(r, count, buffer);
          for (let i = 0; i < count; i++) rowNumbers[i] = shard.first_row + r + i;
          matrix.writeRows(rowNumbers.subarray(0, count), bytes);
        }
      } finally {
        source.close();
      }
    }
    matrix.sync();
    // So that the merged output can be a --reuse source of a later run, like any run's.
    writeRowHashes(paths.hashes, reader, corpus.rows, first.metadata.prefix);
    await finalizeModel(
      paths,
      spec,
      matrix,
      reader,
      first.metadata.alias,
      (outputs) => {
        reader.verifyUnchanged();
        return mergedMetadata(parts, shards, spec, outputs, toolVersion);
      },
      [paths.hashes],
    );
  } finally {
    matrix.close();
    reader.close();
  }
}

/** The metadata one run would have written: identity from the shards, counts summed over them. */
function mergedMetadata(
  parts: readonly ShardModel[],
  shards: readonly FoundShard[],
  spec: OutputSpec,
  outputs: Parameters<Parameters<typeof finalizeModel>[5]>[0],
  toolVersion: string,
): MetadataBody {
  const metas = parts.map((p) => p.metadata);
  const base = metas[0] as ModelMetadata;
  const sum = (f: (m: ModelMetadata) => number) => metas.reduce((n, m) => n + f(m), 0);
  const realTokens = sum((m) => m.total_tokens);
  // Each shard's padded tokens back from its efficiency (real / padded).
  const paddedTokens = sum((m) =>
    m.padding_efficiency > 0 ? m.total_tokens / m.padding_efficiency : 0,
  );
  const { files: _files, shard: _shard, ...rest } = base;
  return {
    ...rest,
    num_paragraphs: sum((m) => m.num_paragraphs),
    processing_time: round(sum((m) => m.processing_time)),
    truncated_count: sum((m) => m.truncated_count),
    total_tokens: realTokens,
    padding_efficiency: round(paddedTokens > 0 ? realTokens / paddedTokens : 1),
    servers: [...new Set(metas.flatMap((m) => m.servers))].sort(),
    outputs: outputs.outputs,
    output_dtype: spec.outputDtype,
    output_files: outputs.files,
    quantization: quantization(spec.outputDtype, outputs.ranges),
    jsonl_export_time: outputs.jsonlSeconds === null ? null : round(outputs.jsonlSeconds),
    resumed_count: sum((m) => m.resumed_count),
    embedded_rows: sum((m) => m.embedded_rows),
    reused_rows: sum((m) => m.reused_rows),
    reused_from: reusedFrom(metas),
    deduplicated_rows: sum((m) => m.deduplicated_rows),
    retried_batches: sum((m) => m.retried_batches),
    created_at: metas.map((m) => m.created_at).sort()[0] ?? base.created_at,
    finished_at: new Date().toISOString(),
    tool_version: toolVersion,
    merged_from: {
      shards: shards.length,
      folders: shards.map((s) => s.folder),
      ranges_from: outputs.ranges ? "all shards (computed at the merge)" : null,
    },
  };
}

/** Rows reused per source folder, over every shard. */
function reusedFrom(metas: readonly ModelMetadata[]): ModelMetadata["reused_from"] {
  const rows = new Map<string, number>();
  for (const m of metas)
    for (const s of m.reused_from) rows.set(s.dir, (rows.get(s.dir) ?? 0) + s.rows);
  return [...rows].map(([dir, n]) => ({ dir, rows: n }));
}

/** The stems every shard has; refuses shards of different model lists. */
function sameModels(shards: readonly FoundShard[]): string[] {
  const first = shards[0] as FoundShard;
  const stems = [...first.models.keys()].sort();
  for (const s of shards) {
    const mine = [...s.models.keys()].sort();
    if (mine.join(",") !== stems.join(",")) {
      throw new ExitError(
        `${s.folder} holds ${mine.join(", ")} but ${first.folder} holds ${stems.join(", ")}: every shard must run the same --models`,
      );
    }
  }
  return stems;
}

/** Every setting that changes the numbers, and the input, must be the same in every shard. */
const SAME_FIELDS = [
  "model_name",
  "revision",
  "embedding_dim",
  "dtype",
  "normalize",
  "prefix",
  "max_length",
  "pooling",
  "truncate_dim",
  // int8 shards share one calibration sample (taken from the whole input): same figures too.
  "quantize",
  "input_sha256",
  "input_size",
] as const;

function checkParts(
  shards: readonly FoundShard[],
  stem: string,
  parts: readonly ShardModel[],
): void {
  const first = (parts[0] as ShardModel).metadata;
  let nextRow = 0;
  for (const [i, part] of parts.entries()) {
    const m = part.metadata;
    const folder = (shards[i] as FoundShard).folder;
    for (const field of SAME_FIELDS) {
      if (m[field] !== first[field]) {
        throw new ExitError(
          `${folder}/${stem}: ${field} is ${JSON.stringify(m[field])} but ${JSON.stringify(first[field])} in ${(shards[0] as FoundShard).folder}: the shards were not made by one split of one run`,
        );
      }
    }
    const s = m.shard;
    if (!s || s.index !== i || s.count !== shards.length) {
      throw new ExitError(
        `${folder}/${stem}.metadata.json does not say it is shard ${i} of ${shards.length}`,
      );
    }
    if (s.first_row !== nextRow || s.total_rows !== first.shard?.total_rows) {
      throw new ExitError(
        `${folder}/${stem}: rows ${s.first_row}+${s.rows} of ${s.total_rows} do not follow the previous shard (row ${nextRow} of ${first.shard?.total_rows})`,
      );
    }
    nextRow += s.rows;
  }
  if (nextRow !== first.shard?.total_rows) {
    throw new ExitError(
      `${stem}: the shards hold ${nextRow} rows, the input ${first.shard?.total_rows}`,
    );
  }
}

function totalRows(parts: readonly ShardModel[]): number {
  return parts.reduce((n, p) => n + p.metadata.num_paragraphs, 0);
}

/** The input, scanned as the shards scanned it; the same file they were made from. */
async function scanWhole(meta: ModelMetadata, inputFile: string | null): Promise<CorpusIndex> {
  const shard = meta.shard;
  if (!shard) throw new Error("a shard without its range");
  const file = inputFile ?? meta.input_file;
  const corpus = await scanInput(file, {
    maxTextChars: shard.max_text_chars,
    skipInvalid: shard.skip_invalid,
  });
  if (corpus.sha256 !== meta.input_sha256) {
    throw new ExitError(
      `${file} is not the input the shards were made from (sha256 ${corpus.sha256.slice(0, 12)}… ≠ ${meta.input_sha256.slice(0, 12)}…); pass the original with --input_file`,
    );
  }
  if (corpus.rows !== shard.total_rows) {
    throw new ExitError(`${file} has ${corpus.rows} paragraphs, the shards ${shard.total_rows}`);
  }
  return corpus;
}

function mergedPaths(dir: string, stem: string): OutputPaths {
  const base = join(dir, stem);
  return {
    npy: `${base}.npy`,
    jsonl: `${base}.jsonl`,
    parquet: `${base}.parquet`,
    metadata: `${base}.metadata.json`,
    hashes: `${base}.hashes`,
    workingNpy: partialPath(`${base}.npy`),
  };
}

/** Finished merged metadata of these very shards (same folders). */
function sameSources(paths: OutputPaths, shards: readonly FoundShard[]): boolean {
  try {
    const meta = JSON.parse(readFileSync(paths.metadata, "utf8")) as Partial<ModelMetadata>;
    return meta.merged_from?.folders.join(",") === shards.map((s) => s.folder).join(",");
  } catch {
    return false;
  }
}

/**
 * A merge never replaces a file it did not create: outputs of a model already
 * in the folder without the merge's marker are someone else's.
 */
function claimFolder(dir: string, stems: readonly string[], shards: readonly FoundShard[]): void {
  const marker = join(dir, MERGE_MARKER);
  if (!existsSync(marker)) {
    const theirs = stems.flatMap((stem) =>
      [".npy", ".jsonl", ".parquet", ".hashes", ".metadata.json"]
        .map((ext) => `${stem}${ext}`)
        .filter((name) => existsSync(join(dir, name))),
    );
    if (theirs.length > 0) {
      throw new ExitError(
        `${dir} already holds ${theirs.join(", ")}, not written by a merge: move them away, or merge into the shards' parent of another folder`,
      );
    }
    writeFileAtomic(
      marker,
      `${JSON.stringify({ shards: shards.map((s) => s.folder) }, null, 2)}\n`,
    );
  }
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
