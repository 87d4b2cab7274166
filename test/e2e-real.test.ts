import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { compareDirect, corpusSlice, inputDir, inputDirWithConfig, runCli } from "./helpers.js";

const METADATA_FIELDS = [
  "model_name",
  "embedding_dim",
  "num_paragraphs",
  "processing_time",
  "batch_size",
  "dtype",
  "normalize",
  "prefix",
  "max_length",
  "truncated_count",
  "total_tokens",
  "input_sha256",
  "servers",
  "tool_version",
  "padding_efficiency",
  "resumed_count",
  "retried_batches",
];

test("all-MiniLM-L6-v2 through the embedded server equals a direct encode, in input order", async () => {
  // Paragraphs of several lengths from two papers, some over 256 tokens (truncated).
  const { input, out } = inputDir("e2e-real", corpusSlice(48, 100));
  const result = await runCli(
    cliArgs(input, out, "all-MiniLM-L6-v2", { batch_size: 8, threads: 2 }),
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /all-MiniLM-L6-v2\s+48\s+48/);

  const cmp = compareDirect(input, join(out, "all-MiniLM-L6-v2.npy"), {
    jsonl: join(out, "all-MiniLM-L6-v2.jsonl"),
  });
  assert.deepEqual(cmp.shape, [48, 384]);
  assert.equal(cmp.dtype, "float32");
  assert.ok(cmp.min_cos >= 0.9999, `lowest cosine with a direct encode: ${cmp.min_cos}`);
  assert.equal(cmp.jsonl_rows, 48);
  assert.equal(cmp.jsonl_identical, true, "JSONL vectors equal the .npy rows");
  assert.equal(cmp.jsonl_order, true, "JSONL in input order");
  assert.deepEqual(cmp.jsonl_models, ["all-MiniLM-L6-v2"]);

  const meta = JSON.parse(readFileSync(join(out, "all-MiniLM-L6-v2.metadata.json"), "utf8"));
  for (const field of METADATA_FIELDS) assert.ok(field in meta, `metadata has ${field}`);
  assert.equal(meta.model_name, "sentence-transformers/all-MiniLM-L6-v2");
  assert.equal(meta.embedding_dim, 384);
  assert.equal(meta.num_paragraphs, 48);
  assert.equal(meta.batch_size, 8);
  assert.equal(meta.max_length, 256);
  assert.equal(meta.dtype, "float32");
  // With nothing set, a CPU gets the fast engine where it passes its check at load (issue 22).
  assert.equal(meta.engine, "openvino", "the embedded default runs OpenVINO on this CPU");
  assert.equal(meta.precision, "float32");
  assert.ok(meta.total_tokens > 48 * 10);
  assert.ok(meta.truncated_count >= 1, "some long paragraphs were truncated at 256 tokens");
  assert.equal(meta.servers.length, 1);
  assert.match(meta.servers[0], /^127\.0\.0\.1:\d+$/);
  const leftovers = readdirSync(out).filter((f) => f.endsWith(".partial"));
  assert.deepEqual(leftovers, []);
});

test("two models in one run: a config-file e5-style entry gets the passage: prefix", async () => {
  const { input, out, config } = inputDirWithConfig("e2e-two", corpusSlice(24, 300), [
    "models:",
    "  e5-style-minilm:",
    "    model_name: sentence-transformers/all-MiniLM-L6-v2",
    '    prefix: "passage: "',
  ]);
  const models = ["all-MiniLM-L6-v2", "e5-style-minilm"];
  const result = await runCli(cliArgs(input, out, models, { config, threads: 2 }));
  assert.equal(result.code, 0, result.stderr);
  for (const stem of ["all-MiniLM-L6-v2", "e5-style-minilm"]) {
    for (const ext of [".npy", ".jsonl", ".metadata.json"]) {
      assert.ok(existsSync(join(out, stem + ext)), `${stem}${ext}`);
    }
  }
  const prefixed = compareDirect(input, join(out, "e5-style-minilm.npy"), {
    prefix: "passage: ",
    "other-npy": join(out, "all-MiniLM-L6-v2.npy"),
  });
  assert.ok(
    prefixed.min_cos >= 0.9999,
    `prefixed vs direct "passage: " + text: ${prefixed.min_cos}`,
  );
  assert.ok((prefixed.max_cos_other ?? 1) < 0.9999, "prefixed vectors differ from the plain ones");
  const meta = JSON.parse(readFileSync(join(out, "e5-style-minilm.metadata.json"), "utf8"));
  assert.equal(meta.prefix, "passage: ");
});

test("truncate_dim 128, normalize off (--truncate_dim) and on (a config entry), equals sentence-transformers' truncate_dim", async () => {
  const { input, out, config } = inputDirWithConfig("e2e-matryoshka", corpusSlice(32, 200), [
    "models:",
    "  minilm-128-unit:",
    "    model_name: sentence-transformers/all-MiniLM-L6-v2",
    "    normalize_embeddings: true",
    "    truncate_dim: 128",
  ]);
  const models = ["all-MiniLM-L6-v2", "minilm-128-unit"];
  const result = await runCli(
    cliArgs(input, out, models, { config, "truncate-dim": 128, threads: 2 }),
  );
  assert.equal(result.code, 0, result.stderr);
  for (const [stem, normalize] of [
    ["all-MiniLM-L6-v2", false],
    ["minilm-128-unit", true],
  ] as const) {
    const cmp = compareDirect(input, join(out, `${stem}.npy`), {
      jsonl: join(out, `${stem}.jsonl`),
      "truncate-dim": 128,
      ...(normalize ? { normalize: true as const } : {}),
    });
    assert.deepEqual(cmp.shape, [32, 128], stem);
    assert.ok(cmp.min_cos >= 0.999999, `${stem}: lowest cosine ${cmp.min_cos}`);
    assert.ok(
      cmp.direct_norm_max_diff <= 1e-5,
      `${stem}: norms differ by ${cmp.direct_norm_max_diff}`,
    );
    if (normalize) {
      assert.ok(Math.abs(cmp.norm_min - 1) < 1e-5 && Math.abs(cmp.norm_max - 1) < 1e-5, stem);
    } else {
      // The model's own Normalize module runs before the cut: 128 of 384 unit dims are shorter.
      assert.ok(cmp.norm_max < 0.99, `${stem}: norms up to ${cmp.norm_max}`);
    }
    assert.equal(cmp.jsonl_identical, true, `${stem}: JSONL vectors equal the .npy rows`);
    const meta = JSON.parse(readFileSync(join(out, `${stem}.metadata.json`), "utf8"));
    assert.equal(meta.truncate_dim, 128);
    assert.equal(meta.embedding_dim, 128);
    assert.equal(meta.normalize, normalize);
    assert.deepEqual(
      meta.output_files.find((f: { format: string }) => f.format === "npy")?.shape,
      [32, 128],
    );
  }
});
