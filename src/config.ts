import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_MAX_REQUEST_INPUTS, DEFAULT_MAX_REQUEST_TOKENS } from "./backend/openai/batch.js";
import { readApiKey } from "./backend/openai/key.js";
import type { ModelServing, OpenAIRunConfig } from "./backend/openai/settings.js";
import { isOpenAITarget, OPENAI_SCHEME, parseOpenAITarget } from "./backend/openai/target.js";
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
import { embeddedDevices } from "./server/devices.js";
import { type EmbeddedServerConfig, LOCAL_ENGINES, type LocalEngine } from "./server/embedded.js";
import { parseShard, type ShardSpec, shardDir } from "./shard/shard.js";

export type { ModelSpec } from "./config/registry.js";

/** The files a model's vectors are written to; `both` on the command line means npy,jsonl. */
export type { OutputFormat } from "./output/formats.js";
export type ProgressMode = "auto" | "bar" | "log" | "none";

/** A model of this run: its registry settings plus the file stem of its outputs. */
export interface RunModel extends ModelSpec {
  readonly fileStem: string;
  /** With quantize int8: the run's calibration texts (src/input/calibration.ts), set after the scan. */
  readonly calibrationTexts?: readonly string[];
}

export interface TlsConfig {
  /** PEM file of the CA that signed the servers' certificates; "" = system roots. */
  readonly caFile: string;
}

function isLocalEngine(name: string): name is LocalEngine {
  return (LOCAL_ENGINES as readonly string[]).includes(name);
}

/** Everything a run needs, validated once, built only by buildRunConfig. */
export interface RunConfig {
  readonly inputFile: string;
  /** Where this run's checkpoint and outputs go: a shard's own folder when sharded. */
  readonly outputDir: string;
  /** --shard K/N (or --num_shards with JOB_COMPLETION_INDEX); null = the whole input. */
  readonly shard: ShardSpec | null;
  readonly models: readonly RunModel[];
  readonly batchSize: number;
  /** Tokens (padded) per batch at most; 0 = no token budget. */
  readonly maxBatchTokens: number;
  /** --batch_size or --max_batch_tokens was set (flag or config file), not defaulted. */
  readonly planLimitsGiven: boolean;
  /** Batches in flight per server. */
  readonly maxWorkers: number;
  /** Paragraphs between durable checkpoints. */
  readonly checkpointInterval: number;
  /** The device models are loaded on (LoadModel); "" = each server's default (also with several local devices). */
  readonly device: string;
  /** The embedded servers' devices, one server each (--device cuda = every visible GPU); [""] = one, its default. */
  readonly localDevices: readonly string[];
  /** "" = each model's own (auto). */
  readonly dtype: string;
  /** Remote servers; empty = start the embedded local server. */
  readonly servers: readonly string[];
  /** Set when the servers are OpenAI-compatible ones (`openai:URL`). */
  readonly openai: OpenAIRunConfig | null;
  readonly embedded: EmbeddedServerConfig;
  /** Output files per model, in a fixed order (npy, jsonl, parquet), each once. */
  readonly outputFormat: readonly OutputFormat[];
  /** The dtype of the vectors in the output files (the checkpoint always holds float32). */
  readonly outputDtype: OutputDtype;
  readonly restart: boolean;
  readonly skipInvalid: boolean;
  /** Finished output folders of earlier runs whose vectors may be copied (--reuse). */
  readonly reuse: readonly string[];
  /** Identical model inputs are embedded once and copied to every row that has them. */
  readonly dedupe: boolean;
  readonly maxTextChars: number;
  readonly batchTimeoutMs: number;
  readonly serverTimeoutMs: number;
  readonly maxAttempts: number;
  /** Every probe vector of a joining server must have at least this cosine with the stored one. */
  readonly probeTolerance: number;
  /** --quantize int8: the least cosine of any calibration row's int8 vector to its float32 one. */
  readonly quantizeMinCosine: number;
  /** --verbose: a debug line per batch and per retry or keep-out decision. */
  readonly verbose: boolean;
  /** Spot rows per row sent (--spot_check, issue 16): known rows inside ordinary batches; 0 = off. */
  readonly spotCheck: number;
  readonly tls: TlsConfig | null;
  readonly authToken: string;
  readonly progress: ProgressMode;
  readonly toolVersion: string;
  /** Prometheus /metrics on this port (0 picks a free one); null = not served. */
  readonly metricsPort: number | null;
  readonly metricsHost: string;
  /** Seconds the metrics stay served after the run, so the final counts can be scraped. */
  readonly metricsLingerMs: number;
  /** How often `dns:///` names are resolved again during the run. */
  readonly resolveIntervalMs: number;
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
  quantize?: string;
  quantize_min_cosine?: number;
  servers?: string[];
  config?: string;
  output_format?: string;
  output_dtype?: string;
  restart?: boolean;
  skip_invalid?: boolean;
  reuse?: string[];
  dedupe?: boolean;
  max_text_chars?: number;
  batch_timeout?: number;
  server_timeout?: number;
  max_attempts?: number;
  probe_tolerance?: number;
  spot_check?: number;
  verbose?: boolean;
  tls?: boolean;
  tls_ca?: string;
  engine?: string;
  debug_dim?: number;
  threads?: number;
  model_dir?: string;
  progress?: string;
  max_request_inputs?: number;
  max_request_tokens?: number;
  shard?: string;
  num_shards?: number;
  metrics_port?: number;
  metrics_host?: string;
  metrics_linger?: number;
  resolve_interval?: number;
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
  resolve_interval: 30,
  probe_tolerance: DEFAULT_PROBE_TOLERANCE,
  // The worst calibration row's cosine to float32 that --quantize int8 accepts. NNCF's static
  // int8 of all-MiniLM-L6-v2 reaches about 0.98 on its worst row here (0.986 on 24 fixture
  // paragraphs, 0.980 on 288 unseen ones); ONNX Runtime's dynamic int8 reached 0.958, enough
  // to reorder near neighbours. 0.97 lets a sound quantization through and stops one gone
  // wrong (a model whose activations int8 cannot hold) before any row is embedded.
  quantize_min_cosine: 0.97,
  spot_check: 0.005,
  engine: "sentence-transformers",
  debug_dim: 384,
  threads: 0,
  progress: "auto",
  max_request_inputs: DEFAULT_MAX_REQUEST_INPUTS,
  max_request_tokens: DEFAULT_MAX_REQUEST_TOKENS,
} as const;

