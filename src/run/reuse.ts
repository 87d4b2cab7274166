import type { Ledger } from "../checkpoint/ledger.js";
import type { RunConfig } from "../config.js";
import type { Progress } from "../progress.js";
import { copyReused } from "../reuse/copy.js";
import { type OpenModel, refresh } from "./model-run.js";

/** The rows of each model that earlier outputs hold, copied into its matrix before embedding. */
export function copyReusedRows(
  runs: readonly OpenModel[],
  ledger: Ledger,
  config: Pick<RunConfig, "checkpointInterval">,
  progress: Progress,
): void {
  const targets = runs.flatMap((run) =>
    run.status.doneCopies < run.status.copies
      ? [{ alias: run.model.alias, dim: run.stored.dim, matrix: run.matrix }]
      : [],
  );
  if (targets.length === 0) return;
  copyReused(targets, ledger, config.checkpointInterval, progress);
  for (const run of runs) {
    const before = run.status.doneRows;
    run.rowsCopiedThisRun += refresh(run, ledger).doneRows - before;
  }
}
