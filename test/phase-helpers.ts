import { join } from "node:path";
import type { Backend, LoadedModel } from "../src/backend/types.js";
import { ledgerModelOf } from "../src/checkpoint/model-row.js";
import { modelSpec } from "../src/config/registry.js";
import { buildRunConfig, type RunConfig } from "../src/config.js";
import type { ServerSession } from "../src/dispatch/servers.js";
import { type CorpusIndex, scanInput } from "../src/input/scan.js";
import type { LedgerModel, PlanLimitsUsed } from "../src/model/records.js";
import { planBatches } from "../src/plan/planner.js";
import type { Progress } from "../src/progress.js";
import type { PlannedModel } from "../src/run/model-run.js";
import { openCheckpoint, type Prepared, prepareOutputDir } from "../src/run/prepare.js";
import { corpusSlice, writeLines } from "./helpers.js";
import { MEMORY_DESCRIPTION } from "./memory-backend.js";

/** A Progress that keeps its notes, for the phases' unit tests. */
export function recordingProgress(): Progress & { notes: string[] } {
  const notes: string[] = [];
  return {
    notes,
    addModel: () => {},
    advance: () => {},
    servers: () => {},
    note: (line) => notes.push(line),
    stop: () => {},
  };
}

/** A config for one custom model writing into `dir`, and a scanned corpus of `rows` paragraphs. */
export async function phaseSetup(
  dir: string,
  rows: number,
  args: Record<string, unknown> = {},
): Promise<{ config: RunConfig; corpus: CorpusIndex }> {
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(rows));
  const config = buildRunConfig(
    { input_file: input, output_dir: join(dir, "out"), models: ["org/m"], ...args },
    {},
  );
  const corpus = await scanInput(input, { maxTextChars: config.maxTextChars, skipInvalid: false });
  return { config, corpus };
}

export const MODEL_INFO: LoadedModel = {
  modelKey: "k1",
  modelId: "org/m",
  revision: "r1",
  dim: 4,
  maxLength: 128,
  pooling: "mean",
  normalize: false,
  prefix: "",
  dtype: "float32",
  device: "cpu",
  truncateDim: 0,
  quantize: "none",
};

/**
 * Custom model `org/m` (alias and file stem `alias`, default settings) as
 * planning stores it, loaded as MODEL_INFO with `loaded` over it.
 */
export function storedModel(
  plannedWith: PlanLimitsUsed,
  loaded: Partial<LoadedModel> = {},
  alias = "m",
): LedgerModel {
  const model = { ...modelSpec(alias, "org/m"), fileStem: alias };
  return ledgerModelOf(model, { ...MODEL_INFO, ...loaded }, 0, plannedWith);
}

/** A session as a server that loaded `org/m` would give. */
export function fakeSession(
  backend: Backend,
  info: LoadedModel = MODEL_INFO,
  alias = "org/m",
): ServerSession {
  return {
    target: backend.target,
    backend,
    info: MEMORY_DESCRIPTION,
    models: new Map([[alias, info]]),
  };
}

/**
 * A checkpoint of `rows` paragraphs with org/m planned in batches of 8 (each
 * row 3 tokens), as planning leaves it; the caller closes the ledger.
 */
export async function plannedCheckpoint(
  dir: string,
  rows: number,
): Promise<Prepared & { config: RunConfig; corpus: CorpusIndex; run: PlannedModel }> {
  const { config, corpus } = await phaseSetup(dir, rows);
  prepareOutputDir(config.outputDir);
  const prepared = openCheckpoint(config, corpus, recordingProgress());
  const [unplanned] = prepared.models;
  if (!unplanned) throw new Error("no model");
  const limits = { batchSize: 8, maxBatchTokens: 0 };
  const run = Object.assign(unplanned, {
    stored: ledgerModelOf(unplanned.model, MODEL_INFO, 0, limits),
  });
  const plan = planBatches(new Uint32Array(rows).fill(3), limits);
  prepared.ledger.addModel(run.stored, plan.batches);
  run.status = prepared.ledger.status(run.model.alias);
  return { ...prepared, config, corpus, run };
}
