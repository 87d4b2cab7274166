import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { checkSameInput, checkSameModels } from "../src/checkpoint/compat.js";
import { Ledger, type LedgerModel } from "../src/checkpoint/ledger.js";
import type { RunModel } from "../src/config.js";
import { CheckpointError } from "../src/errors.js";
import type { CorpusIndex } from "../src/input/scan.js";
import { planBatches } from "../src/plan/planner.js";
import { tempDir } from "./helpers.js";

const model: LedgerModel = {
  alias: "m",
  position: 0,
  modelId: "org/m",
  requestedRevision: "",
  revision: "abc",
  dim: 4,
  prefix: "",
  normalize: false,
  requestedMaxLength: 0,
  requestedDtype: "",
  maxLength: 128,
  dtype: "float32",
  pooling: "mean",
  fileStem: "m",
};

test("the plan, batch status and totals survive closing and reopening", () => {
  const path = join(tempDir("ledger"), "c.sqlite");
  const lengths = Uint32Array.from({ length: 100 }, (_, i) => 1 + (i % 17));
  const plan = planBatches(lengths, { batchSize: 8, maxBatchTokens: 0 });
  const ledger = Ledger.open(path);
  ledger.startRun({ path: "/in", size: 10, sha256: "ff", rows: 100 });
  ledger.addModel(model, plan.batches);
  ledger.markDone([
    { alias: "m", batchNo: 0, attempts: 1, server: "a:1", tokens: 100, truncated: 2 },
    { alias: "m", batchNo: 3, attempts: 2, server: "b:1", tokens: 50, truncated: 0 },
  ]);
  ledger.close();

  const again = Ledger.open(path);
  const pending = again.pendingBatches("m");
  assert.equal(pending.length, plan.batches.length - 2);
  const third = pending.find((b) => b.batchNo === 2);
  assert.deepEqual(Array.from(third?.rows ?? []), Array.from(plan.batches[2]?.rows ?? []));
  const totals = again.status("m");
  assert.equal(totals.doneBatches, 2);
  assert.equal(totals.tokens, 150);
  assert.equal(totals.truncated, 2);
  assert.deepEqual(totals.servers, ["a:1", "b:1"]);
  assert.deepEqual(again.models()[0], model);
  again.startRun({ path: "/in", size: 10, sha256: "ff", rows: 100 });
  assert.equal(again.run().attempts, 2);
  again.close();
});

test("a file that is not SQLite, or SQLite of someone else, is refused with a clear error", () => {
  const dir = tempDir("ledger-bad");
  const garbage = join(dir, "garbage.sqlite");
  writeFileSync(garbage, "this is not a database, just some text that fills a page ".repeat(100));
  assert.throws(
    () => Ledger.open(garbage),
    (err: unknown) => {
      assert.ok(err instanceof CheckpointError);
      assert.match(err.message, /is unreadable/);
      return true;
    },
  );
  const foreign = join(dir, "foreign.sqlite");
  const db = new Database(foreign);
  db.exec("CREATE TABLE songs (title TEXT)");
  db.close();
  assert.throws(() => Ledger.open(foreign), /is not an embed-multi checkpoint/);
});

test("a changed input or a changed model setting is refused, naming what changed", () => {
  const corpus = { size: 10, sha256: "ff", rows: 100 } as CorpusIndex;
  assert.throws(
    () => checkSameInput({ path: "/in", size: 11, sha256: "ff", rows: 100 }, corpus),
    /input file changed .*size 11 → 10 bytes.*--restart/,
  );
  assert.throws(
    () => checkSameInput({ path: "/in", size: 10, sha256: "ee", rows: 100 }, corpus),
    /sha256/,
  );
  const runModel: RunModel = {
    alias: "m",
    modelId: "org/m",
    revision: "",
    prefix: "passage: ",
    normalize: false,
    maxLength: 0,
    dtype: "",
    fileStem: "m",
  };
  assert.throws(() => checkSameModels([model], [runModel]), /prefix "" → "passage: "/);
  assert.throws(
    () => checkSameModels([model], [{ ...runModel, alias: "n", prefix: "" }]),
    /the checkpoint also holds m, missing from --models/,
  );
  checkSameModels([model], [{ ...runModel, prefix: "" }]);
  // A model new to the checkpoint is added, not refused.
  checkSameModels(
    [model],
    [
      { ...runModel, prefix: "" },
      { ...runModel, alias: "n" },
    ],
  );
  checkSameModels([], [runModel]);
});
