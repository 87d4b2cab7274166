import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, runCli, tempDir, writeLines } from "./helpers.js";

test("every batch done but the matrix lost before finalizing: the model is embedded again", async () => {
  const dir = tempDir("run-lost-matrix");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(30));
  const out = join(dir, "out");
  const args = [...cliArgs(input, out, "all-MiniLM-L6-v2"), "--engine", "debug"];
  const first = await runCli(args);
  assert.equal(first.code, 0, first.stderr);
  const npy = join(out, "all-MiniLM-L6-v2.npy");
  const reference = readFileSync(npy);
  // A crash after the last batch was marked done, before finalizing; then the matrix went.
  const db = new Database(join(out, "embed-multi.checkpoint.sqlite"));
  db.prepare("UPDATE models SET finalized_at = NULL").run();
  db.close();
  for (const f of ["npy", "jsonl", "metadata.json"]) rmSync(join(out, `all-MiniLM-L6-v2.${f}`));

  const again = await runCli(args);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /is missing or damaged: embedding all-MiniLM-L6-v2 again/);
  assert.ok(readFileSync(npy).equals(reference));
});
