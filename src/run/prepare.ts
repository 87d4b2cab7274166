import { existsSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { checkSameInput, checkSameModels } from "../checkpoint/compat.js";
import { Ledger, LedgerReader } from "../checkpoint/ledger.js";
import { isComplete } from "../checks/complete.js";
import { reexportSource } from "../checks/reexport.js";
import type { RunConfig } from "../config.js";
import { describeFsError } from "../errors.js";
import type { CorpusIndex } from "../input/scan.js";
import {
  allFiles,
  discardWorkingCopy,
  outputPaths,
  recoverWorkingMatrix,
} from "../output/finalize.js";
import { LOCK_FILE } from "../output/lock.js";
import { NpyMatrixFile } from "../output/npy.js";
import { ensureWritableDir } from "../output/output-dir.js";
import { restartFiles } from "../output/own-files.js";
import { tokenStorePaths } from "../plan/tokens.js";
import type { Progress } from "../progress.js";
import { checkShardCheckpoint } from "../shard/shard.js";
import {
  allBatchesDone,
  isPlanned,
  type ModelRun,
  type OpenModel,
  type PlannedModel,
  refresh,
} from "./model-run.js";

export const CHECKPOINT_FILE = "embed-multi.checkpoint.sqlite";

/**
 * Creates the output directory and proves it writable: find out now, not
 * after an hour of GPU time. (An output-dir lock belongs here too, taken
 * before anything in the directory is read or removed.)
 */
export function prepareOutputDir(dir: string): void {
  ensureWritableDir(dir);
}

export interface Prepared {
  readonly ledger: Ledger;
  readonly models: ModelRun[];
  /** The checkpoint existed before this run. */
  readonly existed: boolean;
}

/**
 * Opens the checkpoint (after --restart removed it), refuses one made for
 * another input or other model settings, and puts back to work a finished
 * model whose files were deleted since.
 */
export function openCheckpoint(
  config: RunConfig,
  corpus: CorpusIndex,
  progress: Progress,
): Prepared {
  const checkpointPath = join(config.outputDir, CHECKPOINT_FILE);
  if (config.restart) removeRunFiles(config, checkpointPath);
  const ledger = Ledger.open(checkpointPath);
  try {
    const stored = ledger.input();
    // Before the input check: a shard's rows differ from the whole input's, and that is the news.
    checkShardCheckpoint(ledger, corpus.shard, stored !== null);
    if (stored) {
      checkSameInput(stored, corpus);
      checkSameModels(ledger.models(), config.models);
    }
    ledger.startRun({
      path: corpus.file,
      size: corpus.size,
      sha256: corpus.sha256,
      rows: corpus.rows,
    });
    const known = new Map(ledger.models().map((m) => [m.alias, m]));
    const models = config.models.map(
      (model): ModelRun => ({
        model,
        paths: outputPaths(config.outputDir, model),
        stored: known.get(model.alias) ?? null,
        server: null,
        status: ledger.status(model.alias),
        matrix: null,
        window: null,
        rowsThisRun: 0,
        rowsCopiedThisRun: 0,
        store: null,
      }),
    );
    for (const run of models) {
      const complete = isComplete(run.paths, config);
      // A finalized model was planned.
      if (isPlanned(run) && run.status.finalized && !complete) {
        const source = reexportSource(run.paths, corpus.rows, run.stored.dim);
        const wanted = `${config.outputFormat.join(", ")} in ${config.outputDtype}`;
        if (source.ok) {
          // Finalizing derives every output from this matrix: no server, no embedding.
          progress.note(
            `outputs of ${run.model.alias} (${wanted}) are missing: deriving them from its complete float32 ${basename(run.paths.npy)}, without embedding`,
          );
          ledger.markUnfinalized(run.model.alias);
        } else {
          progress.note(
            `outputs of ${run.model.alias} (${wanted}) are missing and cannot be derived (${source.why}): embedding it again`,
          );
          ledger.resetModel(run.model.alias);
        }
        refresh(run, ledger);
      } else if (complete && !run.status.finalized && allBatchesDone(run.status)) {
        // Stopped after the metadata was written but before the checkpoint said so.
        ledger.markFinalized(run.model.alias);
        discardWorkingCopy(run.paths, config);
        refresh(run, ledger);
      }
    }
    return { ledger, models, existed: stored !== null };
  } catch (err) {
    ledger.close();
    throw err;
  }
}

/**
 * --restart: the checkpoint and this run's outputs go, finished or not, but
 * only files the checkpoint or a metadata file shows this tool wrote.
 */
function removeRunFiles(config: RunConfig, checkpointPath: string): void {
  const known = checkpointAliases(checkpointPath);
  const files = config.models.flatMap((model) =>
    restartFiles(outputPaths(config.outputDir, model), known.has(model.alias)),
  );
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${checkpointPath}${suffix}`, { force: true });
  for (const file of files) rmSync(file, { force: true });
}

/** The models an existing checkpoint holds; none when it is missing or unreadable. */
function checkpointAliases(path: string): Set<string> {
  if (!existsSync(path)) return new Set();
  try {
    const reader = LedgerReader.openReadOnly(path);
    try {
      return new Set(reader.models().map((m) => m.alias));
    } finally {
      reader.close();
    }
  } catch {
    return new Set();
  }
}

/**
 * Every path this run may write, rename over or remove in the output folder:
 * none may be the input (checked before anything is touched).
 */
export function runPaths(config: RunConfig): string[] {
  const checkpoint = join(config.outputDir, CHECKPOINT_FILE);
  const lock = join(config.outputDir, LOCK_FILE);
  const stores = tokenStorePaths(config.outputDir);
  return [
    ...["", "-wal", "-shm", "-journal"].map((suffix) => `${checkpoint}${suffix}`),
    lock,
    `${lock}.pid`,
    ...stores,
    ...config.models.flatMap((model) => allFiles(outputPaths(config.outputDir, model))),
  ];
}

/**
 * The working .npy of a model: reopened when resuming, created otherwise.
 * If it was lost while batches were marked done, those batches are redone.
 */
export function openMatrix(
  run: PlannedModel,
  rows: number,
  ledger: Ledger,
  progress: Progress,
): OpenModel {
  const { paths } = run;
  const { dim } = run.stored;
  const fail = (err: unknown) => describeFsError(err, "create", paths.workingNpy);
  // A crash during finalizing can leave the matrix under its final name.
  try {
    recoverWorkingMatrix(paths, rows, dim);
  } catch (err) {
    throw fail(err);
  }
  const reopened = NpyMatrixFile.reopen(paths.workingNpy, rows, dim);
  if (reopened) return Object.assign(run, { matrix: reopened });
  if (run.status.doneBatches > 0 || run.status.doneCopies > 0) {
    progress.note(`${paths.workingNpy} is missing or damaged: embedding ${run.model.alias} again`);
    ledger.resetModel(run.model.alias);
    refresh(run, ledger);
  }
  try {
    return Object.assign(run, { matrix: NpyMatrixFile.create(paths.workingNpy, rows, dim) });
  } catch (err) {
    throw fail(err);
  }
}
