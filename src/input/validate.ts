import { indexProblem as checkIndex, scanIds } from "./ids.js";

/** One paragraph of the input, as the tool needs it. */
export interface Paragraph {
  readonly paperId: string | number;
  readonly paragraphIndex: number;
  readonly text: string;
}

export type Checked = { ok: true; paragraph: Paragraph } | { ok: false; problem: string };

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes and checks one JSONL line. Other fields are ignored. Returns the
 * problem in words rather than throwing, so the caller decides whether a bad
 * line stops the run or is skipped.
 */
export function checkLine(bytes: Uint8Array, maxTextChars: number): Checked {
  let line: string;
  try {
    line = utf8.decode(bytes);
  } catch {
    return { ok: false, problem: "invalid UTF-8" };
  }
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    return { ok: false, problem: `malformed JSON (${detail})` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, problem: "expected a JSON object" };
  }
  const record = value as Record<string, unknown>;
  const { text, paper_id: paperId, paragraph_index: paragraphIndex } = record;
  if (text === undefined) return { ok: false, problem: 'missing field "text"' };
  if (typeof text !== "string") {
    return { ok: false, problem: `field "text" must be a string, got ${typeName(text)}` };
  }
  if (text.trim().length === 0) return { ok: false, problem: 'field "text" is empty' };
  if (text.length > maxTextChars) {
    return {
      ok: false,
      problem: `field "text" has ${text.length} characters, over the limit of ${maxTextChars} (--max_text_chars)`,
    };
  }
  if (paperId === undefined) return { ok: false, problem: 'missing field "paper_id"' };
  if (typeof paperId !== "string" && typeof paperId !== "number") {
    return {
      ok: false,
      problem: `field "paper_id" must be a string or a number, got ${typeName(paperId)}`,
    };
  }
  if (paragraphIndex === undefined)
    return { ok: false, problem: 'missing field "paragraph_index"' };
  if (
    typeof paragraphIndex !== "number" ||
    !Number.isInteger(paragraphIndex) ||
    paragraphIndex < 0
  ) {
    return {
      ok: false,
      problem: `field "paragraph_index" must be a non-negative integer, got ${typeName(paragraphIndex)}`,
    };
  }
  // JSON.parse rounds numbers: the index must also be exact as written.
  const raw = scanIds(bytes);
  if (!raw) return { ok: false, problem: "expected a JSON object" };
  const indexProblem = checkIndex(raw.paragraphIndex);
  if (indexProblem) return { ok: false, problem: indexProblem };
  return { ok: true, paragraph: { paperId, paragraphIndex, text } };
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "number" && (value < 0 || !Number.isInteger(value))) return String(value);
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
