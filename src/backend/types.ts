import type { ModelIdentity, ModelRequest } from "../model/identity.js";

/**
 * The one boundary between the run and an inference server, in our own
 * types. The dispatcher, the planner, the probe and `verify --sample` speak
 * only this; each kind of server (ours over gRPC, an OpenAI-compatible HTTP
 * one) is one implementation in a folder of its own.
 */

/** A model as the run asks a server for it: the settings it asks for, and its alias for messages. */
export type ModelToLoad = ModelRequest & {
  readonly alias: string;
  /** With quantize int8: the run's calibration texts (src/input/calibration.ts). */
  readonly calibrationTexts?: readonly string[] | undefined;
};

/** What a server accepts; 0 = no limit of its own. */
export interface ServerLimits {
  readonly maxBatchSize: number;
  readonly maxBatchTokens: number;
  /** Largest message it receives or sends (the vectors of one batch must fit). */
  readonly maxMessageBytes: number;
  /** Longest text, in characters. */
  readonly maxTextChars: number;
}

/** What a server can do beyond embedding texts. */
export interface BackendCapabilities {
  /** It counts tokens with the model's own tokenizer (else lengths are estimated). */
  readonly countsTokens: boolean;
  /** It may hand out token ids, and takes batches of ids instead of texts. */
  readonly tokenIds: boolean;
}

/** A server as it describes itself once it is up. */
export interface ServerDescription {
  readonly version: string;
  readonly device: string;
  readonly dtype: string;
  readonly engine: string;
  /** Null: the server states no limits (only the run's own apply). */
  readonly limits: ServerLimits | null;
  readonly capabilities: BackendCapabilities;
}

/**
 * A model as a server loaded it: the key batches name it by, and its identity
 * (a backend that reports no revision or pooling gives "", and the probe
 * vectors carry the identity instead).
 */
export interface LoadedModel extends ModelIdentity {
  readonly modelKey: string;
  readonly device: string;
  /**
   * What computed the forward pass ("torch", "openvino", "debug", ...) and in
   * which precision ("float32", "bfloat16", "int8"): recorded in the metadata,
   * not part of the identity (a server with another engine is held to the probe
   * vectors). Absent: the server does not say (one not ours).
   */
  readonly engine?: string | undefined;
  readonly precision?: string | undefined;
  /** Set when quantized: its vectors against float32 on the calibration texts. */
  readonly quantizeFidelity?: QuantizeFidelity | undefined;
  /** How a server that is not ours serves it (absent for ours): for the metadata. */
  readonly servedAs?: ServedAs | undefined;
}

/** A quantized model's every calibration row's cosine to its float32 vector, summed up. */
export interface QuantizeFidelity {
  readonly rows: number;
  readonly minCosine: number;
  readonly meanCosine: number;
  /** sha256 of the calibration texts the server received (each followed by a NUL byte). */
  readonly calibrationSha256: string;
}

/** What an OpenAI-compatible server told about a model, and what was done here. */
export interface ServedAs {
  readonly backend: "openai";
  /** The name sent as `model`. */
  readonly servedModelName: string;
  readonly encodingFormat: "base64" | "float";
  /** Who made the Matryoshka cut: the server (`dimensions`), here, or none asked. */
  readonly matryoshka: "server" | "local" | "none";
  /** Whether the server's rows came back at unit length (before anything done here). */
  readonly normalizedByServer: boolean;
  /** What the plan's token counts came from. */
  readonly tokenCounts: string;
}

/** Token ids of some texts: little-endian uint32 ids, row after row. */
export interface TokenIds {
  readonly ids: Uint8Array;
  readonly lengths: readonly number[];
  readonly truncated: readonly boolean[];
}

/** What a token counter answers: counts, and ids when asked and the model allows. */
export interface TokenCounts {
  readonly counts: readonly number[];
  readonly tokens?: TokenIds | undefined;
}

/** Counts texts' tokens with a model's tokenizer: a server, or a fake in tests. */
export interface TokenCounter {
  /**
   * Tokens of each text (`counts`), or with `returnIds` their ids (`tokens`)
   * when the model allows; null when the counter cannot count at all.
   */
  countTokens(
    modelKey: string,
    texts: string[],
    returnIds: boolean,
    timeoutMs: number,
  ): Promise<TokenCounts | null>;
  /** What counts, when not the server itself (the plan line says it): e.g. a tokenizer.json. */
  describe?(modelKey: string): string;
}

