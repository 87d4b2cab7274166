import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { LedgerReader } from "../src/checkpoint/ledger.js";
import { PROBE_SET_ID, PROBE_TEXTS } from "../src/checks/probe-texts.js";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import {
  corpusSlice,
  errorLines,
  multiServerArgs,
  npyBytes,
  onlyErrorLine,
  type RunningServer,
  readNpy,
  runCli,
  spawnCli,
  startServer,
  tempDir,
  testEnv,
  waitForDone,
  writeLines,
} from "./helpers.js";

// Issue 12 with real servers over real gRPC: the probe refuses a server that
// computes other vectors (at the start and on a resume on other servers), and
// the per-batch checks keep NaN rows out of the outputs and the checkpoint.

const STEM = "all-MiniLM-L6-v2";

function metadata(out: string): { servers: string[]; retried_batches: number } {
  return JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
}

function withLedger<T>(out: string, body: (ledger: LedgerReader) => T): T {
  const ledger = LedgerReader.openReadOnly(join(out, CHECKPOINT_FILE));
  try {
    return body(ledger);
  } finally {
    ledger.close();
  }
}

/** A line of the input whose text holds `marker`. */
function markedLine(marker: string, index: number): string {
  return JSON.stringify({
    paper_id: "p",
    paragraph_index: index,
    text: `${marker} in a paragraph`,
  });
}

async function stopAll(servers: RunningServer[]): Promise<void> {
  for (const s of servers) await s.stop();
}

const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

test("the real model: a server computing other vectors is kept out with one line; the other finishes, every row as one server's", async () => {
  const dir = tempDir("probe-perturb");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(48, 5100));
  const clean = await startServer(["--threads", "1"]);
  const perturbed = await startServer(["--threads", "1"], testEnv(), 0, { perturb: 0.5 });
  try {
    const single = join(dir, "single");
    const reference = await runCli(multiServerArgs(input, single, [clean.target]));
    assert.equal(reference.code, 0, reference.stderr);

    const out = join(dir, "two");
    const result = await runCli(multiServerArgs(input, out, [clean.target, perturbed.target]));
    assert.equal(result.code, 0, result.stderr);
    const refusals = errorLines(result.stderr).filter((l) => l.includes("is kept out"));
    assert.equal(refusals.length, 1, result.stderr);
    assert.match(
      refusals[0] ?? "",
      new RegExp(
        `server ${literal(perturbed.target)} is kept out for model "${STEM}": worst cosine 0\\.\\d+ \\(probe \\d+\\) with the stored probe vectors, below --probe_tolerance 0\\.999; likely causes: another weights revision, pooling, dtype or device`,
      ),
    );
    assert.ok(
      npyBytes(single, STEM).equals(npyBytes(out, STEM)),
      "every row equals the single-server run's",
    );
    assert.deepEqual(metadata(out).servers, [clean.target]);
    assert.equal(metadata(out).retried_batches, 0);
    // The reference is the first server's, for this set of probe texts.
    withLedger(out, (ledger) => {
      const probes = ledger.probes(STEM);
      assert.ok(probes);
      assert.equal(probes.server, clean.target);
      assert.equal(probes.probeSet, PROBE_SET_ID);
      assert.equal(probes.vectors.rows, PROBE_TEXTS.length);
      assert.equal(probes.vectors.dim, 384);
    });
  } finally {
    await stopAll([clean, perturbed]);
  }
});

test("a resume on other servers is checked against the probes the first run stored", async () => {
  const dir = tempDir("probe-resume");
  const lines = corpusSlice(64, 5200);
  // The first server fails the batch holding this line: the first run stops partway.
  lines[40] = markedLine("zz-poison-zz", 0);
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const debug = ["--engine", "debug", "--threads", "1"];
  const first = await startServer(debug, testEnv(), 0, { poison: "zz-poison-zz" });
  const perturbed = await startServer(debug, testEnv(), 0, { perturb: 0.5 });
  const other = await startServer(debug);
  try {
    const whole = join(dir, "whole");
    assert.equal((await runCli(multiServerArgs(input, whole, [other.target]))).code, 0);

    const out = join(dir, "out");
    const stopped = await runCli(multiServerArgs(input, out, [first.target], { max_attempts: 1 }));
    assert.notEqual(stopped.code, 0);
    assert.match(stopped.stderr, /poisoned batch/);
    const doneBefore = withLedger(out, (l) => l.status(STEM).doneBatches);
    assert.ok(doneBefore >= 1, "the first run did part of the work");
    withLedger(out, (l) => assert.equal(l.probes(STEM)?.server, first.target));

    const refused = await runCli(multiServerArgs(input, out, [perturbed.target]));
    assert.notEqual(refused.code, 0);
    const error = onlyErrorLine(refused.stderr);
    assert.match(
      error,
      new RegExp(
        `no server is left to embed with: server ${literal(perturbed.target)} is kept out for model "${STEM}": worst cosine`,
      ),
    );
    assert.equal(
      withLedger(out, (l) => l.status(STEM).doneBatches),
      doneBefore,
      "the refused server embedded nothing",
    );

    const resumed = await runCli(multiServerArgs(input, out, [other.target]));
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming: \d+ of \d+ batches done/);
    assert.doesNotMatch(resumed.stderr, /kept out/);
    assert.ok(
      npyBytes(whole, STEM).equals(npyBytes(out, STEM)),
      "byte-identical to one uninterrupted run",
    );
    // Checked against the first run's probes, not stored anew.
    withLedger(out, (l) => assert.equal(l.probes(STEM)?.server, first.target));
  } finally {
    await stopAll([first, perturbed, other]);
  }
});

