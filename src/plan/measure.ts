import { status } from "@grpc/grpc-js";
import { RpcError, type ServerConnection } from "../dispatch/client.js";
import type { RowReader } from "../input/rows.js";
import { estimateTokens } from "./lengths.js";

const TEXTS_PER_CALL = 512;
const CALL_TIMEOUT_MS = 120_000;

/**
 * Each row's length in the model's tokens, clipped at its max length: the
 * server counts them (fast tokenizers, no forward pass); a server without
 * CountTokens leaves us the estimate from characters.
 */
export async function measureTokens(
  connection: ServerConnection,
  modelKey: string,
  maxLength: number,
  reader: RowReader,
  textChars: Uint32Array,
  signal?: AbortSignal,
): Promise<{ lengths: Uint32Array; counted: boolean }> {
  const rows = textChars.length;
  const lengths = new Uint32Array(rows);
  const cap = maxLength > 0 ? maxLength : Number.MAX_SAFE_INTEGER;
  for (let first = 0; first < rows; first += TEXTS_PER_CALL) {
    const count = Math.min(TEXTS_PER_CALL, rows - first);
    const ids = Uint32Array.from({ length: count }, (_, i) => first + i);
    let counts: number[];
    try {
      counts = (await connection.countTokens(modelKey, reader.texts(ids), CALL_TIMEOUT_MS, signal))
        .counts;
    } catch (err) {
      if (err instanceof RpcError && err.code === status.UNIMPLEMENTED) {
        return { lengths: estimateTokens(textChars, maxLength), counted: false };
      }
      throw err;
    }
    for (let i = 0; i < count; i++) lengths[first + i] = Math.min(cap, counts[i] ?? 1);
  }
  return { lengths, counted: true };
}
