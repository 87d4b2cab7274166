import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  assertSameOutputs,
  corpusSlice,
  inputDir,
  killedRun,
  referenceRunBatches,
  runCli,
  safeDone,
  seededRandom,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

function args(input: string, out: string): string[] {
  return cliArgs(input, out, STEM, {
    engine: "debug",
    debug_dim: 768,
    batch_size: 8,
    max_workers: 1,
    checkpoint_interval: 16,
    output_dtype: "int8",
    output_format: "npy,parquet",
  });
}

test("killed with SIGKILL while embedding and while finalizing, an int8 npy+parquet run resumes to byte-identical files", async () => {
  const { dir, input } = inputDir("outputs-resume-kill", corpusSlice(3000, 100));

  const reference = join(dir, "reference");
  const total = await referenceRunBatches(args(input, reference), reference);

  const out = join(dir, "killed");
  const next = seededRandom(20261127);
  let kills = 0;
  let finalizeKills = 0;
  const history: string[] = [];
  // Kills at random points of progress, then (last attempts) once every batch
  // is done, a random few milliseconds into finalizing.
  for (let attempt = 0; attempt < 6; attempt++) {
    const before = safeDone(out);
    const duringFinalize = attempt >= 3 || before >= total - 2;
    const target = duringFinalize
      ? total
      : before + 1 + Math.floor(next() * (total - before - 2) * 0.6);
    const delay = Math.round(next() * (duringFinalize ? 400 : 100));
    const { result, killed } = await killedRun(args(input, out), out, target, delay, 5);
    history.push(`target ${target}/${total}: ${result.code}/${result.signal}`);
    if (result.signal === "SIGKILL" && killed) {
      kills++;
      if (duringFinalize) finalizeKills++;
    }
    if (result.code === 0) break;
  }
  assert.ok(kills >= 3, `killed ${kills} times: ${history.join(" | ")}`);
  assert.ok(
    finalizeKills >= 1,
    `killed ${finalizeKills} times while finalizing: ${history.join(" | ")}`,
  );
  const last = await runCli(args(input, out));
  assert.equal(last.code, 0, last.stderr);

  assertSameOutputs(reference, out, STEM, [".npy", ".parquet"]);
  const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
  const refMeta = JSON.parse(readFileSync(join(reference, `${STEM}.metadata.json`), "utf8"));
  assert.deepEqual(meta.quantization, refMeta.quantization, "the same ranges");
  assert.deepEqual(meta.output_files, refMeta.output_files);
  // The float32 working copy goes once the compact files are complete.
  assert.deepEqual(
    readdirSync(out).filter((f) => f.includes(".partial")),
    [],
    "no partial or working files are left",
  );
  assert.equal(existsSync(join(out, `${STEM}.jsonl`)), false);

  // Finalizing again is a no-op.
  const again = await runCli(args(input, out));
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /nothing to do/);
  assert.ok(
    readFileSync(join(reference, `${STEM}.parquet`)).equals(
      readFileSync(join(out, `${STEM}.parquet`)),
    ),
  );
});