test("a batch that comes back with NaN is retried, then the run stops naming its line; no NaN row is marked done", async () => {
  const dir = tempDir("probe-nan");
  const lines = corpusSlice(48, 5300);
  const nanLine = 30;
  lines[nanLine - 1] = markedLine("zz-nan-zz", 1);
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const debug = ["--engine", "debug", "--threads", "1"];
  const broken = await startServer(debug, testEnv(), 0, { nan: "zz-nan-zz" });
  const clean = await startServer(debug);
  try {
    // One server: sent once more, NaN again, the run stops.
    const out = join(dir, "one");
    const result = await runCli(multiServerArgs(input, out, [broken.target]));
    assert.notEqual(result.code, 0);
    const error = onlyErrorLine(result.stderr);
    assert.match(
      error,
      new RegExp(
        `batch \\d+ of ${STEM} \\(input lines [\\d, ]*\\b${nanLine}\\b[^)]*\\): the vectors failed the checks twice from server ${literal(broken.target)} \\(input line ${nanLine}: NaN at dimension 0; then input line ${nanLine}: NaN`,
      ),
    );
    withLedger(out, (ledger) => {
      const holding = ledger.batches(STEM).find((b) => b.rows.includes(nanLine - 1));
      assert.ok(holding, "the line is in a batch");
      assert.equal(holding.done, false, "the NaN batch is not marked done");
      assert.ok(
        ledger.batches(STEM).some((b) => b.done),
        "the other batches are kept",
      );
      assert.equal(ledger.status(STEM).retriedBatches, 1);
    });

    // Two servers, every line marked: each batch the broken server (listed first, so it
    // gets the first batches) answers with NaN goes to the clean one, and the run ends
    // as one clean server's.
    const marked = writeLines(
      join(dir, "marked.jsonl"),
      lines.map((l) => {
        const row = JSON.parse(l) as { text: string };
        return JSON.stringify({ ...row, text: `${row.text} zz-nan-zz` });
      }),
    );
    const whole = join(dir, "whole");
    assert.equal((await runCli(multiServerArgs(marked, whole, [clean.target]))).code, 0);
    const two = join(dir, "two");
    const retried = await runCli(multiServerArgs(marked, two, [broken.target, clean.target]));
    assert.equal(retried.code, 0, retried.stderr);
    const again = retried.stderr.match(/NaN at dimension 0\); sending it again/g) ?? [];
    assert.ok(again.length >= 1, retried.stderr);
    assert.ok(
      npyBytes(whole, STEM).equals(npyBytes(two, STEM)),
      "no NaN row written; the clean server's rows",
    );
    assert.ok(readNpy(join(two, `${STEM}.npy`)).data.every(Number.isFinite));
    assert.equal(metadata(two).retried_batches, again.length);
    assert.deepEqual(metadata(two).servers, [clean.target]);
  } finally {
    await stopAll([broken, clean]);
  }
});

test("a server that comes back after failover computing other vectors is kept out; with none left the run stops with its line", async () => {
  const dir = tempDir("probe-rejoin");
  // Long enough that the run is still going when its only server is killed.
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(400, 5400));
  const first = await startServer(["--threads", "1"]);
  const port = Number(first.target.split(":")[1]);
  const out = join(dir, "out");
  const { done } = spawnCli(
    multiServerArgs(input, out, [first.target], { server_timeout: 120, max_workers: 1 }),
  );
  await waitForDone(out, 2, done);
  await first.stop();
  const back = await startServer(["--threads", "1"], testEnv(), port, { perturb: 0.5 });
  try {
    const result = await done;
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /is down/);
    const error = onlyErrorLine(result.stderr);
    assert.match(
      error,
      new RegExp(
        `no server is left to embed with: server ${literal(first.target)} is kept out for model "${STEM}": worst cosine 0\\.\\d+`,
      ),
    );
    const status = withLedger(out, (l) => l.status(STEM));
    assert.ok(status.doneBatches >= 2 && status.doneBatches < status.batches);
  } finally {
    await back.stop();
  }
});
