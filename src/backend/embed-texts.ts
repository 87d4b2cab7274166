import { ServerError } from "../errors.js";
import type { Backend, ModelToLoad } from "./types.js";

const LOAD_TIMEOUT_MS = 15 * 60 * 1000;
const BATCH_ROWS = 32;

/** Loads the model on the server as the run did; returns its model key. */
export async function loadModelKey(
  backend: Backend,
  model: ModelToLoad,
  device: string,
): Promise<{ key: string; revision: string; dim: number }> {
  const info = await backend.loadModel(model, device, LOAD_TIMEOUT_MS);
  return { key: info.modelKey, revision: info.revision, dim: info.dim };
}

/** The vectors of a few texts, row-major float32 (what checks/ calls a Matrix). */
export interface TextVectors {
  readonly rows: number;
  readonly dim: number;
  readonly data: Float32Array;
}

/**
 * Embeds a few texts (probes, a sample) on one server, outside any run: a
 * stream of its own, batches of 32, one at a time. Any batch error is an
 * error naming the server.
 */
export async function embedTexts(
  backend: Backend,
  modelKey: string,
  texts: readonly string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<TextVectors> {
  signal?.throwIfAborted();
  const stream = backend.openStream(() => {});
  // A signal cancels the call at once: a batch waiting on a hung server (and its
  // --batch_timeout timer) would otherwise keep the process for the whole timeout.
  const cancel = () => stream.close();
  signal?.addEventListener("abort", cancel, { once: true });
  const parts: Float32Array[] = [];
  let dim = 0;
  try {
    for (let first = 0; first < texts.length; first += BATCH_ROWS) {
      const batch = texts.slice(first, first + BATCH_ROWS);
      const outcome = await stream.send(
        { batchId: first, modelKey, texts: batch, tokens: undefined },
        timeoutMs,
      );
      if (!outcome.ok) {
        throw new ServerError(`server ${backend.target}: a batch failed: ${outcome.error.details}`);
      }
      const e = outcome.vectors;
      if (e.rows !== batch.length || e.data.length !== e.rows * e.dim * 4) {
        throw new ServerError(`server ${backend.target}: a result of the wrong size`);
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
