import assert from "node:assert/strict";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { LedgerReader } from "../src/checkpoint/ledger.js";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import { cliArgs } from "./cli-args.js";
import {
  inputDir,
  npyBytes,
  onlyErrorLine,
  runCli,
  runVerify,
  serverForTests,
  sleep,
  spawnCli,
  tokenizedRows,
  writeLines,
} from "./helpers.js";
import { corpusVersions, withDuplicates } from "./reuse-corpus.js";

const MODEL = "all-MiniLM-L6-v2";
const server = serverForTests(["--engine", "debug"]);

async function run(
  input: string,
  out: string,
  flags: Readonly<Record<string, string | number | true>> = {},
  extra: readonly string[] = [],
): Promise<{ stderr: string; tokenized: number }> {
  const before = await tokenizedRows(server.target);
  const result = await runCli([
    ...cliArgs(input, out, MODEL, { servers: server.target, ...flags }),
    ...extra,
  ]);
  assert.equal(result.code, 0, result.stderr);
  return { stderr: result.stderr, tokenized: (await tokenizedRows(server.target)) - before };
}

function metadata(out: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(out, `${MODEL}.metadata.json`), "utf8")) as Record<
    string,
    unknown
  >;
}

/** The rows of a float32 .npy (version 1 header) as byte slices. */
function rowsOf(npy: Buffer, dim = 384): Buffer[] {
  const body = npy.subarray(10 + npy.readUInt16LE(8));
  return Array.from({ length: body.length / (dim * 4) }, (_, i) =>
    body.subarray(i * dim * 4, (i + 1) * dim * 4),
  );
}

interface Reached {
  copies: number;
  ofCopies: number;
  batches: number;
  ofBatches: number;
}

/** How far a run has come: copy jobs and batches done (zeros before the plan exists). */
function progressAt(out: string): Reached {
  try {
    const ledger = LedgerReader.openReadOnly(join(out, CHECKPOINT_FILE));
    try {
      const s = ledger.status(MODEL);
      return {
        copies: s.doneCopies,
        ofCopies: s.copies,
        batches: s.doneBatches,
        ofBatches: s.batches,
      };
    } finally {
      ledger.close();
    }
  } catch {
    return { copies: 0, ofCopies: 0, batches: 0, ofBatches: 0 };
  }
}

function textsOf(lines: readonly string[]): string[] {
  return lines.map((l) => (JSON.parse(l) as { text: string }).text);
}

