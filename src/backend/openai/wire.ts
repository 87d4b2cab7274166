/**
 * The body of `POST /embeddings` and its answer, as OpenAI defines them and
 * TEI, vLLM, infinity and hosted APIs follow. Pure functions: no I/O here.
 */

/** base64: float32 little-endian rows (a quarter of the bytes of JSON floats, no float parsing). */
export type EncodingFormat = "base64" | "float";

export interface EmbeddingsRequest {
  readonly texts: readonly string[];
  /** The name the server serves the model under. */
  readonly model: string;
  readonly encoding: EncodingFormat;
  /** Matryoshka dimensions for the server to cut to; 0 = not sent. */
  readonly dimensions: number;
}

export function requestBody(req: EmbeddingsRequest): string {
  const body: Record<string, unknown> = {
    input: req.texts,
    model: req.model,
    encoding_format: req.encoding,
  };
  if (req.dimensions > 0) body.dimensions = req.dimensions;
  return JSON.stringify(body);
}

export interface EmbeddingsAnswer {
  /** Row i is the embedding of texts[i] (matched by `index`, never by position). */
  readonly vectors: Float32Array;
  readonly dim: number;
  /** The model name the server answered with ("" when it gave none). */
  readonly model: string;
  /** usage.prompt_tokens, or -1 when the server gave none. */
  readonly promptTokens: number;
  /** How the vectors came back: some servers answer floats whatever was asked. */
  readonly returned: EncodingFormat;
}

/** The answer does not have the shape of an embeddings answer. */
export class MalformedAnswerError extends Error {}

/**
 * Reads an answer for `count` texts. Each `data[k].index` must name a
 * distinct row in [0, count), every row once, all of one dimension; an
 * embedding may be a base64 string (float32 LE) or a list of numbers,
 * whatever was asked for: some servers ignore `encoding_format`.
 */
export function parseAnswer(json: unknown, count: number): EmbeddingsAnswer {
  const top = json as { data?: unknown; model?: unknown; usage?: { prompt_tokens?: unknown } };
  if (typeof top !== "object" || top === null || !Array.isArray(top.data)) {
    throw new MalformedAnswerError("the answer has no `data` list");
  }
  const data = top.data as unknown[];
  if (data.length !== count) {
    throw new MalformedAnswerError(`the answer has ${data.length} embeddings for ${count} texts`);
  }
  let dim = -1;
  let returned: EncodingFormat = "float";
  let vectors = new Float32Array(0);
  const seen = new Uint8Array(count);
  for (const item of data) {
    const { index, embedding } = (item ?? {}) as { index?: unknown; embedding?: unknown };
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= count) {
      throw new MalformedAnswerError(
        `an embedding has index ${JSON.stringify(index)}, not a row of 0..${count - 1}`,
      );
    }
    if (seen[index]) throw new MalformedAnswerError(`index ${index} comes twice`);
    seen[index] = 1;
    if (typeof embedding === "string") returned = "base64";
    const row = decodeEmbedding(embedding, index);
    if (dim < 0) {
      dim = row.length;
      if (dim === 0) throw new MalformedAnswerError("the embeddings are empty");
      vectors = new Float32Array(count * dim);
    } else if (row.length !== dim) {
      throw new MalformedAnswerError(
        `embedding ${index} has ${row.length} dimensions, others ${dim}`,
      );
    }
    vectors.set(row, index * dim);
  }
  const tokens = top.usage?.prompt_tokens;
  return {
    vectors,
    dim,
    model: typeof top.model === "string" ? top.model : "",
    promptTokens: typeof tokens === "number" ? tokens : -1,
    returned,
  };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function decodeEmbedding(embedding: unknown, index: number): Float32Array {
  if (typeof embedding === "string") return decodeBase64Floats(embedding, index);
  if (Array.isArray(embedding)) {
    const row = new Float32Array(embedding.length);
    for (let i = 0; i < embedding.length; i++) {
      const v = embedding[i];
      if (typeof v !== "number") {
        throw new MalformedAnswerError(
          `embedding ${index} holds ${JSON.stringify(v)}, not a number`,
        );
      }
      row[i] = v;
    }
    return row;
  }
  throw new MalformedAnswerError(`embedding ${index} is neither a list of numbers nor base64`);
}

/** base64 of float32 little-endian values → a fresh (aligned) Float32Array. */
export function decodeBase64Floats(text: string, index = 0): Float32Array {
  const bytes = Buffer.from(text, "base64");
  if (bytes.length % 4 !== 0) {
    throw new MalformedAnswerError(
      `embedding ${index}: ${bytes.length} base64 bytes are not whole float32 values`,
    );
  }
  const row = new Float32Array(bytes.length / 4);
  if (LITTLE_ENDIAN) {
    // Copied, not viewed: the decoded Buffer may sit at any offset of a shared pool.
    new Uint8Array(row.buffer).set(bytes);
  } else {
    for (let i = 0; i < row.length; i++) row[i] = bytes.readFloatLE(i * 4);
  }
  return row;
}

/** float32 rows → base64, little-endian (the fake server and tests use it). */
export function encodeBase64Floats(row: Float32Array): string {
  const bytes = Buffer.alloc(row.length * 4);
  for (let i = 0; i < row.length; i++) bytes.writeFloatLE(row[i] ?? 0, i * 4);
  return bytes.toString("base64");
}
