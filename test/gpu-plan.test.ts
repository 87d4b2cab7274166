import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { LedgerReader } from "../src/checkpoint/ledger.js";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import { cliArgs } from "./cli-args.js";
import {
  corpusSlice,
  PYTHON,
  ROOT,
  runCli,
  tempDir,
  testEnv,
  withServer,
  writeLines,
} from "./helpers.js";

// Small enough that the byte cap cuts batches: 0.9 × this over lines of ~9 KB every other row, under the
// rows a message holds at the debug engine's 384 dimensions.
const MAX_MESSAGE_BYTES = 262_144;

test("the GPU benchmark's plan (bench.py plan) is the batches the CLI sends for the same input", async () => {
  const dir = tempDir("gpu-plan");
  // Every other line carries a long field beside its text: its line, not its text, is
  // what the byte cap counts.
  const lines = corpusSlice(240).map((line, i) => {
    const record = JSON.parse(line) as Record<string, unknown>;
    return JSON.stringify(i % 2 === 0 ? { ...record, note: "n".repeat(8000) } : record);
  });
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const out = join(dir, "out");
  const limits = { batch_size: 64, max_batch_tokens: 12_000 };
  const server = ["--engine", "debug", "--max-message-bytes", String(MAX_MESSAGE_BYTES)];
  await withServer(server, async ({ target }) => {
    const flags = { ...limits, servers: target, "no-dedupe": true as const, output_format: "npy" };
    const result = await runCli(cliArgs(input, out, "bge-small-en-v1.5", flags));
    assert.equal(result.code, 0, result.stderr);
  });
  const ledger = LedgerReader.openReadOnly(join(out, CHECKPOINT_FILE));
  const sent = ledger.batches().map((b) => Array.from(b.rows));
  ledger.close();

  const planned = spawnSync(
    PYTHON,
    [
      join(ROOT, "bench", "gpu", "bench.py"),
      "plan",
      "--engine",
      "debug",
      "--model-dir",
      join(ROOT, "models"),
      "--model-id",
      "BAAI/bge-small-en-v1.5",
      "--device",
      "cpu",
      "--input",
      input,
      "--batch-size",
      String(limits.batch_size),
      "--max-batch-tokens",
      String(limits.max_batch_tokens),
      "--max-message-bytes",
      String(MAX_MESSAGE_BYTES),
      "--node",
      process.execPath,
      "--plan-js",
      join(ROOT, "dist", "bench", "gpu", "plan.js"),
    ],
    { encoding: "utf8", env: testEnv() },
  );
  assert.equal(planned.status, 0, planned.stderr);
  const plan = JSON.parse(planned.stdout) as number[][];
  assert.deepEqual(plan, sent);

  // The byte cap cut at least one batch: with the next row it would have passed 0.9 × the cap.
  const bytes = lines.map((l) => Buffer.byteLength(l));
  const cap = Math.floor(MAX_MESSAGE_BYTES * 0.9);
  const order = plan.flat();
  let at = 0;
  const cutByBytes = plan.some((batch) => {
    at += batch.length;
    const next = order[at];
    const sum = batch.reduce((s, r) => s + (bytes[r] ?? 0), 0);
    return next !== undefined && batch.length < limits.batch_size && sum + (bytes[next] ?? 0) > cap;
  });
  assert.ok(cutByBytes, `no batch was cut by the byte cap: ${plan.map((b) => b.length)}`);
});
