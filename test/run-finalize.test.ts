import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { RowReader } from "../src/input/rows.js";
import { finalizeAll, summarize } from "../src/run/finalize.js";
import { openMatrix } from "../src/run/prepare.js";
import { tempDir } from "./helpers.js";
import { plannedCheckpoint, recordingProgress } from "./phase-helpers.js";

test("a model is finalized only when every batch is done; then its outputs and summary are written", async () => {
  const planned = await plannedCheckpoint(tempDir("finalize"), 12);
  const { ledger, models, config, corpus } = planned;
  const progress = recordingProgress();
  const run = openMatrix(planned.run, corpus.rows, ledger, progress);
  const reader = new RowReader(corpus);
  try {
    ledger.markDone([
      { alias: "org/m", batchNo: 0, attempts: 1, server: "a", tokens: 24, truncated: 1 },
    ]);
    await assert.rejects(
      finalizeAll({ config, ledger, reader, corpus, progress }, [run], 1),
      /org\/m has 1 batches left/,
    );
    ledger.markDone([
      { alias: "org/m", batchNo: 1, attempts: 1, server: "a", tokens: 12, truncated: 0 },
    ]);
    // The rows the batches carried: the finalize refuses a row still zero.
    const rows = Uint32Array.from({ length: 12 }, (_, i) => i);
    run.matrix.writeRows(rows, Buffer.from(new Float32Array(12 * run.matrix.dim).fill(0.5).buffer));
    run.rowsThisRun = 12;
    run.window = { first: 1000, last: 3500 };
    await finalizeAll({ config, ledger, reader, corpus, progress }, [run], 1);
    assert.equal(run.status.finalized, true);
    assert.ok(existsSync(run.paths.npy) && existsSync(run.paths.jsonl));
    const metadata = JSON.parse(readFileSync(run.paths.metadata, "utf8")) as Record<
      string,
      unknown
    >;
    assert.equal(metadata.num_paragraphs, 12);
    assert.equal(metadata.revision, "r1");

    const summary = summarize(models, config, false);
    assert.deepEqual(summary.models[0], {
      alias: "org/m",
      rows: 12,
      rowsThisRun: 12,
      reused: 0,
      reusedFrom: [],
      deduplicated: 0,
      seconds: 2.5,
      truncated: 1,
      paddingEfficiency: 1,
      outputs: [run.paths.metadata],
      quantizeFidelity: null,
    });
    assert.equal(summary.nothingToDo, false);
  } finally {
    run.matrix.close();
    reader.close();
    ledger.close();
  }
});
