import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { safeFileStem } from "../src/config/registry.js";
import { buildRunConfig } from "../src/config.js";
import { ConfigError } from "../src/errors.js";
import { tempDir, writeLines } from "./helpers.js";

const base = { input_file: "in.jsonl", output_dir: "out" };

/** A fresh temporary folder holding the config file `c.yaml` with `lines`. */
function configFile(name: string, lines: readonly string[]): { dir: string; file: string } {
  const dir = tempDir(name);
  return { dir, file: writeLines(join(dir, "c.yaml"), lines) };
}

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
  const { dir, file: yaml } = configFile("config", [
    "models:",
    "  e5-mini:",
    "    model_name: sentence-transformers/all-MiniLM-L6-v2",
    '    prefix: "passage: "',
    "    normalize_embeddings: true",
    "defaults:",
    "  batch_size: 64",
    "  max_workers: 2",
  ]);
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

test("truncate_dim: per model in the config file, --truncate_dim for the others, validated", () => {
  const { dir, file: yaml } = configFile("config-truncate", [
    "models:",
    "  mini-64:",
    "    model_name: sentence-transformers/all-MiniLM-L6-v2",
    "    truncate_dim: 64",
    "  mini-full:",
    "    model_name: sentence-transformers/all-MiniLM-L6-v2",
  ]);
  const models = ["mini-64", "mini-full", "bge-small-en-v1.5"];
  const truncateDims = (args: Record<string, unknown>) =>
    buildRunConfig({ ...base, config: yaml, models, ...args }, {}).models.map((m) => m.truncateDim);
  assert.deepEqual(truncateDims({}), [64, 0, 0]);
  // The flag is for every model; a model's own entry wins, as with --dtype.
  assert.deepEqual(truncateDims({ truncate_dim: 128 }), [64, 128, 128]);
  assert.deepEqual(truncateDims({ truncate_dim: 0 }), [64, 0, 0]);
  // Given twice, the last one wins, like every other flag.
  assert.deepEqual(truncateDims({ truncate_dim: [32, 16] }), [64, 16, 16]);
  const withDefault = join(dir, "d.yaml");
  writeFileSync(withDefault, "defaults:\n  truncate_dim: 256\n");
  assert.deepEqual(
    buildRunConfig({ ...base, config: withDefault, models: ["all-MiniLM-L6-v2"] }, {}).models.map(
      (m) => m.truncateDim,
    ),
    [256],
  );
  const plain = (args: Record<string, unknown>) =>
    buildRunConfig({ ...base, models: ["all-MiniLM-L6-v2"], ...args }, {});
  for (const bad of [-1, 1.5, "64", Number.NaN]) {
    assert.throws(
      () => plain({ truncate_dim: bad }),
      /--truncate_dim must be a positive integer, or 0 for the full dimension \(got /,
      String(bad),
    );
  }
  for (const bad of ["-8", "1.5", '"64"', "true"]) {
    const file = join(dir, "bad.yaml");
    writeFileSync(file, `models:\n  m:\n    model_name: a/b\n    truncate_dim: ${bad}\n`);
    assert.throws(
      () => buildRunConfig({ ...base, config: file, models: ["m"] }, {}),
      (err: Error) =>
        err instanceof ConfigError &&
        /model "m": "truncate_dim" must be a positive integer \(or 0 for the full dimension\)/.test(
          err.message,
        ),
      bad,
    );
  }
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

test("openai: servers: base URLs, the key from the environment, caps, served names from the config", () => {
  const { dir, file } = configFile("openai-config", [
    "models:",
    "  mini:",
    "    model_name: sentence-transformers/all-MiniLM-L6-v2",
    "    served_model_name: minilm",
    "    tokenizer: tok/tokenizer.json",
  ]);
  const config = buildRunConfig(
    {
      ...base,
      config: file,
      models: ["mini"],
      servers: ["openai:http://127.0.0.1:7997/v1/,openai:https://api.example.com/v1"],
      max_request_inputs: 96,
    },
    { OPENAI_API_KEY: "sk-x\n", EMBED_AUTH_TOKEN: "other" },
  );
  assert.deepEqual(config.servers, [
    "openai:http://127.0.0.1:7997/v1",
    "openai:https://api.example.com/v1",
  ]);
  assert.equal(config.openai?.apiKey, "sk-x");
  assert.equal(config.openai?.maxRequestInputs, 96);
  assert.equal(config.openai?.maxRequestTokens, 300_000);
  assert.deepEqual(config.openai?.serving.get("mini"), {
    servedModelName: "minilm",
    tokenizer: join(dir, "tok", "tokenizer.json"),
    encodingFormat: "",
  });
  assert.equal(buildRunConfig({ ...base, models: ["all-MiniLM-L6-v2"] }, {}).openai, null);
  assert.throws(
    () =>
      buildRunConfig(
        { ...base, models: ["all-MiniLM-L6-v2"], servers: ["openai:http://a:1/v1", "b:50051"] },
        {},
      ),
    /cannot be mixed/,
  );
  assert.throws(
    () =>
      buildRunConfig(
        { ...base, models: ["all-MiniLM-L6-v2"], servers: ["openai:http://u:sekrit@a:1/v1"] },
        {},
      ),
    (err: Error) => err instanceof ConfigError && !err.message.includes("sekrit"),
  );
});
