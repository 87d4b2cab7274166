import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, inputDir, pythonJson, runCli, serverForTests } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

const server = serverForTests(["--threads", "2"]);

interface Report {
  npy_equal: boolean;
  parquet_equal: boolean;
  jsonl_equal: boolean;
  parquet_type: string;
  ranges_equal: boolean;
  ranges_reproduce: boolean;
  paper_ids: string[];
}

test("the real model end to end: int8 .npy, JSONL and Parquet equal quantize_embeddings of its float32 run", async () => {
  const { dir, input } = inputDir("outputs-real", [
    '{"paper_id": 12345678901234567890, "paragraph_index": 9007199254740993, "text": "Quantized embeddings keep most of the retrieval quality."}',
    ...corpusSlice(60, 50),
  ]);
  const args = (out: string, flags: Readonly<Record<string, string>>) =>
    cliArgs(input, out, STEM, { servers: server.target, ...flags });
  const floats = await runCli(args(join(dir, "f32"), { output_format: "npy" }));
  assert.equal(floats.code, 0, floats.stderr);
  const out = join(dir, "int8");
  const int8 = await runCli(
    args(out, { output_dtype: "int8", output_format: "npy,jsonl,parquet" }),
  );
  assert.equal(int8.code, 0, int8.stderr);
  const report = pythonJson<Report>("check_outputs.py", [
    join(dir, "f32", `${STEM}.npy`),
    out,
    STEM,
    "int8",
  ]);
  assert.ok(report.npy_equal, "the .npy is quantize_embeddings(float32, 'int8')");
  assert.ok(report.parquet_equal, "every Parquet row equals the .npy");
  assert.ok(report.jsonl_equal, "every JSONL row equals the .npy");
  assert.equal(report.parquet_type, "fixed_size_list<item: int8 not null>[384]");
  assert.ok(
    report.ranges_equal && report.ranges_reproduce,
    "the metadata ranges quantize the same way",
  );
  assert.equal(report.paper_ids[0], "12345678901234567890");
});
