import { createHash } from "node:crypto";

const MASK = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

function splitmix64(value: bigint): bigint {
  let z = value & MASK;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
  return z ^ (z >> 31n);
}

/**
 * The debug engine's vector for a text, computed independently of the
 * server (its docstring states the same formula): a test of row order that
 * needs no model.
 */
export function debugEmbedding(
  text: string,
  dim: number,
  normalize: boolean,
  truncateDim = 0,
): Float32Array {
  const seed = createHash("sha256").update(text, "utf8").digest().readBigUInt64LE(0);
  // truncate_dim keeps the first values, and normalizing comes after the cut.
  const kept = truncateDim || dim;
  const out = new Float32Array(kept);
  for (let j = 0; j < kept; j++) {
    const x = splitmix64(seed + BigInt(j + 1) * GOLDEN);
    out[j] = Number(x >> 40n) / 2 ** 23 - 1;
  }
  if (normalize) {
    let sum = 0;
    for (const v of out) sum += v * v;
    const norm = Math.sqrt(sum);
    for (let j = 0; j < kept; j++) out[j] = (out[j] ?? 0) / norm;
  }
  return out;
}
