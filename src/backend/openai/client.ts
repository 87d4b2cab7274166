import { classifyNetworkError, classifyStatus, HttpEmbedError } from "./fault.js";
import {
  type EmbeddingsAnswer,
  type EmbeddingsRequest,
  MalformedAnswerError,
  parseAnswer,
  requestBody,
} from "./wire.js";

export interface OpenAIClientOptions {
  /** e.g. http://127.0.0.1:7997/v1 (no credentials). */
  readonly baseUrl: string;
  /** Bearer key; "" = none sent. */
  readonly apiKey: string;
  /** Per request; past it the request is aborted and the server counts as not answering. */
  readonly timeoutMs: number;
  /** Node's global fetch (undici); tests may pass another. */
  readonly fetch?: typeof fetch;
}

/**
 * One OpenAI-compatible server over HTTP: `POST {base}/embeddings` and
 * `GET {base}/models`, each with a deadline and the run's abort signal.
 * Node's fetch pools keep-alive connections per origin, so requests in flight
 * at once (--max_workers) reuse their sockets.
 */
export class OpenAIClient {
  private readonly fetchImpl: typeof fetch;

  constructor(readonly options: OpenAIClientOptions) {
    this.fetchImpl = options.fetch ?? fetch;
  }

  get url(): string {
    return this.options.baseUrl;
  }

  private headers(): Record<string, string> {
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "application/json",
    };
    if (this.options.apiKey) headers.authorization = `Bearer ${this.options.apiKey}`;
    return headers;
  }

  /** Rejects with HttpEmbedError (classified), or with the signal's reason on abort. */
  async embed(req: EmbeddingsRequest, signal?: AbortSignal): Promise<EmbeddingsAnswer> {
    const json = await this.call("POST", "/embeddings", requestBody(req), signal);
    try {
      return parseAnswer(json, req.texts.length);
    } catch (err) {
      if (err instanceof MalformedAnswerError) {
        throw new HttpEmbedError(this.url, "batch", 200, `malformed answer: ${err.message}`);
      }
      throw err;
    }
  }

  /** The names the server serves (GET /models); [] when it has no such route. */
  async models(signal?: AbortSignal): Promise<string[]> {
    let json: unknown;
    try {
      json = await this.call("GET", "/models", undefined, signal);
    } catch (err) {
      if (err instanceof HttpEmbedError && (err.status === 404 || err.status === 405)) return [];
      throw err;
    }
    const data = (json as { data?: unknown })?.data;
    if (!Array.isArray(data)) return [];
    return data
      .map((m) => (m as { id?: unknown })?.id)
      .filter((id): id is string => typeof id === "string");
  }

  private async call(
    method: "GET" | "POST",
    path: string,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let text: string;
    let res: Response;
    try {
      res = await this.fetchImpl(`${this.url}${path}`, {
        method,
        headers: this.headers(),
        body,
        signal: both,
      });
      text = await res.text();
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw classifyNetworkError(this.url, err, this.options.timeoutMs);
    }
    if (!res.ok) {
      throw classifyStatus(
        this.url,
        res.status,
        text,
        res.headers.get("retry-after"),
        this.options.apiKey !== "",
      );
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new HttpEmbedError(
        this.url,
        "batch",
        res.status,
        `malformed answer: not JSON (${text.slice(0, 80)})`,
      );
    }
  }
}
