import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { compareDirect, corpusSlice, inputDir, ROOT, runCli } from "./helpers.js";

// Two real models of different families in one run (issue 22): BERT with 384
// dimensions and MPNet with 768, each compared row by row with a direct
// SentenceTransformer.encode. scripts/setup-python.sh places all-mpnet-base-v2;
// without it this test fails (it is never skipped).
const MODELS = [
  { alias: "all-MiniLM-L6-v2", id: "sentence-transformers/all-MiniLM-L6-v2", dim: 384 },
  { alias: "all-mpnet-base-v2", id: "sentence-transformers/all-mpnet-base-v2", dim: 768 },
];

test("all-MiniLM-L6-v2 and all-mpnet-base-v2 in one run each equal a direct encode, row by row", async () => {
  const modelDir = process.env.EMBED_MODEL_DIR ?? join(ROOT, "models");
  for (const { id } of MODELS) {
    assert.ok(
      existsSync(join(modelDir, id, "config.json")),
      `${id} is not in ${modelDir} (scripts/setup-python.sh places it)`,
    );
  }
  // Paragraphs of several lengths, some over the models' max_length (truncated).
  const rows = 40;
  const { input, out } = inputDir("two-models-real", corpusSlice(rows, 300));
  const result = await runCli(
    cliArgs(
      input,
      out,
      MODELS.map((m) => m.alias),
      { batch_size: 8, threads: 2, output_format: "npy" },
    ),
  );
  assert.equal(result.code, 0, result.stderr);

  for (const { alias, id, dim } of MODELS) {
    assert.match(result.stdout, new RegExp(`${alias}\\s+${rows}\\s+${rows}`));
    const cmp = compareDirect(input, join(out, `${alias}.npy`), { model: id });
    assert.deepEqual(cmp.shape, [rows, dim], alias);
    assert.equal(cmp.dtype, "float32");
    assert.ok(cmp.min_cos >= 0.9999, `${alias}: lowest cosine with a direct encode ${cmp.min_cos}`);

    const meta = JSON.parse(readFileSync(join(out, `${alias}.metadata.json`), "utf8"));
    assert.equal(meta.model_name, id);
    assert.equal(meta.embedding_dim, dim);
    assert.equal(meta.num_paragraphs, rows);
    // The real engine that made the vectors (the CPU fast path, or torch where it fell back).
    assert.equal(typeof meta.engine, "string", `${alias}: engine ${meta.engine}`);
    assert.notEqual(meta.engine, "debug");
    assert.match(meta.engine, /^(torch|openvino)/, `${alias}: engine ${meta.engine}`);
    assert.equal(meta.precision, "float32", `${alias}: precision`);
  }
});
