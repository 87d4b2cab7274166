import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { modelSpec } from "../src/config/registry.js";
import type { RunModel } from "../src/config.js";
import { checkTruncation } from "../src/dispatch/servers.js";
import { ServerError } from "../src/errors.js";
import { cliArgs } from "./cli-args.js";
import { debugEmbedding } from "./debug-formula.js";
import {
  corpusSlice,
  errorLines,
  readLedger,
  readNpy,
  runCli,
  runVerify,
  tempDir,
  testEnv,
  writeLines,
} from "./helpers.js";
import { MODEL_INFO } from "./phase-helpers.js";

const DIM = 24;

const MODEL: RunModel = { ...modelSpec("org/m", "org/m"), fileStem: "org__m" };

function texts(lines: string[], prefix = ""): string[] {
  return lines.map((l) => prefix + (JSON.parse(l) as { text: string }).text);
}

function debugArgs(
  input: string,
  out: string,
  flags: Readonly<Record<string, string | number>>,
): string[] {
  return cliArgs(input, out, ["bge-small-en-v1.5", "e5-small-v2"], {
    engine: "debug",
    debug_dim: DIM,
    batch_size: 8,
    checkpoint_interval: 8,
    ...flags,
  });
}

/** A run stopped part way (an injected full disk): a checkpoint with batches left. */
async function interruptedRun(args: string[]): Promise<string> {
  const stopped = await runCli(args, testEnv({ EMBED_TEST_DISK_FULL_AFTER_ROWS: "20" }));
  assert.equal(stopped.code, 1, stopped.stderr);
  assert.match(stopped.stderr, /disk full/);
  return stopped.stderr;
}

function oneError(stderr: string): string {
  const errors = errorLines(stderr).filter((l) => l.startsWith("embed-multi: error:"));
  assert.equal(errors.length, 1, stderr);
  assert.doesNotMatch(stderr, /this is a bug|internal error|\n\s+at /);
  return errors[0] ?? "";
}

test("--truncate_dim with the debug engine: the first N values, normalized after the cut; a resume with another value is refused, naming it", async () => {
  const dir = tempDir("matryoshka-debug");
  const lines = corpusSlice(60, 400);
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const out = join(dir, "out");
  await interruptedRun(debugArgs(input, out, { truncate_dim: 8 }));
  const partly = readLedger(out);
  assert.ok(partly.done > 0 && partly.done < partly.batches, "stopped part way");

  // Another value, or none (the full dimension): refused, naming the setting.
  for (const [flags, now] of [
    [{ truncate_dim: 4 }, 4],
    [{}, 0],
  ] as const) {
    const refused = await runCli(debugArgs(input, out, flags));
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(
      oneError(refused.stderr),
      new RegExp(
        `model "bge-small-en-v1.5" settings changed since the checkpoint \\(truncate_dim 8 → ${now}\\); run with --restart`,
      ),
    );
  }
  assert.equal(readLedger(out).done, partly.done, "a refused resume changes nothing");

  const resumed = await runCli(debugArgs(input, out, { "truncate-dim": 8 }));
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, /resuming: \d+ of \d+ batches done/);
  const cases = [
    { stem: "bge-small-en-v1.5", prefix: "", normalize: true },
    { stem: "e5-small-v2", prefix: "passage: ", normalize: false },
  ];
  for (const { stem, prefix, normalize } of cases) {
    const npy = readNpy(join(out, `${stem}.npy`));
    assert.deepEqual([npy.rows, npy.dim], [lines.length, 8], stem);
    texts(lines, prefix).forEach((text, row) => {
      const expected = debugEmbedding(text, DIM, normalize, 8);
      const got = npy.data.subarray(row * 8, row * 8 + 8);
      if (normalize) {
        for (let d = 0; d < 8; d++) {
          assert.ok(Math.abs((got[d] ?? 0) - (expected[d] ?? 0)) < 1e-6, `${stem} ${row}/${d}`);
        }
      } else {
        assert.deepEqual(Array.from(got), Array.from(expected), `${stem} row ${row}`);
      }
    });
    const meta = JSON.parse(readFileSync(join(out, `${stem}.metadata.json`), "utf8"));
    assert.equal(meta.truncate_dim, 8);
    assert.equal(meta.embedding_dim, 8);
    const jsonl = JSON.parse(readFileSync(join(out, `${stem}.jsonl`), "utf8").split("\n")[0] ?? "");
    assert.equal(jsonl.embedding.length, 8);
  }
  // verify re-embeds a sample with the metadata's truncate_dim: the same vectors.
  const verified = await runVerify([
    ...["--output_dir", out, "--input_file", input, "--sample", "5", "--seed", "3"],
    ...["--debug_dim", String(DIM)],
  ]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /^ok {4}bge-small-en-v1\.5: .*worst cosine 1\.000000$/m);
});

