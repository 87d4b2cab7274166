import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, runCli, tempDir, testEnv, writeLines } from "./helpers.js";

const TOKEN = "verbose-test-token-5f2c";

test("--verbose logs each batch (server, rows, tokens, seconds) on both sides, never the token", async () => {
  const dir = tempDir("verbose");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(60));
  const flags = { engine: "debug", batch_size: 8, max_workers: 2 } as const;
  const env = testEnv({ EMBED_AUTH_TOKEN: TOKEN });

  const loud = await runCli(
    [...cliArgs(input, join(dir, "loud"), "all-MiniLM-L6-v2", flags), "--verbose"],
    env,
  );
  assert.equal(loud.code, 0, loud.stderr);
  const batches = loud.stderr
    .split("\n")
    .filter((l) =>
      /debug: .*batch \d+ .*: server 127\.0\.0\.1:\d+, \d+ rows, \d+ tokens, \d+\.\d{3} s, attempt 1$/.test(
        l,
      ),
    );
  // 60 rows in batches of at most 8: at least 8 batches, each logged once.
  assert.ok(batches.length >= 8, loud.stderr);
  const rows = batches.reduce((n, l) => n + Number(/, (\d+) rows,/.exec(l)?.[1]), 0);
  assert.equal(rows, 60, "every row in exactly one logged batch");
  assert.match(loud.stderr, /\[server\] .*rows/, "the embedded server logs its batches");
  assert.ok(!loud.stderr.includes(TOKEN), "the token is never printed");

  const quiet = await runCli(cliArgs(input, join(dir, "quiet"), "all-MiniLM-L6-v2", flags), env);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.doesNotMatch(quiet.stderr, /debug: |\[server\]/);
});
