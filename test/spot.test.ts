import assert from "node:assert/strict";
import { test } from "node:test";
import type { Vectors } from "../src/backend/types.js";
import {
  compareSpots,
  type KnownRow,
  pickSpots,
  placeSpots,
  splitSpots,
  spotSlots,
} from "../src/checks/spot.js";

function known(label: string, tokens: number, vector: number[], server = ""): KnownRow {
  return { text: label, tokens, vector: Float32Array.from(vector), server, label };
}

function vectorsOf(rows: number[][]): Vectors {
  const dim = rows[0]?.length ?? 0;
  const data = new Uint8Array(new Float32Array(rows.flat()).buffer);
  return {
    rows: rows.length,
    dim,
    data,
    tokenCounts: rows.map((_, i) => i + 10),
    truncated: rows.map((_, i) => i === 0),
  };
}

test("a batch's spot rows are 0.5% of rows on average, and the batch's alone", () => {
  let owed = 0;
  for (let b = 0; b < 4000; b++) owed += spotSlots("minilm", b, 32, 0.005); // 128,000 rows
  assert.ok(owed > 560 && owed < 720, `0.5% of 128,000 rows is 640 (got ${owed})`);
  const again = Array.from({ length: 200 }, (_, b) => spotSlots("minilm", b, 32, 0.005));
  const first = Array.from({ length: 200 }, (_, b) => spotSlots("minilm", b, 32, 0.005));
  assert.deepEqual(again, first, "the same batch always carries the same number");
  const other = Array.from({ length: 200 }, (_, b) => spotSlots("mpnet", b, 32, 0.005));
  assert.notDeepEqual(other, first, "another model's batches draw apart");
  assert.equal(spotSlots("minilm", 3, 1_000_000, 0), 0);
  assert.equal(spotSlots("minilm", 3, 0, 0.5), 0);
  assert.equal(spotSlots("minilm", 3, 10, 1), 10);
  assert.throws(() => spotSlots("minilm", 3, 10, 1.5), RangeError);
});

test("picks rows that fit the batch, closest in length, never the server's own", () => {
  const rows = [
    known("probe 0", 3, [1, 0]),
    known("probe 3", 512, [0, 1]),
    known("line 7", 40, [1, 1], "a:1"),
    known("line 9", 38, [1, 1], "b:1"),
    known("probe 1", 35, [1, 0]),
  ];
  assert.deepEqual(
    pickSpots(rows, 2, 40, 100, "a:1").map((r) => r.label),
    ["line 9", "probe 1"],
  );
  // Room for 50 tokens: 38 fits, then nothing else but the 3-token probe does.
  assert.deepEqual(
    pickSpots(rows, 3, 40, 50, "a:1").map((r) => r.label),
    ["line 9", "probe 0"],
  );
  assert.deepEqual(pickSpots(rows, 0, 40, 100, "a:1"), []);
});

test("spot rows are placed inside the batch and split back out exactly", () => {
  const own = ["r0", "r1", "r2", "r3", "r4", "r5"];
  const placed = placeSpots(own, ["S0", "S1"], 7);
  assert.equal(placed.rows.length, 8);
  assert.deepEqual(
    placed.rows.filter((r) => !r.startsWith("S")),
    own,
    "the batch's own rows keep their order",
  );
  assert.deepEqual(
    placed.positions.map((p) => placed.rows[p]),
    ["S0", "S1"],
  );
  assert.deepEqual(placeSpots(own, ["S0", "S1"], 7).positions, placed.positions, "seeded");
  const seen = new Set<string>();
  for (let seed = 0; seed < 50; seed++) seen.add(placeSpots(own, ["S"], seed).positions.join());
  assert.ok(seen.size > 4, "not always the same place");

  // The answer: row i = [i, -i]; the spot rows come back in placing order.
  const answer = vectorsOf(placed.rows.map((_, i) => [i, -i]));
  const { own: mine, spots } = splitSpots(answer, placed.positions);
  assert.equal(mine.rows, 6);
  assert.equal(spots.rows, 2);
  const ownRows = placed.rows.flatMap((r, i) => (r.startsWith("S") ? [] : [i]));
  assert.deepEqual(
    Array.from(new Float32Array(mine.data.slice().buffer)),
    ownRows.flatMap((i) => [i, -i]),
  );
  assert.deepEqual(
    mine.tokenCounts,
    ownRows.map((i) => i + 10),
  );
  assert.deepEqual(
    Array.from(spots.data),
    placed.positions.flatMap((i) => [i, -i]),
  );
});

test("a spot row off its known vector fails the comparison; within tolerance passes", () => {
  const spots = [known("probe 0", 3, [1, 0, 0]), known("probe 1", 3, [0, 1, 0])];
  const good = { rows: 2, dim: 3, data: Float32Array.from([1, 0.001, 0, 0, 1, 0]) };
  assert.equal(compareSpots(spots, good, 0.999).pass, true);
  const bad = { rows: 2, dim: 3, data: Float32Array.from([1, 0, 0, 0.6, 0.8, 0]) };
  const result = compareSpots(spots, bad, 0.999);
  assert.equal(result.pass, false);
  assert.equal(result.worstSpot, 1);
  assert.ok(Math.abs(result.worstCosine - 0.8) < 1e-6);
  const zero = { rows: 2, dim: 3, data: Float32Array.from([1, 0, 0, 0, 0, 0]) };
  assert.equal(compareSpots(spots, zero, 0.5).pass, false, "a zero row never passes");
  const other = { rows: 2, dim: 2, data: Float32Array.from([1, 0, 0, 1]) };
  assert.equal(compareSpots(spots, other, 0.5).pass, false, "another dim never passes");
  assert.equal(compareSpots([], { rows: 0, dim: 3, data: new Float32Array() }, 0.999).pass, true);
});
