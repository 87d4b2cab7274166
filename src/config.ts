import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { targetProblem } from "./backend/targets.js";
import { DEFAULT_PROBE_TOLERANCE } from "./checks/probe.js";
import { loadConfigFile } from "./config/file.js";
import {
  BUILTIN_MODELS,
  isValidModelId,
  MAX_MODEL_ID_PART,
  type ModelSpec,
  modelSpec,
  safeFileStem,
  shownModelId,
} from "./config/registry.js";
import { readAuthToken } from "./config/token.js";
import { ConfigError } from "./errors.js";
import { isOutputDtype, OUTPUT_DTYPES, type OutputDtype } from "./output/dtype.js";
import { OUTPUT_FORMATS, type OutputFormat } from "./output/formats.js";

export type { ModelSpec } from "./config/registry.js";

/** The files a model's vectors are written to; `both` on the command line means npy,jsonl. */
export type { OutputFormat } from "./output/formats.js";
export type ProgressMode = "auto" | "bar" | "log" | "none";

/** A model of this run: its registry settings plus the file stem of its outputs. */
export interface RunModel extends ModelSpec {
  readonly fileStem: string;
}

export interface EmbeddedServerConfig {
  /** The inference server's console script. */
  readonly command: string;
  readonly modelDir: string;
  readonly engine: "sentence-transformers" | "debug";
  readonly debugDim: number;
  /** torch threads; 0 = the server's default. */
  readonly threads: number;
}

export interface TlsConfig {
  /** PEM file of the CA that signed the servers' certificates; "" = system roots. */
  readonly caFile: string;
}

/** Everything a run needs, validated once, built only by buildRunConfig. */
export interface RunConfig {
  readonly inputFile: string;
  readonly outputDir: string;
  readonly models: readonly RunModel[];
  readonly batchSize: number;
  /** Tokens (padded) per batch at most; 0 = no token budget. */
  readonly maxBatchTokens: number;
  /** Batches in flight per server. */
  readonly maxWorkers: number;
  /** Paragraphs between durable checkpoints. */
  readonly checkpointInterval: number;
  /** "" = the server's default. */
  readonly device: string;
  /** "" = each model's own (auto). */
  readonly dtype: string;
  /** Remote servers; empty = start the embedded local server. */
  readonly servers: readonly string[];
  readonly embedded: EmbeddedServerConfig;
  /** Output files per model, in a fixed order (npy, jsonl, parquet), each once. */
  readonly outputFormat: readonly OutputFormat[];
  /** The dtype of the vectors in the output files (the checkpoint always holds float32). */
  readonly outputDtype: OutputDtype;
  readonly restart: boolean;
  readonly skipInvalid: boolean;
  readonly maxTextChars: number;
  readonly batchTimeoutMs: number;
  readonly serverTimeoutMs: number;
  readonly maxAttempts: number;
  /** Every probe vector of a joining server must have at least this cosine with the stored one. */
  readonly probeTolerance: number;
  /** Spot rows per row sent (--spot_check, issue 16): known rows inside ordinary batches; 0 = off. */
  readonly spotCheck: number;
  readonly tls: TlsConfig | null;
  readonly authToken: string;
  /** Test hook EMBED_TEST_DISK_FULL_AFTER_ROWS: .npy writes past this many rows fail with ENOSPC (0 = off). */
  readonly testDiskFullAfterRows: number;
  readonly progress: ProgressMode;
  readonly toolVersion: string;
}

/** The flags as yargs hands them over: all optional, defaults applied here. */
export interface CliArgs {
  input_file?: string;
  output_dir?: string;
  models?: string[];
  batch_size?: number;
  max_batch_tokens?: number;
  max_workers?: number;
  checkpoint_interval?: number;
  device?: string;
  dtype?: string;
  truncate_dim?: number;
  servers?: string[];
  config?: string;
  output_format?: string;
  output_dtype?: string;
  restart?: boolean;
  skip_invalid?: boolean;
  max_text_chars?: number;
  batch_timeout?: number;
  server_timeout?: number;
  max_attempts?: number;
  probe_tolerance?: number;
  spot_check?: number;
  tls?: boolean;
  tls_ca?: string;
  engine?: string;
  debug_dim?: number;
  threads?: number;
  model_dir?: string;
  progress?: string;
}

