import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  compareDirect,
  corpusSlice,
  inputDir,
  onlyErrorLine,
  runCli,
  safeDone,
  testEnv,
  withServer,
} from "./helpers.js";

// Issue 22: a resume may mix engines (the engine is recorded, not compared); the probe
// decides. A run begun on a torch server and stopped halfway goes on on an OpenVINO server
// (their probe vectors agree within --probe_tolerance) and its rows all match a direct
// float32 encode; an engine whose vectors differ (one made wrong on purpose, same model,
// same identity) is kept out by the probe in one line; int8 against the float32 checkpoint
// is refused by the identity before any server is asked.
const MODEL = "all-MiniLM-L6-v2";
const MARKER = "zz-poison-zz";

/** 40 paragraphs, the one of median length marked: the torch server fails its batch. */
function corpus(): string[] {
  const lines = corpusSlice(40, 900);
  const byLength = lines
    .map((line, i) => ({ i, length: (JSON.parse(line) as { text: string }).text.length }))
    .sort((a, b) => a.length - b.length);
  const median = byLength[20]?.i ?? 0;
  const record = JSON.parse(lines[median] ?? "{}") as { text: string };
  lines[median] = JSON.stringify({ ...record, text: `${MARKER} ${record.text}` });
  return lines;
}

test("resume mixes engines where the probe passes, and only there", async () => {
  const { input, out } = inputDir("mixed-engines", corpus());
  // Spot checks off: a run stopped at a batch keeps only what a passed check released.
  const flags = { batch_size: 4, max_workers: 1, threads: 2, output_format: "npy", spot_check: 0 };
  const threads = ["--threads", "2"];

  // 1. torch: every batch after the marked one's is never sent (the run stops at it).
  const first = await withServer(
    ["--engine", "torch", ...threads],
    (torch) =>
      runCli(cliArgs(input, out, MODEL, { ...flags, servers: torch.target, max_attempts: 1 })),
    testEnv(),
    { poison: MARKER },
  );
  assert.notEqual(first.code, 0, first.stderr);
  assert.match(onlyErrorLine(first.stderr), /poisoned batch/);
  const done = safeDone(out);
  assert.ok(done >= 2 && done < 10, `batches done by torch: ${done} of 10`);

  // 2. int8 against the float32 checkpoint: the identity refuses, before any server.
  const int8 = await runCli(
    cliArgs(input, out, MODEL, { ...flags, servers: "127.0.0.1:9", quantize: "int8" }),
  );
  assert.equal(int8.code, 1, int8.stderr);
  assert.match(
    onlyErrorLine(int8.stderr),
    /model "all-MiniLM-L6-v2" settings changed since the checkpoint \(quantize "none" → "int8"\)/,
  );

  // 3. An OpenVINO engine made wrong on purpose (the same model and identity, other vectors):
  // the probe keeps it out; with no other server the run stops in one line, nothing lost.
  const wrong = await withServer(
    ["--engine", "openvino", ...threads],
    (server) => runCli(cliArgs(input, out, MODEL, { ...flags, servers: server.target })),
    testEnv(),
    { perturb: 0.1 },
  );
  assert.equal(wrong.code, 1, wrong.stderr);
  assert.match(
    onlyErrorLine(wrong.stderr),
    /no server is left to embed with: server \S+ is kept out for model "all-MiniLM-L6-v2": worst cosine 0\.\d+ \(probe \d+\) with the stored probe vectors, below --probe_tolerance 0\.999/,
  );
  assert.equal(safeDone(out), done);
  assert.ok(!existsSync(join(out, `${MODEL}.npy`)));

  // 4. The real OpenVINO engine: its probe vectors agree with torch's; the run finishes.
  let target = "";
  const resumed = await withServer(["--engine", "openvino", ...threads], (server) => {
    target = server.target;
    return runCli(cliArgs(input, out, MODEL, { ...flags, servers: server.target }));
  });
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resuming: ${done} of 10 batches`));
  const meta = JSON.parse(readFileSync(join(out, `${MODEL}.metadata.json`), "utf8"));
  assert.equal(meta.engine, "openvino");
  assert.equal(meta.servers.length, 2, `both servers embedded rows: ${meta.servers}`);
  assert.ok(meta.servers.includes(target));
  // torch's rows and OpenVINO's, each within 0.9999 of a direct float32 encode.
  const direct = compareDirect(input, join(out, `${MODEL}.npy`));
  assert.deepEqual(direct.shape, [40, 384]);
  assert.ok(direct.min_cos >= 0.9999, `lowest cosine to a direct encode ${direct.min_cos}`);
});