/** The repository (or installed package) root: dist/src/config.js → ../.. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function buildRunConfig(args: CliArgs, env: NodeJS.ProcessEnv): RunConfig {
  const file = args.config
    ? loadConfigFile(args.config)
    : { models: [], serving: new Map<string, ModelServing>(), defaults: {} };
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
  const shard = parseShard(
    pick<string | undefined>("shard", undefined),
    pick<number | undefined>("num_shards", undefined),
    env,
  );
  if (shard && !(outputFormat.includes("npy") && outputDtype === "float32")) {
    // int8/uint8 ranges must be the same for every shard: only the merge sees them all.
    throw new ConfigError(
      `a shard writes a float32 .npy for the merge (got --output_format ${outputFormat.join(",")} --output_dtype ${outputDtype}); pass the formats and dtype you want to embed-multi merge`,
    );
  }
  const reach = serverFlags(pick, env, file.serving);
  const quantize = quantizeFlag(pick("quantize", "none"), reach, pick("device", ""), dtype);

  return {
    inputFile: resolve(inputFile),
    outputDir: shard ? shardDir(resolve(outputDir), shard) : resolve(outputDir),
    shard,
    models: applyTruncateDim(
      applyDtype(models, dtype),
      nonNegativeInt("truncate_dim", pick("truncate_dim", 0), "or 0 for the full dimension"),
    ).map((m) => ({ ...m, quantize })),
    batchSize: positiveInt("batch_size", pick("batch_size", DEFAULTS.batch_size)),
    planLimitsGiven: ["batch_size", "max_batch_tokens"].some(
      (key) => pick<unknown>(key as keyof CliArgs & string, undefined) !== undefined,
    ),
    maxBatchTokens: nonNegativeInt(
      "max_batch_tokens",
      pick("max_batch_tokens", DEFAULTS.max_batch_tokens),
    ),
    maxWorkers: positiveInt("max_workers", pick("max_workers", DEFAULTS.max_workers)),
    checkpointInterval: positiveInt(
      "checkpoint_interval",
      pick("checkpoint_interval", DEFAULTS.checkpoint_interval),
    ),
    ...devices(pick("device", ""), reach.servers.length > 0),
    dtype,
    servers: reach.servers,
    openai: reach.openai,
    embedded: reach.embedded,
    outputFormat,
    outputDtype,
    restart: pick("restart", false),
    skipInvalid: pick("skip_invalid", false),
    // Not split at commas: a folder name may hold one.
    reuse: [pick<string[] | string>("reuse", [])].flat().map((dir) => resolve(String(dir))),
    dedupe: pick("dedupe", true),
    maxTextChars: positiveInt("max_text_chars", pick("max_text_chars", DEFAULTS.max_text_chars)),
    batchTimeoutMs: secondsFlag("batch_timeout", pick("batch_timeout", DEFAULTS.batch_timeout)),
    serverTimeoutMs: secondsFlag("server_timeout", pick("server_timeout", DEFAULTS.server_timeout)),
    maxAttempts: positiveInt("max_attempts", pick("max_attempts", DEFAULTS.max_attempts)),
    probeTolerance: probeTolerance(pick("probe_tolerance", DEFAULTS.probe_tolerance)),
    quantizeMinCosine: cosineBound(
      "quantize_min_cosine",
      pick("quantize_min_cosine", DEFAULTS.quantize_min_cosine),
    ),
    spotCheck: spotCheck(pick("spot_check", DEFAULTS.spot_check)),
    verbose: pick("verbose", false),
    tls: reach.tls,
    authToken: reach.authToken,
    progress: progress as ProgressMode,
    toolVersion: TOOL_VERSION,
    ...metricsSettings(pick),
    resolveIntervalMs:
      1000 *
      positiveNumber("resolve_interval", pick("resolve_interval", DEFAULTS.resolve_interval)),
  };
}

export const TOOL_VERSION = "0.1.0";

/**
 * With no --servers, one embedded server per device: `cuda` is every visible
 * GPU, `cuda:0,cuda:2` those; each server then loads on its own device. Remote
 * servers take one device for all.
 */
