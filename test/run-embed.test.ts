import assert from "node:assert/strict";
import { test } from "node:test";
import { ledgerModelOf } from "../src/checkpoint/model-row.js";
import { planBatches } from "../src/plan/planner.js";
import { describeBatch, pendingWork } from "../src/run/embed.js";
import { openCheckpoint, prepareOutputDir } from "../src/run/prepare.js";
import { tempDir } from "./helpers.js";
import { MODEL_INFO, phaseSetup, recordingProgress } from "./phase-helpers.js";

test("the work is every pending batch, with the attempts of earlier runs", async () => {
  const dir = tempDir("embed-work");
  const { config, corpus } = await phaseSetup(dir, 20);
  prepareOutputDir(config.outputDir);
  const { ledger, models } = openCheckpoint(config, corpus, recordingProgress());
  const [run] = models;
  assert.ok(run);
  ledger.addModel(
    ledgerModelOf(run.model, MODEL_INFO, 0),
    planBatches(new Uint32Array(20).fill(3), { batchSize: 8, maxBatchTokens: 0 }).batches,
  );
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
