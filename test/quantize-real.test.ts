import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { checkSameModels } from "../src/checkpoint/compat.js";
import { ledgerModelOf } from "../src/checkpoint/model-row.js";
import { buildRunConfig } from "../src/config.js";
import { ConfigError } from "../src/errors.js";
import { calibrationRows, calibrationTexts } from "../src/input/calibration.js";
import { scanInput } from "../src/input/scan.js";
import { cliArgs } from "./cli-args.js";
import {
  compareDirect,
  corpusSlice,
  inputDir,
  onlyErrorLine,
  runCli,
  runVerify,
  safeDone,
  testEnv,
  withServer,
} from "./helpers.js";
import { MODEL_INFO } from "./phase-helpers.js";

// --quantize int8 (issue 22) on the real all-MiniLM-L6-v2: static int8 on the CPU engine,
// calibrated on the run's own paragraphs. The first run quantizes (about 20 s on 2 cores);
// the others read the graph it kept (same input, same sample).
const MODEL = "all-MiniLM-L6-v2";
const ROWS = 40;
const MARKER = "zz-poison-zz";
const base = { input_file: "in.jsonl", output_dir: "out", models: [MODEL] };
// Spot checks off: a run stopped at a batch keeps only what a passed check released, and
// known rows in a batch change its last bits; this file is about the quantized model.
const FLAGS = {
  quantize: "int8",
  batch_size: 8,
  threads: 2,
  output_format: "npy",
  spot_check: 0,
};

/** The input of every run here: 40 paragraphs, the one of median length marked (a faulty
 * server fails its batch; the real one embeds it like any other). */
const LINES = (() => {
  const lines = corpusSlice(ROWS, 600);
  const byLength = lines
    .map((line, i) => ({ i, length: (JSON.parse(line) as { text: string }).text.length }))
    .sort((a, b) => a.length - b.length);
  const median = byLength[ROWS / 2]?.i ?? 0;
  const record = JSON.parse(lines[median] ?? "{}") as { text: string };
  lines[median] = JSON.stringify({ ...record, text: `${MARKER} ${record.text}` });
  return lines;
})();
/** The first test's uninterrupted int8 .npy. */
let uninterrupted: Buffer | null = null;

test("--quantize int8: the metadata's fidelity is what a direct float32 encode of the same rows finds", async () => {
  const lines = LINES;
  const { input, out } = inputDir("quantize-real", lines);
  const result = await runCli(cliArgs(input, out, MODEL, FLAGS));
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /engine openvino int8/);

  const meta = JSON.parse(readFileSync(join(out, `${MODEL}.metadata.json`), "utf8"));
  assert.equal(meta.quantize, "int8");
  assert.deepEqual([meta.engine, meta.precision], ["openvino", "int8"]);
  const fidelity = meta.quantize_fidelity;
  // Fewer rows than the sample's 256: every row calibrates, in input order, as sent.
  assert.equal(fidelity.calibration_rows, ROWS);
  const digest = createHash("sha256");
  for (const line of lines) digest.update(`${JSON.parse(line).text}\0`, "utf8");
  assert.equal(fidelity.calibration_sha256, digest.digest("hex"));
  assert.equal(fidelity.min_cosine_bound, 0.97);

  // The stored int8 rows against SentenceTransformer.encode in float32, cosine row by row:
  // the figures the server measured on the same texts (its batches are cut otherwise, so
  // the last bits differ).
  const direct = compareDirect(input, join(out, `${MODEL}.npy`));
  assert.deepEqual(direct.shape, [ROWS, 384]);
  assert.ok(Math.abs(direct.min_cos - fidelity.min_cosine) < 1e-3, JSON.stringify(direct));
  assert.ok(Math.abs(direct.mean_cos - fidelity.mean_cosine) < 1e-3, JSON.stringify(direct));
  assert.ok(fidelity.min_cosine <= fidelity.mean_cosine && fidelity.mean_cosine < 1);
  // int8 indeed, not float32 under another name; and close to it.
  assert.ok(direct.min_cos < 0.99999 && direct.min_cos > 0.97, String(direct.min_cos));
  const summary = new RegExp(
    `${MODEL}: int8 on ${ROWS} calibration paragraphs: lowest cosine to float32 ${fidelity.min_cosine.toFixed(6)}, mean ${fidelity.mean_cosine.toFixed(6)}`,
  );
  assert.match(result.stdout, summary);

  // verify --sample loads the model as the run did (the same calibration sample, taken from
  // the input again): the int8 rows it embeds again equal the stored ones, not float32's.
  const verified = await runVerify([
    ...["--output_dir", out, "--input_file", input, "--sample", "8", "--seed", "5"],
    ...["--threads", "2"],
  ]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  const worst = /8 rows \(seed 5\), worst cosine (\d\.\d+)/.exec(verified.stdout);
  assert.ok(worst && Number(worst[1]) >= 0.9999, verified.stdout);
  uninterrupted = readFileSync(join(out, `${MODEL}.npy`));
});

