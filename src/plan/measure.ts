import type { TokenCounter } from "../backend/types.js";
import type { RowReader } from "../input/rows.js";
import { estimateTokens } from "./lengths.js";
import type { TokenStore } from "./tokens.js";

const CALL_TIMEOUT_MS = 120_000;
/** Most bytes of one CountTokens call (request or answer): big enough to amortize a
 * round trip, small enough to keep memory low and calls short. */
const CALL_BYTES_TARGET = 4 * 1024 * 1024;
/** Room for the protobuf framing of a message. */
const MESSAGE_HEADROOM = 0.9;
/** Framing per text in the request, and per row in the answer (length, flag, count). */
const TEXT_OVERHEAD_BYTES = 8;
const ROW_OVERHEAD_BYTES = 12;
/** Beyond its UTF-8 bytes, the most tokens a text can have: special tokens, prefix. */
const EXTRA_TOKENS = 16;

export interface MeasureOptions {
  /** The server's max_message_bytes (Info limits). */
  readonly maxMessageBytes: number;
  /** Where to keep the ids, or null to ask for counts only. */
  readonly store: TokenStore | null;
  /** The model's prefix, whose bytes count toward each text's possible tokens. */
  readonly prefix: string;
  /** The rows to measure, ascending (the others are copied, not embedded); absent = all. */
  readonly only?: Uint32Array;
}

export interface Measured {
  readonly lengths: Uint32Array;
  /** False: lengths estimated from characters (the server cannot count). */
  readonly counted: boolean;
  /** True: every row's ids are in the store. */
  readonly stored: boolean;
}

/**
 * Each row's length in the model's tokens, clipped at its max length: the
 * server counts them (fast tokenizers, no forward pass) and, when a store is
 * given and the server can, returns the ids too, kept for the Embed batches.
 * Calls are cut by bytes, under the server's message cap both ways. A server
 * without CountTokens leaves us the estimate from characters.
 */
export async function measureTokens(
  counter: TokenCounter,
  modelKey: string,
  maxLength: number,
  reader: RowReader,
  textChars: Uint32Array,
  options: MeasureOptions,
): Promise<Measured> {
  const only = options.only;
  const rows = only ? only.length : textChars.length;
  const rowAt = (i: number): number => (only ? (only[i] ?? 0) : i);
  const lengths = new Uint32Array(textChars.length);
  const cap = maxLength > 0 ? maxLength : Number.MAX_SAFE_INTEGER;
  const budget = Math.max(
    1,
    Math.min(CALL_BYTES_TARGET, Math.floor(options.maxMessageBytes * MESSAGE_HEADROOM)),
  );
  const prefixBytes = Buffer.byteLength(options.prefix);
  let stored = options.store !== null;
  let first = 0;
  while (first < rows) {
    const texts: string[] = [];
    let requestBytes = 0;
    let answerBytes = 0;
    while (first + texts.length < rows) {
      const text = reader.paragraph(rowAt(first + texts.length)).text;
      const bytes = Buffer.byteLength(text) + TEXT_OVERHEAD_BYTES;
      // A text has at most one token per byte (WordPiece and byte-level BPE alike).
      const tokens = Math.min(cap, bytes + prefixBytes + EXTRA_TOKENS);
      const answer = (stored ? tokens * 4 : 0) + ROW_OVERHEAD_BYTES;
      if (texts.length > 0 && (requestBytes + bytes > budget || answerBytes + answer > budget)) {
        break;
      }
      texts.push(text);
      requestBytes += bytes;
      answerBytes += answer;
    }
    const response = await counter.countTokens(modelKey, texts, stored, CALL_TIMEOUT_MS);
    if (!response) {
      return { lengths: estimateTokens(textChars, maxLength), counted: false, stored: false };
    }
    const ids = Uint32Array.from({ length: texts.length }, (_, i) => rowAt(first + i));
    if (stored && response.tokens && options.store) {
      options.store.add(ids, response.tokens);
      for (let i = 0; i < texts.length; i++) {
        lengths[rowAt(first + i)] = Math.min(cap, response.tokens.lengths[i] ?? 1);
      }
    } else {
      if (stored && first > 0) {
        throw new Error("the server stopped returning token ids during the run");
      }
      stored = false; // a model the server can only count for: the batches carry texts
      for (let i = 0; i < texts.length; i++) {
        lengths[rowAt(first + i)] = Math.min(cap, response.counts[i] ?? 1);
      }
    }
    first += texts.length;
  }
  return { lengths, counted: true, stored };
}