export const DEFAULTS = {
  batch_size: 32,
  max_batch_tokens: 16384,
  max_workers: 4,
  checkpoint_interval: 1000,
  output_format: "both",
  output_dtype: "float32",
  max_text_chars: 100_000,
  batch_timeout: 120,
  server_timeout: 60,
  max_attempts: 4,
  probe_tolerance: DEFAULT_PROBE_TOLERANCE,
  spot_check: 0.005,
  engine: "sentence-transformers",
  debug_dim: 384,
  threads: 0,
  progress: "auto",
} as const;

/** The repository (or installed package) root: dist/src/config.js → ../.. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function buildRunConfig(args: CliArgs, env: NodeJS.ProcessEnv): RunConfig {
  const file = args.config ? loadConfigFile(args.config) : { models: [], defaults: {} };
  const fileDefaults = file.defaults;
  const pick = <T>(key: keyof CliArgs & string, fallback: T): T => {
    let given = args[key] as unknown;
    // A flag given twice arrives as an array: the last one wins, as in most CLIs.
    if (Array.isArray(given) && !LIST_FLAGS.has(key)) given = given[given.length - 1];
    return (given as T | undefined) ?? (fileDefaults[key] as T | undefined) ?? fallback;
  };

  const inputFile = pick<string | undefined>("input_file", undefined);
  if (!inputFile) throw new ConfigError("missing --input_file (the JSONL corpus to embed)");
  const outputDir = pick<string | undefined>("output_dir", undefined);
  if (!outputDir) throw new ConfigError("missing --output_dir (where the embeddings go)");

  const registry = new Map<string, ModelSpec>(BUILTIN_MODELS.map((m) => [m.alias, m]));
  for (const m of file.models) registry.set(m.alias, m);
  const modelNames = flattenList(pick<string[] | string>("models", []));
  if (modelNames.length === 0) throw new ConfigError("missing --models (one or more model names)");
  const models = resolveModels(modelNames, registry);

  const dtype = pick("dtype", "");
  const validDtypes = ["", "auto", "float32", "float16", "bfloat16"];
  if (!validDtypes.includes(dtype)) {
    throw new ConfigError(
      `--dtype must be one of auto, float32, float16, bfloat16 (got "${dtype}")`,
    );
  }
  const outputFormat = parseOutputFormats(pick<string>("output_format", DEFAULTS.output_format));
  const outputDtype = String(pick<string>("output_dtype", DEFAULTS.output_dtype));
  if (!isOutputDtype(outputDtype)) {
    throw new ConfigError(
      `--output_dtype must be one of ${OUTPUT_DTYPES.join(", ")} (got "${outputDtype}")`,
    );
  }
  const progress = pick<string>("progress", DEFAULTS.progress);
  if (!["auto", "bar", "log", "none"].includes(progress)) {
    throw new ConfigError(`--progress must be auto, bar, log or none (got "${progress}")`);
  }
  const reach = serverFlags(pick, env);

  return {
    inputFile: resolve(inputFile),
    outputDir: resolve(outputDir),
    models: applyTruncateDim(
      applyDtype(models, dtype),
      nonNegativeInt("truncate_dim", pick("truncate_dim", 0), "or 0 for the full dimension"),
    ),
    batchSize: positiveInt("batch_size", pick("batch_size", DEFAULTS.batch_size)),
    maxBatchTokens: nonNegativeInt(
      "max_batch_tokens",
      pick("max_batch_tokens", DEFAULTS.max_batch_tokens),
    ),
    maxWorkers: positiveInt("max_workers", pick("max_workers", DEFAULTS.max_workers)),
    checkpointInterval: positiveInt(
      "checkpoint_interval",
      pick("checkpoint_interval", DEFAULTS.checkpoint_interval),
    ),
    device: pick("device", ""),
    dtype,
    servers: reach.servers,
    embedded: reach.embedded,
    outputFormat,
    outputDtype,
    restart: pick("restart", false),
    skipInvalid: pick("skip_invalid", false),
    maxTextChars: positiveInt("max_text_chars", pick("max_text_chars", DEFAULTS.max_text_chars)),
    batchTimeoutMs: secondsFlag("batch_timeout", pick("batch_timeout", DEFAULTS.batch_timeout)),
    serverTimeoutMs: secondsFlag("server_timeout", pick("server_timeout", DEFAULTS.server_timeout)),
    maxAttempts: positiveInt("max_attempts", pick("max_attempts", DEFAULTS.max_attempts)),
    probeTolerance: probeTolerance(pick("probe_tolerance", DEFAULTS.probe_tolerance)),
    spotCheck: spotCheck(pick("spot_check", DEFAULTS.spot_check)),
    tls: reach.tls,
    authToken: reach.authToken,
    testDiskFullAfterRows: Number.parseInt(env.EMBED_TEST_DISK_FULL_AFTER_ROWS ?? "", 10) || 0,
    progress: progress as ProgressMode,
    toolVersion: TOOL_VERSION,
  };
}

export const TOOL_VERSION = "0.1.0";

type ServerFlagName =
  | "servers"
  | "tls"
  | "tls_ca"
  | "engine"
  | "model_dir"
  | "debug_dim"
  | "threads";

/** A flag's value: the last given, else a default (of a config file, then the tool's). */
export type FlagPicker = <T>(key: ServerFlagName, fallback: T) => T;

