type Kind = "text" | "int" | "bool";
type ValueOf<K extends Kind> = K extends "text" ? string : K extends "int" ? number : boolean;

/** One setting of a model's identity, and where it is stored and shown. */
export interface ModelSetting {
  /** In messages (`dim 384 → 768`), and the metadata.json key unless `metadata` names another. */
  readonly label: string;
  /** The metadata.json key, where the specification fixed another name. */
  readonly metadata?: string;
  /** The checkpoint's column (src/checkpoint/schema.ts) of the value the servers loaded. */
  readonly column: string;
  readonly kind: Kind;
  /**
   * Asked for by the run (a resume must ask for the same): "same" when what is
   * asked is what is loaded, or the column of the asked value when the server
   * resolves it ("" / 0 asks for the model's own). Absent: only the server says.
   */
  readonly asked?: string;
}

/**
 * What makes two models' vectors the same: servers must agree on it, a
 * resumed checkpoint must match it, a server that rejoins must still have
 * it, the checkpoint stores it and the metadata reports it. The types,
 * comparisons, checkpoint columns and metadata fields all come from this
 * one list; a new setting that changes the vectors is one entry here (in
 * the metadata's order), its column in a schema step, and the proto.
 */
export const MODEL_SETTINGS = {
  modelId: {
    label: "model",
    metadata: "model_name",
    column: "model_id",
    kind: "text",
    asked: "same",
  },
  /** The revision the server resolved and loaded (commit or weights digest). */
  revision: { label: "revision", column: "revision", kind: "text", asked: "requested_revision" },
  /** Of the vectors the server returns: truncateDim when set. */
  dim: { label: "dim", metadata: "embedding_dim", column: "dim", kind: "int" },
  /** The dtype actually used. */
  dtype: { label: "dtype", column: "dtype", kind: "text", asked: "requested_dtype" },
  normalize: { label: "normalize", column: "normalize", kind: "bool", asked: "same" },
  prefix: { label: "prefix", column: "prefix", kind: "text", asked: "same" },
  /** The max length actually used. */
  maxLength: {
    label: "max_length",
    column: "max_length",
    kind: "int",
    asked: "requested_max_length",
  },
  pooling: { label: "pooling", column: "pooling", kind: "text" },
  /** Matryoshka: the first N dimensions, cut before normalizing; 0 = not cut. */
  truncateDim: { label: "truncate_dim", column: "truncate_dim", kind: "int", asked: "same" },
  /** "none" or "int8" (--quantize): int8 vectors are not float32 ones. */
  quantize: { label: "quantize", column: "quantize", kind: "text", asked: "same" },
} as const satisfies Record<string, ModelSetting>;

type Settings = typeof MODEL_SETTINGS;
type SettingKey = keyof Settings;

export type ModelIdentity = { readonly [K in SettingKey]: ValueOf<Settings[K]["kind"]> };

type AskedKey = {
  [K in SettingKey]: Settings[K] extends { asked: string } ? K : never;
}[SettingKey];

/** The settings asked for (0 / "" = the model's own): a resume must ask for the same. */
export type ModelRequest = Pick<ModelIdentity, AskedKey>;

/** The identity as metadata.json reports it. */
export type IdentityMetadata = {
  [K in SettingKey as Settings[K] extends { metadata: infer M extends string }
    ? M
    : Settings[K]["label"]]: ValueOf<Settings[K]["kind"]>;
};

/** The list as read at the call (not at import), so that a test can add a setting. */
export function modelSettings(): [string, ModelSetting][] {
  return Object.entries(MODEL_SETTINGS as Record<string, ModelSetting>);
}

function pick<T>(from: object, keys: string[]): T {
  const source = from as Record<string, unknown>;
  return Object.fromEntries(keys.map((k) => [k, source[k]])) as T;
}

/** The identity alone, of a model a server loaded (or of a stored one). */
export function identityOf(info: ModelIdentity): ModelIdentity {
  return pick(
    info,
    modelSettings().map(([k]) => k),
  );
}

/** The settings a run model asks for (a RunModel holds them, among others). */
export function requestOf(model: ModelRequest): ModelRequest {
  return pick(
    model,
    modelSettings()
      .filter(([, s]) => s.asked !== undefined)
      .map(([k]) => k),
  );
}

/** The identity under metadata.json's names, in the list's order. */
export function identityMetadata(identity: ModelIdentity): IdentityMetadata {
  const source = identity as unknown as Record<string, unknown>;
  return Object.fromEntries(
    modelSettings().map(([k, s]) => [s.metadata ?? s.label, source[k]]),
  ) as IdentityMetadata;
}

/** What differs between two identities, as `dim 384 → 768`; empty when the vectors are the same. */
export function identityDifferences(was: ModelIdentity, is: ModelIdentity): string[] {
  return differences(was, is, modelSettings());
}

/** What differs between two requests, as `prefix "" → "passage: "`. */
export function requestDifferences(was: ModelRequest, is: ModelRequest): string[] {
  return differences(
    was,
    is,
    modelSettings().filter(([, s]) => s.asked !== undefined),
  );
}

function differences(was: object, is: object, settings: [string, ModelSetting][]): string[] {
  const a = was as Record<string, unknown>;
  const b = is as Record<string, unknown>;
  const out: string[] = [];
  for (const [key, setting] of settings) {
    if (a[key] !== b[key]) {
      out.push(`${setting.label} ${JSON.stringify(a[key])} → ${JSON.stringify(b[key])}`);
    }
  }
  return out;
}