function devices(device: string, remote: boolean): Pick<RunConfig, "device" | "localDevices"> {
  if (remote) {
    if (device.includes(",")) {
      throw new ConfigError(
        `--device ${device}: a list starts one local server per device; with --servers give one device (or none)`,
      );
    }
    return { device, localDevices: [""] };
  }
  const localDevices = embeddedDevices(device);
  return { device: localDevices.length > 1 ? "" : device, localDevices };
}

function metricsSettings(
  pick: <T>(key: keyof CliArgs & string, fallback: T) => T,
): Pick<RunConfig, "metricsPort" | "metricsHost" | "metricsLingerMs"> {
  const port = pick<number | undefined>("metrics_port", undefined);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw new ConfigError(`--metrics_port must be a port 0..65535 (got ${String(port)})`);
  }
  const linger = pick<number>("metrics_linger", 0);
  if (typeof linger !== "number" || !Number.isFinite(linger) || linger < 0) {
    throw new ConfigError(`--metrics_linger must be seconds, 0 or more (got ${String(linger)})`);
  }
  return {
    metricsPort: port ?? null,
    metricsHost: String(pick("metrics_host", "127.0.0.1")),
    metricsLingerMs: linger * 1000,
  };
}

type ServerFlagName =
  | "servers"
  | "tls"
  | "tls_ca"
  | "engine"
  | "model_dir"
  | "debug_dim"
  | "threads"
  | "max_request_inputs"
  | "max_request_tokens"
  | "verbose";

/** A flag's value: the last given, else a default (of a config file, then the tool's). */
export type FlagPicker = <T>(key: ServerFlagName, fallback: T) => T;

/** How a command reaches its servers; the run and verify read these flags the same way. */
export interface ServerFlags {
  readonly servers: readonly string[];
  readonly tls: TlsConfig | null;
  readonly authToken: string;
  readonly embedded: EmbeddedServerConfig;
  /** Set when the servers are OpenAI-compatible ones (`openai:URL`). */
  readonly openai: OpenAIRunConfig | null;
}

