import assert from "node:assert/strict";
import { test } from "node:test";
import type { TokenCounter } from "../src/backend/types.js";
import { RowReader } from "../src/input/rows.js";
import { batchLimits } from "../src/plan/limits.js";
import { planModels, storedPlanNote } from "../src/run/plan.js";
import { openCheckpoint, prepareOutputDir } from "../src/run/prepare.js";
import { tempDir } from "./helpers.js";
import { MemoryBackend } from "./memory-backend.js";
import { fakeSession, MODEL_INFO, phaseSetup, recordingProgress } from "./phase-helpers.js";

test("batch limits: the smallest of the user's, the server's and one answer message's", () => {
  const defaultCap = 64 * 1024 * 1024;
  assert.deepEqual(batchLimits({ batchSize: 32, maxBatchTokens: 0 }, undefined, 384), {
    batchSize: 32,
    maxBatchTokens: 0,
    maxBatchBytes: Math.floor(defaultCap * 0.9),
    maxMessageBytes: defaultCap,
  });
  const server = { maxBatchSize: 16, maxBatchTokens: 4096, maxMessageBytes: 0 };
  assert.deepEqual(batchLimits({ batchSize: 32, maxBatchTokens: 8192 }, server, 384), {
    batchSize: 16,
    maxBatchTokens: 4096,
    maxBatchBytes: Math.floor(defaultCap * 0.9),
    maxMessageBytes: defaultCap,
  });
  assert.deepEqual(
    batchLimits({ batchSize: 32, maxBatchTokens: 0 }, server, 384).maxBatchTokens,
    4096,
  );
  // 1 MiB × 0.9 / (1024 × 4 bytes) = 230 rows fit in one answer.
  const small = { maxBatchSize: 0, maxBatchTokens: 0, maxMessageBytes: 1 << 20 };
  assert.equal(batchLimits({ batchSize: 1000, maxBatchTokens: 0 }, small, 1024).batchSize, 230);
});

/** Counts a token per word: a tokenizer stand-in; `null` plays a server without CountTokens. */
function wordCounter(calls: number[], unsupported = false): TokenCounter {
  return {
    countTokens: async (_key, texts) => {
      calls.push(texts.length);
      return unsupported ? null : { counts: texts.map((t) => t.split(/\s+/).length) };
    },
  };
}

/** A checkpoint with org/m not planned yet, a session that loaded it, and a row reader. */
async function unplanned(name: string, rows: number) {
  const { config, corpus } = await phaseSetup(tempDir(name), rows);
  prepareOutputDir(config.outputDir);
  const { ledger, models } = openCheckpoint(config, corpus, recordingProgress());
  const connection = new MemoryBackend("127.0.0.1:9");
  const reader = new RowReader(corpus);
  const close = () => {
    reader.close();
    ledger.close();
    connection.close();
  };
  return { config, corpus, ledger, models, connection, reader, close };
}

test("new models are measured, planned and stored; stored ones are checked against the server", async () => {
  const { config, corpus, ledger, models, connection, reader, close } = await unplanned("plan", 40);
  const session = fakeSession(connection);
  const progress = recordingProgress();
  const state = (c: typeof config) => ({ config: c, ledger, reader, corpus, progress });
  try {
    const calls: number[] = [];
    await planModels(state(config), models, session, wordCounter(calls));
    const [run] = models;
    assert.ok(run?.stored);
    assert.deepEqual(calls, [40]);
    assert.equal(run.server, MODEL_INFO);
    // The server's max batch size (16) caps the default 32.
    assert.equal(run.status.batches, 3);
    assert.equal(run.status.rows, 40);
    assert.match(
      progress.notes[0] ?? "",
      /org\/m: 40 of 40 paragraphs go to the servers, 3 batches of up to 16 paragraphs, padding efficiency/,
    );
    assert.deepEqual(ledger.models()[0], run.stored);
    // The limits the plan was cut with, after the server's cap: what the metadata reports.
    assert.deepEqual(run.stored.plannedWith, { batchSize: 16, maxBatchTokens: 16384 });

    // Planned already: not measured again, but a server with other weights is refused.
    await planModels(state(config), models, session, wordCounter(calls));
    assert.deepEqual(calls, [40]);
    assert.equal(progress.notes.length, 1, "the same limits: nothing to say");
    // Given on the command line (a resume that does not give them hears nothing).
    const other = { ...config, batchSize: 4, maxBatchTokens: 0, planLimitsGiven: true };
    await planModels(state(other), models, session, wordCounter(calls));
    assert.deepEqual(progress.notes.slice(1), [
      "--batch_size 4 --max_batch_tokens 0 not used: the stored plan wins: batches of up to 16 paragraphs / 16384 tokens, from the first run; --restart to plan again",
    ]);
    assert.equal(run.status.batches, 3, "the stored plan stays");
    const changed = fakeSession(connection, { ...MODEL_INFO, revision: "r2" });
    await assert.rejects(
      planModels(state(config), models, changed, wordCounter(calls)),
      /model "org\/m" on the server differs from the one in the checkpoint \(revision "r1" → "r2"\)/,
    );
  } finally {
    close();
  }
});

test("a server that cannot count tokens leaves the estimate from characters", async () => {
  const { config, corpus, ledger, models, connection, reader, close } = await unplanned(
    "plan-estimate",
    10,
  );
  const progress = recordingProgress();
  try {
    await planModels(
      { config, ledger, reader, corpus, progress },
      models,
      fakeSession(connection),
      wordCounter([], true),
    );
    assert.match(progress.notes[0] ?? "", /\(lengths estimated\)$/);
    assert.equal(models[0]?.status.rows, 10);
  } finally {
    close();
  }
});

test("the stored-plan note names each model's limits, and a plan with no token budget", () => {
  assert.equal(
    storedPlanNote({ batchSize: 64, maxBatchTokens: 500 }, [
      { alias: "a", plan: { batchSize: 32, maxBatchTokens: 0 } },
      { alias: "b", plan: { batchSize: 16, maxBatchTokens: 8192 } },
    ]),
    "--batch_size 64 --max_batch_tokens 500 not used: the stored plan wins: batches of up to 32 paragraphs / no token budget (a), 16 paragraphs / 8192 tokens (b), from the first run; --restart to plan again",
  );
});
