import type { ModelIdentity, ModelRequest } from "./identity.js";

// What the checkpoint stores and the outputs report, declared below both so
// that output/ need not import checkpoint/.

/** The batch limits a model's plan was cut with: what the user asked, after the servers' caps. */
export interface PlanLimitsUsed {
  readonly batchSize: number;
  /** 0 = no token budget. */
  readonly maxBatchTokens: number;
}

/**
 * A model as the ledger knows it: its identity as the servers resolved it
 * (revision, max_length, dtype), plus what was asked for.
 */
export interface LedgerModel extends ModelIdentity {
  readonly alias: string;
  readonly position: number;
  /** The settings asked for (revision "" = any, max_length 0 / dtype "" = the model's own). */
  readonly requested: ModelRequest;
  readonly fileStem: string;
  /** null: planned by an embed-multi that did not record it (checkpoint schema < 3). */
  readonly plannedWith: PlanLimitsUsed | null;
}

export interface ModelTotals {
  readonly batches: number;
  readonly doneBatches: number;
  readonly rows: number;
  readonly doneRows: number;
  readonly tokens: number;
  readonly truncated: number;
  readonly realTokens: number;
  readonly paddedTokens: number;
  readonly servers: string[];
  /** Batches whose vectors failed the per-batch checks and were sent again (all runs). */
  readonly retriedBatches: number;
  /** Spot checks that failed on the model (all runs): each kept a server out. */
  readonly spotFailures: number;
  /** Its batches redone because the server that answered them then failed a spot check. */
  readonly spotRedoneBatches: number;
  /** Copy jobs of rows reused from earlier outputs, and how many are done. */
  readonly copies: number;
  readonly doneCopies: number;
  /** Rows copied from earlier outputs, by source folder (in `rows` too). */
  readonly reusedRows: number;
  readonly reusedFrom: readonly { dir: string; rows: number }[];
  /** Rows that took the vector of an identical model input of this run (in `rows` too). */
  readonly deduplicatedRows: number;
}

/** An earlier run's float32 matrix that rows of this run are copied from. */
export interface ReuseSourceRecord {
  readonly sourceNo: number;
  readonly dir: string;
  readonly npy: string;
  readonly npySha256: string;
  readonly npyBytes: number;
}

/** Rows copied from one source: `rows[i]` takes the source's row `sourceRows[i]`. */
export interface CopyJob {
  readonly copyNo: number;
  readonly sourceNo: number;
  readonly rows: Uint32Array;
  readonly sourceRows: Uint32Array;
}

export interface RunRecord {
  readonly attempts: number;
  readonly processingSeconds: number;
  readonly createdAt: string;
}
