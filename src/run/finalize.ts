import type { QuantizeFidelity } from "../backend/types.js";
import { isComplete } from "../checks/complete.js";
import type { RunConfig } from "../config.js";
import { finalizeModel } from "../output/finalize.js";
import { buildMetadata } from "../output/metadata.js";
import { paddingEfficiency } from "../plan/planner.js";
import { writeRowHashes } from "../reuse/hashes.js";
import { checkCoverage } from "./coverage.js";
import {
  activeSeconds,
  allBatchesDone,
  type ModelRun,
  type OpenModel,
  refresh,
} from "./model-run.js";
import type { Membership } from "./resolve-loop.js";
import type { RunState } from "./state.js";

export interface ModelSummary {
  readonly alias: string;
  readonly rows: number;
  /** Rows embedded by this invocation (0 when everything was already done). */
  readonly rowsThisRun: number;
  /** Rows of the plan copied from earlier outputs, by folder, and duplicates of other rows. */
  readonly reused: number;
  readonly reusedFrom: readonly { dir: string; rows: number }[];
  readonly deduplicated: number;
  readonly seconds: number;
  readonly truncated: number;
  readonly paddingEfficiency: number;
  readonly outputs: string[];
  /** --quantize int8: the first server's figures on the calibration paragraphs. */
  readonly quantizeFidelity: QuantizeFidelity | null;
}

export interface RunSummary {
  readonly models: ModelSummary[];
  readonly resumed: boolean;
  readonly nothingToDo: boolean;
  /** Servers that joined or left during the run (re-resolved dns:/// names). */
  readonly membership?: readonly Membership[];
}

/** Writes the final files of every model whose batches are all done, then marks it finalized. */
export async function finalizeAll(
  state: Omit<RunState, "signal">,
  runs: readonly OpenModel[],
  processingSeconds: number,
  /** Throws when the run no longer holds the output folder. */
  checkLock: () => void = () => {},
): Promise<void> {
  const { ledger, config, reader, corpus, progress } = state;
  for (const run of runs) {
    checkLock();
    if (run.status.finalized) continue;
    const totals = refresh(run, ledger);
    if (!allBatchesDone(totals)) {
      throw new Error(`${run.model.alias} has ${totals.batches - totals.doneBatches} batches left`);
    }
    const { matrix, stored } = run;
    const alias = run.model.alias;
    checkCoverage(alias, ledger.batches(alias), ledger.doneCopies(alias), matrix, corpus);
    progress.note(`writing the outputs of ${run.model.alias} (${config.outputFormat.join(", ")})`);
    const previous = ledger.run();
    const record = {
      ...previous,
      processingSeconds: previous.processingSeconds + processingSeconds,
    };
    // So that this output can be a --reuse source of a later run.
    writeRowHashes(run.paths.hashes, reader, corpus.rows, stored.prefix);
    const extra = [run.paths.hashes];
    await finalizeModel(
      run.paths,
      config,
      matrix,
      reader,
      run.model.alias,
      (outputs) => {
        // The outputs were read from the input: it must still be the file that was planned.
        reader.verifyUnchanged();
        // Nor may another run have taken the folder meanwhile: the metadata would vouch for its files.
        checkLock();
        return buildMetadata({
          config,
          model: run.model,
          ledgerModel: stored,
          totals,
          run: record,
          corpus,
          server: run.server ?? undefined,
          ...outputs,
        });
      },
      extra,
    );
    ledger.markFinalized(run.model.alias);
    refresh(run, ledger);
  }
}

export function summarize(
  runs: readonly ModelRun[],
  config: RunConfig,
  resumed: boolean,
): RunSummary {
  const models = runs.map((run) => ({
    alias: run.model.alias,
    rows: run.status.rows,
    rowsThisRun: run.rowsThisRun,
    reused: run.status.reusedRows,
    reusedFrom: run.status.reusedFrom,
    deduplicated: run.status.deduplicatedRows,
    seconds: activeSeconds(run),
    truncated: run.status.truncated,
    paddingEfficiency: paddingEfficiency(run.status),
    outputs: isComplete(run.paths, config) ? [run.paths.metadata] : [],
    quantizeFidelity: run.server?.quantizeFidelity ?? null,
  }));
  const copied = runs.some((run) => run.rowsCopiedThisRun > 0);
  const nothingToDo = models.every((m) => m.rowsThisRun === 0) && !copied && !resumed;
  return { models, resumed, nothingToDo };
}
