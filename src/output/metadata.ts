import type { RunConfig, RunModel } from "../config.js";
import type { CorpusIndex } from "../input/scan.js";
import type { LedgerModel, ModelTotals, RunRecord } from "../model/records.js";
import type { FileDigest } from "./checksum.js";

/** `<alias>.metadata.json`: the fields of the specification, then everything needed to reproduce. */
export interface ModelMetadata {
  model_name: string;
  embedding_dim: number;
  num_paragraphs: number;
  processing_time: number;
  batch_size: number;
  alias: string;
  revision: string;
  dtype: string;
  normalize: boolean;
  prefix: string;
  max_length: number;
  pooling: string;
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
  outputs: string[];
  /** Seconds spent writing the JSONL (null when not written). */
  jsonl_export_time: number | null;
  resumed_count: number;
  created_at: string;
  finished_at: string;
  tool: string;
  tool_version: string;
  /** sha256 and size of every other output file of the model, by file name. */
  files: Record<string, FileDigest>;
}

/** The metadata as the run describes it; finalize adds the digests of the files it wrote. */
export type MetadataBody = Omit<ModelMetadata, "files">;

export interface MetadataInputs {
  readonly config: RunConfig;
  readonly model: RunModel;
  readonly ledgerModel: LedgerModel;
  readonly totals: ModelTotals;
  readonly run: RunRecord;
  readonly corpus: CorpusIndex;
  readonly outputs: string[];
  readonly jsonlSeconds: number | null;
}

export function buildMetadata(x: MetadataInputs): MetadataBody {
  return {
    model_name: x.ledgerModel.modelId,
    embedding_dim: x.ledgerModel.dim,
    num_paragraphs: x.corpus.rows,
    processing_time: round(x.run.processingSeconds),
    batch_size: x.config.batchSize,
    alias: x.model.alias,
    revision: x.ledgerModel.revision,
    dtype: x.ledgerModel.dtype,
    normalize: x.ledgerModel.normalize,
    prefix: x.ledgerModel.prefix,
    max_length: x.ledgerModel.maxLength,
    pooling: x.ledgerModel.pooling,
    truncated_count: x.totals.truncated,
    total_tokens: x.totals.tokens,
    padding_efficiency: round(
      x.totals.paddedTokens ? x.totals.realTokens / x.totals.paddedTokens : 1,
    ),
    max_batch_tokens: x.config.maxBatchTokens,
    input_file: x.corpus.file,
    input_sha256: x.corpus.sha256,
    input_size: x.corpus.size,
    skipped_lines: [...x.corpus.skipped],
    blank_lines: x.corpus.blankLines,
    servers: x.totals.servers,
    outputs: x.outputs,
    jsonl_export_time: x.jsonlSeconds === null ? null : round(x.jsonlSeconds),
    resumed_count: Math.max(0, x.run.attempts - 1),
    created_at: x.run.createdAt,
    finished_at: new Date().toISOString(),
    tool: "embed-multi",
    tool_version: x.config.toolVersion,
  };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
