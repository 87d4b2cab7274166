import type { OpenAIClient } from "./client.js";
import { HttpEmbedError } from "./fault.js";
import type { EncodingFormat } from "./wire.js";

/** What one server does for one model, found by asking it (it reports no revision or pooling). */
export interface ServedModel {
  /** The name sent as `model`. */
  readonly name: string;
  /** How the server hands back vectors: base64 when it can, else float. */
  readonly encoding: EncodingFormat;
  /** Whether the server cut to `dimensions` itself; false = cut here (or no cut asked). */
  readonly serverDimensions: boolean;
  /** The dimension the server returns (after its own cut, when it made one). */
  readonly dim: number;
  /** Whether the server's rows come back at unit length. */
  readonly normalized: boolean;
}

const PROBE_TEXT = "embed-multi checks how this server answers.";

/**
 * Finds the served name (`wanted`, or the only model the server lists), then
 * asks for one vector the cheap way (base64, the server cutting to
 * `truncateDim`) and steps down on refusal: without `dimensions`, then as
 * float. A server that ignores `dimensions` (answers the full width) is cut
 * here. 401/403 and server faults propagate.
 */
export async function discoverModel(
  client: OpenAIClient,
  wanted: string,
  truncateDim: number,
  signal?: AbortSignal,
  floatOnly = false,
): Promise<ServedModel> {
  const listed = await client.models(signal);
  let name = wanted;
  if (listed.length > 0 && !listed.includes(wanted)) {
    if (listed.length !== 1) {
      throw new HttpEmbedError(
        client.url,
        "batch",
        0,
        `serves no model named ${wanted} (it serves ${listed.slice(0, 10).join(", ")}); set served_model_name for the model in the config file`,
      );
    }
    name = listed[0] ?? wanted;
  }
  const tries: { encoding: EncodingFormat; dimensions: number }[] = [];
  for (const encoding of floatOnly ? (["float"] as const) : (["base64", "float"] as const)) {
    if (truncateDim > 0) tries.push({ encoding, dimensions: truncateDim });
    tries.push({ encoding, dimensions: 0 });
  }
  let last: HttpEmbedError | null = null;
  for (const t of tries) {
    try {
      const answer = await client.embed({ texts: [PROBE_TEXT], model: name, ...t }, signal);
      const cutByServer = t.dimensions > 0 && answer.dim === t.dimensions;
      let sq = 0;
      for (const v of answer.vectors) sq += v * v;
      return {
        name,
        encoding: answer.returned,
        serverDimensions: cutByServer,
        dim: answer.dim,
        normalized: Math.abs(Math.sqrt(sq) - 1) < 1e-3,
      };
    } catch (err) {
      if (!(err instanceof HttpEmbedError) || err.fault !== "batch") throw err;
      last = err;
    }
  }
  throw new HttpEmbedError(
    client.url,
    "batch",
    last?.status ?? 0,
    `refuses every form of request for model ${name}: ${last?.detail ?? "no answer"}`,
  );
}
