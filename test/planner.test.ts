import assert from "node:assert/strict";
import { test } from "node:test";
import { estimateTokens } from "../src/plan/lengths.js";
import { paddingEfficiency, planBatches } from "../src/plan/planner.js";
import { readCorpusLines } from "./helpers.js";

function randomLengths(n: number, seed: number): Uint32Array {
  let x = seed;
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out[i] = 1 + (x % 600);
  }
  return out;
}

test("batches respect the row and token limits and cover every row exactly once", () => {
  for (const [n, batchSize, maxBatchTokens] of [
    [1000, 32, 4096],
    [777, 7, 0],
    [5000, 256, 16384],
    [300, 64, 100], // budget below some single rows: those go alone
  ] as const) {
    const lengths = randomLengths(n, n + batchSize);
    const plan = planBatches(lengths, { batchSize, maxBatchTokens });
    const seen = new Uint8Array(n);
    for (const batch of plan.batches) {
      assert.ok(batch.rows.length >= 1 && batch.rows.length <= batchSize);
      const longest = Math.max(...Array.from(batch.rows, (r) => lengths[r] ?? 0));
      assert.equal(batch.paddedTokens, batch.rows.length * longest);
      if (maxBatchTokens > 0 && batch.rows.length > 1) {
        assert.ok(batch.paddedTokens <= maxBatchTokens, `batch ${batch.batchNo} over the budget`);
      }
      for (const r of batch.rows) seen[r] = (seen[r] ?? 0) + 1;
    }
    assert.ok(
      seen.every((c) => c === 1),
      "every row exactly once",
    );
    assert.deepEqual(
      plan.batches.map((b) => b.batchNo),
      plan.batches.map((_, i) => i),
    );
  }
});

test("the plan is deterministic and orders rows longest first", () => {
  const lengths = randomLengths(2000, 7);
  const a = planBatches(lengths, { batchSize: 32, maxBatchTokens: 8192 });
  const b = planBatches(lengths, { batchSize: 32, maxBatchTokens: 8192 });
  assert.deepEqual(
    a.batches.map((x) => Array.from(x.rows)),
    b.batches.map((x) => Array.from(x.rows)),
  );
  const flat = a.batches.flatMap((x) => Array.from(x.rows));
  for (let i = 1; i < flat.length; i++) {
    const prev = lengths[flat[i - 1] ?? 0] ?? 0;
    const cur = lengths[flat[i] ?? 0] ?? 0;
    assert.ok(prev >= cur);
    if (prev === cur) assert.ok((flat[i - 1] ?? 0) < (flat[i] ?? 0), "ties by row number");
  }
});

test("padding efficiency on the unarXive corpus plan is at least 0.9", () => {
  const lines = readCorpusLines();
  const chars = Uint32Array.from(lines, (l) => (JSON.parse(l) as { text: string }).text.length);
  const plan = planBatches(estimateTokens(chars, 512), { batchSize: 32, maxBatchTokens: 16384 });
  const efficiency = paddingEfficiency(plan);
  assert.ok(efficiency >= 0.9, `padding efficiency ${efficiency}`);
  // Unsorted batches of 32 waste far more: the sort is what makes the difference.
  const lengths = estimateTokens(chars, 512);
  let real = 0;
  let padded = 0;
  for (let i = 0; i < lengths.length; i += 32) {
    const slice = lengths.subarray(i, i + 32);
    real += slice.reduce((s, v) => s + v, 0);
    padded += slice.length * Math.max(...slice);
  }
  assert.ok(real / padded < efficiency);
});
