import { createHash } from "node:crypto";
import { RowReader } from "./rows.js";
import type { CorpusIndex } from "./scan.js";

/**
 * --quantize int8 calibrates on the run's own paragraphs, never on a data set from a hub.
 * The sample depends on the input alone (rows spread evenly over it, in row order), so a
 * resumed run, every server of a run and every shard of one input quantize alike.
 */
export const CALIBRATION_ROWS = 256;
/** UTF-8 bytes of the whole sample at most: it travels inside one LoadModel message. */
export const CALIBRATION_BYTES = 1 << 20;
/** A paragraph longer than this is cut: the model sees at most max_length tokens of it anyway. */
export const CALIBRATION_TEXT_CHARS = 16_384;

/** Which rows: `count` (or every row, if fewer) spread evenly, the middle of each stretch. */
export function calibrationRows(rows: number, count = CALIBRATION_ROWS): number[] {
  const n = Math.min(rows, count);
  return Array.from({ length: n }, (_, i) => Math.floor(((2 * i + 1) * rows) / (2 * n)));
}

/** The sample's texts: each cut to CALIBRATION_TEXT_CHARS, all under CALIBRATION_BYTES. */
export function calibrationTexts(corpus: CorpusIndex, count = CALIBRATION_ROWS): string[] {
  const reader = new RowReader(corpus);
  try {
    return calibrationSample(corpus.rows, (rows) => reader.texts(rows), count);
  } finally {
    reader.close();
  }
}

/** The sample of `rows` rows whose texts `textsOf` reads (the run's, or verify's). */
export function calibrationSample(
  rows: number,
  textsOf: (rows: number[]) => string[],
  count = CALIBRATION_ROWS,
): string[] {
  const texts: string[] = [];
  let bytes = 0;
  for (const text of textsOf(calibrationRows(rows, count))) {
    const cut = cutText(text, CALIBRATION_TEXT_CHARS);
    const size = Buffer.byteLength(cut, "utf8");
    if (bytes + size > CALIBRATION_BYTES) break;
    bytes += size;
    texts.push(cut);
  }
  return texts;
}

/** sha256 (hex) of the texts, each followed by a NUL byte: as the server reports it. */
export function calibrationDigest(texts: readonly string[]): string {
  const digest = createHash("sha256");
  for (const text of texts) digest.update(`${text}\0`, "utf8");
  return digest.digest("hex");
}

/** The first `chars` UTF-16 units, never half of a surrogate pair. */
function cutText(text: string, chars: number): string {
  if (text.length <= chars) return text;
  const last = text.charCodeAt(chars - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? chars - 1 : chars);
}

/** The run's models, the quantized ones carrying the sample (read once, only if one is). */
export function withCalibration<M extends { readonly quantize: string }>(
  models: readonly M[],
  corpus: CorpusIndex,
): (M & { readonly calibrationTexts?: readonly string[] })[] {
  if (!models.some((m) => m.quantize !== "none")) return [...models];
  const texts = calibrationTexts(corpus);
  return models.map((m) => (m.quantize === "none" ? m : { ...m, calibrationTexts: texts }));
}
