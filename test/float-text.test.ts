import assert from "node:assert/strict";
import { test } from "node:test";
import { float16Value } from "../src/output/dtype.js";
import { formatFloat32 } from "../src/output/float.js";
import { writeFloat32 } from "../src/output/float-text.js";

const out = Buffer.alloc(64);
const bits = new Uint32Array(1);
const asFloat = new Float32Array(bits.buffer);

function fast(value: number): string {
  return out.toString("latin1", 0, writeFloat32(out, 0, value));
}

/** A small deterministic generator (LCG), so a failure can be replayed. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x;
  };
}

function checkMany(label: string, count: number, next: () => number): void {
  let mismatches = 0;
  let first = "";
  for (let i = 0; i < count; i++) {
    const value = next();
    const got = fast(value);
    const want = formatFloat32(value);
    if (got !== want) {
      mismatches++;
      if (!first) first = `${value}: ${got} vs ${want}`;
    }
  }
  assert.equal(mismatches, 0, `${label}: ${mismatches} of ${count} differ, first ${first}`);
}

test("the byte writer gives formatFloat32's text for 2,000,000 random float32 bit patterns", () => {
  const next = lcg(20261127);
  checkMany("bit patterns", 2_000_000, () => {
    bits[0] = next();
    return asFloat[0] as number;
  });
});

test("the byte writer gives formatFloat32's text for 1,000,000 embedding-like values", () => {
  const next = lcg(7);
  checkMany("values in (-1, 1) and (-0.01, 0.01)", 2_000_000, () => {
    const u = next() / 2 ** 32 - 0.5;
    return Math.fround(next() % 2 === 0 ? 2 * u : u / 50);
  });
});

test("the byte writer gives formatFloat32's text for every float16 value (ties everywhere)", () => {
  const values = Array.from({ length: 65536 }, (_, h) => float16Value(h));
  for (const v of values) assert.equal(fast(v), formatFloat32(v), `value ${v}`);
});

test("the byte writer handles zeros, subnormals, extremes, powers of ten and integers as formatFloat32 does", () => {
  const values: number[] = [0, -0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
  for (const b of [0x1, 0x2, 0x7fffff, 0x800000, 0x800001, 0x7f7fffff, 0x7f7ffffe, 0x3f800000]) {
    bits[0] = b;
    values.push(asFloat[0] as number, -(asFloat[0] as number));
  }
  for (let e = -45; e <= 38; e++) {
    const p = Math.fround(10 ** e);
    bits[0] = 0;
    asFloat[0] = p;
    const b = bits[0] as number;
    for (let d = -3; d <= 3; d++) {
      bits[0] = b + d; // the neighbours of each power of ten
      values.push(asFloat[0] as number, -(asFloat[0] as number));
    }
  }
  for (let e = -149; e <= 127; e++) values.push(Math.fround(2 ** e)); // powers of two: uneven steps
  for (let i = 0; i <= 100_000; i++) values.push(Math.fround(i), Math.fround(i * 1000 + 0.5));
  for (const v of [16777216, 16777217, 1e21, 1e22, 123456789, 0.1, 0.3, 1 / 3, 3.4028235e38]) {
    values.push(Math.fround(v));
  }
  for (const v of values) assert.equal(fast(v), formatFloat32(v), `value ${v}`);
  assert.equal(fast(-0), "0");
  assert.equal(fast(Number.NaN), "null");
  assert.equal(fast(Math.fround(0.1)), "0.1");
  assert.equal(fast(Math.fround(1e-7)), "1e-7");
  assert.equal(fast(Math.fround(3.4028235e38)), "3.4028235e+38");
});