test("--quantize int8: under --quantize_min_cosine it stops in one line; stopped halfway and resumed on another server, the same bytes", async () => {
  assert.ok(uninterrupted, "the first test's run");
  const { input, out } = inputDir("quantize-resume", LINES);
  await withServer(
    ["--threads", "2"],
    async (faulty) => {
      // 1. A bound above what int8 keeps: one line, before any batch, no outputs.
      const strict = { ...FLAGS, servers: faulty.target, quantize_min_cosine: 0.99999 };
      const refused = await runCli(cliArgs(input, out, MODEL, strict));
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(
        onlyErrorLine(refused.stderr),
        /model "all-MiniLM-L6-v2": int8 on server \S+ keeps a lowest cosine to float32 of 0\.\d{6} \(mean 0\.\d{6}\) on its 40 calibration paragraphs, under --quantize_min_cosine 0\.99999; the run stops before embedding/,
      );
      const files = existsSync(out) ? readdirSync(out) : [];
      assert.deepEqual(
        files.filter((f) => f.startsWith(MODEL)),
        [],
        `no outputs: ${files.join(", ")}`,
      );
      assert.equal(safeDone(out), 0);
      // 2. The default bound, one batch at a time: the run stops at the marked paragraph's
      // batch (batches run longest first: it is the third), the first ones done.
      const stopped = await runCli(
        cliArgs(input, out, MODEL, {
          ...FLAGS,
          servers: faulty.target,
          max_attempts: 1,
          max_workers: 1,
        }),
      );
      assert.notEqual(stopped.code, 0, stopped.stderr);
      assert.match(onlyErrorLine(stopped.stderr), /poisoned batch/);
    },
    testEnv(),
    { poison: MARKER },
  );
  const done = safeDone(out);
  assert.ok(done >= 1 && done < 5, `batches done before the marked one: ${done} of 5`);
  // 3. Resumed on another server: it quantizes on the same sample, and the .npy is the
  // uninterrupted run's, byte for byte.
  await withServer(["--threads", "2"], async (server) => {
    const resumed = await runCli(cliArgs(input, out, MODEL, { ...FLAGS, servers: server.target }));
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, new RegExp(`resuming: ${done} of 5 batches`));
  });
  assert.ok(readFileSync(join(out, `${MODEL}.npy`)).equals(uninterrupted));
});

test("--quantize: what cannot quantize is refused in one line; it is part of the identity", () => {
  const refused = (flags: Record<string, unknown>, why: RegExp) =>
    assert.throws(
      () => buildRunConfig({ ...base, quantize: "int8", ...flags }, {}),
      (err: unknown) => err instanceof ConfigError && why.test(err.message),
    );
  refused({ quantize: "int4" }, /^--quantize must be none or int8 \(got "int4"\)$/);
  refused({ engine: "debug" }, /^--quantize int8 needs the openvino engine .*not --engine debug$/);
  refused({ engine: "torch" }, /not --engine torch$/);
  refused(
    { device: "cuda:0" },
    /^--quantize int8 runs on the CPU engine \(OpenVINO\), not on --device cuda:0$/,
  );
  refused({ dtype: "bfloat16" }, /quantizes the float32 model, not --dtype bfloat16$/);
  refused({ servers: ["openai:http://127.0.0.1:1/v1"] }, /not on openai: servers$/);
  refused({ quantize_min_cosine: 0 }, /^--quantize_min_cosine must be a cosine above 0/);

  const config = buildRunConfig({ ...base, quantize: "int8" }, {});
  assert.equal(config.models[0]?.quantize, "int8");
  assert.equal(config.quantizeMinCosine, 0.97);
  assert.equal(buildRunConfig(base, {}).models[0]?.quantize, "none");
  // A resume that asks for another --quantize is refused like any setting of the identity.
  const [plain] = buildRunConfig(base, {}).models;
  assert.ok(plain);
  const stored = ledgerModelOf(plain, { ...MODEL_INFO, modelId: plain.modelId }, 0, {
    batchSize: 8,
    maxBatchTokens: 0,
  });
  assert.throws(
    () => checkSameModels([stored], config.models),
    /settings changed since the checkpoint \(quantize "none" → "int8"\)/,
  );
});

test("the calibration sample: rows spread evenly over the input, bounded, from the input alone", async () => {
  assert.deepEqual(calibrationRows(10, 4), [1, 3, 6, 8]);
  assert.deepEqual(calibrationRows(3, 256), [0, 1, 2]);
  const rows = calibrationRows(1200);
  assert.equal(rows.length, 256);
  assert.equal(new Set(rows).size, 256);
  assert.ok(rows.every((r, i) => i === 0 || r > (rows[i - 1] ?? 0)) && (rows.at(-1) ?? 0) < 1200);
  const long = "é".repeat(40_000);
  const lines = Array.from({ length: 300 }, (_, i) =>
    JSON.stringify({ paper_id: "p", paragraph_index: i, text: i % 2 ? long : `short ${i}` }),
  );
  const { input } = inputDir("calibration", lines);
  const corpus = await scanInput(input, { maxTextChars: 100_000, skipInvalid: false });
  const texts = calibrationTexts(corpus);
  // Long ones cut at 16,384 characters, the whole under 1 MiB of UTF-8: fewer than 256.
  assert.ok(texts.length < 256 && texts.length > 20, String(texts.length));
  assert.ok(texts.every((t) => t.length <= 16_384));
  assert.ok(texts.reduce((n, t) => n + Buffer.byteLength(t), 0) <= 1 << 20);
  assert.deepEqual(calibrationTexts(corpus), texts);
});
