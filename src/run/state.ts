import type { Ledger } from "../checkpoint/ledger.js";
import type { RunConfig } from "../config.js";
import type { RowReader } from "../input/rows.js";
import type { CorpusIndex } from "../input/scan.js";
import type { Progress } from "../progress.js";

/**
 * What every phase of a run needs, made once after the checkpoint is open and
 * handed to each phase with the models it works on: `(state, models)`.
 */
export interface RunState {
  readonly config: RunConfig;
  readonly ledger: Ledger;
  /** Reads paragraphs back from the input by row. */
  readonly reader: RowReader;
  readonly corpus: CorpusIndex;
  readonly progress: Progress;
  /** Aborted on SIGINT/SIGTERM: every wait ends at once. */
  readonly signal: AbortSignal;
}
