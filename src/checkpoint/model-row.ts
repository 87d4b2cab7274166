import type { RunModel } from "../config.js";
import type { ModelInfo } from "../gen/embedmulti/v1/inference.js";
import { identityOf, type ModelRequest } from "../model/identity.js";
import type { LedgerModel } from "./ledger.js";

/** The ledger's record of a model: what was asked for and what the servers loaded. */
export function ledgerModelOf(model: RunModel, info: ModelInfo, position: number): LedgerModel {
  return {
    ...identityOf(info),
    alias: model.alias,
    position,
    modelId: model.modelId,
    prefix: model.prefix,
    normalize: model.normalize,
    requestedRevision: model.revision,
    requestedMaxLength: model.maxLength,
    requestedDtype: model.dtype,
    fileStem: model.fileStem,
  };
}

/** The settings a stored model was asked for. */
export function storedRequest(stored: LedgerModel): ModelRequest {
  return {
    modelId: stored.modelId,
    revision: stored.requestedRevision,
    prefix: stored.prefix,
    normalize: stored.normalize,
    maxLength: stored.requestedMaxLength,
    dtype: stored.requestedDtype,
  };
}
