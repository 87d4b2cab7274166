import type { OpenAIRunConfig } from "../backend/openai/settings.js";
import type { LoadedModel } from "../backend/types.js";
import type { CorpusIndex } from "../input/scan.js";
import { type IdentityMetadata, identityMetadata } from "../model/identity.js";
import type { LedgerModel, ModelTotals, RunRecord } from "../model/records.js";
import type { FileDigest } from "./checksum.js";
import type { OutputDtype, Ranges } from "./dtype.js";
import type { OutputFormat } from "./formats.js";

/** One output file: what it holds and its shape, for whoever loads it. */
export interface OutputFileEntry {
  file: string;
  format: OutputFormat;
  /** numpy's name of the stored element type (binary dtypes store packed bytes: int8/uint8). */
  dtype: "float32" | "float16" | "int8" | "uint8";
  /** [rows, values per row]: the embedding dimension, or dim/8 packed bytes. */
  shape: [number, number];
}

/** How the stored values were made from the float32 embeddings (sentence-transformers' quantize_embeddings). */
export interface QuantizationInfo {
  precision: OutputDtype;
  /** int8/uint8: [min per dimension, max per dimension] (quantize_embeddings' `ranges`, shape (2, dim)). */
  ranges: [number[], number[]] | null;
  /** What a stored value means, in words. */
  rule: string;
}

/**
 * `<alias>.metadata.json`: the fields of the specification, then everything
 * needed to reproduce. The model's identity (model_name, embedding_dim,
 * revision, dtype, normalize, prefix, max_length, pooling, truncate_dim...)
 * comes from its one definition (src/model/identity.ts).
 */
export interface ModelMetadata extends IdentityMetadata {
  num_paragraphs: number;
  processing_time: number;
  /** The batch limits the plan was cut with (after the servers' caps), also when resumed with others. */
  batch_size: number;
  alias: string;
  truncated_count: number;
  total_tokens: number;
  padding_efficiency: number;
  max_batch_tokens: number;
  input_file: string;
  input_sha256: string;
  input_size: number;
  skipped_lines: { line: number; problem: string }[];
  blank_lines: number;
  servers: string[];
  /**
   * What computed this run's vectors and in which precision, as the first
   * server reported it (null: it did not say, or this run connected to none).
   */
  engine: string | null;
  precision: string | null;
  /**
   * --quantize int8: how the first server's quantized model compares with float32 on the
   * calibration paragraphs, and the bound the run held it to (null: not quantized, or this
   * run connected to no server).
   */
  quantize_fidelity: QuantizeFidelityRecord | null;
  /** Which kind of server made the vectors, and for one not ours, how it served them. */
  backend: BackendRecord;
  outputs: string[];
  /** The dtype of the vectors in the output files. */
  output_dtype: OutputDtype;
  output_files: OutputFileEntry[];
  quantization: QuantizationInfo | null;
  /** Seconds spent writing the JSONL (null when not written). */
  jsonl_export_time: number | null;
  resumed_count: number;
  /** Batches whose vectors failed the per-batch checks (NaN, Inf, zero or off-norm rows) and were sent again. */
  retried_batches: number;
  /** Spot rows per row (--spot_check); 0 when the checks were off. */
  spot_check: number;
  /** Spot checks that failed (each kept a server out of the run). */
  spot_check_failures: number;
  /** Batches redone because their server then failed a spot check. */
  spot_redone_batches: number;
  /** Rows whose vectors the servers computed (the rest were copied: reused or duplicates). */
  embedded_rows: number;
  /** Rows copied byte for byte from the float32 .npy of earlier outputs (--reuse), by folder. */
  reused_rows: number;
  reused_from: { dir: string; rows: number }[];
  /** Rows whose model input equals an earlier row's of this input: embedded once, copied. */
  deduplicated_rows: number;
  /** The file of per-row content hashes, and how each is made. */
  row_hashes: { file: string; rule: string };
  created_at: string;
  finished_at: string;
  tool: string;
  tool_version: string;
  /** sha256 and size of every output file but the metadata, by file name. */
  files: Record<string, FileDigest>;
  /** A shard's run: which rows of the input it holds, and how the input was scanned (for the merge). */
  shard?: ShardMetadata;
  /** A merge's output: the shards it was made from. */
  merged_from?: MergedFrom;
}