test("--truncate_dim over the model's dimension: one line naming both, nothing written", async () => {
  const dir = tempDir("matryoshka-over");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(10));
  const out = join(dir, "out");
  const result = await runCli(debugArgs(input, out, { truncate_dim: DIM + 1 }));
  assert.notEqual(result.code, 0);
  assert.match(
    oneError(result.stderr),
    /loading model "bge-small-en-v1\.5" .*truncate_dim 25 is more than the 24 dimensions of 'BAAI\/bge-small-en-v1\.5'/,
  );
  assert.ok(!existsSync(join(out, "bge-small-en-v1.5.metadata.json")));
  const bad = await runCli(debugArgs(input, out, { truncate_dim: -3 }));
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(oneError(bad.stderr), /--truncate_dim must be from 0 to 65536 \(got -3\)/);
});

test("resumed with other --batch_size / --max_batch_tokens: the stored plan is used, recorded, and said once", async () => {
  const dir = tempDir("plan-used");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(60, 500));
  const out = join(dir, "out");
  const first = { batch_size: 8, max_batch_tokens: 2000 };
  await interruptedRun(debugArgs(input, out, first));
  const planned = readLedger(out).batches;
  // Resumed with the same flags: nothing to say.
  const same = await interruptedRun(debugArgs(input, out, first));
  assert.match(same, /resuming/);
  assert.doesNotMatch(same, /stored plan/);

  const other = await runCli(debugArgs(input, out, { batch_size: 3, max_batch_tokens: 50 }));
  assert.equal(other.code, 0, other.stderr);
  const notes = other.stderr.split("\n").filter((l) => l.includes("stored plan"));
  assert.equal(notes.length, 1, other.stderr);
  assert.match(
    notes[0] ?? "",
    /--batch_size 3 --max_batch_tokens 50 not used: the stored plan wins: batches of up to 8 paragraphs \/ 2000 tokens \(bge-small-en-v1\.5\), 8 paragraphs \/ 2000 tokens \(e5-small-v2\), from the first run; --restart to plan again/,
  );
  assert.equal(readLedger(out).batches, planned, "the stored plan was kept");
  for (const stem of ["bge-small-en-v1.5", "e5-small-v2"]) {
    const meta = JSON.parse(readFileSync(join(out, `${stem}.metadata.json`), "utf8"));
    assert.equal(meta.batch_size, 8, stem);
    assert.equal(meta.max_batch_tokens, 2000, stem);
  }
});

test("a server that ignores truncate_dim (older than the field) is refused, not trusted", () => {
  const model = { ...MODEL, truncateDim: 8 };
  assert.doesNotThrow(() =>
    checkTruncation("h:1", model, { ...MODEL_INFO, dim: 8, truncateDim: 8 }),
  );
  assert.doesNotThrow(() => checkTruncation("h:1", MODEL, MODEL_INFO));
  assert.throws(
    () => checkTruncation("h:1", model, { ...MODEL_INFO, dim: 4, truncateDim: 0 }),
    (err: Error) =>
      err instanceof ServerError &&
      err.message ===
        'server h:1: model "org/m" was asked for truncate_dim 8 but reports truncate_dim 0, dim 4; update the inference server',
  );
  assert.throws(
    () => checkTruncation("h:1", model, { ...MODEL_INFO, dim: 4, truncateDim: 8 }),
    ServerError,
  );
});
