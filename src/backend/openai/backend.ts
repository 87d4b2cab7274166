import { join } from "node:path";
import { ServerError } from "../../errors.js";
import {
  type Backend,
  type BackendBatch,
  BackendError,
  type BatchOutcome,
  type BatchStream,
  type HealthReport,
  type LoadedModel,
  type ModelToLoad,
  type ServerDescription,
  type TokenCounter,
} from "../types.js";
import {
  BadRowError,
  DEFAULT_MAX_REQUEST_INPUTS,
  DEFAULT_MAX_REQUEST_TOKENS,
  embedBatch,
  estimateTokens,
  type RequestSettings,
} from "./batch.js";
import { OpenAIClient } from "./client.js";
import { discoverModel, type ServedModel } from "./discover.js";
import { HttpEmbedError } from "./fault.js";
import type { OpenAIRunConfig } from "./settings.js";
import { type TokenCounter as TextTokenCounter, tokenCounter } from "./tokenizer.js";

/** What every openai backend of a run shares. */
export interface OpenAIOptions {
  readonly apiKey: string;
  readonly maxRequestInputs: number;
  readonly maxRequestTokens: number;
  /** The name a model is served under (served_model_name, else its model id). */
  readonly servedName: (model: ModelToLoad) => string;
  /** True: never ask for base64 for this model (config encoding_format: float). */
  readonly floatOnly: (model: ModelToLoad) => boolean;
  /** A model's token counter: its tokenizer.json, or the estimate from characters. */
  readonly counterFor: (model: ModelToLoad) => TextTokenCounter;
}

/** No key, OpenAI's caps, model ids as served names, lengths estimated. */
export const DEFAULT_OPENAI_OPTIONS: OpenAIOptions = {
  apiKey: "",
  maxRequestInputs: DEFAULT_MAX_REQUEST_INPUTS,
  maxRequestTokens: DEFAULT_MAX_REQUEST_TOKENS,
  servedName: (model) => model.modelId,
  floatOnly: () => false,
  counterFor: () => tokenCounter(""),
};

/**
 * The run's openai options: names and tokenizers from the config file, else
 * the model's folder in the model directory (its tokenizer.json, when there
 * is one). Each tokenizer is read once.
 */
export function openAIOptions(config: OpenAIRunConfig, modelDir: string): OpenAIOptions {
  const counters = new Map<string, TextTokenCounter>();
  return {
    apiKey: config.apiKey,
    maxRequestInputs: config.maxRequestInputs,
    maxRequestTokens: config.maxRequestTokens,
    servedName: (model) => config.serving.get(model.alias)?.servedModelName || model.modelId,
    floatOnly: (model) => config.serving.get(model.alias)?.encodingFormat === "float",
    counterFor: (model) => {
      const path = config.serving.get(model.alias)?.tokenizer || join(modelDir, model.modelId);
      let counter = counters.get(path);
      if (!counter) {
        counter = tokenCounter(path);
        counters.set(path, counter);
      }
      return counter;
    },
  };
}

interface LoadedHere {
  readonly model: ModelToLoad;
  readonly served: ServedModel;
  readonly settings: RequestSettings;
  readonly counter: TextTokenCounter;
}

/**
 * Anyone's OpenAI-compatible `POST /v1/embeddings` (TEI, vLLM, infinity, a
 * hosted API) behind the backend interface. Such a server reports no
 * revision, pooling or limits: its identity is the served name, the
 * dimension and normalization it answers with, and the probe vectors the run
 * checks it against. The prefix (e5's `passage: `) is added here, once; a
 * Matryoshka cut the server does not make is made here.
 */
export class OpenAIBackend implements Backend {
  private readonly client: OpenAIClient;
  private readonly loaded = new Map<string, LoadedHere>();

  constructor(
    /** The base URL, e.g. http://host:8080/v1 (never with credentials). */
    readonly target: string,
    private readonly options: OpenAIOptions,
  ) {
    this.client = new OpenAIClient({ baseUrl: target, apiKey: options.apiKey, timeoutMs: 60_000 });
  }

  get usesTls(): boolean {
    return this.target.startsWith("https:");
  }

  private withTimeout(timeoutMs: number): OpenAIClient {
    return new OpenAIClient({ ...this.client.options, timeoutMs });
  }

  /**
   * GET /models: any answer but a 5xx or a 429 means the server is there
   * (404: it has no such route; 401: loadModel says the key was refused).
   */
  async checkHealth(timeoutMs: number, signal?: AbortSignal): Promise<HealthReport> {
    try {
      await this.withTimeout(timeoutMs).models(signal);
      return { state: "serving", detail: "" };
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (err instanceof HttpEmbedError) {
        if (err.fault !== "server") return { state: "serving", detail: "" };
        return { state: err.status ? "not-serving" : "unknown", detail: err.detail };
      }
      return { state: "unknown", detail: String(err) };
    }
  }

  async describe(): Promise<ServerDescription> {
    return {
      version: "openai-compatible",
      device: "",
      dtype: "",
      engine: "openai",
      // The per-request caps: the planner keeps each batch to one request.
      limits: {
        maxBatchSize: this.options.maxRequestInputs,
        maxBatchTokens: this.options.maxRequestTokens,
        maxMessageBytes: 0,
        maxTextChars: 0,
      },
      capabilities: { countsTokens: true, tokenIds: false },
    };
  }

