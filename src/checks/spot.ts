import type { TokenIds, Vectors } from "../backend/types.js";
import { cosineAt, type Matrix } from "./vectors.js";

/**
 * Spot checks (issue 16), the pure part: which rows of known vectors an
 * ordinary batch carries, where they go in it, and how its answer is split
 * and compared. A server can pass the probe and then go wrong (a failing
 * GPU, a corrupted weight); rows whose vectors are already known, placed
 * inside real batches like any other row, show a fault that depends on the
 * batch and not on the text.
 */

/** A row whose vector is already known: a stored probe text, or a row another server embedded. */
export interface KnownRow {
  readonly text: string;
  /** Its token count, so that it fits the batch it joins. */
  readonly tokens: number;
  /** Its vector (dim values). */
  readonly vector: Float32Array;
  /** Who computed it: the server whose batch it came from ("" for a stored probe). */
  readonly server: string;
  /** For messages: "probe 3", "input line 812". */
  readonly label: string;
}

/**
 * The spot rows batch `batchNo` of `alias` carries: `rows * rate` on
 * average (0.005 = 0.5%), the fraction settled by a draw seeded from the
 * batch alone. A function of the batch, not of the server or of what was
 * sent before: a spot row changes the batch's shape, and with it the last
 * bits of the batch's other rows (GEMM blocking), so a resumed or
 * failed-over run must send every batch with the same number of rows as
 * the first run did (invariant 2: byte-identical).
 */
export function spotSlots(alias: string, batchNo: number, rows: number, rate: number): number {
  if (!(rate >= 0 && rate <= 1)) throw new RangeError(`spot check rate ${rate} is not in 0..1`);
  if (rate === 0 || rows === 0) return 0;
  let seed = batchNo >>> 0;
  for (let i = 0; i < alias.length; i++) seed = Math.imul(seed ^ alias.charCodeAt(i), 16777619);
  return Math.floor(rows * rate + mulberry32(seed)());
}

/**
 * Up to `count` known rows for a batch whose rows have about `meanTokens`
 * tokens and that has room for `roomTokens` more: the closest in length
 * first (batches are sorted by length; a row of another length would change
 * the padding), never one computed by `server` itself, never one twice.
 */
export function pickSpots(
  known: readonly KnownRow[],
  count: number,
  meanTokens: number,
  roomTokens: number,
  server: string,
): KnownRow[] {
  if (count <= 0) return [];
  const fits = known.filter((k) => k.server !== server && k.tokens <= roomTokens);
  fits.sort((a, b) => Math.abs(a.tokens - meanTokens) - Math.abs(b.tokens - meanTokens));
  const picked: KnownRow[] = [];
  let room = roomTokens;
  for (const row of fits) {
    if (picked.length === count) break;
    if (row.tokens > room) continue;
    picked.push(row);
    room -= row.tokens;
  }
  return picked;
}

/** A batch with spot rows in it, and where they are. */
export interface PlacedBatch<T> {
  readonly rows: T[];
  /** The positions of the spot rows in `rows`, ascending. */
  readonly positions: number[];
}

/**
 * Places the spot rows among the batch's own (texts, or rows of token ids)
 * at positions drawn from `seed`, so that they are not always first or last
 * and a rerun places them the same way.
 */
export function placeSpots<T>(
  own: readonly T[],
  spots: readonly T[],
  seed: number,
): PlacedBatch<T> {
  const total = own.length + spots.length;
  const random = mulberry32(seed);
  const chosen = new Set<number>();
  while (chosen.size < spots.length) chosen.add(Math.floor(random() * total));
  const positions = [...chosen].sort((a, b) => a - b);
  const rows: T[] = [];
  let o = 0;
  let s = 0;
  for (let i = 0; i < total; i++) {
    if (s < positions.length && positions[s] === i) rows.push(spots[s++] as T);
    else rows.push(own[o++] as T);
  }
  return { rows, positions };
}

