/** The norm a normalizing model's vectors must have: 1 ± this. */
export const NORM_TOLERANCE = 1e-3;

/** The first thing wrong with a batch of embeddings, in words, and its row. */
export interface BatchProblem {
  readonly row: number;
  readonly kind: "non-finite" | "zero-norm" | "norm";
  readonly message: string;
}

/**
 * Checks a batch (rows × dim float32, row-major) before it may be marked done:
 * every value finite, no zero vector, and for a normalizing model every norm
 * within 1 ± NORM_TOLERANCE. Returns the first problem, or null. One pass,
 * one multiply-add per value: a NaN or Inf makes the row's sum non-finite, and
 * only then is the row searched for the culprit.
 */
export function checkBatch(
  data: Float32Array,
  rows: number,
  dim: number,
  normalizes: boolean,
): BatchProblem | null {
  if (data.length < rows * dim) {
    return {
      row: 0,
      kind: "non-finite",
      message: `${data.length} values for ${rows} rows of dim ${dim}`,
    };
  }
  for (let r = 0; r < rows; r++) {
    const base = r * dim;
    let sum = 0;
    for (let d = 0; d < dim; d++) {
      const v = data[base + d] ?? 0;
      sum += v * v;
    }
    if (!Number.isFinite(sum)) {
      for (let d = 0; d < dim; d++) {
        const v = data[base + d] ?? 0;
        if (!Number.isFinite(v)) {
          return { row: r, kind: "non-finite", message: `row ${r}: ${v} at dimension ${d}` };
        }
      }
      // Finite values whose squares overflow: a vector no model produces.
      return { row: r, kind: "non-finite", message: `row ${r}: norm overflows` };
    }
    if (sum === 0) return { row: r, kind: "zero-norm", message: `row ${r}: zero vector` };
    if (normalizes) {
      const norm = Math.sqrt(sum);
      if (Math.abs(norm - 1) > NORM_TOLERANCE) {
        return {
          row: r,
          kind: "norm",
          message: `row ${r}: norm ${norm.toPrecision(6)}, not 1 ± ${NORM_TOLERANCE} (the model normalizes)`,
        };
      }
    }
  }
  return null;
}
