import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { debugEmbedding } from "./debug-formula.js";
import { corpusSlice, readNpy, runCli, tempDir, writeLines } from "./helpers.js";

function texts(lines: string[], prefix = ""): string[] {
  return lines.map((l) => prefix + (JSON.parse(l) as { text: string }).text);
}

test("row i of every model's .npy is input line i, whatever the batching (debug engine)", async () => {
  const dir = tempDir("e2e-debug");
  const lines = corpusSlice(400, 1000);
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const out = join(dir, "out");
  const dim = 24;
  const args = [
    ...cliArgs(input, out, ["bge-small-en-v1.5", "e5-small-v2"]),
    "--engine",
    "debug",
    "--debug_dim",
    String(dim),
    "--batch_size",
    "7",
    "--max_batch_tokens",
    "900",
    "--max_workers",
    "3",
    "--checkpoint_interval",
    "50",
  ];
  const result = await runCli(args);
  assert.equal(result.code, 0, result.stderr);

  const cases = [
    { stem: "bge-small-en-v1.5", prefix: "", normalize: true },
    { stem: "e5-small-v2", prefix: "passage: ", normalize: false },
  ];
  for (const { stem, prefix, normalize } of cases) {
    // What made the vectors is recorded (issue 22), and said in the plan line.
    const meta = JSON.parse(readFileSync(join(out, `${stem}.metadata.json`), "utf8"));
    assert.equal(meta.engine, "debug");
    assert.equal(meta.precision, "float32");
    assert.match(
      result.stderr,
      new RegExp(`${stem}: .*padding efficiency.*, engine debug float32`),
    );
    const npy = readNpy(join(out, `${stem}.npy`));
    assert.equal(npy.rows, lines.length);
    assert.equal(npy.dim, dim);
    texts(lines, prefix).forEach((text, row) => {
      const expected = debugEmbedding(text, dim, normalize);
      for (let d = 0; d < dim; d++) {
        const got = npy.data[row * dim + d] ?? Number.NaN;
        const want = expected[d] ?? Number.NaN;
        if (normalize) assert.ok(Math.abs(got - want) < 1e-6, `${stem} row ${row} dim ${d}`);
        else assert.equal(got, want, `${stem} row ${row} dim ${d}`);
      }
    });
    const jsonl = readFileSync(join(out, `${stem}.jsonl`), "utf8")
      .trimEnd()
      .split("\n");
    assert.equal(jsonl.length, lines.length);
    const row17 = JSON.parse(jsonl[17] ?? "{}");
    const source = JSON.parse(lines[17] ?? "{}");
    assert.equal(row17.paper_id, source.paper_id);
    assert.equal(row17.paragraph_index, source.paragraph_index);
    assert.deepEqual(
      (row17.embedding as number[]).map(Math.fround),
      Array.from(npy.data.subarray(17 * dim, 18 * dim)),
      "the JSONL numbers read back as the same float32",
    );
  }

  // The same command again: nothing to do, nothing changed.
  const again = await runCli(args);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /nothing to do/);
});

test("--output_format npy writes no JSONL, jsonl writes no .npy", async () => {
  const dir = tempDir("e2e-format");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(30));
  for (const format of ["npy", "jsonl"]) {
    const out = join(dir, format);
    const result = await runCli([
      ...cliArgs(input, out, "all-MiniLM-L6-v2"),
      "--engine",
      "debug",
      "--output_format",
      format,
    ]);
    assert.equal(result.code, 0, result.stderr);
    const files = readdirSync(out).filter((f) => !f.startsWith("embed-multi.checkpoint"));
    // The row hashes go with every format: any finished output can be a --reuse source.
    const expected = [
      "all-MiniLM-L6-v2.metadata.json",
      "all-MiniLM-L6-v2.hashes",
      `all-MiniLM-L6-v2.${format}`,
    ].sort();
    assert.deepEqual(files.sort(), expected);
    assert.ok(!existsSync(join(out, "all-MiniLM-L6-v2.npy.partial")));
  }
});
