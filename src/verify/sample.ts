import { join } from "node:path";
import { embedTexts, loadModelKey } from "../backend/embed-texts.js";
import type { Backend } from "../backend/types.js";
import type { StoredMetadata } from "../checks/metadata.js";
import type { Matrix } from "../checks/vectors.js";
import type { RunModel } from "../config.js";
import { calibrationDigest, calibrationSample } from "../input/calibration.js";
import { forEachLine } from "../input/lines.js";
import type { CheckContext, ExpectedRows } from "./context.js";
import { compareSample } from "./sample-compare.js";

export interface SampleSettings {
  readonly size: number;
  readonly seed: number;
  readonly tolerance: number;
  readonly device: string;
  readonly batchTimeoutMs: number;
}

/** `k` distinct rows of [0, count), in increasing order, the same for the same seed. */
export function sampleRows(count: number, k: number, seed: number): number[] {
  const random = mulberry32(seed);
  if (k >= count) return Array.from({ length: count }, (_, i) => i);
  const chosen = new Set<number>();
  while (chosen.size < k) chosen.add(Math.floor(random() * count));
  return [...chosen].sort((a, b) => a - b);
}

/** A small seeded generator: the sample is reproducible from the seed verify prints. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The settings of a model as the run used them, for LoadModel. */
export function modelOf(metadata: StoredMetadata, stem: string): RunModel {
  return {
    alias: metadata.alias,
    modelId: metadata.modelName,
    // The resolved revision: the server is asked for the exact weights the run had.
    revision: metadata.revision === "unknown" ? "" : metadata.revision,
    prefix: metadata.prefix,
    normalize: metadata.normalize,
    maxLength: metadata.maxLength,
    dtype: metadata.dtype,
    truncateDim: metadata.truncateDim,
    // An int8 model gets its calibration sample in checkSample, from the input.
    quantize: metadata.quantize,
    fileStem: stem,
  };
}

/** The stored rows of the sample (width values each, as numbers): from the checked .npy, else from the JSONL. */
async function storedVectors(
  ctx: CheckContext,
  rows: readonly number[],
  jsonlName: string | null,
): Promise<Matrix | null> {
  const width = ctx.metadata.width;
  const data = new Float32Array(rows.length * width);
  if (ctx.reference) {
    rows.forEach((row, i) => {
      data.set(ctx.reference?.row(row) ?? [], i * width);
    });
    return { rows: rows.length, dim: width, data };
  }
  if (!jsonlName) return null;
  const wanted = new Map(rows.map((row, i) => [row, i]));
  await forEachLine(join(ctx.dir, jsonlName), (text, line) => {
    const i = wanted.get(line - 1);
    if (i === undefined) return;
    const parsed = JSON.parse(text) as { embedding: number[] };
    data.set(parsed.embedding, i * width);
  });
  return { rows: rows.length, dim: width, data };
}

/**
 * A quantized model as the run loaded it: with the calibration sample the run took from
 * this input (its digest must be the metadata's), or why that cannot be.
 */
function quantizedAsTheRun(
  ctx: CheckContext,
  input: ExpectedRows,
  model: RunModel,
): RunModel | string {
  if (model.quantize === "none") return model;
  const texts = calibrationSample(input.count, (rows) =>
    rows.map((row) => input.paragraph(row).text),
  );
  if (calibrationDigest(texts) !== ctx.metadata.calibrationSha256) {
    return `cannot take the run's ${model.quantize} calibration sample from this input again (its digest differs from the metadata's; a shard's folder? verify the merged output)`;
  }
  return { ...model, calibrationTexts: texts };
}

/**
 * Embeds the sampled rows again on one server and compares them with the
 * stored ones. Returns the problem, or a summary of the worst cosine.
 */
export async function checkSample(
  ctx: CheckContext,
  input: ExpectedRows,
  connection: Backend,
  model: RunModel,
  settings: SampleSettings,
  jsonlName: string | null,
): Promise<{ problem: string | null; summary: string }> {
  const where = `sample on ${connection.target}`;
  const rows = sampleRows(ctx.metadata.rows, settings.size, settings.seed);
  const stored = await storedVectors(ctx, rows, jsonlName);
  if (!stored) return { problem: `${where}: no sound .npy or JSONL to compare with`, summary: "" };
  const quantized = quantizedAsTheRun(ctx, input, model);
  if (typeof quantized === "string") return { problem: `${where}: ${quantized}`, summary: "" };
  const loaded = await loadModelKey(connection, quantized, settings.device);
  if (loaded.dim !== ctx.metadata.dim) {
    return {
      problem: `${where}: the server's ${model.modelId} has dim ${loaded.dim}, the metadata says ${ctx.metadata.dim}`,
      summary: "",
    };
  }
  const texts = rows.map((row) => input.paragraph(row).text);
  const fresh = await embedTexts(connection, loaded.key, texts, settings.batchTimeoutMs);
  const { outputDtype, dim, ranges } = ctx.metadata;
  const compared = compareSample({
    dtype: outputDtype,
    dim,
    ranges,
    stored,
    fresh,
    tolerance: settings.tolerance,
  });
  const row = rows[compared.worstAt] ?? 0;
  const summary = `${where}: ${rows.length} rows (seed ${settings.seed}), ${compared.summary}`;
  if (!compared.ok) {
    const revision =
      loaded.revision && model.revision && loaded.revision !== model.revision
        ? `; the server has revision ${loaded.revision}, the outputs ${model.revision}`
        : "";
    return {
      problem: `${where}: row ${row} (input line ${input.lineOf(row)}) ${compared.failure} (${rows.length} rows, seed ${settings.seed})${revision}`,
      summary,
    };
  }
  return { problem: null, summary };
}
