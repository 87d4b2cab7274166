import { status } from "@grpc/grpc-js";
import { ServerError } from "../../errors.js";
import type {
  InfoResponse,
  LoadModelRequest,
  ModelInfo,
} from "../../gen/embedmulti/v1/inference.js";
import type {
  Backend,
  BackendError,
  BatchStream,
  ConnectionOptions,
  HealthReport,
  LoadedModel,
  ModelToLoad,
  ServerDescription,
  TokenCounter,
} from "../types.js";
import { RpcError, ServerConnection } from "./client.js";
import { EmbedStream } from "./stream.js";

/** Our own inference server, over gRPC: the only backend that speaks src/gen/. */
export class GrpcBackend implements Backend {
  private readonly connection: ServerConnection;

  constructor(
    readonly target: string,
    options: ConnectionOptions,
    /** The name on the server's certificate, when dialing it by address. */
    authority: string | null = null,
  ) {
    this.connection = new ServerConnection(target, options, authority);
  }

  get usesTls(): boolean {
    return this.connection.usesTls;
  }

  checkHealth(timeoutMs: number, signal?: AbortSignal): Promise<HealthReport> {
    return this.connection.checkHealth(timeoutMs, signal);
  }

  async describe(timeoutMs: number, signal?: AbortSignal): Promise<ServerDescription> {
    const info = await this.connection.info(timeoutMs, signal).catch((err) => {
      if (signal?.aborted) throw err;
      throw explain(this.target, "Info", err);
    });
    return describeInfo(info);
  }

  async loadModel(
    model: ModelToLoad,
    device: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<LoadedModel> {
    const info = await this.connection
      .loadModel(loadRequest(model, device), timeoutMs, signal)
      .catch((err) => {
        if (signal?.aborted) throw err;
        throw explain(this.target, `loading model "${model.alias}" (${model.modelId})`, err);
      });
    return loadedModel(info);
  }

  /** CountTokens; UNIMPLEMENTED (an older server) means "cannot count". */
  tokenCounter(signal?: AbortSignal): TokenCounter {
    return {
      countTokens: (modelKey, texts, returnIds, timeoutMs) =>
        this.connection.countTokens(modelKey, texts, returnIds, timeoutMs, signal).then(
          (res) => res,
          (err: unknown) => {
            if (err instanceof RpcError && err.code === status.UNIMPLEMENTED) return null;
            // A server gone between its load and the counting is the server's fault, in words.
            if (signal?.aborted) throw err;
            throw explain(this.target, "counting tokens", err);
          },
        ),
    };
  }

  openStream(onBroken: (err: BackendError) => void): BatchStream {
    return new EmbedStream(this.connection, onBroken);
  }

  close(): void {
    this.connection.close();
  }
}

export function loadRequest(model: ModelToLoad, device: string): LoadModelRequest {
  return {
    modelId: model.modelId,
    revision: model.revision,
    device,
    dtype: model.dtype,
    maxLength: model.maxLength,
    prefix: model.prefix,
    normalize: model.normalize,
    truncateDim: model.truncateDim,
    // The proto's "" is none; the texts travel only with a quantized load.
    quantize: model.quantize === "none" ? "" : model.quantize,
    calibrationTexts: model.quantize === "none" ? [] : [...(model.calibrationTexts ?? [])],
  };
}

export function describeInfo(info: InfoResponse): ServerDescription {
  const limits = info.limits
    ? {
        maxBatchSize: info.limits.maxBatchSize,
        maxBatchTokens: info.limits.maxBatchTokens,
        maxMessageBytes: Number(info.limits.maxMessageBytes),
        maxTextChars: info.limits.maxTextChars,
      }
    : null;
  return {
    version: info.serverVersion,
    device: info.device,
    dtype: info.dtype,
    engine: info.engine,
    limits,
    capabilities: { countsTokens: true, tokenIds: true },
  };
}

/** A ModelInfo in our types (every field of the identity is reported). */
export function loadedModel(info: ModelInfo): LoadedModel {
  const { modelKey, modelId, revision, dim, dtype, maxLength, pooling, prefix, normalize } = info;
  return {
    modelKey,
    device: info.device,
    modelId,
    revision,
    dim,
    dtype,
    maxLength,
    pooling,
    prefix,
    normalize,
    truncateDim: info.truncateDim,
    // A server that predates the field says "": none, which a run that asked for int8 refuses.
    quantize: info.quantize || "none",
    engine: info.engine,
    precision: info.precision,
    quantizeFidelity: info.quantizeFidelity ?? undefined,
  };
}

/** A gRPC failure at start-up, in words a user can act on. */
export function explain(target: string, what: string, err: unknown): ServerError {
  const rpc = RpcError.from(target, err);
  switch (rpc.code) {
    case status.NOT_FOUND:
      return new ServerError(`server ${target}: ${what}: not found (${rpc.details})`);
    case status.UNAUTHENTICATED:
      return new ServerError(
        `server ${target}: UNAUTHENTICATED: ${rpc.details} (set EMBED_AUTH_TOKEN to the server's token)`,
      );
    case status.UNAVAILABLE:
      return new ServerError(`server ${target}: unreachable during ${what} (${rpc.details})`);
    default:
      return new ServerError(
        `server ${target}: ${what} failed: ${status[rpc.code]}: ${rpc.details}`,
      );
  }
}