test("v2 with --reuse of v1 sends only the 900 new or changed texts and equals a full run on v2", async () => {
  const { v1, v2 } = corpusVersions(3000, 300, 300, 600);
  const a = inputDir("reuse-v1", v1);
  const b = inputDir("reuse-v2", v2);
  await run(a.input, a.out);
  const full = await run(b.input, join(b.dir, "full"));
  const reusing = await run(b.input, b.out, { reuse: a.out });

  // The server was sent 2400 fewer rows: the 900 new or changed ones (the probes are in both).
  assert.equal(full.tokenized - reusing.tokenized, 3300 - 900);
  assert.match(
    reusing.stderr,
    /900 of 3300 paragraphs go to the servers \(2400 reused: 2400 from /,
  );
  const meta = metadata(b.out);
  assert.equal(meta.embedded_rows, 900);
  assert.equal(meta.reused_rows, 2400);
  assert.deepEqual(meta.reused_from, [{ dir: a.out, rows: 2400 }]);
  assert.equal(meta.deduplicated_rows, 0);

  // Row for row the full run's bytes (the debug engine is exact), and each reused
  // row the source's bytes.
  assert.ok(npyBytes(b.out, MODEL).equals(npyBytes(join(b.dir, "full"), MODEL)));
  const sourceRows = rowsOf(npyBytes(a.out, MODEL));
  const byText = new Map(textsOf(v1).map((t, i) => [t, sourceRows[i]]));
  const ours = rowsOf(npyBytes(b.out, MODEL));
  let reused = 0;
  textsOf(v2).forEach((t, i) => {
    const source = byText.get(t);
    if (source) {
      assert.ok(ours[i]?.equals(source), `row ${i}`);
      reused++;
    }
  });
  assert.equal(reused, 2400);
  // The hashes file is an output like the others: this output serves as a source too.
  assert.ok(Object.keys(meta.files as object).includes(`${MODEL}.hashes`));
  const verified = await runVerify(["--output_dir", b.out, "--input_file", b.input]);
  assert.equal(verified.code, 0, verified.stderr);
  assert.match(
    verified.stdout,
    new RegExp(`${MODEL}.hashes 3300 rows, each the hash of its input`),
  );
});

test("a source made with other settings is named and ignored, and the run embeds those rows", async () => {
  const { v1 } = corpusVersions(200, 0, 0, 0);
  const a = inputDir("reuse-other", v1);
  await run(a.input, a.out);
  for (const [yaml, differs] of [
    ["    max_length: 128", /max_length \d+ → 128/],
    ['    prefix: "query: "', /prefix "" → "query: "/],
    ["    truncate_dim: 64", /truncate_dim 0 → 64/],
  ] as const) {
    const config = writeLines(join(a.dir, "m.yaml"), [
      "models:",
      `  ${MODEL}:`,
      "    model_name: sentence-transformers/all-MiniLM-L6-v2",
      yaml,
    ]);
    const out = join(a.dir, `other-${yaml.trim().split(":")[0]}`);
    const result = await run(a.input, out, { reuse: a.out, config });
    assert.match(
      result.stderr,
      new RegExp(`--reuse ${a.out}: not used for ${MODEL} \\(other settings: `),
    );
    assert.match(result.stderr, differs);
    assert.match(result.stderr, /200 of 200 paragraphs go to the servers/);
    assert.equal(metadata(out).reused_rows, 0);
  }
});

test("30% duplicates: 70% of the rows go to the server, every row equals a run without dedupe", async () => {
  const lines = withDuplicates(corpusVersions(1000, 0, 0, 0).v1, 0.3);
  const a = inputDir("reuse-dup", lines);
  const plain = await run(a.input, join(a.dir, "plain"), { "no-dedupe": true });
  const deduped = await run(a.input, a.out);
  assert.equal(plain.tokenized - deduped.tokenized, 300);
  assert.match(deduped.stderr, /700 of 1000 paragraphs go to the servers \(300 duplicates/);
  assert.equal(metadata(a.out).deduplicated_rows, 300);
  assert.equal(metadata(a.out).embedded_rows, 700);
  assert.equal(metadata(join(a.dir, "plain")).deduplicated_rows, 0);
  assert.ok(npyBytes(a.out, MODEL).equals(npyBytes(join(a.dir, "plain"), MODEL)));
});

test("kill -9 during a reusing, deduplicating run, then resume: byte-identical", async () => {
  const { v1, v2 } = corpusVersions(1200, 120, 120, 240);
  const a = inputDir("reuse-kill-v1", v1);
  const b = inputDir("reuse-kill-v2", withDuplicates(v2, 0.1));
  await run(a.input, a.out);
  const reference = join(b.dir, "reference");
  await run(b.input, reference, { reuse: a.out });
  // Killed once some copy jobs are durable (copies commit every 16 rows), and once
  // some batches are: the resumed run redoes only what was not marked done.
  for (const [what, reached] of [
    ["copies", (p: Reached) => p.copies >= 3 && p.copies < p.ofCopies],
    ["batches", (p: Reached) => p.batches >= 4],
  ] as const) {
    const out = join(b.dir, `killed-${what}`);
    const args = cliArgs(b.input, out, MODEL, {
      servers: server.target,
      reuse: a.out,
      batch_size: 8,
      checkpoint_interval: 16,
    });
    const { child, done } = spawnCli(args);
    let ended = false;
    void done.then(() => {
      ended = true;
    });
    while (!ended && !reached(progressAt(out))) await sleep(1);
    child.kill("SIGKILL");
    const killed = await done;
    assert.equal(killed.signal, "SIGKILL", `${what}: the run ended before the kill`);
    const at = progressAt(out);
    assert.ok(at.copies + at.batches < at.ofCopies + at.ofBatches, `${what}: work was left`);
    if (what === "copies") {
      // The source gone when its rows are still to copy: one line; restored: it resumes.
      const npy = join(a.out, `${MODEL}.npy`);
      renameSync(npy, `${npy}.away`);
      const stopped = await runCli(args);
      renameSync(`${npy}.away`, npy);
      assert.equal(stopped.code, 1, stopped.stderr);
      assert.match(
        onlyErrorLine(stopped.stderr),
        new RegExp(`--reuse source ${npy} changed during the run \\(it is missing\\)`),
      );
    }
    const resumed = await runCli(args);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming/);
    for (const f of [`${MODEL}.npy`, `${MODEL}.jsonl`, `${MODEL}.hashes`]) {
      assert.ok(
        readFileSync(join(out, f)).equals(readFileSync(join(reference, f))),
        `${what}: ${f}`,
      );
    }
  }
});

test("a source whose file does not match its checksum is refused, naming it", async () => {
  const { v1 } = corpusVersions(100, 0, 0, 0);
  const a = inputDir("reuse-bad", v1);
  await run(a.input, a.out);
  const npy = join(a.out, `${MODEL}.npy`);
  const bytes = readFileSync(npy);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 1;
  writeFileSync(npy, bytes);
  const result = await runCli(
    cliArgs(a.input, join(a.dir, "again"), MODEL, {
      servers: server.target,
      reuse: a.out,
    }),
  );
  assert.equal(result.code, 1, result.stderr);
  assert.equal(
    onlyErrorLine(result.stderr),
    `embed-multi: error: --reuse ${a.out} refused: ${MODEL}.npy does not match the sha256 in ${MODEL}.metadata.json (the file changed after it was written); run verify on it, or leave it out`,
  );
});
