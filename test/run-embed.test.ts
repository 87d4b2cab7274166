import assert from "node:assert/strict";
import { test } from "node:test";
import { describeBatch, pendingWork } from "../src/run/embed.js";
import { tempDir } from "./helpers.js";
import { plannedCheckpoint } from "./phase-helpers.js";

test("the work is every pending batch, with the attempts of earlier runs", async () => {
  const { ledger, models } = await plannedCheckpoint(tempDir("embed-work"), 20);
  ledger.markDone([
    { alias: "org/m", batchNo: 0, attempts: 1, server: "a", tokens: 1, truncated: 0 },
  ]);
  ledger.recordAttempts("org/m", 2, 2);
  const items = pendingWork(models, ledger);
  assert.deepEqual(
    items.map((i) => [i.batchNo, i.rows.length, i.priorAttempts]),
    [
      [1, 8, 0],
      [2, 4, 2],
    ],
  );
  ledger.close();
});

test("a batch is described by its input line numbers, the first eight of them", () => {
  const lineNumbers = Uint32Array.from({ length: 20 }, (_, i) => i * 2 + 1);
  const item = {
    alias: "m",
    batchNo: 3,
    rows: Uint32Array.of(9, 0, 1, 2, 3, 4, 5, 6, 7),
    priorAttempts: 0,
  };
  assert.equal(
    describeBatch(item, { lineNumbers }),
    "batch 3 of m (input lines 1, 3, 5, 7, 9, 11, 13, 15, …)",
  );
  assert.equal(
    describeBatch({ ...item, rows: Uint32Array.of(2) }, { lineNumbers }),
    "batch 3 of m (input lines 5)",
  );
});