export interface ShardMetadata {
  index: number;
  count: number;
  first_row: number;
  rows: number;
  total_rows: number;
  skip_invalid: boolean;
  max_text_chars: number;
}

export interface MergedFrom {
  shards: number;
  folders: string[];
  /** Where int8/uint8 ranges came from: "all shards" (computed at the merge) or a file. */
  ranges_from: string | null;
}

export interface QuantizeFidelityRecord {
  method: string;
  calibration_rows: number;
  /** sha256 of the calibration texts, each followed by a NUL byte. */
  calibration_sha256: string;
  min_cosine: number;
  mean_cosine: number;
  min_cosine_bound: number;
}

export type BackendRecord =
  | { kind: "grpc" }
  | {
      kind: "openai";
      served_model_name: string;
      encoding_format: string;
      /** Who cut to truncate_dim: the server (`dimensions`), embed-multi (`local`), or "none". */
      matryoshka: string;
      normalized_by_server: boolean;
      token_counts: string;
    }
  /** An OpenAI-compatible run finished without reconnecting (nothing was left to embed). */
  | { kind: "openai" };

function backendRecord(config: MetadataSettings, server: LoadedModel | undefined): BackendRecord {
  const s = server?.servedAs;
  if (s) {
    return {
      kind: "openai",
      served_model_name: s.servedModelName,
      encoding_format: s.encodingFormat,
      matryoshka: s.matryoshka,
      normalized_by_server: s.normalizedByServer,
      token_counts: s.tokenCounts,
    };
  }
  return config.openai ? { kind: "openai" } : { kind: "grpc" };
}

/** The metadata as the run describes it; finalize adds the digests of the files it wrote. */
export type MetadataBody = Omit<ModelMetadata, "files">;

/** The run's settings that the metadata records (a RunConfig holds them). */
export interface MetadataSettings {
  readonly batchSize: number;
  readonly maxBatchTokens: number;
  readonly openai: OpenAIRunConfig | null;
  readonly outputDtype: OutputDtype;
  readonly spotCheck: number;
  /** --quantize_min_cosine, recorded beside a quantized model's fidelity. */
  readonly quantizeMinCosine: number;
  readonly toolVersion: string;
  readonly skipInvalid: boolean;
  readonly maxTextChars: number;
}

export interface MetadataInputs {
  readonly config: MetadataSettings;
  readonly model: { readonly alias: string; readonly fileStem: string };
  readonly ledgerModel: LedgerModel;
  readonly totals: ModelTotals;
  readonly run: RunRecord;
  readonly corpus: CorpusIndex;
  readonly outputs: string[];
  readonly files: OutputFileEntry[];
  readonly ranges: Ranges | null;
  readonly jsonlSeconds: number | null;
  /** The first server's view of the model, when this run connected to one. */
  readonly server?: LoadedModel | undefined;
}

