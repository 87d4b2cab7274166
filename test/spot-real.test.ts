import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { LedgerReader } from "../src/checkpoint/ledger.js";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import {
  corpusSlice,
  errorLines,
  multiServerArgs,
  type RunningServer,
  readNpy,
  runCli,
  startServer,
  tempDir,
  testEnv,
  writeLines,
} from "./helpers.js";

// Issue 16 with real servers over real gRPC: a server that passes the probe and
// then returns wrong vectors (the test-only wrapper tests/faulty_server.py,
// --fault-perturb-after N: every batch after its first N perturbed) is caught.
// Inputs of 64 distinct texts: a repeated text is embedded once and copied,
// which is not what these tests are about.

const STEM = "all-MiniLM-L6-v2";

function faultyServer(wrongAfter: number): Promise<RunningServer> {
  return startServer(["--threads", "1"], testEnv(), 0, { perturb: 2, perturbAfter: wrongAfter });
}

interface SpotMetadata {
  spot_check: number;
  spot_check_failures: number;
  spot_redone_batches: number;
}

function metadata(out: string): SpotMetadata {
  return JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
}

/** The least cosine of row i of `got` with row i of `want`, over `rows`. */
function worstCosine(
  got: Float32Array,
  want: Float32Array,
  dim: number,
  rows: Iterable<number>,
): number {
  let worst = 1;
  for (const r of rows) {
    let dot = 0;
    let a = 0;
    let b = 0;
    for (let d = 0; d < dim; d++) {
      const x = got[r * dim + d] ?? 0;
      const y = want[r * dim + d] ?? 0;
      dot += x * y;
      a += x * x;
      b += y * y;
    }
    worst = Math.min(worst, dot / Math.sqrt(a * b));
  }
  return worst;
}

async function stopAll(servers: RunningServer[]): Promise<void> {
  for (const s of servers) await s.stop();
}

test("the real model: two servers, one right on the probe and wrong on its batches: kept out, every row right", async () => {
  const dir = tempDir("spot-two");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(64, 300));
  const clean = await startServer(["--threads", "1"]);
  const faulty = await faultyServer(1);
  try {
    const reference = join(dir, "reference");
    const ref = await runCli(multiServerArgs(input, reference, [clean.target], { spot_check: 0 }));
    assert.equal(ref.code, 0, ref.stderr);

    const out = join(dir, "two");
    // A high rate so that ordinary batches carry spot rows (the default is 0.5%).
    const result = await runCli(
      multiServerArgs(input, out, [clean.target, faulty.target], { spot_check: 0.2 }),
    );
    assert.equal(result.code, 0, result.stderr);
    const caught = errorLines(result.stderr).filter((l) => l.includes("failed a spot check"));
    assert.equal(caught.length, 1, result.stderr);
    assert.match(
      caught[0] ?? "",
      new RegExp(`server ${faulty.target.replace(/[.]/g, "\\.")} failed a spot check of ${STEM}`),
    );
    const want = readNpy(join(reference, `${STEM}.npy`));
    const got = readNpy(join(out, `${STEM}.npy`));
    assert.equal(got.rows, 64);
    const rows = Array.from({ length: 64 }, (_, i) => i);
    assert.ok(worstCosine(got.data, want.data, got.dim, rows) > 0.9999, "every row is right");
    const meta = metadata(out);
    assert.equal(meta.spot_check, 0.2);
    assert.equal(meta.spot_check_failures, 1);
    assert.ok(meta.spot_redone_batches >= 1, JSON.stringify(meta));
    assert.equal(metadata(reference).spot_check_failures, 0);
  } finally {
    await stopAll([clean, faulty]);
  }
});

test("the real model: one server going wrong after 3 batches, at 0.5%: the run stops, nothing wrong marked done", async () => {
  const dir = tempDir("spot-one");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(64, 300));
  const clean = await startServer(["--threads", "1"]);
  const faulty = await faultyServer(3);
  try {
    const reference = join(dir, "reference");
    const ref = await runCli(multiServerArgs(input, reference, [clean.target], { spot_check: 0 }));
    assert.equal(ref.code, 0, ref.stderr);

    const out = join(dir, "one");
    // 64 rows at 0.5% carry no spot row: the batch of known rows at the end catches it.
    const result = await runCli(
      multiServerArgs(input, out, [faulty.target], { spot_check: 0.005 }),
    );
    assert.notEqual(result.code, 0);
    const lines = errorLines(result.stderr).filter((l) => l.includes("error"));
    assert.equal(lines.length, 1, result.stderr);
    assert.match(
      lines[0] ?? "",
      /no server is left to embed with: server \S+ failed a spot check of all-MiniLM-L6-v2 \(probe \d+: cosine 0\.\d+ with its known vector, below --probe_tolerance 0\.999\)/,
    );
    assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    const ledger = LedgerReader.openReadOnly(join(out, CHECKPOINT_FILE));
    let done: number[];
    try {
      done = ledger
        .batches(STEM)
        .filter((b) => b.done)
        .flatMap((b) => Array.from(b.rows));
      assert.equal(ledger.status(STEM).spotFailures, 1);
    } finally {
      ledger.close();
    }
    assert.ok(done.length < 64, `${done.length} rows done`);
    if (done.length > 0) {
      const want = readNpy(join(reference, `${STEM}.npy`));
      const got = readNpy(join(out, `${STEM}.npy`));
      assert.ok(worstCosine(got.data, want.data, got.dim, done) > 0.9999, "done rows are right");
    }
    // Resumed on a clean server: the rest is redone and every row is right.
    const resumed = await runCli(multiServerArgs(input, out, [clean.target]));
    assert.equal(resumed.code, 0, resumed.stderr);
    const want = readNpy(join(reference, `${STEM}.npy`));
    const got = readNpy(join(out, `${STEM}.npy`));
    const rows = Array.from({ length: 64 }, (_, i) => i);
    assert.ok(worstCosine(got.data, want.data, got.dim, rows) > 0.9999);
  } finally {
    await stopAll([clean, faulty]);
  }
});
