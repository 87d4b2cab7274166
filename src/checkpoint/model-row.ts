import type { LoadedModel } from "../backend/types.js";
import type { RunModel } from "../config.js";
import {
  identityOf,
  type ModelIdentity,
  type ModelRequest,
  type ModelSetting,
  modelSettings,
  requestOf,
} from "../model/identity.js";
import type { LedgerModel, PlanLimitsUsed } from "../model/records.js";

type Row = Record<string, unknown>;

/**
 * The ledger's record of a model: what was asked for, what the servers
 * loaded, and the batch limits its plan was cut with. A setting asked for
 * as it is loaded (prefix, normalize...) is the run's value.
 */
export function ledgerModelOf(
  model: RunModel,
  info: LoadedModel,
  position: number,
  plannedWith: PlanLimitsUsed,
): LedgerModel {
  const requested = requestOf(model);
  const asked = requested as Row;
  const identity = identityOf(info) as unknown as Row;
  for (const [key, setting] of modelSettings()) {
    if (setting.asked === "same") identity[key] = asked[key];
  }
  return {
    ...(identity as unknown as ModelIdentity),
    alias: model.alias,
    position,
    requested,
    fileStem: model.fileStem,
    plannedWith,
  };
}

/** The columns of the models table, in the order of the settings list. */
export function modelColumns(): string[] {
  const columns = ["alias", "position", "file_stem", "plan_batch_size", "plan_max_batch_tokens"];
  for (const [, s] of modelSettings()) {
    columns.push(s.column);
    if (s.asked !== undefined && s.asked !== "same") columns.push(s.asked);
  }
  return columns;
}

/** A model as a row of the models table (named parameters, one per column of modelColumns()). */
export function modelToRow(model: LedgerModel): Row {
  const identity = model as unknown as Row;
  const requested = model.requested as Row;
  const row: Row = {
    alias: model.alias,
    position: model.position,
    file_stem: model.fileStem,
    plan_batch_size: model.plannedWith?.batchSize ?? null,
    plan_max_batch_tokens: model.plannedWith?.maxBatchTokens ?? null,
  };
  for (const [key, s] of modelSettings()) {
    row[s.column] = toColumn(s, identity[key]);
    if (s.asked !== undefined && s.asked !== "same") row[s.asked] = toColumn(s, requested[key]);
  }
  return row;
}

export function modelFromRow(r: Row): LedgerModel {
  const identity: Row = {};
  const requested: Row = {};
  for (const [key, s] of modelSettings()) {
    identity[key] = fromColumn(s, r[s.column]);
    if (s.asked === "same") requested[key] = identity[key];
    else if (s.asked !== undefined) requested[key] = fromColumn(s, r[s.asked]);
  }
  return {
    ...(identity as unknown as ModelIdentity),
    alias: String(r.alias),
    position: Number(r.position),
    requested: requested as unknown as ModelRequest,
    fileStem: String(r.file_stem),
    plannedWith: plannedWithOf(r),
  };
}

function toColumn(s: ModelSetting, value: unknown): unknown {
  return s.kind === "bool" ? (value ? 1 : 0) : value;
}

function fromColumn(s: ModelSetting, value: unknown): unknown {
  if (s.kind === "bool") return Number(value) === 1;
  return s.kind === "int" ? Number(value) : String(value);
}

function plannedWithOf(r: Row): PlanLimitsUsed | null {
  if (r.plan_batch_size === null || r.plan_max_batch_tokens === null) return null;
  return { batchSize: Number(r.plan_batch_size), maxBatchTokens: Number(r.plan_max_batch_tokens) };
}