  async loadModel(
    model: ModelToLoad,
    _device: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<LoadedModel> {
    let served: ServedModel;
    try {
      served = await discoverModel(
        this.withTimeout(timeoutMs),
        this.options.servedName(model),
        model.truncateDim,
        signal,
        this.options.floatOnly(model),
      );
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw startupError(this.target, model, err);
    }
    const local = model.truncateDim > 0 && !served.serverDimensions;
    if (model.truncateDim > served.dim) {
      throw new ServerError(
        `server ${this.target}: model "${model.alias}" answers ${served.dim} dimensions, fewer than truncate_dim ${model.truncateDim}`,
      );
    }
    const settings: RequestSettings = {
      model: served.name,
      encoding: served.encoding,
      serverDimensions: served.serverDimensions ? model.truncateDim : 0,
      localDimensions: local ? model.truncateDim : 0,
      // After any cut (the server's, like infinity's, does not renormalize), as ours does.
      normalize: model.normalize,
      maxInputs: this.options.maxRequestInputs,
      maxTokens: this.options.maxRequestTokens,
    };
    const modelKey = `openai:${model.alias}`;
    const counter = this.options.counterFor(model);
    this.loaded.set(modelKey, { model, served, settings, counter });
    return {
      modelKey,
      device: "",
      modelId: model.modelId,
      // Nothing the server says pins its weights: the probe vectors do.
      revision: "",
      dim: model.truncateDim || served.dim,
      dtype: "",
      maxLength: model.maxLength,
      pooling: "",
      prefix: model.prefix,
      normalize: model.normalize,
      truncateDim: model.truncateDim,
      quantize: "none",
      servedAs: {
        backend: "openai",
        servedModelName: served.name,
        encodingFormat: served.encoding,
        matryoshka: model.truncateDim === 0 ? "none" : local ? "local" : "server",
        normalizedByServer: served.normalized,
        tokenCounts: counter.source,
      },
    };
  }

  /** How this server serves a model it loaded: for the metadata. */
  servedAs(modelKey: string): ServedModel | undefined {
    return this.loaded.get(modelKey)?.served;
  }

  /** Counts with the model's tokenizer.json (or the estimate), prefix included, here. */
  tokenCounter(): TokenCounter {
    return {
      countTokens: async (modelKey, texts) => {
        const here = this.loaded.get(modelKey);
        // No tokenizer.json: the planner's own estimate from characters, and it says so.
        if (!here?.counter.exact) return null;
        const prefix = here.model.prefix;
        return { counts: texts.map((t) => here.counter.count(prefix + t)) };
      },
      describe: (modelKey) => this.loaded.get(modelKey)?.counter.source ?? "",
    };
  }

  openStream(): BatchStream {
    return new HttpBatchStream(this.target, this.client, this.loaded);
  }

  close(): void {
    // Node's fetch keeps its idle sockets in a shared pool, closed on exit.
  }
}

/**
 * Batches as HTTP requests, each on its own: a failure is one batch's
 * outcome, never a broken stream (there is none to break).
 */
class HttpBatchStream implements BatchStream {
  private readonly abort = new AbortController();

  constructor(
    private readonly target: string,
    private readonly client: OpenAIClient,
    private readonly loaded: ReadonlyMap<string, LoadedHere>,
  ) {}

  async send(batch: BackendBatch, timeoutMs: number): Promise<BatchOutcome> {
    const here = this.loaded.get(batch.modelKey);
    if (!here) {
      return failed(
        new BackendError(this.target, "server", "NOT LOADED", `no model ${batch.modelKey}`),
      );
    }
    const texts = batch.texts.map((t) => here.model.prefix + t);
    const client = new OpenAIClient({ ...this.client.options, timeoutMs });
    try {
      const got = await embedBatch(
        client,
        texts,
        texts.map(estimateTokens),
        here.settings,
        this.abort.signal,
      );
      const data = new Uint8Array(
        got.vectors.buffer,
        got.vectors.byteOffset,
        got.vectors.byteLength,
      );
      return {
        ok: true,
        vectors: {
          rows: texts.length,
          dim: got.dim,
          data,
          tokenCounts: [],
          truncated: [],
        },
      };
    } catch (err) {
      if (this.abort.signal.aborted)
        throw new BackendError(this.target, "server", "CLOSED", "stream closed");
      return failed(toBackendError(this.target, err));
    }
  }

  close(): void {
    this.abort.abort(new BackendError(this.target, "server", "CLOSED", "stream closed"));
  }
}

function failed(error: BackendError): BatchOutcome {
  return { ok: false, error };
}

/** Our fault classes in the interface's words: auth → fatal; a refused row names itself. */
export function toBackendError(target: string, err: unknown): BackendError {
  if (err instanceof BadRowError) {
    return new BackendError(target, "fatal", `HTTP ${err.refusal.status}`, err.message, {
      row: err.row,
    });
  }
  if (err instanceof HttpEmbedError) {
    const code = err.status ? `HTTP ${err.status}` : "NO ANSWER";
    const kind = err.fault === "auth" ? "fatal" : err.fault;
    return new BackendError(target, kind, code, err.detail, { retryAfterMs: err.retryAfterMs });
  }
  return new BackendError(
    target,
    "batch",
    "ERROR",
    err instanceof Error ? err.message : String(err),
  );
}

function startupError(target: string, model: ModelToLoad, err: unknown): ServerError {
  if (err instanceof HttpEmbedError) {
    return new ServerError(
      `server ${target}: model "${model.alias}": ${err.status ? `HTTP ${err.status}: ` : ""}${err.detail}`,
    );
  }
  return new ServerError(`server ${target}: model "${model.alias}": ${String(err)}`);
}