/** How a command reaches its servers; the run and verify read these flags the same way. */
export interface ServerFlags {
  readonly servers: readonly string[];
  readonly tls: TlsConfig | null;
  readonly authToken: string;
  readonly embedded: EmbeddedServerConfig;
}

/** --servers, --tls, --tls_ca, EMBED_AUTH_TOKEN and the embedded server's flags, checked once. */
export function serverFlags(pick: FlagPicker, env: NodeJS.ProcessEnv): ServerFlags {
  const engine = pick<string>("engine", DEFAULTS.engine);
  if (engine !== "sentence-transformers" && engine !== "debug") {
    throw new ConfigError(`--engine must be sentence-transformers or debug (got "${engine}")`);
  }
  const servers = flattenList(pick<string[] | string>("servers", [])).map(validateServer);
  const tlsCa = pick<string>("tls_ca", "");
  return {
    servers,
    tls: pick("tls", false) || tlsCa ? { caFile: tlsCa } : null,
    authToken: readAuthToken(env),
    embedded: {
      command: env.EMBED_INFERENCE_SERVER ?? defaultServerCommand(env),
      modelDir: resolve(pick("model_dir", env.EMBED_MODEL_DIR ?? join(PACKAGE_ROOT, "models"))),
      engine,
      debugDim: positiveInt("debug_dim", pick("debug_dim", DEFAULTS.debug_dim)),
      threads: nonNegativeInt("threads", pick("threads", DEFAULTS.threads)),
    },
  };
}

/** A flag in seconds (> 0), as milliseconds. */
export function secondsFlag(flag: string, value: unknown): number {
  return 1000 * positiveNumber(flag, value);
}

const LIST_FLAGS = new Set(["models", "servers"]);

