import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  checkpointRows,
  corpusSlice,
  inputDirWithConfig,
  runCli,
  runVerify,
  sleep,
  startServer,
} from "./helpers.js";

const GOOD = "all-MiniLM-L6-v2";
const YAML = [
  "models:",
  "  other:",
  "    model_id: sentence-transformers/all-MiniLM-L6-v2",
  "    max_length: 8",
];
const FLAGS = { batch_size: 8, max_workers: 1, checkpoint_interval: 8, server_timeout: 3 };

/** Done and total batches per model in the checkpoint of `out`; empty while unreadable. */
function progressOf(out: string): Map<string, { done: number; total: number }> {
  const rows = checkpointRows<{ alias: string; done: number; total: number }>(
    out,
    "SELECT alias, sum(status = 'done') AS done, count(*) AS total FROM batches GROUP BY alias",
  );
  return new Map((rows ?? []).map((r) => [r.alias, { done: r.done, total: r.total }]));
}

test("a run that stops on a server gone for good first writes the outputs of the model it finished", async () => {
  const { input, out, config } = inputDirWithConfig("finished-models", corpusSlice(600), YAML);
  const server = await startServer(["--engine", "debug"]);
  const run = runCli(
    cliArgs(input, out, [GOOD, "other"], { ...FLAGS, config, servers: server.target }),
  );
  try {
    // The models' batches go in model order: the first is finished before the second starts.
    for (;;) {
      const now = progressOf(out);
      const good = now.get(GOOD);
      const other = now.get("other");
      if (good && other && good.done === good.total && other.done > 0) break;
      await sleep(5);
    }
  } finally {
    await server.stop();
  }
  const result = await run;
  assert.notEqual(result.code, 0, "the run stops: the server is gone");
  assert.ok(existsSync(join(out, `${GOOD}.metadata.json`)), result.stderr);
  assert.equal(existsSync(join(out, "other.metadata.json")), false);
  const verified = await runVerify(["--output_dir", out]);
  assert.match(verified.stdout, new RegExp(`ok +${GOOD}: `), verified.stdout);
});

test("a run with a subset of the checkpoint's models finishes those", async () => {
  const { input, out, config } = inputDirWithConfig("subset-models", corpusSlice(60), YAML);
  const first = await runCli(
    cliArgs(input, out, [GOOD, "other"], { config, engine: "debug", output_format: "npy" }),
  );
  assert.equal(first.code, 0, first.stderr);
  const again = await runCli(
    cliArgs(input, out, "other", { config, engine: "debug", output_format: "npy,jsonl" }),
  );
  assert.equal(again.code, 0, again.stderr);
  assert.ok(existsSync(join(out, "other.jsonl")));
});
