import { cosineAt, type Matrix } from "../checks/vectors.js";

export const DEFAULT_PROBE_TOLERANCE = 0.999;

/** How a server's probe vectors compare with the ones stored for the model. */
export interface ProbeComparison {
  readonly pass: boolean;
  /** The lowest cosine over the probes; NaN when a vector is not finite or zero. */
  readonly worstCosine: number;
  /** The probe with the lowest cosine (or the first NaN one); -1 when the shapes differ. */
  readonly worstProbe: number;
  /** Set when the two sets cannot be compared at all (other count or dimension). */
  readonly shapeProblem: string | null;
}

/**
 * Compares the probe vectors a server computed with the stored ones: every
 * probe must have cosine >= tolerance. Pure and cheap (a dozen rows).
 */
export function compareProbes(stored: Matrix, fresh: Matrix, tolerance: number): ProbeComparison {
  if (stored.dim !== fresh.dim || stored.rows !== fresh.rows) {
    return {
      pass: false,
      worstCosine: Number.NaN,
      worstProbe: -1,
      shapeProblem: `${fresh.rows} vectors of dim ${fresh.dim}, stored ${stored.rows} of dim ${stored.dim}`,
    };
  }
  let worst = Number.POSITIVE_INFINITY;
  let worstProbe = -1;
  for (let i = 0; i < stored.rows; i++) {
    const cos = cosineAt(stored, i, fresh, i);
    if (Number.isNaN(cos))
      return { pass: false, worstCosine: cos, worstProbe: i, shapeProblem: null };
    if (cos < worst) {
      worst = cos;
      worstProbe = i;
    }
  }
  return { pass: worst >= tolerance, worstCosine: worst, worstProbe, shapeProblem: null };
}

/** The one line a refused server gets: who, which model, how far off, and what to look at. */
export function probeRefusal(
  server: string,
  model: string,
  comparison: ProbeComparison,
  tolerance: number,
): string {
  const how = comparison.shapeProblem
    ? `its probe vectors do not match the stored ones (${comparison.shapeProblem})`
    : Number.isNaN(comparison.worstCosine)
      ? `its vector for probe ${comparison.worstProbe} is not finite or zero`
      : `worst cosine ${comparison.worstCosine.toFixed(6)} (probe ${comparison.worstProbe}) with the stored probe vectors, below --probe_tolerance ${tolerance}`;
  return `server ${server} is kept out for model "${model}": ${how}; likely causes: another weights revision, pooling, dtype or device than the server that stored the probes`;
}

/**
 * Compares the probes both servers embedded: the ones this server `taken`, and
 * the stored ones that are not a zero row (a text the first server did not
 * take, see embed()). A zero row this server computed is compared, and fails.
 * The worst probe is numbered in PROBE_TEXTS.
 */
export function compareCommon(
  stored: Matrix,
  fresh: Matrix,
  taken: ReadonlySet<number>,
  tolerance: number,
): ProbeComparison {
  if (stored.dim !== fresh.dim || stored.rows !== fresh.rows) {
    return compareProbes(stored, fresh, tolerance);
  }
  const common: number[] = [];
  for (let i = 0; i < stored.rows; i++) {
    if (taken.has(i) && !isZeroRow(stored, i)) common.push(i);
  }
  const pick = (m: Matrix): Matrix => {
    const data = new Float32Array(common.length * m.dim);
    common.forEach((i, row) => {
      data.set(m.data.subarray(i * m.dim, (i + 1) * m.dim), row * m.dim);
    });
    return { rows: common.length, dim: m.dim, data };
  };
  const result = compareProbes(pick(stored), pick(fresh), tolerance);
  return { ...result, worstProbe: common[result.worstProbe] ?? result.worstProbe };
}

function isZeroRow(m: Matrix, row: number): boolean {
  for (let d = row * m.dim; d < (row + 1) * m.dim; d++) if (m.data[d] !== 0) return false;
  return true;
}