function resolveModels(names: string[], registry: Map<string, ModelSpec>): RunModel[] {
  const seenAlias = new Set<string>();
  const seenStem = new Map<string, string>();
  return names.map((name) => {
    const spec = registry.get(name) ?? customModel(name);
    if (!isValidModelId(spec.modelId)) {
      throw new ConfigError(
        `model "${shownModelId(name)}": "${shownModelId(spec.modelId)}" is not a valid model id (expected name or org/name, at most ${MAX_MODEL_ID_PART} characters a part)`,
      );
    }
    if (seenAlias.has(spec.alias)) throw new ConfigError(`model "${name}" is listed twice`);
    seenAlias.add(spec.alias);
    const fileStem = safeFileStem(spec.alias);
    const clash = seenStem.get(fileStem);
    if (clash) throw new ConfigError(`models "${clash}" and "${name}" would write the same files`);
    seenStem.set(fileStem, name);
    return { ...spec, fileStem };
  });
}

function customModel(name: string): ModelSpec {
  if (!isValidModelId(name)) {
    throw new ConfigError(
      `unknown model "${shownModelId(name)}": not in the registry and not a Hugging Face id (org/name, at most ${MAX_MODEL_ID_PART} characters a part)`,
    );
  }
  return modelSpec(name, name);
}

function applyDtype(models: RunModel[], dtype: string): RunModel[] {
  if (dtype === "" || dtype === "auto") return models;
  return models.map((m) => ({ ...m, dtype: m.dtype || dtype }));
}

/** --truncate_dim for every model that does not set its own in --config (0 = full). */
function applyTruncateDim(models: RunModel[], truncateDim: number): RunModel[] {
  if (truncateDim === 0) return models;
  return models.map((m) => ({ ...m, truncateDim: m.truncateDim || truncateDim }));
}

/** "npy,jsonl,parquet" (any order, "both" = npy,jsonl) → the formats in a fixed order. */
export function parseOutputFormats(value: unknown): OutputFormat[] {
  const items = flattenList(String(value)).flatMap((item) =>
    item === "both" ? ["npy", "jsonl"] : [item],
  );
  const unknown = items.find((item) => !(OUTPUT_FORMATS as readonly string[]).includes(item));
  if (unknown !== undefined || items.length === 0) {
    throw new ConfigError(
      `--output_format must be a list of npy, jsonl, parquet (or both = npy,jsonl); got "${String(value)}"`,
    );
  }
  return OUTPUT_FORMATS.filter((f) => items.includes(f));
}

function flattenList(value: string[] | string): string[] {
  const items = Array.isArray(value) ? value : [value];
  return items
    .flatMap((item) => String(item).split(","))
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** A --servers entry in a form some backend takes (src/backend/targets.ts). */
function validateServer(target: string): string {
  const problem = targetProblem(target);
  if (problem) throw new ConfigError(`--servers: "${target}" ${problem}`);
  return target;
}

export function defaultServerCommand(env: NodeJS.ProcessEnv): string {
  const venv = env.EMBED_VENV ?? join(PACKAGE_ROOT, ".venv");
  const command = join(venv, "bin", "embed-inference-server");
  return existsSync(command) ? command : "embed-inference-server";
}

function positiveInt(flag: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new ConfigError(`--${flag} must be a positive integer (got ${String(value)})`);
  }
  return value;
}

function nonNegativeInt(flag: string, value: unknown, zero?: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    const what = zero ? `a positive integer, ${zero}` : "a non-negative integer";
    throw new ConfigError(`--${flag} must be ${what} (got ${String(value)})`);
  }
  return value;
}

/** A fraction of rows: 0 (off) to 1 (a known row for every row sent). */
function spotCheck(value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > 1) {
    throw new ConfigError(
      `--spot_check must be a fraction of rows from 0 (off) to 1 (got ${String(value)})`,
    );
  }
  return value;
}

/** A cosine: above 0 (a tolerance of 0 or less would admit any server), at most 1. */
function probeTolerance(value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > 1) {
    throw new ConfigError(
      `--probe_tolerance must be a cosine above 0 and at most 1 (got ${String(value)})`,
    );
  }
  return value;
}

function positiveNumber(flag: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(`--${flag} must be a positive number of seconds (got ${String(value)})`);
  }
  return value;
}
