import { readFileSync } from "node:fs";
import {
  type CallOptions,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientOptions,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { ConfigError } from "../../errors.js";
import {
  type CountTokensResponse,
  type EmbedBatch,
  type EmbedResult,
  InferenceClient,
  type InfoResponse,
  type LoadModelRequest,
  type ModelInfo,
} from "../../gen/embedmulti/v1/inference.js";
import {
  HealthCheckResponse_ServingStatus,
  HealthClient,
} from "../../gen/grpc/health/v1/health.js";
import type { ConnectionOptions, HealthReport } from "../types.js";

/** A failed call, with its gRPC status code and the server it went to. */
export class RpcError extends Error {
  constructor(
    readonly target: string,
    readonly code: status,
    readonly details: string,
  ) {
    super(`${target}: ${status[code] ?? code}: ${details}`);
    this.name = "RpcError";
  }

  static from(target: string, err: unknown): RpcError {
    if (err instanceof RpcError) return err;
    const e = err as Partial<ServiceError>;
    const code = typeof e.code === "number" ? e.code : status.UNKNOWN;
    const details = e.details || (err instanceof Error ? err.message : String(err));
    return new RpcError(target, code, firstLine(details));
  }
}

/**
 * One inference server:
 * unary calls with deadlines, and the bidirectional Embed stream.
 */
export class ServerConnection {
  private readonly client: InferenceClient;
  private readonly health: HealthClient;

  constructor(
    readonly target: string,
    private readonly options: ConnectionOptions,
    /** The name on the server's certificate, when dialing it by address. */
    authority: string | null = null,
  ) {
    const channelOptions: ClientOptions = {
      "grpc.max_receive_message_length": options.maxMessageBytes,
      "grpc.max_send_message_length": options.maxMessageBytes,
      // Reconnect quickly after a server restarts: failover waits on this.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
    };
    if (authority) {
      channelOptions["grpc.default_authority"] = authority;
      if (options.tls) channelOptions["grpc.ssl_target_name_override"] = authority;
    }
    const creds = makeCredentials(options.tls);
    this.client = new InferenceClient(target, creds, channelOptions);
    this.health = new HealthClient(target, creds, channelOptions);
  }

  get usesTls(): boolean {
    return this.options.tls !== null;
  }

  private metadata(): Metadata {
    const md = new Metadata();
    if (this.options.authToken) md.set("authorization", `Bearer ${this.options.authToken}`);
    return md;
  }

  private callOptions(timeoutMs: number): Partial<CallOptions> {
    return { deadline: Date.now() + timeoutMs };
  }

  /** The server's health, "unknown" when it cannot be reached. Rejects only on abort. */
  checkHealth(timeoutMs: number, signal?: AbortSignal): Promise<HealthReport> {
    return this.unary(signal, (done) =>
      this.health.check(
        { service: "" },
        this.metadata(),
        this.callOptions(timeoutMs),
        (err, res) => {
          if (err)
            done(null, { state: "unknown", detail: RpcError.from(this.target, err).details });
          else if (res.status === HealthCheckResponse_ServingStatus.SERVING) {
            done(null, { state: "serving", detail: "" });
          } else done(null, { state: "not-serving", detail: "health NOT_SERVING" });
        },
      ),
    );
  }

  info(timeoutMs: number, signal?: AbortSignal): Promise<InfoResponse> {
    return this.unary(signal, (done) =>
      this.client.info({}, this.metadata(), this.callOptions(timeoutMs), done),
    );
  }

  loadModel(
    request: LoadModelRequest,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<ModelInfo> {
    return this.unary(signal, (done) =>
      this.client.loadModel(request, this.metadata(), this.callOptions(timeoutMs), done),
    );
  }

  /** Token counts, or with `returnIds` the ids too (when the model allows). */
  countTokens(
    modelKey: string,
    texts: string[],
    returnIds: boolean,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<CountTokensResponse> {
    return this.unary(signal, (done) =>
      this.client.countTokens(
        { modelKey, texts, returnIds },
        this.metadata(),
        this.callOptions(timeoutMs),
        done,
      ),
    );
  }

  /**
   * One unary call that ends on the first abort of `signal`: the call is
   * cancelled on the wire and the promise rejects with the signal's reason
   * (the run's InterruptedError), however long its deadline.
   */
  private unary<T>(
    signal: AbortSignal | undefined,
    start: (done: (err: ServiceError | null, res?: T) => void) => { cancel(): void },
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        call.cancel();
        reject(signal?.reason);
      };
      const call = start((err, res) => {
        signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted) return;
        if (err) reject(RpcError.from(this.target, err));
        else resolve(res as T);
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  openEmbedStream(): ClientDuplexStream<EmbedBatch, EmbedResult> {
    return this.client.embed(this.metadata());
  }

  close(): void {
    this.client.close();
    this.health.close();
  }
}

function makeCredentials(tls: ConnectionOptions["tls"]): ChannelCredentials {
  if (!tls) return credentials.createInsecure();
  let ca: Buffer | null = null;
  if (tls.caFile) {
    try {
      ca = readFileSync(tls.caFile);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new ConfigError(`cannot read --tls_ca file ${tls.caFile}: ${code}`);
    }
  }
  return credentials.createSsl(ca);
}

function firstLine(text: string): string {
  return text.split("\n")[0] ?? text;
}
