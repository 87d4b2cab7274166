import type { RunModel } from "../config.js";
import type { ServerConnection } from "../dispatch/client.js";
import { explain, loadRequest } from "../dispatch/servers.js";
import { EmbedStream } from "../dispatch/stream.js";
import { ServerError } from "../errors.js";
import type { Matrix } from "./vectors.js";

const LOAD_TIMEOUT_MS = 15 * 60 * 1000;
const BATCH_ROWS = 32;

/** Loads the model on the server as the run did; returns its model key. */
export async function loadModelKey(
  connection: ServerConnection,
  model: RunModel,
  device: string,
): Promise<{ key: string; revision: string; dim: number }> {
  const info = await connection
    .loadModel(loadRequest(model, device), LOAD_TIMEOUT_MS)
    .catch((err) => {
      throw explain(connection.target, `loading model "${model.alias}" (${model.modelId})`, err);
    });
  return { key: info.modelKey, revision: info.revision, dim: info.dim };
}

/**
 * Embeds a few texts (probes, a sample) on one server, outside any run: a
 * stream of its own, batches of 32, one at a time. Any batch error is an
 * error naming the server.
 */
export async function embedTexts(
  connection: ServerConnection,
  modelKey: string,
  texts: readonly string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Matrix> {
  signal?.throwIfAborted();
  const stream = new EmbedStream(connection, () => {});
  // A signal cancels the call at once: a batch waiting on a hung server (and its
  // --batch_timeout timer) would otherwise keep the process for the whole timeout.
  const cancel = () => stream.close();
  signal?.addEventListener("abort", cancel, { once: true });
  const parts: Float32Array[] = [];
  let dim = 0;
  try {
    for (let first = 0; first < texts.length; first += BATCH_ROWS) {
      const batch = texts.slice(first, first + BATCH_ROWS);
      const result = await stream.send(
        { batchId: first, modelKey, texts: batch, tokens: undefined },
        timeoutMs,
      );
      const e = result.embeddings;
      if (!e) {
        throw new ServerError(
          `server ${connection.target}: a batch failed: ${result.error?.message ?? "empty result"}`,
        );
      }
      if (e.rows !== batch.length || e.data.length !== e.rows * e.dim * 4) {
        throw new ServerError(`server ${connection.target}: a result of the wrong size`);
      }
      dim = e.dim;
      // Copied: the message's buffer need not be 4-byte aligned.
      parts.push(new Float32Array(new Uint8Array(e.data).buffer));
    }
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  } finally {
    signal?.removeEventListener("abort", cancel);
    stream.close();
  }
  const data = new Float32Array(texts.length * dim);
  let at = 0;
  for (const part of parts) {
    data.set(part, at);
    at += part.length;
  }
  return { rows: texts.length, dim, data };
}