/** The answer split back: the batch's own rows, and the spot rows' vectors in placing order. */
export function splitSpots(
  vectors: Vectors,
  positions: readonly number[],
): {
  own: Vectors;
  spots: Matrix;
} {
  const { rows, dim } = vectors;
  const rowBytes = dim * 4;
  const spotSet = new Set(positions);
  const own = new Uint8Array((rows - positions.length) * rowBytes);
  const spotData = new Float32Array(positions.length * dim);
  const ownCounts: number[] = [];
  const ownTruncated: boolean[] = [];
  let o = 0;
  let s = 0;
  for (let r = 0; r < rows; r++) {
    const row = vectors.data.subarray(r * rowBytes, (r + 1) * rowBytes);
    if (spotSet.has(r)) {
      const view = new DataView(row.buffer, row.byteOffset, row.byteLength);
      for (let d = 0; d < dim; d++) spotData[s * dim + d] = view.getFloat32(d * 4, true);
      s++;
    } else {
      own.set(row, o * rowBytes);
      ownCounts.push(vectors.tokenCounts[r] ?? 0);
      ownTruncated.push(vectors.truncated[r] ?? false);
      o++;
    }
  }
  return {
    own: { rows: o, dim, data: own, tokenCounts: ownCounts, truncated: ownTruncated },
    spots: { rows: s, dim, data: spotData },
  };
}

export interface SpotComparison {
  readonly pass: boolean;
  /** The lowest cosine; NaN when a vector is not finite or zero (which fails). */
  readonly worstCosine: number;
  /** The spot row with the lowest cosine, or -1 with none. */
  readonly worstSpot: number;
}

/** Every spot row must lie within cosine `tolerance` (--probe_tolerance) of its known vector. */
export function compareSpots(
  spots: readonly KnownRow[],
  got: Matrix,
  tolerance: number,
): SpotComparison {
  let worst = Number.POSITIVE_INFINITY;
  let worstSpot = -1;
  for (let i = 0; i < spots.length; i++) {
    const known = spots[i] as KnownRow;
    if (known.vector.length !== got.dim) {
      return { pass: false, worstCosine: Number.NaN, worstSpot: i };
    }
    const cos = cosineAt({ rows: 1, dim: got.dim, data: known.vector }, 0, got, i);
    if (Number.isNaN(cos)) return { pass: false, worstCosine: cos, worstSpot: i };
    if (cos < worst) {
      worst = cos;
      worstSpot = i;
    }
  }
  return { pass: worstSpot === -1 || worst >= tolerance, worstCosine: worst, worstSpot };
}

/** A small seeded generator (mulberry32): the same positions for the same seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A known row as a batch carries it: its text, and its token ids when batches carry ids. */
export interface SpotRow extends KnownRow {
  /** Its token ids (the model's tokenizer, as the measuring pass got them), or null. */
  readonly ids: Uint32Array | null;
  readonly truncatedIds: boolean;
}

/** A batch's payload with spot rows placed inside it. */
export interface SpotPayload {
  readonly texts: readonly string[];
  readonly tokens: TokenIds | undefined;
  readonly positions: number[];
}

/**
 * The batch's own payload (texts, or token ids) with `spots` placed inside
 * at seeded positions. A batch of token ids takes only spot rows that have
 * their ids (null when one lacks them: the caller picks none).
 */
export function withSpots(
  own: { readonly texts: readonly string[]; readonly tokens: TokenIds | undefined },
  spots: readonly SpotRow[],
  seed: number,
): SpotPayload | null {
  if (!own.tokens) {
    const placed = placeSpots(
      own.texts,
      spots.map((s) => s.text),
      seed,
    );
    return { texts: placed.rows, tokens: undefined, positions: placed.positions };
  }
  if (spots.some((s) => s.ids === null)) return null;
  const { ids, lengths, truncated } = own.tokens;
  const all = new Uint32Array(ids.buffer.slice(ids.byteOffset, ids.byteOffset + ids.byteLength));
  const rows: { ids: Uint32Array; truncated: boolean }[] = [];
  let at = 0;
  lengths.forEach((length, r) => {
    rows.push({ ids: all.subarray(at, at + length), truncated: truncated[r] ?? false });
    at += length;
  });
  const placed = placeSpots(
    rows,
    spots.map((s) => ({ ids: s.ids as Uint32Array, truncated: s.truncatedIds })),
    seed,
  );
  const total = placed.rows.reduce((n, r) => n + r.ids.length, 0);
  const out = new Uint32Array(total);
  let o = 0;
  for (const r of placed.rows) {
    out.set(r.ids, o);
    o += r.ids.length;
  }
  return {
    texts: [],
    tokens: {
      ids: new Uint8Array(out.buffer),
      lengths: placed.rows.map((r) => r.ids.length),
      truncated: placed.rows.map((r) => r.truncated),
    },
    positions: placed.positions,
  };
}
