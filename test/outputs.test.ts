import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, inputDir, pythonJson, runCli, tempDir, writeLines } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
/** Not a multiple of 8: binary rows end in a padded byte. */
const DIM = "100";

/** Ids JSON.parse would change, then ordinary corpus lines. */
const ODD_LINES = [
  '{"paper_id": 12345678901234567890, "paragraph_index": 9007199254740993, "text": "Big ids must survive."}',
  '{"paper_id": 1e999, "paragraph_index": 0, "text": "An id past the largest double."}',
  '{"paper_id": 2212.10, "paragraph_index": 3, "text": "A decimal id with a trailing zero."}',
  '{"paper_id": "caf\\u00e9/\\"q\\"", "paragraph_index": 7, "text": "A string id with escapes."}',
];

function runArgs(input: string, out: string, ...extra: string[]): string[] {
  return [
    ...cliArgs(input, out, STEM, { engine: "debug", debug_dim: DIM, batch_size: 16 }),
    ...extra,
  ];
}

interface Report {
  expected_dtype: string;
  expected_shape: number[];
  npy_dtype: string;
  npy_equal: boolean;
  parquet_type: string;
  parquet_row_groups: number;
  parquet_equal: boolean;
  jsonl_equal: boolean;
  paragraph_indexes: string[];
  models: string[];
  paper_ids: string[];
  metadata_files: { file: string; format: string; dtype: string; shape: number[] }[];
  ranges_equal?: boolean;
  ranges_reproduce?: boolean;
}

test("every --output_dtype matches sentence-transformers' quantize_embeddings on the same float32 matrix, in .npy, Parquet and JSONL", async () => {
  const dir = tempDir("output-dtypes");
  const lines = [...ODD_LINES, ...corpusSlice(1200, 300)];
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const reference = join(dir, "float32");
  const plain = await runCli(runArgs(input, reference, "--output_format", "npy"));
  assert.equal(plain.code, 0, plain.stderr);

  for (const dtype of ["float32", "float16", "int8", "uint8", "binary", "ubinary"]) {
    const out = join(dir, dtype);
    const run = await runCli(
      runArgs(input, out, "--output_dtype", dtype, "--output_format", "npy,jsonl,parquet"),
    );
    assert.equal(run.code, 0, `${dtype}: ${run.stderr}`);
    const report = pythonJson<Report>("check_outputs.py", [
      join(reference, `${STEM}.npy`),
      out,
      STEM,
      dtype,
    ]);
    const width = dtype.endsWith("binary") ? Math.ceil(Number(DIM) / 8) : Number(DIM);
    assert.deepEqual(report.expected_shape, [lines.length, width], dtype);
    assert.ok(report.npy_equal, `${dtype}: .npy (${report.npy_dtype}) differs`);
    assert.ok(report.parquet_equal, `${dtype}: Parquet (${report.parquet_type}) differs`);
    assert.ok(report.jsonl_equal, `${dtype}: JSONL differs`);
    assert.match(
      report.parquet_type,
      new RegExp(`^fixed_size_list<item: [a-z0-9]+( not null)?>\\[${width}\\]$`),
    );
    assert.ok(report.parquet_row_groups >= 2, "Parquet is written in row groups as rows are read");
    assert.deepEqual(
      report.metadata_files.map((f) => [f.format, f.dtype, f.shape]),
      ["npy", "jsonl", "parquet"].map((format) => [
        format,
        report.expected_dtype,
        [lines.length, width],
      ]),
    );
    if (dtype === "int8" || dtype === "uint8") {
      assert.equal(report.ranges_equal, true, "metadata ranges are the per-dimension min and max");
      assert.equal(
        report.ranges_reproduce,
        true,
        "quantizing with the stored ranges gives the stored rows",
      );
    }
    // Ids: Parquet's paper_id is the text of the id; the index is exact.
    assert.deepEqual(report.paper_ids.slice(0, 4), [
      "12345678901234567890",
      "1e999",
      "2212.10",
      'café/"q"',
    ]);
    assert.deepEqual(report.paragraph_indexes.slice(0, 4), ["9007199254740993", "0", "3", "7"]);
    assert.deepEqual(report.models, [STEM]);
  }
});

test("ids are written to the JSONL exactly as in the input", async () => {
  const { input, out } = inputDir("output-ids", [...ODD_LINES, ...corpusSlice(5)]);
  const run = await runCli(runArgs(input, out, "--output_format", "jsonl"));
  assert.equal(run.code, 0, run.stderr);
  const written = readFileSync(join(out, `${STEM}.jsonl`), "utf8").split("\n");
  assert.ok(
    written[0]?.startsWith(
      '{"paper_id":12345678901234567890,"paragraph_index":9007199254740993,"embedding":[',
    ),
  );
  assert.ok(written[1]?.startsWith('{"paper_id":1e999,"paragraph_index":0,"embedding":['));
  assert.ok(written[2]?.startsWith('{"paper_id":2212.10,"paragraph_index":3,"embedding":['));
  assert.ok(written[3]?.startsWith('{"paper_id":"café/\\"q\\"","paragraph_index":7,"embedding":['));
});

test("a paragraph_index that is not an exact non-negative integer in digits is refused, naming the line", async () => {
  const dir = tempDir("output-bad-index");
  for (const [index, shown] of [
    ["1e2", /got 1e2/],
    ["5.0", /got 5\.0/],
    ["-0", /got -0/],
    ["99999999999999999999", /over the largest accepted \(9223372036854775807\)/],
  ] as const) {
    const input = writeLines(join(dir, "in.jsonl"), [
      ...corpusSlice(2),
      `{"paper_id": "p", "paragraph_index": ${index}, "text": "t"}`,
    ]);
    const run = await runCli(runArgs(input, join(dir, `out-${index}`)));
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /in\.jsonl:3: field "paragraph_index"/);
    assert.match(run.stderr, shown);
    assert.doesNotMatch(run.stderr, /this is a bug|\n\s+at /);
  }
});
