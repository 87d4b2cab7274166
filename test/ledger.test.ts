import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { checkSameInput, checkSameModels } from "../src/checkpoint/compat.js";
import { Ledger, LedgerReader } from "../src/checkpoint/ledger.js";
import { SCHEMA_VERSION } from "../src/checkpoint/schema.js";
import type { RunModel } from "../src/config.js";
import { CheckpointError } from "../src/errors.js";
import type { CorpusIndex } from "../src/input/scan.js";
import { planBatches } from "../src/plan/planner.js";
import { tempDir } from "./helpers.js";
import { storedModel } from "./phase-helpers.js";

const model = storedModel({ batchSize: 8, maxBatchTokens: 0 }, { revision: "abc" });

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
    truncateDim: 0,
    quantize: "none",
    fileStem: "m",
  };
  assert.throws(() => checkSameModels([model], [runModel]), /prefix "" → "passage: "/);
  assert.throws(
    () => checkSameModels([model], [{ ...runModel, prefix: "", truncateDim: 128 }]),
    /model "m" settings changed since the checkpoint \(truncate_dim 0 → 128\); run with --restart/,
  );
  // A run of a subset of the checkpoint's models finishes those (issue 16).
  checkSameModels([model], [{ ...runModel, alias: "n", prefix: "" }]);
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

/**
 * A checkpoint as embed-multi 0.1.0 (schema 1) left it: no index, none of the
 * later columns, version "1".
 */
function versionOneCheckpoint(path: string): void {
  const ledger = Ledger.open(path);
  ledger.startRun({ path: "/in", size: 10, sha256: "ff", rows: 100 });
  ledger.addModel(
    model,
    planBatches(new Uint32Array(100).fill(3), { batchSize: 8, maxBatchTokens: 0 }).batches,
  );
  ledger.markDone([
    { alias: "m", batchNo: 1, attempts: 1, server: "a:1", tokens: 24, truncated: 0 },
  ]);
  ledger.close();
  const db = new Database(path);
  db.exec(`DROP INDEX batches_by_status;
    ALTER TABLE models DROP COLUMN truncate_dim;
    ALTER TABLE models DROP COLUMN plan_batch_size;
    ALTER TABLE models DROP COLUMN plan_max_batch_tokens;`);
  undoProbeStep(db);
  undoReuseStep(db);
  db.exec(`ALTER TABLE models DROP COLUMN spot_failures;
    ALTER TABLE models DROP COLUMN spot_redone_batches;
    ALTER TABLE models DROP COLUMN quantize;`);
  db.prepare("UPDATE meta SET value = '1' WHERE key = 'schema_version'").run();
  db.close();
}

/** Takes back the probes step (issue 12): what a checkpoint made before it looks like. */
/** Takes back the reuse step (issue 20): copies, their sources, batches' followers. */
function undoReuseStep(db: Database.Database): void {
  db.exec("DROP TABLE copies");
  db.exec("DROP TABLE reuse_sources");
  db.exec("ALTER TABLE batches DROP COLUMN followers");
}

function undoProbeStep(db: Database.Database): void {
  db.exec("DROP TABLE probes");
  db.exec("ALTER TABLE models DROP COLUMN retried_batches");
}

function schemaVersion(path: string): string {
  const db = new Database(path, { readonly: true });
  try {
    const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as {
      value: string;
    };
    return row.value;
  } finally {
    db.close();
  }
}

test("a checkpoint of schema 1 is migrated on open and keeps its batches", () => {
  const path = join(tempDir("ledger-v1"), "c.sqlite");
  versionOneCheckpoint(path);
  assert.throws(
    () => LedgerReader.openReadOnly(path),
    new RegExp(
      `has schema version 1; run embed-multi on it once to migrate it to ${SCHEMA_VERSION}`,
    ),
  );
  const ledger = Ledger.open(path);
  const status = ledger.status("m");
  assert.equal(status.doneBatches, 1);
  assert.equal(status.batches, 13);
  // Runs before schema 3 never truncated, and did not record the limits of their plan.
  assert.deepEqual(ledger.models(), [
    { ...model, truncateDim: 0, quantize: "none", plannedWith: null },
  ]);
  ledger.close();
  assert.equal(schemaVersion(path), String(SCHEMA_VERSION));
  const reader = LedgerReader.openReadOnly(path);
  assert.equal(reader.pendingBatches("m").length, 12);
  reader.close();
});

