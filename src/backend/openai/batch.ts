import type { OpenAIClient } from "./client.js";
import { HttpEmbedError } from "./fault.js";
import type { EncodingFormat } from "./wire.js";

/** OpenAI's own limits on one request, the defaults of --max_request_inputs / --max_request_tokens. */
export const DEFAULT_MAX_REQUEST_INPUTS = 2048;
export const DEFAULT_MAX_REQUEST_TOKENS = 300_000;

/** How one model's batches are asked for and finished, fixed when the server was connected. */
export interface RequestSettings {
  /** The name the server serves the model under. */
  readonly model: string;
  readonly encoding: EncodingFormat;
  /** Sent as `dimensions` (the server cuts); 0 = not sent. */
  readonly serverDimensions: number;
  /** Cut here to this many dimensions; 0 = not cut here. */
  readonly localDimensions: number;
  /** Scale each row to unit length here (after any cut, as sentence-transformers does). */
  readonly normalize: boolean;
  readonly maxInputs: number;
  readonly maxTokens: number;
}

/** One row of a batch that the server refuses even alone: the run stops naming its line. */
export class BadRowError extends Error {
  constructor(
    /** Index of the row in the batch. */
    readonly row: number,
    readonly refusal: HttpEmbedError,
  ) {
    super(`the server refuses this text even alone: ${refusal.message}`);
    this.name = "BadRowError";
  }
}

export interface BatchVectors {
  readonly vectors: Float32Array;
  readonly dim: number;
  /** Requests this batch took (split by the caps, or to find a refused row). */
  readonly requests: number;
}

/**
 * Embeds one batch: cut into requests by the per-request caps, each refused
 * request (400, 413, 422) halved until the refused row stands alone, then
 * finished here (Matryoshka cut, normalization). `tokens[i]` is the count
 * the plan used for text i. Throws HttpEmbedError (server or auth fault, or a
 * batch fault that is not about rows) or BadRowError.
 */
export async function embedBatch(
  client: OpenAIClient,
  texts: readonly string[],
  tokens: ArrayLike<number>,
  settings: RequestSettings,
  signal?: AbortSignal,
): Promise<BatchVectors> {
  const pieces: { at: number; vectors: Float32Array; dim: number }[] = [];
  let requests = 0;
  const send = async (lo: number, hi: number): Promise<void> => {
    requests++;
    try {
      const answer = await client.embed(
        {
          texts: texts.slice(lo, hi),
          model: settings.model,
          encoding: settings.encoding,
          dimensions: settings.serverDimensions,
        },
        signal,
      );
      pieces.push({ at: lo, vectors: answer.vectors, dim: answer.dim });
    } catch (err) {
      if (!(err instanceof HttpEmbedError) || !err.rowsAtFault) throw err;
      if (hi - lo === 1) throw new BadRowError(lo, err);
      const mid = lo + Math.floor((hi - lo) / 2);
      await send(lo, mid);
      await send(mid, hi);
    }
  };
  for (const [lo, hi] of requestRanges(
    tokens,
    texts.length,
    settings.maxInputs,
    settings.maxTokens,
  )) {
    await send(lo, hi);
  }
  const dim = pieces[0]?.dim ?? 0;
  const all = new Float32Array(texts.length * dim);
  for (const piece of pieces) {
    if (piece.dim !== dim) {
      throw new HttpEmbedError(
        client.url,
        "batch",
        200,
        `malformed answer: ${piece.dim} dimensions in one request, ${dim} in another`,
      );
    }
    all.set(piece.vectors, piece.at * dim);
  }
  const out = finishRows(all, dim, settings.localDimensions, settings.normalize);
  return { vectors: out.vectors, dim: out.dim, requests };
}

/** [lo, hi) ranges of at most maxInputs texts and maxTokens tokens (a longer text goes alone). */
export function requestRanges(
  tokens: ArrayLike<number>,
  count: number,
  maxInputs: number,
  maxTokens: number,
): [number, number][] {
  const ranges: [number, number][] = [];
  let lo = 0;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const t = tokens[i] ?? 0;
    if (i > lo && (i - lo >= maxInputs || sum + t > maxTokens)) {
      ranges.push([lo, i]);
      lo = i;
      sum = 0;
    }
    sum += t;
  }
  if (count > lo) ranges.push([lo, count]);
  return ranges;
}

/**
 * Matryoshka done here, as sentence-transformers does it: keep the first
 * `keep` dimensions (0 = all), then scale to unit length when asked. A zero
 * row stays zero, for the batch check to catch.
 */
export function finishRows(
  vectors: Float32Array,
  dim: number,
  keep: number,
  normalize: boolean,
): { vectors: Float32Array; dim: number } {
  const outDim = keep > 0 && keep < dim ? keep : dim;
  if (outDim === dim && !normalize) return { vectors, dim };
  const rows = dim === 0 ? 0 : vectors.length / dim;
  const out = new Float32Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    const src = r * dim;
    const dst = r * outDim;
    let sq = 0;
    for (let i = 0; i < outDim; i++) {
      const v = vectors[src + i] ?? 0;
      out[dst + i] = v;
      sq += v * v;
    }
    if (normalize && sq > 0) {
      const scale = 1 / Math.max(Math.sqrt(sq), 1e-12);
      for (let i = 0; i < outDim; i++) out[dst + i] = (out[dst + i] ?? 0) * scale;
    }
  }
  return { vectors: out, dim: outDim };
}

/** Tokens of a text when no tokenizer is at hand: about 4 characters a token, rounded up. */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4) + 2;
}