export function buildMetadata(x: MetadataInputs): MetadataBody {
  const identity = identityMetadata(x.ledgerModel);
  // The specification's fields first; model_name and embedding_dim keep their places
  // (a key set again by the spread below keeps its place), the other settings follow
  // alias in the definition's order.
  const head = {
    model_name: identity.model_name,
    embedding_dim: identity.embedding_dim,
    num_paragraphs: x.corpus.rows,
    processing_time: round(x.run.processingSeconds),
    // A checkpoint planned before the limits were recorded: the flags, as it always said.
    batch_size: x.ledgerModel.plannedWith?.batchSize ?? x.config.batchSize,
    alias: x.model.alias,
  };
  return {
    ...head,
    ...identity,
    truncated_count: x.totals.truncated,
    total_tokens: x.totals.tokens,
    padding_efficiency: round(
      x.totals.paddedTokens ? x.totals.realTokens / x.totals.paddedTokens : 1,
    ),
    max_batch_tokens: x.ledgerModel.plannedWith?.maxBatchTokens ?? x.config.maxBatchTokens,
    input_file: x.corpus.file,
    input_sha256: x.corpus.sha256,
    input_size: x.corpus.size,
    skipped_lines: [...x.corpus.skipped],
    blank_lines: x.corpus.blankLines,
    servers: x.totals.servers,
    engine: x.server?.engine || null,
    precision: x.server?.precision || null,
    quantize_fidelity: fidelityRecord(x.config, x.server),
    backend: backendRecord(x.config, x.server),
    outputs: x.outputs,
    output_dtype: x.config.outputDtype,
    output_files: x.files,
    quantization: quantization(x.config.outputDtype, x.ranges),
    jsonl_export_time: x.jsonlSeconds === null ? null : round(x.jsonlSeconds),
    resumed_count: Math.max(0, x.run.attempts - 1),
    retried_batches: x.totals.retriedBatches,
    spot_check: x.config.spotCheck,
    spot_check_failures: x.totals.spotFailures,
    spot_redone_batches: x.totals.spotRedoneBatches,
    embedded_rows: x.corpus.rows - x.totals.reusedRows - x.totals.deduplicatedRows,
    reused_rows: x.totals.reusedRows,
    reused_from: x.totals.reusedFrom.map((s) => ({ ...s })),
    deduplicated_rows: x.totals.deduplicatedRows,
    row_hashes: {
      file: `${x.model.fileStem}.hashes`,
      rule: "16 bytes a row, row i at byte 16 * i: the first 16 bytes of sha256 of the UTF-8 model input (prefix + text)",
    },
    created_at: x.run.createdAt,
    finished_at: new Date().toISOString(),
    tool: "embed-multi",
    tool_version: x.config.toolVersion,
    ...(x.corpus.shard
      ? {
          shard: {
            index: x.corpus.shard.index,
            count: x.corpus.shard.count,
            first_row: x.corpus.shard.firstRow,
            rows: x.corpus.shard.rows,
            total_rows: x.corpus.shard.totalRows,
            skip_invalid: x.config.skipInvalid,
            max_text_chars: x.config.maxTextChars,
          },
        }
      : {}),
  };
}

function fidelityRecord(
  config: MetadataSettings,
  server: LoadedModel | undefined,
): QuantizeFidelityRecord | null {
  const f = server?.quantizeFidelity;
  if (!f) return null;
  return {
    method:
      "static int8 (NNCF, OpenVINO), calibrated on up to 256 of the input's paragraphs spread evenly over it; each one's cosine between its int8 and float32 (torch) vectors",
    calibration_rows: f.rows,
    calibration_sha256: f.calibrationSha256,
    min_cosine: f.minCosine,
    mean_cosine: f.meanCosine,
    min_cosine_bound: config.quantizeMinCosine,
  };
}

const RULES: Record<OutputDtype, string | null> = {
  float32: null,
  float16: "IEEE half precision, rounded to nearest even (numpy astype(float16))",
  int8: "clip(floor((x - min) / ((max - min) / 255)), 0, 255) - 128, in float32 arithmetic; a constant dimension has step 1",
  uint8:
    "clip(floor((x - min) / ((max - min) / 255)), 0, 255), in float32 arithmetic; a constant dimension has step 1",
  binary: "numpy.packbits(x > 0) - 128: 8 dimensions per byte, the first in the high bit",
  ubinary: "numpy.packbits(x > 0): 8 dimensions per byte, the first in the high bit",
};

export function quantization(dtype: OutputDtype, ranges: Ranges | null): QuantizationInfo | null {
  const rule = RULES[dtype];
  if (rule === null) return null;
  return {
    precision: dtype,
    // Each a float32 as a double: JSON keeps it exactly, np.float32 reads it back bit for bit.
    ranges: ranges ? [Array.from(ranges.min), Array.from(ranges.max)] : null,
    rule,
  };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
