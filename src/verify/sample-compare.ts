import { cosineAt, type Matrix } from "../checks/vectors.js";
import { Encoder, type OutputDtype, type Ranges } from "../output/dtype.js";

/** How the sampled rows compare: the worst row by the dtype's measure, and whether it passes. */
export interface SampleComparison {
  /** Index into the sample of the worst row. */
  readonly worstAt: number;
  readonly ok: boolean;
  /** "worst cosine 0.999987" and, for compact dtypes, what was compared. */
  readonly summary: string;
  /** Why the worst row fails, for the problem line. */
  readonly failure: string;
}

/** Stored rows of one output and the same rows embedded again, to compare. */
export interface SamplePair {
  readonly dtype: OutputDtype;
  readonly dim: number;
  /** The stored quantization ranges, for int8/uint8 outputs. */
  readonly ranges: Ranges | null;
  readonly stored: Matrix;
  readonly fresh: Matrix;
  readonly tolerance: number;
}

/**
 * Compares stored rows (`stored`: rows × width values of the output dtype,
 * as numbers) with freshly embedded float32 rows.
 *
 * - float32/float16: cosine ≥ tolerance (float16 rounding costs ~1e-7 of cosine).
 * - int8/uint8: the stored values dequantized to their bucket centres
 *   (min + (q + 0.5) · step, with the stored ranges) against the fresh
 *   vector, cosine ≥ tolerance. Comparing the fresh vector re-quantized with
 *   the same ranges value by value is not a sound verdict: a value within
 *   float noise of a bucket edge lands one step away, and a server on another
 *   device (float16 on a GPU) moves values by more than a step. The cosine
 *   holds every value to half a step (the quantization error, far inside the
 *   tolerance) plus the same drift the float32 check allows; the largest
 *   re-quantized difference is reported beside it.
 * - binary/ubinary: the fraction of sign bits that differ must stay within
 *   acos(tolerance)/π, the share of signs that two vectors at exactly the
 *   tolerance's angle split on (random-hyperplane argument): noise flips only
 *   values at zero, a changed vector flips many.
 */
export function compareSample(pair: SamplePair): SampleComparison {
  switch (pair.dtype) {
    case "float32":
    case "float16":
      return byCosine(pair.stored, pair.fresh, pair.tolerance, "");
    case "int8":
    case "uint8":
      return quantized(pair);
    case "binary":
    case "ubinary":
      return bits(pair);
  }
}

function byCosine(
  stored: Matrix,
  fresh: Matrix,
  tolerance: number,
  note: string,
): SampleComparison {
  let worst = Number.POSITIVE_INFINITY;
  let worstAt = 0;
  for (let i = 0; i < stored.rows; i++) {
    const cos = cosineAt(stored, i, fresh, i);
    if (!(cos >= worst)) {
      worst = cos;
      worstAt = i;
    }
    if (Number.isNaN(cos)) break;
  }
  const text = Number.isNaN(worst) ? "NaN" : worst.toFixed(6);
  return {
    worstAt,
    ok: !Number.isNaN(worst) && worst >= tolerance,
    summary: `worst cosine ${text}${note}`,
    failure: `has cosine ${text} with the stored vector${note ? " (dequantized)" : ""}, below --tolerance ${tolerance}`,
  };
}

function quantized({ dtype, dim, ranges, stored, fresh, tolerance }: SamplePair): SampleComparison {
  if (!ranges) throw new Error(`${dtype} output without quantization ranges`);
  const offset = dtype === "int8" ? 128 : 0;
  const steps = new Float32Array(dim);
  for (let d = 0; d < dim; d++) {
    const step = Math.fround(
      Math.fround((ranges.max[d] as number) - (ranges.min[d] as number)) / 255,
    );
    steps[d] = step;
  }
  const centres = new Float32Array(stored.rows * dim);
  for (let i = 0; i < stored.rows * dim; i++) {
    const d = i % dim;
    const q = (stored.data[i] as number) + offset;
    // A dimension with a zero range (every row equal, as in a 1-row corpus) has
    // one value, its min: the encoder's stand-in step of 1 only keeps its
    // division finite, and a bucket centre half a step up would be wrong.
    centres[i] = (ranges.min[d] as number) + (q + 0.5) * (steps[d] as number);
  }
  // The fresh rows as the run would have stored them.
  const encoder = new Encoder(dtype, dim, ranges);
  const requantized = encoder.encode(
    fresh.data,
    fresh.rows,
    new Uint8Array(fresh.rows * encoder.rowBytes),
  );
  const signed = dtype === "int8" ? new Int8Array(requantized.buffer) : requantized;
  let most = 0;
  for (let i = 0; i < stored.rows * dim; i++) {
    most = Math.max(most, Math.abs((signed[i] as number) - (stored.data[i] as number)));
  }
  return byCosine(
    { rows: stored.rows, dim, data: centres },
    fresh,
    tolerance,
    ` (${dtype} dequantized; re-quantized values at most ${most} step${most === 1 ? "" : "s"} apart)`,
  );
}

function bits({ dtype, dim, stored, fresh, tolerance }: SamplePair): SampleComparison {
  const width = stored.dim;
  const offset = dtype === "binary" ? 128 : 0;
  const allowed = Math.acos(Math.min(1, tolerance)) / Math.PI;
  let worst = -1;
  let worstAt = 0;
  for (let i = 0; i < stored.rows; i++) {
    let differ = 0;
    for (let d = 0; d < dim; d++) {
      const byte = ((stored.data[i * width + (d >> 3)] as number) + offset) & 0xff;
      const bit = (byte >> (7 - (d & 7))) & 1;
      const sign = (fresh.data[i * dim + d] as number) > 0 ? 1 : 0;
      if (bit !== sign) differ++;
    }
    const share = differ / dim;
    if (share > worst) {
      worst = share;
      worstAt = i;
    }
  }
  const text = `${(worst * 100).toFixed(2)}% of sign bits differ`;
  const limit = `${(allowed * 100).toFixed(2)}% (acos(--tolerance ${tolerance})/π)`;
  return {
    worstAt,
    ok: worst <= allowed,
    summary: `worst row: ${text} (${dtype}; at most ${limit})`,
    failure: `has ${text} from the stored ${dtype} bits, more than ${limit}`,
  };
}
