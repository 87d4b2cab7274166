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
}

export interface RunRecord {
  readonly attempts: number;
  readonly processingSeconds: number;
  readonly createdAt: string;
}
