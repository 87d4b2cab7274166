import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import {
  corpusSlice,
  multiServerArgs,
  onlyErrorLine,
  runCli,
  startServer,
  tempDir,
  testEnv,
  writeLines,
} from "./helpers.js";

// Issue 16 item 9: probe vectors the checkpoint holds corrupt are the
// checkpoint's fault, said at once, not a server that "could not embed the
// probes" waited on for a minute.

test("a corrupt probe blob in the checkpoint stops a resume at once, naming the checkpoint", async () => {
  const dir = tempDir("probe-corrupt");
  const lines = corpusSlice(64, 5200);
  lines[40] = JSON.stringify({ paper_id: "p", paragraph_index: 0, text: "zz-poison-zz here" });
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const debug = ["--engine", "debug", "--threads", "1"];
  const poisoned = await startServer(debug, testEnv(), 0, { poison: "zz-poison-zz" });
  const good = await startServer(debug);
  try {
    const out = join(dir, "out");
    const stopped = await runCli(
      multiServerArgs(input, out, [poisoned.target], { max_attempts: 1 }),
    );
    assert.notEqual(stopped.code, 0, "the first run stops partway, probes stored");
    const db = new Database(join(out, CHECKPOINT_FILE));
    const blobs: Array<[string, Buffer]> = [
      ["a length not a multiple of 4", Buffer.alloc(7)],
      ["too few rows", Buffer.alloc(4 * 384)],
    ];
    for (const [what, blob] of blobs) {
      db.prepare("UPDATE probes SET vectors = ?").run(blob);
      const resumed = await runCli(multiServerArgs(input, out, [good.target]));
      assert.notEqual(resumed.code, 0, what);
      const error = onlyErrorLine(resumed.stderr);
      assert.match(error, /checkpoint/, what);
      assert.match(error, /probe vectors/, what);
      assert.match(error, new RegExp(CHECKPOINT_FILE.replace(".", "\\.")), what);
      assert.doesNotMatch(resumed.stderr, /could not embed the probes|trying it again/, what);
    }
    db.close();
  } finally {
    await poisoned.stop();
    await good.stop();
  }
});