/** One batch as the run sends it: texts, or (when the server handed them out) their token ids. */
export interface BackendBatch {
  readonly batchId: number;
  readonly modelKey: string;
  readonly texts: readonly string[];
  readonly tokens: TokenIds | undefined;
}

/** A batch's vectors: row-major little-endian float32 bytes, and per row its tokens. */
export interface Vectors {
  readonly rows: number;
  readonly dim: number;
  readonly data: Uint8Array;
  readonly tokenCounts: readonly number[];
  readonly truncated: readonly boolean[];
}

/**
 * Whose fault a failure is, which is all a retry decision reads:
 * - "batch": the batch may be at fault; it costs the batch an attempt.
 * - "server": the server cannot take work now (overloaded, going away, lost
 *   its model); the batch goes elsewhere at no cost, the server is retried later.
 * - "fatal": no retry can help (a refused key): the run stops at once.
 */
export type FailureKind = "batch" | "server" | "fatal";

/** What some failures say besides their kind. */
export interface FailureDetail {
  /** The row of the batch the server refuses even alone (the run names its line). */
  readonly row?: number;
  /** How long the server asked to be left alone (HTTP Retry-After). */
  readonly retryAfterMs?: number;
}

/** A failed call or batch: its kind, a short code in the backend's words, and the details. */
export class BackendError extends Error {
  /** -1: no one row is at fault. */
  readonly row: number;
  readonly retryAfterMs: number;

  constructor(
    readonly target: string,
    readonly kind: FailureKind,
    /** E.g. "UNAVAILABLE" (gRPC) or "HTTP 503": shown to the user, never decided on. */
    readonly code: string,
    readonly details: string,
    detail: FailureDetail = {},
  ) {
    super(`${target}: ${code}: ${details}`);
    this.name = "BackendError";
    this.row = detail.row ?? -1;
    this.retryAfterMs = detail.retryAfterMs ?? 0;
  }
}

/** A batch's answer: its vectors, or the error the server gave for it alone. */
export type BatchOutcome =
  | { readonly ok: true; readonly vectors: Vectors }
  | { readonly ok: false; readonly error: BackendError };

/** One server's stream of batches. */
export interface BatchStream {
  /** Resolves with the batch's outcome; rejects (BackendError) when the stream broke. */
  send(batch: BackendBatch, timeoutMs: number): Promise<BatchOutcome>;
  /** Ends the stream; whatever is still pending is dropped. */
  close(): void;
}

export type HealthState = "serving" | "not-serving" | "unknown";

export interface HealthReport {
  readonly state: HealthState;
  /** Why the state is not "serving", in the server's or the transport's words. */
  readonly detail: string;
}

/**
 * One inference server. The start-up calls throw ServerError with a line a
 * user can act on; `signal` ends any wait at once (rejecting with its reason).
 */
export interface Backend {
  readonly target: string;
  /** Whether it is reached over TLS (for the hint when it cannot be reached). */
  readonly usesTls: boolean;
  /** Its health; "unknown" when it cannot be reached. Rejects only on abort. */
  checkHealth(timeoutMs: number, signal?: AbortSignal): Promise<HealthReport>;
  /** Version, device, limits and capabilities. */
  describe(timeoutMs: number, signal?: AbortSignal): Promise<ServerDescription>;
  /** Loads (or finds) a model with the run's settings. */
  loadModel(
    model: ModelToLoad,
    device: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<LoadedModel>;
  /** Its token counter, or null when it has none (lengths are then estimated). */
  tokenCounter(signal?: AbortSignal): TokenCounter | null;
  /** Opens a stream of batches; `onBroken` is called once if it breaks. */
  openStream(onBroken: (err: BackendError) => void): BatchStream;
  close(): void;
}

/** Options every backend of a run shares. */
export interface ConnectionOptions {
  readonly tls: { readonly caFile: string } | null;
  readonly authToken: string;
  /** Largest message accepted or sent; the embeddings of one batch must fit. */
  readonly maxMessageBytes: number;
}
