import { readFileSync } from "node:fs";
import { dirname, extname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import type { ModelServing } from "../backend/openai/settings.js";
import { ConfigError } from "../errors.js";
import type { ModelSpec } from "./registry.js";

/**
 * A --config file (JSON or YAML):
 *
 *   models:                       # add or override registry entries
 *     e5-mini:
 *       model_name: sentence-transformers/all-MiniLM-L6-v2
 *       prefix: "passage: "
 *       normalize_embeddings: true
 *       max_length: 256
 *       truncate_dim: 256         # Matryoshka: the first 256 dimensions
 *       served_model_name: mini  # openai servers: the name it is served under
 *       tokenizer: ./tokenizer.json  # openai servers: counts for planning
 *       encoding_format: float   # openai servers: never ask for base64
 *   defaults:                     # any flag, as on the command line
 *     batch_size: 64
 *     models: [e5-mini]
 */
export interface ConfigFile {
  readonly models: readonly ModelSpec[];
  /** By alias, for the models that set served_model_name or tokenizer. */
  readonly serving: ReadonlyMap<string, ModelServing>;
  readonly defaults: Readonly<Record<string, unknown>>;
}

const MODEL_KEYS = new Set([
  "model_name",
  "model_id",
  "revision",
  "prefix",
  "normalize",
  "normalize_embeddings",
  "max_length",
  "dtype",
  "truncate_dim",
  "served_model_name",
  "tokenizer",
  "encoding_format",
]);

export function loadConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read config file ${path}: ${code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    doc = extname(path).toLowerCase() === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    const first = (err instanceof Error ? err.message : String(err)).split("\n")[0];
    throw new ConfigError(`config file ${path} is not valid JSON or YAML: ${first}`);
  }
  if (doc === null || doc === undefined) return { models: [], serving: new Map(), defaults: {} };
  if (!isRecord(doc)) throw new ConfigError(`config file ${path}: expected a mapping at the top`);
  for (const key of Object.keys(doc)) {
    if (key !== "models" && key !== "defaults") {
      throw new ConfigError(
        `config file ${path}: unknown key "${key}" (expected models, defaults)`,
      );
    }
  }
  const defaults = doc.defaults ?? {};
  if (!isRecord(defaults))
    throw new ConfigError(`config file ${path}: "defaults" must be a mapping`);
  const modelsDoc = doc.models ?? {};
  if (!isRecord(modelsDoc))
    throw new ConfigError(`config file ${path}: "models" must be a mapping`);
  const models = Object.entries(modelsDoc).map(([alias, raw]) => parseModel(path, alias, raw));
  const serving = new Map<string, ModelServing>();
  for (const [alias, raw] of Object.entries(modelsDoc)) {
    const entry = parseServing(path, alias, raw as Record<string, unknown>);
    if (entry) serving.set(alias, entry);
  }
  return { models, serving, defaults };
}

function parseModel(path: string, alias: string, raw: unknown): ModelSpec {
  const where = `config file ${path}: model "${alias}"`;
  if (!isRecord(raw)) throw new ConfigError(`${where} must be a mapping`);
  for (const key of Object.keys(raw)) {
    if (!MODEL_KEYS.has(key)) throw new ConfigError(`${where}: unknown setting "${key}"`);
  }
  const str = (key: string): string | undefined => {
    const value = raw[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string") throw new ConfigError(`${where}: "${key}" must be a string`);
    return value;
  };
  const modelId = str("model_name") ?? str("model_id");
  if (!modelId) throw new ConfigError(`${where}: "model_name" is required`);
  const normalize = raw.normalize_embeddings ?? raw.normalize ?? false;
  if (typeof normalize !== "boolean")
    throw new ConfigError(`${where}: "normalize" must be true or false`);
  const maxLength = raw.max_length ?? 0;
  if (typeof maxLength !== "number" || !Number.isInteger(maxLength) || maxLength < 0) {
    throw new ConfigError(`${where}: "max_length" must be a non-negative integer`);
  }
  const truncateDim = raw.truncate_dim ?? 0;
  if (typeof truncateDim !== "number" || !Number.isInteger(truncateDim) || truncateDim < 0) {
    throw new ConfigError(
      `${where}: "truncate_dim" must be a positive integer (or 0 for the full dimension)`,
    );
  }
  return {
    alias,
    modelId,
    revision: str("revision") ?? "",
    prefix: str("prefix") ?? "",
    normalize,
    maxLength,
    dtype: str("dtype") ?? "",
    truncateDim,
    // --quantize applies to every model of the run (its calibration sample is the run's).
    quantize: "none",
  };
}

function parseServing(
  path: string,
  alias: string,
  raw: Record<string, unknown>,
): ModelServing | null {
  const where = `config file ${path}: model "${alias}"`;
  const text = (key: string): string => {
    const value = raw[key] ?? "";
    if (typeof value !== "string") throw new ConfigError(`${where}: "${key}" must be a string`);
    return value;
  };
  const servedModelName = text("served_model_name");
  const tokenizer = text("tokenizer");
  const encoding = text("encoding_format");
  if (encoding !== "" && encoding !== "base64" && encoding !== "float") {
    throw new ConfigError(`${where}: "encoding_format" must be base64 or float`);
  }
  if (!servedModelName && !tokenizer && encoding === "") return null;
  return {
    servedModelName,
    // A relative tokenizer path is the config file's neighbour, wherever the run starts.
    tokenizer: tokenizer ? resolve(dirname(path), tokenizer) : "",
    encodingFormat: encoding === "float" ? "float" : "",
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
