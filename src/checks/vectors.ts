/** A row-major float32 matrix: `rows` vectors of `dim` values in `data`. */
export interface Matrix {
  readonly rows: number;
  readonly dim: number;
  readonly data: Float32Array;
}

/**
 * Cosine of row `i` of `a` and row `j` of `b`, in float64. NaN when a value
 * is not finite or a row is zero: never "close" by accident.
 */
export function cosineAt(a: Matrix, i: number, b: Matrix, j: number): number {
  const dim = a.dim;
  const ai = i * dim;
  const bj = j * dim;
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let d = 0; d < dim; d++) {
    const x = a.data[ai + d] ?? Number.NaN;
    const y = b.data[bj + d] ?? Number.NaN;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  if (na === 0 || nb === 0) return Number.NaN;
  return dot / Math.sqrt(na * nb);
}
