import type { LoadedModel } from "../backend/types.js";
import type { RunModel } from "../config.js";
import { identityOf, type ModelRequest } from "../model/identity.js";
import type { LedgerModel, PlanLimitsUsed } from "./ledger.js";

/**
 * The ledger's record of a model: what was asked for, what the servers
 * loaded, and the batch limits its plan was cut with.
 */
export function ledgerModelOf(
  model: RunModel,
  info: LoadedModel,
  position: number,
  plannedWith: PlanLimitsUsed,
): LedgerModel {
  return {
    ...identityOf(info),
    alias: model.alias,
    position,
    modelId: model.modelId,
    prefix: model.prefix,
    normalize: model.normalize,
    truncateDim: model.truncateDim,
    requestedRevision: model.revision,
    requestedMaxLength: model.maxLength,
    requestedDtype: model.dtype,
    fileStem: model.fileStem,
    plannedWith,
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
    truncateDim: stored.truncateDim,
  };
}
