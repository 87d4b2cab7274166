/** One unit of work: rows of the input sent together to a server. */
export interface PlannedBatch {
  readonly batchNo: number;
  /** Row numbers (input order), longest first. */
  readonly rows: Uint32Array;
  /** Rows × the longest row's length: what the model computes after padding. */
  readonly paddedTokens: number;
  readonly realTokens: number;
  /**
   * Rows that take the vector of a row of the batch (identical model input):
   * uint32 pairs (row, index in `rows`); absent when none.
   */
  readonly followers?: Uint32Array;
}

export interface Plan {
  readonly batches: readonly PlannedBatch[];
  readonly realTokens: number;
  readonly paddedTokens: number;
}

export interface PlanLimits {
  /** Most rows per batch. */
  readonly batchSize: number;
  /** Most padded tokens per batch; 0 = no budget. A row longer than the budget goes alone. */
  readonly maxBatchTokens: number;
  /**
   * Most bytes of the rows' texts per batch, with `rowBytes` (an upper bound of
   * each row's text in UTF-8): a batch sent as texts (a resumed run) must fit the
   * server's message cap. 0 or absent = no cap. A row over it goes alone.
   */
  readonly maxBatchBytes?: number;
  readonly rowBytes?: ArrayLike<number>;
}

/**
 * Orders rows by length, longest first (so a batch too large for the GPU shows
 * at the start, not after an hour), and cuts batches by row count and padded
 * token budget. Rows of similar length share a batch, so little compute goes
 * to padding. Deterministic: the same lengths and limits give the same plan,
 * ties broken by row number.
 */
export function planBatches(
  lengths: ArrayLike<number>,
  limits: PlanLimits,
  /** The rows to plan, ascending (the rest are copied, not embedded); absent = all. */
  only?: Uint32Array,
): Plan {
  const order = sortByLengthDescending(lengths, only);
  const batches: PlannedBatch[] = [];
  let realTotal = 0;
  let paddedTotal = 0;
  let start = 0;
  while (start < order.length) {
    const longest = Math.max(1, lengths[order[start] ?? 0] ?? 1);
    let end = start;
    let real = 0;
    let bytes = 0;
    const maxBytes = limits.rowBytes ? (limits.maxBatchBytes ?? 0) : 0;
    while (end < order.length && end - start < limits.batchSize) {
      const count = end - start + 1;
      if (count > 1 && limits.maxBatchTokens > 0 && count * longest > limits.maxBatchTokens) break;
      const rowBytes = maxBytes > 0 ? (limits.rowBytes?.[order[end] ?? 0] ?? 0) : 0;
      if (count > 1 && maxBytes > 0 && bytes + rowBytes > maxBytes) break;
      bytes += rowBytes;
      real += Math.max(1, lengths[order[end] ?? 0] ?? 1);
      end++;
    }
    const rows = order.slice(start, end);
    const padded = rows.length * longest;
    batches.push({ batchNo: batches.length, rows, paddedTokens: padded, realTokens: real });
    realTotal += real;
    paddedTotal += padded;
    start = end;
  }
  return { batches, realTokens: realTotal, paddedTokens: paddedTotal };
}

/** Real tokens over padded tokens: 1.0 means no compute spent on padding. */
export function paddingEfficiency(plan: Pick<Plan, "realTokens" | "paddedTokens">): number {
  return plan.paddedTokens === 0 ? 1 : plan.realTokens / plan.paddedTokens;
}

/** A stable counting sort: lengths are small integers, so this is O(n) for a million rows. */
function sortByLengthDescending(lengths: ArrayLike<number>, only?: Uint32Array): Uint32Array {
  const rows = only ?? Uint32Array.from({ length: lengths.length }, (_, i) => i);
  const n = rows.length;
  let max = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, lengths[rows[i] ?? 0] ?? 0);
  const counts = new Uint32Array(max + 2);
  for (let i = 0; i < n; i++) {
    const k = max - (lengths[rows[i] ?? 0] ?? 0);
    counts[k] = (counts[k] ?? 0) + 1;
  }
  let sum = 0;
  for (let k = 0; k < counts.length; k++) {
    const c = counts[k] ?? 0;
    counts[k] = sum;
    sum += c;
  }
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const row = rows[i] ?? 0;
    const k = max - (lengths[row] ?? 0);
    order[counts[k] ?? 0] = row;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return order;
}