/** --servers, --tls, --tls_ca, EMBED_AUTH_TOKEN and the embedded server's flags, checked once. */
export function serverFlags(
  pick: FlagPicker,
  env: NodeJS.ProcessEnv,
  serving: ReadonlyMap<string, ModelServing> = new Map(),
): ServerFlags {
  const engine = pick<string>("engine", DEFAULTS.engine);
  if (!isLocalEngine(engine)) {
    throw new ConfigError(`--engine must be one of ${LOCAL_ENGINES.join(", ")} (got "${engine}")`);
  }
  const servers = flattenList(pick<string[] | string>("servers", [])).map(validateServer);
  const tlsCa = pick<string>("tls_ca", "");
  return {
    servers,
    openai: openaiFlags(servers, pick, env, serving),
    tls: pick("tls", false) || tlsCa ? { caFile: tlsCa } : null,
    authToken: readAuthToken(env),
    embedded: {
      command: env.EMBED_INFERENCE_SERVER ?? defaultServerCommand(env),
      modelDir: resolve(pick("model_dir", env.EMBED_MODEL_DIR ?? join(PACKAGE_ROOT, "models"))),
      engine,
      debugDim: positiveInt("debug_dim", pick("debug_dim", DEFAULTS.debug_dim)),
      threads: nonNegativeInt("threads", pick("threads", DEFAULTS.threads)),
      verbose: pick("verbose", false),
    },
  };
}

/** The openai: servers' key and caps; null for our own servers. One kind per run. */
function openaiFlags(
  servers: readonly string[],
  pick: FlagPicker,
  env: NodeJS.ProcessEnv,
  serving: ReadonlyMap<string, ModelServing>,
): OpenAIRunConfig | null {
  if (!servers.some(isOpenAITarget)) return null;
  if (!servers.every(isOpenAITarget)) {
    throw new ConfigError(
      "--servers: openai: servers and our own (host:port) cannot be mixed in one run; give one kind",
    );
  }
  return {
    apiKey: readApiKey(env).key,
    maxRequestInputs: positiveInt(
      "max_request_inputs",
      pick("max_request_inputs", DEFAULTS.max_request_inputs),
    ),
    maxRequestTokens: positiveInt(
      "max_request_tokens",
      pick("max_request_tokens", DEFAULTS.max_request_tokens),
    ),
    serving,
  };
}

/** A flag in seconds (> 0), as milliseconds. */
export function secondsFlag(flag: string, value: unknown): number {
  return 1000 * positiveNumber(flag, value);
}

const LIST_FLAGS = new Set(["models", "servers", "reuse"]);

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

/** A --servers entry in a form some backend takes (src/backend/targets.ts, openai:URL). */
function validateServer(target: string): string {
  if (isOpenAITarget(target)) return `${OPENAI_SCHEME}${parseOpenAITarget(target).baseUrl}`;
  const problem = targetProblem(target);
  if (problem) {
    throw new ConfigError(`--servers: "${target}" ${problem} (nor openai:http://host:port/v1)`);
  }
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
  return cosineBound("probe_tolerance", value);
}

function cosineBound(flag: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > 1) {
    throw new ConfigError(
      `--${flag} must be a cosine above 0 and at most 1 (got ${String(value)})`,
    );
  }
  return value;
}

export const QUANTIZE_MODES = ["none", "int8"] as const;

/**
 * --quantize: none, or int8 where it can run: our own servers' CPU engine (OpenVINO), from
 * the float32 model. What only a server knows (its default device) it refuses at the load.
 */
function quantizeFlag(value: unknown, reach: ServerFlags, device: string, dtype: string): string {
  const mode = String(value);
  if (!(QUANTIZE_MODES as readonly string[]).includes(mode)) {
    throw new ConfigError(`--quantize must be none or int8 (got "${mode}")`);
  }
  if (mode === "none") return mode;
  const engine = reach.embedded.engine;
  const problem = reach.openai
    ? "runs on our own inference servers' CPU engine, not on openai: servers"
    : reach.servers.length === 0 && (engine === "torch" || engine === "debug")
      ? `needs the openvino engine (--engine sentence-transformers or openvino), not --engine ${engine}`
      : device.startsWith("cuda")
        ? `runs on the CPU engine (OpenVINO), not on --device ${device}`
        : !["", "auto", "float32"].includes(dtype)
          ? `quantizes the float32 model, not --dtype ${dtype}`
          : null;
  if (problem) throw new ConfigError(`--quantize int8 ${problem}`);
  return mode;
}

function positiveNumber(flag: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(`--${flag} must be a positive number of seconds (got ${String(value)})`);
  }
  return value;
}
