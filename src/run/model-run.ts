import type { LoadedModel } from "../backend/types.js";
import type { Ledger, LedgerModel, ModelStatus } from "../checkpoint/ledger.js";
import type { RunModel } from "../config.js";
import type { OutputPaths } from "../output/finalize.js";
import type { NpyMatrixFile } from "../output/npy.js";
import type { TokenStore } from "../plan/tokens.js";

/**
 * One model of the run, carried through every phase, as the checkpoint's
 * opening finds it: planned or not yet. The phases after planning take the
 * narrower records below, in which what they use is present.
 */
export interface ModelRun {
  readonly model: RunModel;
  readonly paths: OutputPaths;
  /** The model as the checkpoint holds it; null until planned. */
  stored: LedgerModel | null;
  /** The model as the first server loaded it; null when no server was needed. */
  server: LoadedModel | null;
  /** Progress as the ledger last said. */
  status: ModelStatus;
  /** The working .npy, once opened (closed when the run ends). */
  matrix: NpyMatrixFile | null;
  /** From its first batch sent to its last batch written, this run (ms since the epoch). */
  window: { first: number; last: number } | null;
  rowsThisRun: number;
  /** Rows copied from earlier outputs by this invocation. */
  rowsCopiedThisRun: number;
  /** The token ids this run's measuring pass kept (batches then carry ids, not texts). */
  store: TokenStore | null;
}

/** A model with its plan in the checkpoint: what the plan phase hands on. */
export interface PlannedModel extends ModelRun {
  readonly stored: LedgerModel;
}

/** A planned model with its working .npy open: what copying, embedding and finalizing write into. */
export interface OpenModel extends PlannedModel {
  readonly matrix: NpyMatrixFile;
}

export function isPlanned(run: ModelRun): run is PlannedModel {
  return run.stored !== null;
}

export function isOpen(run: ModelRun): run is OpenModel {
  return run.stored !== null && run.matrix !== null;
}

/** Reads the model's status afresh; call after anything that writes its batches. */
export function refresh(run: ModelRun, ledger: Ledger): ModelStatus {
  run.status = ledger.status(run.model.alias);
  return run.status;
}

/** Every batch and copy of the plan is done (its outputs may still have to be written). */
export function allBatchesDone(status: ModelStatus): boolean {
  return (
    status.planned && status.doneBatches === status.batches && status.doneCopies === status.copies
  );
}

/** Needs a server: not planned yet, or batches left (copies need none). */
export function needsServers(run: ModelRun): boolean {
  return !isPlanned(run) || run.status.doneBatches < run.status.batches;
}

/** Seconds between the model's first batch sent and its last written, this run. */
export function activeSeconds(run: ModelRun): number {
  return run.window ? (run.window.last - run.window.first) / 1000 : 0;
}
