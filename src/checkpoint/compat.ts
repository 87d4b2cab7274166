import type { LoadedModel } from "../backend/types.js";
import type { RunModel } from "../config.js";
import { CheckpointError } from "../errors.js";
import type { CorpusIndex } from "../input/scan.js";
import {
  identityDifferences,
  identityOf,
  requestDifferences,
  requestOf,
} from "../model/identity.js";
import type { InputIdentity, LedgerModel } from "./ledger.js";

const HOW_TO_START_OVER = "run with --restart to start over, or use another --output_dir";

/** Refuses to resume onto a different input file. */
export function checkSameInput(stored: InputIdentity, corpus: CorpusIndex): void {
  if (stored.size !== corpus.size) {
    throw new CheckpointError(
      `the input file changed since the checkpoint was made (size ${stored.size} → ${corpus.size} bytes); ${HOW_TO_START_OVER}`,
    );
  }
  if (stored.sha256 !== corpus.sha256) {
    throw new CheckpointError(
      `the input file changed since the checkpoint was made (sha256 ${stored.sha256.slice(0, 12)}… → ${corpus.sha256.slice(0, 12)}…); ${HOW_TO_START_OVER}`,
    );
  }
  if (stored.rows !== corpus.rows) {
    throw new CheckpointError(
      `the input has ${corpus.rows} paragraphs but the checkpoint was made for ${stored.rows} (--skip_invalid changed?); ${HOW_TO_START_OVER}`,
    );
  }
}

/**
 * Refuses to drop a model of the checkpoint, or to change a setting that
 * changes its numbers. A model not in the checkpoint yet is new: it is
 * planned and added (also when a run stopped before planning all of them).
 */
export function checkSameModels(stored: readonly LedgerModel[], models: readonly RunModel[]): void {
  // A subset of the checkpoint's models is fine: a run finishes those, the others wait.
  for (const model of models) {
    const s = stored.find((m) => m.alias === model.alias);
    if (!s) continue;
    const changes = requestDifferences(s.requested, requestOf(model));
    if (changes.length > 0) {
      throw new CheckpointError(
        `model "${model.alias}" settings changed since the checkpoint (${changes.join(", ")}); ${HOW_TO_START_OVER}`,
      );
    }
  }
}

/** Refuses servers whose copy of a model computes different numbers than the checkpoint's. */
export function checkSameWeights(stored: LedgerModel, loaded: LoadedModel): void {
  const changes = identityDifferences(stored, identityOf(loaded));
  if (changes.length > 0) {
    throw new CheckpointError(
      `model "${stored.alias}" on the server differs from the one in the checkpoint (${changes.join(", ")}); ${HOW_TO_START_OVER}`,
    );
  }
}
