import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, runCli, runVerify, tempDir } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

test("a JSONL file as Windows tools write it (UTF-8 byte-order mark, CRLF) is read with exact ids and texts", async () => {
  const dir = tempDir("bom-crlf");
  const lines = corpusSlice(12);
  const input = join(dir, "windows.jsonl");
  // A byte-order mark, CRLF line ends, and a last line without one.
  writeFileSync(input, `\ufeff${lines.join("\r\n")}`, "utf8");
  const out = join(dir, "out");
  const result = await runCli(cliArgs(input, out, STEM, { engine: "debug", batch_size: 4 }));
  assert.equal(result.code, 0, result.stderr);

  const written = readFileSync(join(out, `${STEM}.jsonl`), "utf8")
    .trimEnd()
    .split("\n");
  assert.equal(written.length, lines.length);
  for (const [i, line] of lines.entries()) {
    const source = JSON.parse(line) as { paper_id: string; paragraph_index: number };
    const row = JSON.parse(written[i] ?? "{}") as { paper_id: string; paragraph_index: number };
    assert.equal(row.paper_id, source.paper_id, `row ${i}: the id is exact (no mark, no CR)`);
    assert.equal(row.paragraph_index, source.paragraph_index);
  }
  // Same texts, same vectors: a run over the plain file gives the same matrix.
  const plain = join(dir, "plain.jsonl");
  writeFileSync(plain, `${lines.join("\n")}\n`);
  const plainOut = join(dir, "plain-out");
  const again = await runCli(cliArgs(plain, plainOut, STEM, { engine: "debug", batch_size: 4 }));
  assert.equal(again.code, 0, again.stderr);
  assert.ok(
    readFileSync(join(out, `${STEM}.npy`)).equals(readFileSync(join(plainOut, `${STEM}.npy`))),
    "the texts embedded are exactly the plain file's",
  );
  const verified = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
});
