import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ledgerModelOf } from "../src/checkpoint/model-row.js";
import { planBatches } from "../src/plan/planner.js";
import { isPlanned } from "../src/run/model-run.js";
import {
  CHECKPOINT_FILE,
  openCheckpoint,
  openMatrix,
  prepareOutputDir,
} from "../src/run/prepare.js";
import { tempDir } from "./helpers.js";
import { MODEL_INFO, phaseSetup, plannedCheckpoint, recordingProgress } from "./phase-helpers.js";

test("a new checkpoint gives one unplanned record per model; --restart removes the files it made", async () => {
  const dir = tempDir("prepare-new");
  const { config, corpus } = await phaseSetup(dir, 20);
  prepareOutputDir(config.outputDir);
  const first = openCheckpoint(config, corpus, recordingProgress());
  assert.equal(first.existed, false);
  assert.equal(first.models.length, 1);
  const [run] = first.models;
  assert.ok(run);
  assert.equal(run.stored, null);
  assert.equal(run.status.planned, false);
  first.ledger.addModel(
    ledgerModelOf(run.model, MODEL_INFO, 0, { batchSize: 8, maxBatchTokens: 0 }),
    planBatches(new Uint32Array(20).fill(3), { batchSize: 8, maxBatchTokens: 0 }).batches,
  );
  first.ledger.close();
  // The checkpoint's working copy is this tool's; an .npy no metadata lists is not.
  writeFileSync(run.paths.workingNpy, "old");
  writeFileSync(run.paths.npy, "not ours");

  const again = openCheckpoint(config, corpus, recordingProgress());
  assert.equal(again.existed, true);
  assert.equal(again.models[0]?.status.batches, 3);
  assert.equal(again.models[0]?.stored?.revision, "r1");
  again.ledger.close();

  const restarted = openCheckpoint({ ...config, restart: true }, corpus, recordingProgress());
  assert.equal(restarted.existed, false);
  assert.equal(restarted.models[0]?.status.planned, false);
  assert.equal(existsSync(run.paths.workingNpy), false, "--restart removes the working copy");
  assert.equal(existsSync(run.paths.npy), true, "and keeps a file no metadata lists");
  restarted.ledger.close();
});

test("a finished model whose outputs are gone is embedded again; a lost matrix redoes its batches", async () => {
  const { ledger, config, corpus, run } = await plannedCheckpoint(tempDir("prepare-lost"), 20);
  ledger.markDone([
    { alias: run.model.alias, batchNo: 0, attempts: 1, server: "a", tokens: 1, truncated: 0 },
  ]);
  ledger.markFinalized(run.model.alias);
  ledger.close();

  const progress = recordingProgress();
  const reopened = openCheckpoint(config, corpus, progress);
  const [lost] = reopened.models;
  assert.ok(lost && isPlanned(lost), "the stored model stays");
  assert.match(
    progress.notes.join("\n"),
    /outputs of org\/m \(.*\) are missing and cannot be derived \(its metadata is missing or unreadable\): embedding it again/,
  );
  assert.equal(lost.status.finalized, false);
  assert.equal(lost.status.doneBatches, 0, "its batches are pending again");

  reopened.ledger.markDone([
    { alias: "org/m", batchNo: 1, attempts: 1, server: "a", tokens: 1, truncated: 0 },
  ]);
  lost.status = reopened.ledger.status("org/m");
  rmSync(lost.paths.workingNpy, { force: true });
  const fresh = openMatrix(lost, corpus.rows, reopened.ledger, progress);
  assert.equal(fresh.matrix.rows, 20, "a fresh matrix");
  assert.match(progress.notes.at(-1) ?? "", /is missing or damaged: embedding org\/m again/);
  assert.equal(lost.status.doneBatches, 0);
  fresh.matrix.close();
  reopened.ledger.close();
});

test("a changed input is refused and the checkpoint is left closed and intact", async () => {
  const dir = tempDir("prepare-changed");
  const { config, corpus } = await phaseSetup(dir, 20);
  prepareOutputDir(config.outputDir);
  openCheckpoint(config, corpus, recordingProgress()).ledger.close();
  assert.throws(
    () => openCheckpoint(config, { ...corpus, size: corpus.size + 1 }, recordingProgress()),
    /the input file changed since the checkpoint was made/,
  );
  assert.ok(existsSync(join(config.outputDir, CHECKPOINT_FILE)));
  openCheckpoint(config, corpus, recordingProgress()).ledger.close();
});
