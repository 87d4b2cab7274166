import type { ClientDuplexStream } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import type { EmbedBatch, EmbedResult } from "../../gen/embedmulti/v1/inference.js";
import type { BackendBatch, BackendError, BatchOutcome, BatchStream } from "../types.js";
import { classifyBatchError, classifyBroken } from "./classify.js";
import { RpcError, type ServerConnection } from "./client.js";

interface Pending {
  resolve(result: BatchOutcome): void;
  reject(err: BackendError): void;
  timer: NodeJS.Timeout;
}

/**
 * The long-lived bidirectional Embed stream to one server: batches go out as
 * they come, results come back in any order and are matched by batch_id.
 * Every batch has a deadline; a missed deadline or a stream error breaks the
 * stream, fails every batch still on it, and the owner opens a new one.
 */
export class EmbedStream implements BatchStream {
  private readonly call: ClientDuplexStream<EmbedBatch, EmbedResult>;
  private readonly pending = new Map<number, Pending>();
  private broken: BackendError | null = null;
  private drained: Promise<void> | null = null;

  constructor(
    private readonly connection: ServerConnection,
    private readonly onBroken: (err: BackendError) => void,
  ) {
    this.call = connection.openEmbedStream();
    this.call.on("data", (result: EmbedResult) => this.settle(result));
    this.call.on("error", (err) => this.fail(RpcError.from(connection.target, err)));
    this.call.on("end", () =>
      this.fail(new RpcError(connection.target, status.UNAVAILABLE, "the server ended the stream")),
    );
  }

  get isBroken(): boolean {
    return this.broken !== null;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends one batch; resolves with its outcome (which may be a batch error). */
  async send(batch: BackendBatch, timeoutMs: number): Promise<BatchOutcome> {
    if (this.broken) throw this.broken;
    // Back-pressure: when the HTTP/2 window is full, wait rather than buffer without bound.
    if (this.drained) await this.drained;
    if (this.broken) throw this.broken;
    const result = new Promise<BatchOutcome>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(
          new RpcError(
            this.connection.target,
            status.DEADLINE_EXCEEDED,
            `no answer to a batch within ${Math.round(timeoutMs / 1000)} s (--batch_timeout)`,
          ),
        );
      }, timeoutMs);
      this.pending.set(batch.batchId, { resolve, reject, timer });
    });
    const { batchId, modelKey, texts, tokens } = batch;
    // The wire types want mutable arrays; nothing writes to them.
    const wire = { batchId, modelKey, texts: texts as string[], tokens: tokens && toWire(tokens) };
    const flushed = this.call.write(wire);
    if (!flushed) {
      this.drained = new Promise((resolve) => {
        const done = () => {
          this.drained = null;
          resolve();
        };
        this.call.once("drain", done);
        this.call.once("close", done);
      });
    }
    return result;
  }

  private settle(result: EmbedResult): void {
    const waiting = this.pending.get(result.batchId);
    if (!waiting) return; // a result for a batch already given up on
    this.pending.delete(result.batchId);
    clearTimeout(waiting.timer);
    waiting.resolve(outcomeOf(this.connection.target, result));
  }

  private fail(rpc: RpcError): void {
    if (this.broken) return;
    const err = classifyBroken(rpc);
    this.broken = err;
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(err);
    }
    this.pending.clear();
    this.call.cancel();
    this.onBroken(err);
  }

  /** Half-closes the stream and drops whatever is still pending. */
  close(): void {
    if (this.broken) return;
    this.broken = classifyBroken(
      new RpcError(this.connection.target, status.CANCELLED, "stream closed"),
    );
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(this.broken);
    }
    this.pending.clear();
    this.call.end();
    this.call.cancel();
  }
}

/** The result of one batch in our types: its vectors, or its error classified. */
function outcomeOf(target: string, result: EmbedResult): BatchOutcome {
  if (result.embeddings) return { ok: true, vectors: result.embeddings };
  const err = result.error ?? { code: status.INTERNAL, message: "empty result" };
  return { ok: false, error: classifyBatchError(new RpcError(target, err.code, err.message)) };
}

function toWire(tokens: NonNullable<BackendBatch["tokens"]>): NonNullable<EmbedBatch["tokens"]> {
  const { ids } = tokens;
  return {
    ids: Buffer.isBuffer(ids) ? ids : Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength),
    lengths: tokens.lengths as number[],
    truncated: tokens.truncated as boolean[],
  };
}
