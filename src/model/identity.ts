import type { ModelSpec, RunModel } from "../config.js";

/**
 * What makes two models' vectors the same. Servers must agree on it, a
 * resumed checkpoint must match it, and a server that rejoins must still
 * have it. A new setting that changes the vectors is one field here, its
 * label below and its line in identityOf (the compiler asks for both);
 * every comparison picks it up. The ledger stores it in one more column
 * (src/checkpoint/schema.ts, ledger.ts's row mapping).
 */
export interface ModelIdentity {
  readonly modelId: string;
  /** The revision the server resolved and loaded (commit or weights digest). */
  readonly revision: string;
  /** Of the vectors the server returns: truncateDim when set. */
  readonly dim: number;
  /** The dtype actually used. */
  readonly dtype: string;
  /** The max length actually used. */
  readonly maxLength: number;
  readonly pooling: string;
  readonly prefix: string;
  readonly normalize: boolean;
  /** Matryoshka: the first N dimensions, cut before normalizing; 0 = not cut. */
  readonly truncateDim: number;
}

/** The settings asked for (0 / "" = the model's own): a resume must ask for the same. */
export type ModelRequest = Omit<ModelSpec, "alias">;

// Records, not lists: adding a field to a type above fails to compile until it has a label.
const IDENTITY_LABELS: Readonly<Record<keyof ModelIdentity, string>> = {
  modelId: "model",
  revision: "revision",
  dim: "dim",
  dtype: "dtype",
  maxLength: "max_length",
  pooling: "pooling",
  prefix: "prefix",
  normalize: "normalize",
  truncateDim: "truncate_dim",
};

const REQUEST_LABELS: Readonly<Record<keyof ModelRequest, string>> = {
  modelId: "model",
  revision: "revision",
  prefix: "prefix",
  normalize: "normalize",
  maxLength: "max_length",
  dtype: "dtype",
  truncateDim: "truncate_dim",
};

/** The identity alone, of a model a server loaded (or of a stored one). */
export function identityOf(info: ModelIdentity): ModelIdentity {
  const { modelId, revision, dim, dtype, maxLength, pooling, prefix, normalize, truncateDim } =
    info;
  return { modelId, revision, dim, dtype, maxLength, pooling, prefix, normalize, truncateDim };
}

/** The settings a run model asks for. */
export function requestOf(model: RunModel): ModelRequest {
  const { modelId, revision, prefix, normalize, maxLength, dtype, truncateDim } = model;
  return { modelId, revision, prefix, normalize, maxLength, dtype, truncateDim };
}

/** What differs between two identities, as `dim 384 → 768`; empty when the vectors are the same. */
export function identityDifferences(was: ModelIdentity, is: ModelIdentity): string[] {
  return differences(was, is, IDENTITY_LABELS);
}

/** What differs between two requests, as `prefix "" → "passage: "`. */
export function requestDifferences(was: ModelRequest, is: ModelRequest): string[] {
  return differences(was, is, REQUEST_LABELS);
}

function differences<T extends object>(
  was: T,
  is: T,
  labels: Readonly<Record<keyof T, string>>,
): string[] {
  const out: string[] = [];
  for (const key of keysOf(labels)) {
    if (was[key] !== is[key]) {
      out.push(`${labels[key]} ${JSON.stringify(was[key])} → ${JSON.stringify(is[key])}`);
    }
  }
  return out;
}

function keysOf<T extends object>(labels: Readonly<Record<keyof T, string>>): (keyof T)[] {
  return Object.keys(labels) as (keyof T)[];
}
