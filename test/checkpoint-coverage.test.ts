import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import { cliArgs } from "./cli-args.js";
import {
  checkpointRows,
  corpusSlice,
  inputDir,
  onlyErrorLine,
  runCli,
  sleep,
  spawnCli,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

function args(input: string, out: string, restart = false): string[] {
  return cliArgs(input, out, STEM, {
    ...(restart ? { restart: true as const } : {}),
    engine: "debug",
    batch_size: 8,
    max_workers: 1,
    checkpoint_interval: 8,
  });
}

/** Done and pending batches of the checkpoint in `out`; null while it cannot be read. */
function counts(out: string): { done: number; pending: number } | null {
  const [row] =
    checkpointRows<{ done: number | null; pending: number | null }>(
      out,
      "SELECT sum(status = 'done') AS done, sum(status = 'pending') AS pending FROM batches",
    ) ?? [];
  return row ? { done: row.done ?? 0, pending: row.pending ?? 0 } : null;
}

/** A run killed with batches done and batches still pending; its checkpoint then edited with `sql`. */
async function editedCheckpoint(
  name: string,
  sql: string,
): Promise<{ input: string; out: string }> {
  const { input, out } = inputDir(name, corpusSlice(1200));
  for (let attempt = 0; attempt < 5; attempt++) {
    const { child, done } = spawnCli(args(input, out, attempt > 0));
    let exited = false;
    void done.then(() => {
      exited = true;
    });
    for (;;) {
      const now = counts(out);
      if (exited || (now && now.done >= 2 && now.pending > 0)) break;
      await sleep(5);
    }
    child.kill("SIGKILL");
    await done;
    if ((counts(out)?.pending ?? 0) > 0) {
      const db = new Database(join(out, CHECKPOINT_FILE));
      db.exec(sql);
      db.close();
      return { input, out };
    }
  }
  throw new Error("no kill left pending batches");
}

for (const [what, sql, expected] of [
  [
    "pending batches marked done by hand",
    "UPDATE batches SET status = 'done' WHERE status = 'pending'",
    /never written/,
  ],
  ["pending batches deleted", "DELETE FROM batches WHERE status = 'pending'", /not covered/],
] as const) {
  test(`a checkpoint with ${what} is refused before finalizing, with no outputs`, async () => {
    const { input, out } = await editedCheckpoint("coverage", sql);
    const result = await runCli(args(input, out));
    assert.notEqual(result.code, 0, "no exit 0 with rows that were never embedded");
    assert.match(onlyErrorLine(result.stderr), expected);
    assert.equal(existsSync(join(out, `${STEM}.metadata.json`)), false, "no metadata");
  });
}
