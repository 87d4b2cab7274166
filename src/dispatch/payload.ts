import type { BackendBatch } from "../backend/types.js";
import type { RowReader } from "../input/rows.js";
import type { TokenStore } from "../plan/tokens.js";

/** What an EmbedBatch carries besides its id and model: texts, or their token ids. */
export type BatchPayload = Pick<BackendBatch, "texts" | "tokens">;

/**
 * The ids the measuring pass kept, when this run measured the model (the
 * server then tokenizes nothing); the texts otherwise (a resumed run, or a
 * model whose server only counts). Both give the same vectors.
 */
export function batchPayload(
  rows: ArrayLike<number>,
  store: TokenStore | undefined,
  reader: RowReader,
): BatchPayload {
  if (store?.holds(rows)) return { texts: [], tokens: store.batch(rows) };
  return { texts: reader.texts(rows), tokens: undefined };
}
