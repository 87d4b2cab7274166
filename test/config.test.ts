import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { safeFileStem } from "../src/config/registry.js";
import { buildRunConfig } from "../src/config.js";
import { ConfigError } from "../src/errors.js";
import { tempDir } from "./helpers.js";

const base = { input_file: "in.jsonl", output_dir: "out" };

test("registry models carry their settings; others are custom Hugging Face ids", () => {
  const config = buildRunConfig(
    { ...base, models: ["bge-large-en-v1.5", "e5-small-v2,intfloat/some-model"] },
    {},
  );
  const [bge, e5, custom] = config.models;
  assert.equal(bge?.modelId, "BAAI/bge-large-en-v1.5");
  assert.equal(bge?.normalize, true);
  assert.equal(e5?.prefix, "passage: ");
  assert.equal(custom?.modelId, "intfloat/some-model");
  assert.equal(custom?.fileStem, "intfloat__some-model");
  assert.equal(config.batchSize, 32);
  assert.equal(config.maxWorkers, 4);
  assert.equal(config.checkpointInterval, 1000);
  assert.deepEqual(config.outputFormat, ["npy", "jsonl"]);
  assert.equal(config.outputDtype, "float32");
});

test("a config file adds models and defaults; flags win over it", () => {
  const dir = tempDir("config");
  const yaml = join(dir, "c.yaml");
  writeFileSync(
    yaml,
    [
      "models:",
      "  e5-mini:",
      "    model_name: sentence-transformers/all-MiniLM-L6-v2",
      '    prefix: "passage: "',
      "    normalize_embeddings: true",
      "defaults:",
      "  batch_size: 64",
      "  max_workers: 2",
    ].join("\n"),
  );
  const config = buildRunConfig({ ...base, config: yaml, models: ["e5-mini"], max_workers: 3 }, {});
  assert.equal(config.models[0]?.prefix, "passage: ");
  assert.equal(config.models[0]?.normalize, true);
  assert.equal(config.batchSize, 64);
  assert.equal(config.maxWorkers, 3);
  const json = join(dir, "c.json");
  writeFileSync(json, JSON.stringify({ models: { x: { model_name: "a/b", max_length: -1 } } }));
  assert.throws(() => buildRunConfig({ ...base, config: json, models: ["x"] }, {}), /max_length/);
});

test("model names and file names cannot escape their folders", () => {
  for (const bad of ["../etc/passwd", "a/../../b", "/abs/path", "a/b/c", ".hidden", "a b"]) {
    assert.throws(() => buildRunConfig({ ...base, models: [bad] }, {}), ConfigError, bad);
  }
  assert.ok(!safeFileStem("../../x").includes("/"));
  assert.ok(!safeFileStem("..").startsWith("."));
});

test("bad flag values are one-line configuration errors", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ models: ["m/x"], batch_size: 0 }, /--batch_size must be a positive integer/],
    [{ models: ["m/x"], output_format: "csv" }, /--output_format/],
    [{ models: ["m/x"], dtype: "int8" }, /--dtype/],
    [{ models: ["m/x"], servers: ["nohost"] }, /not host:port/],
    [{ models: [] }, /missing --models/],
    [{ models: ["m/x", "m/x"] }, /listed twice/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(() => buildRunConfig({ ...base, ...args }, {}), pattern);
  }
  assert.throws(() => buildRunConfig({ models: ["m/x"] }, {}), /missing --input_file/);
});

test("--output_format takes a list (both = npy,jsonl) and --output_dtype one of six dtypes", () => {
  const build = (extra: Record<string, string>) =>
    buildRunConfig({ ...base, models: ["all-MiniLM-L6-v2"], ...extra }, {});
  assert.deepEqual(build({ output_format: "parquet,npy" }).outputFormat, ["npy", "parquet"]);
  assert.deepEqual(build({ output_format: "both,parquet" }).outputFormat, [
    "npy",
    "jsonl",
    "parquet",
  ]);
  assert.deepEqual(build({ output_format: "jsonl" }).outputFormat, ["jsonl"]);
  assert.throws(() => build({ output_format: "npy,csv" }), ConfigError);
  assert.throws(() => build({ output_format: "," }), ConfigError);
  assert.equal(build({ output_dtype: "ubinary" }).outputDtype, "ubinary");
  assert.throws(
    () => build({ output_dtype: "int4" }),
    /--output_dtype must be one of float32, float16, int8, uint8, binary, ubinary/,
  );
});

test("a 5000-character model id is refused at once, in a message of sensible length", () => {
  for (const id of ["a".repeat(5000), `org/${"b".repeat(97)}`]) {
    assert.throws(
      () => buildRunConfig({ ...base, models: [id] }, {}),
      (err: Error) =>
        err instanceof ConfigError &&
        /at most 96 characters a part/.test(err.message) &&
        err.message.length < 400,
    );
  }
  assert.doesNotThrow(() => buildRunConfig({ ...base, models: [`org/${"c".repeat(96)}`] }, {}));
});

test("--probe_tolerance is a cosine above 0 and at most 1, 0.999 unless given", () => {
  const models = ["m/x"];
  assert.equal(buildRunConfig({ ...base, models }, {}).probeTolerance, 0.999);
  assert.equal(buildRunConfig({ ...base, models, probe_tolerance: 0.99 }, {}).probeTolerance, 0.99);
  assert.equal(buildRunConfig({ ...base, models, probe_tolerance: 1 }, {}).probeTolerance, 1);
  for (const bad of [0, -0.5, 1.5, Number.NaN]) {
    assert.throws(
      () => buildRunConfig({ ...base, models, probe_tolerance: bad }, {}),
      (err: unknown) =>
        err instanceof ConfigError &&
        /--probe_tolerance must be a cosine above 0/.test(err.message),
    );
  }
});