/** Why a fresh checkpoint whose schema_version reads `version` is refused: one CheckpointError line. */
function refusalAtVersion(name: string, version: string): string {
  const path = join(tempDir(name), "c.sqlite");
  Ledger.open(path).close();
  const db = new Database(path);
  db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(version);
  db.close();
  let message = "";
  assert.throws(
    () => Ledger.open(path),
    (err: unknown) => {
      assert.ok(err instanceof CheckpointError);
      assert.ok(!err.message.includes("\n"));
      message = err.message;
      return true;
    },
  );
  return message;
}

test("a checkpoint from a newer embed-multi is refused in one line saying what to do", () => {
  assert.match(
    refusalAtVersion("ledger-new", "99"),
    new RegExp(
      `schema version 99, newer than this embed-multi reads \\(${SCHEMA_VERSION}\\).*--restart`,
    ),
  );
});

test("a checkpoint whose schema version is not a number is unreadable, not newer", () => {
  const message = refusalAtVersion("ledger-bad-version", "abc");
  assert.match(message, /is unreadable \(its schema version is "abc", not a version number\)/);
  assert.doesNotMatch(message, /newer/);
});

test("the read-only reader sees each batch's status, and a model's status in one snapshot", () => {
  const path = join(tempDir("ledger-reader"), "c.sqlite");
  const ledger = Ledger.open(path);
  ledger.startRun({ path: "/in", size: 10, sha256: "ff", rows: 100 });
  assert.deepEqual(
    { planned: ledger.status("m").planned, finalized: ledger.status("m").finalized },
    { planned: false, finalized: false },
  );
  ledger.addModel(
    model,
    planBatches(new Uint32Array(20).fill(5), { batchSize: 8, maxBatchTokens: 0 }).batches,
  );
  ledger.markDone([
    { alias: "m", batchNo: 2, attempts: 2, server: "a:1", tokens: 20, truncated: 1 },
  ]);
  const reader = LedgerReader.openReadOnly(path);
  const batches = reader.batches("m");
  assert.deepEqual(
    batches.map((b) => [b.batchNo, b.done, b.completions]),
    [
      [0, false, 0],
      [1, false, 0],
      [2, true, 1],
    ],
  );
  assert.deepEqual(reader.models(), [model]);
  ledger.markFinalized("m");
  const status = reader.status("m");
  assert.equal(status.finalized, true);
  assert.equal(status.doneRows, 4);
  assert.equal(status.rows, 20);
  reader.close();
  ledger.close();
});

test("probe vectors and retried batches are kept per model, also in a checkpoint made before them", () => {
  const path = join(tempDir("ledger-probes"), "c.sqlite");
  versionOneCheckpoint(path);
  const ledger = Ledger.open(path);
  assert.equal(ledger.probes("m"), null);
  assert.equal(ledger.status("m").retriedBatches, 0);
  const vectors = { rows: 2, dim: 4, data: Float32Array.of(1, 0, 0, 0, 0.5, 0.5, -0.5, 0.25) };
  ledger.storeProbes("m", "set-a", vectors, "a:1");
  ledger.addRetried("m");
  ledger.addRetried("m");
  ledger.close();

  const reader = LedgerReader.openReadOnly(path);
  const stored = reader.probes("m");
  assert.ok(stored);
  assert.equal(stored.probeSet, "set-a");
  assert.equal(stored.server, "a:1");
  assert.equal(stored.vectors.rows, 2);
  assert.equal(stored.vectors.dim, 4);
  assert.deepEqual(Array.from(stored.vectors.data), Array.from(vectors.data));
  assert.equal(reader.status("m").retriedBatches, 2);
  reader.close();

  // Stored again (another set of probe texts): replaced, not added.
  const again = Ledger.open(path);
  again.storeProbes("m", "set-b", { rows: 1, dim: 4, data: Float32Array.of(0, 1, 0, 0) }, "b:1");
  assert.equal(again.probes("m")?.probeSet, "set-b");
  assert.equal(again.probes("m")?.vectors.rows, 1);
  again.close();
});
