import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  assertSameOutputs,
  corpusSlice,
  errorLines,
  inputDir,
  killedRun,
  readLedger,
  referenceRunBatches,
  runCli,
  safeDone,
  seededRandom,
  serverForTests,
  sleep,
  spawnCli,
} from "./helpers.js";

const CHECKPOINT = "embed-multi.checkpoint.sqlite";
const STEM = "all-MiniLM-L6-v2";

const server = serverForTests(["--threads", "2"]);

function args(input: string, out: string): string[] {
  return cliArgs(input, out, STEM, {
    servers: server.target,
    batch_size: 8,
    checkpoint_interval: 16,
  });
}

test("killed with SIGKILL at random moments and resumed, the outputs are byte-identical", async () => {
  const count = 160;
  const { dir, input } = inputDir("resume-kill", corpusSlice(count, 2000));

  const reference = join(dir, "reference");
  const total = await referenceRunBatches(args(input, reference), reference);

  // Kill at random points of progress (so every kill lands mid-run), plus a
  // random few milliseconds so some land between a write and its commit.
  const out = join(dir, "killed");
  const next = seededRandom(20261126);
  let kills = 0;
  let resumedSeen = false;
  const history: string[] = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    const before = safeDone(out);
    if (before >= total - 2) break;
    const target = before + 1 + Math.floor(next() * (total - before - 2) * 0.6);
    const delay = Math.round(next() * 150);
    const { result, killed } = await killedRun(args(input, out), out, target, delay, 20);
    history.push(`target ${target}: ${result.code}/${result.signal}`);
    if (result.signal === "SIGKILL" && killed) kills++;
    if (/resuming: \d+ of \d+ batches done/.test(result.stderr)) resumedSeen = true;
    if (result.code === 0) break;
  }
  assert.ok(
    kills >= 2,
    `the run was killed ${kills} times (needs at least 2 to mean anything): ${history.join(" | ")}`,
  );
  const last = await runCli(args(input, out));
  assert.equal(last.code, 0, last.stderr);
  resumedSeen ||= /resuming: \d+ of \d+ batches done/.test(last.stderr);
  assert.ok(resumedSeen, "a later run said it resumed");

  assertSameOutputs(reference, out, STEM);
  const ledger = readLedger(out);
  assert.equal(ledger.done, ledger.batches, "every batch done");
  assert.equal(ledger.completionsOne, ledger.batches, "every batch done exactly once");
  assert.deepEqual(
    ledger.rowsCovered,
    Array.from({ length: count }, (_, i) => i),
    "the plan covers every row exactly once",
  );
  const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
  assert.ok(meta.resumed_count >= 1, `resumed_count ${meta.resumed_count}`);
});

test("SIGINT stops the run with exit 130, keeps what is done, and the run resumes to the same result", async () => {
  const { dir, input } = inputDir("resume-sigint", corpusSlice(240, 2500));
  const reference = join(dir, "reference");
  const clean = await runCli(args(input, reference));
  assert.equal(clean.code, 0, clean.stderr);

  const out = join(dir, "interrupted");
  const { child, done } = spawnCli(args(input, out));
  // Interrupt once some batches are durably done.
  const until = Date.now() + 120_000;
  let doneBefore = 0;
  while (Date.now() < until) {
    await sleep(100);
    try {
      doneBefore = readLedger(out).done;
    } catch {
      continue; // not created yet
    }
    if (doneBefore > 0) break;
  }
  child.kill("SIGINT");
  const result = await done;
  assert.equal(result.code, 130, result.stderr);
  const lines = errorLines(result.stderr).filter((l) => l.includes("error:"));
  assert.equal(lines.length, 1);
  assert.match(
    lines[0] ?? "",
    /interrupted by SIGINT; what is done is kept: run the same command again to resume/,
  );
  const kept = readLedger(out);
  assert.ok(
    kept.done >= doneBefore && kept.done < kept.batches,
    `${kept.done} of ${kept.batches} done`,
  );

  const resumed = await runCli(args(input, out));
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(
    resumed.stderr,
    new RegExp(`resuming: ${kept.done} of ${kept.batches} batches done`),
  );
  assert.ok(
    readFileSync(join(reference, `${STEM}.npy`)).equals(readFileSync(join(out, `${STEM}.npy`))),
  );
});

test("resume refuses a changed input file, naming it, and --restart starts over", async () => {
  const { input, out } = inputDir("refuse-input", corpusSlice(20));
  const debugArgs = debugEngineArgs(input, out, STEM);
  assert.equal((await runCli(debugArgs)).code, 0);
  appendFileSync(input, `${corpusSlice(1, 20)[0]}\n`);
  const refused = await runCli(debugArgs);
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr,
    /error: the input file changed since the checkpoint was made \(size \d+ → \d+ bytes\); run with --restart/,
  );
  const restarted = await runCli([...debugArgs, "--restart"]);
  assert.equal(restarted.code, 0, restarted.stderr);
  assert.equal(
    JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8")).num_paragraphs,
    21,
  );
});

test("resume refuses a changed model setting, naming the setting", async () => {
  const { dir, input, out } = inputDir("refuse-setting", corpusSlice(20));
  const config = join(dir, "models.yaml");
  const withPrefix = (prefix: string) =>
    writeFileSync(
      config,
      `models:\n  mine:\n    model_name: sentence-transformers/all-MiniLM-L6-v2\n    prefix: "${prefix}"\n`,
    );
  const runArgs = debugEngineArgs(input, out, "mine", { config });
  withPrefix("query: ");
  assert.equal((await runCli(runArgs)).code, 0);
  withPrefix("passage: ");
  const refused = await runCli(runArgs);
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr,
    /model "mine" settings changed since the checkpoint \(prefix "query: " → "passage: "\)/,
  );
});

test("a corrupt checkpoint is a clear error, not a crash", async () => {
  const { input, out } = inputDir("refuse-corrupt", corpusSlice(20));
  const runArgs = debugEngineArgs(input, out, STEM);
  assert.equal((await runCli(runArgs)).code, 0);
  writeFileSync(join(out, CHECKPOINT), Buffer.alloc(8192, 0x41));
  const refused = await runCli(runArgs);
  assert.notEqual(refused.code, 0);
  const lines = errorLines(refused.stderr);
  assert.equal(lines.length, 1, refused.stderr);
  assert.match(
    lines[0] ?? "",
    /checkpoint .*embed-multi\.checkpoint\.sqlite is unreadable .*--restart/,
  );
});

/** A run of one model on the embedded debug engine: the refusals are about the checkpoint, not the model. */
function debugEngineArgs(
  input: string,
  out: string,
  model: string,
  flags: Readonly<Record<string, string>> = {},
): string[] {
  return cliArgs(input, out, model, { engine: "debug", ...flags });
}
