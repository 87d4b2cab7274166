/**
 * The raw JSON text of a line's top-level `paper_id` and `paragraph_index`,
 * so that ids are written out exactly as they were written in (JSON.parse
 * would turn 12345678901234567890 into 12345678901234567000 and 1e999 into
 * Infinity). Lines reaching here were validated by JSON.parse, so the scanner
 * only finds boundaries; it returns null where the bytes are not the JSON
 * object it expects (the file changed).
 */
export interface RawIds {
  /** JSON text of the value, e.g. `"2212.0001"`, `2212.10`, `12345678901234567890`. */
  readonly paperId: string;
  readonly paragraphIndex: string;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const PAPER_ID = Buffer.from("paper_id");
const PARAGRAPH_INDEX = Buffer.from("paragraph_index");
const utf8 = new TextDecoder("utf-8");

export function scanIds(bytes: Uint8Array): RawIds | null {
  let paperId: string | null = null;
  let paragraphIndex: string | null = null;
  let i = skipSpace(bytes, 0);
  if (bytes[i] !== 0x7b) return null; // {
  i = skipSpace(bytes, i + 1);
  if (bytes[i] === 0x7d) return null; // {}: no ids
  for (;;) {
    if (bytes[i] !== QUOTE) return null;
    const keyEnd = stringEnd(bytes, i);
    if (keyEnd < 0) return null;
    const key = keyName(bytes, i, keyEnd);
    i = skipSpace(bytes, keyEnd);
    if (bytes[i] !== 0x3a) return null; // :
    const valueStart = skipSpace(bytes, i + 1);
    const valueEnd = valueEndAt(bytes, valueStart);
    if (valueEnd < 0) return null;
    // A key given twice: the last one counts, as in JSON.parse.
    if (key === "paper_id") paperId = utf8.decode(bytes.subarray(valueStart, valueEnd));
    else if (key === "paragraph_index") {
      paragraphIndex = utf8.decode(bytes.subarray(valueStart, valueEnd));
    }
    i = skipSpace(bytes, valueEnd);
    if (bytes[i] === 0x2c) {
      i = skipSpace(bytes, i + 1);
      continue;
    }
    if (bytes[i] !== 0x7d) return null;
    break;
  }
  return paperId !== null && paragraphIndex !== null ? { paperId, paragraphIndex } : null;
}

/** The key's name when it is one of ours, else "" (escaped keys are decoded: JSON.parse does). */
function keyName(bytes: Uint8Array, start: number, end: number): string {
  const inner = bytes.subarray(start + 1, end - 1);
  if (inner.includes(BACKSLASH)) {
    const decoded: unknown = JSON.parse(utf8.decode(bytes.subarray(start, end)));
    return typeof decoded === "string" ? decoded : "";
  }
  if (sameBytes(inner, PAPER_ID)) return "paper_id";
  if (sameBytes(inner, PARAGRAPH_INDEX)) return "paragraph_index";
  return "";
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function skipSpace(bytes: Uint8Array, from: number): number {
  let i = from;
  for (;;) {
    const b = bytes[i];
    if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return i;
    i++;
  }
}

/** Index after the closing quote of the string opening at `start`; -1 if unterminated. */
function stringEnd(bytes: Uint8Array, start: number): number {
  for (let i = start + 1; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === BACKSLASH) i++;
    else if (b === QUOTE) return i + 1;
  }
  return -1;
}

/** Index after the value starting at `start`; -1 if it does not end in the line. */
function valueEndAt(bytes: Uint8Array, start: number): number {
  const first = bytes[start];
  if (first === QUOTE) return stringEnd(bytes, start);
  if (first === 0x7b || first === 0x5b) {
    let depth = 0;
    for (let i = start; i < bytes.length; i++) {
      const b = bytes[i];
      if (b === QUOTE) {
        i = stringEnd(bytes, i) - 1;
        if (i < 0) return -1;
      } else if (b === 0x7b || b === 0x5b) depth++;
      else if (b === 0x7d || b === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return -1;
  }
  // A number or a literal: runs up to a delimiter.
  let i = start;
  while (i < bytes.length) {
    const b = bytes[i];
    if (
      b === 0x2c ||
      b === 0x7d ||
      b === 0x5d ||
      b === 0x20 ||
      b === 0x09 ||
      b === 0x0a ||
      b === 0x0d
    )
      break;
    i++;
  }
  return i > start ? i : -1;
}

/** Largest paragraph_index: int64, what Parquet, pandas and DuckDB hold. */
const MAX_INDEX = "9223372036854775807";

/** Null when `raw` is a paragraph_index we accept (digits only, no sign, fraction or exponent, ≤ int64 max); else why not. */
export function indexProblem(raw: string): string | null {
  if (!/^(0|[1-9][0-9]*)$/.test(raw)) {
    return `field "paragraph_index" must be a non-negative integer written in digits, got ${raw.length > 40 ? `${raw.slice(0, 40)}…` : raw}`;
  }
  if (raw.length > MAX_INDEX.length || (raw.length === MAX_INDEX.length && raw > MAX_INDEX)) {
    return `field "paragraph_index" is ${raw}, over the largest accepted (${MAX_INDEX})`;
  }
  return null;
}

/**
 * The id as the JSONL output writes it: numbers exactly as in the input,
 * strings re-serialized (escapes normalized, as JSON.stringify writes them).
 */
export function paperIdJson(raw: string): string {
  return raw.charCodeAt(0) === QUOTE ? JSON.stringify(JSON.parse(raw)) : raw;
}

/** The id as text (Parquet's string column): a string's value, a number's JSON text. */
export function paperIdText(raw: string): string {
  if (raw.charCodeAt(0) !== QUOTE) return raw;
  const value: unknown = JSON.parse(raw);
  return typeof value === "string" ? value : raw;
}
