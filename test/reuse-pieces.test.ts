import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { Ledger } from "../src/checkpoint/ledger.js";
import { ExitError } from "../src/errors.js";
import { NpyMatrixFile } from "../src/output/npy.js";
import { planBatches } from "../src/plan/planner.js";
import { HashIndex } from "../src/reuse/hash-index.js";
import { HASH_BYTES } from "../src/reuse/hashes.js";
import { attachFollowers, planRows } from "../src/reuse/plan-rows.js";
import { SourceMatrix } from "../src/reuse/sources.js";
import { tempDir } from "./helpers.js";
import { storedModel } from "./phase-helpers.js";

function hashesOf(texts: readonly string[]): Buffer {
  return Buffer.concat(
    texts.map((t) => createHash("sha256").update(t).digest().subarray(0, HASH_BYTES)),
  );
}

test("the hash index gives each row the first row with its hash, and finds hashes of other files", () => {
  const hashes = hashesOf(["a", "b", "a", "c", "b", "a"]);
  const index = new HashIndex(hashes);
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5].map((r) => index.add(r)),
    [0, 1, 0, 3, 1, 0],
  );
  const other = hashesOf(["c", "z", "a"]);
  assert.equal(index.find(other, 0), 3);
  assert.equal(index.find(other, HASH_BYTES), -1);
  assert.equal(index.find(other, 2 * HASH_BYTES), 0);
});

test("planRows: reused rows from the first source that has them, duplicates follow their first row", () => {
  const dir = tempDir("reuse-plan");
  const first = writeHashes(join(dir, "a.hashes"), ["x", "b"]);
  const second = writeHashes(join(dir, "b.hashes"), ["b", "q", "c"]);
  const texts = ["a", "b", "c", "a", "b", "d", "c"];
  const plan = planRows(hashesOf(texts), true, [first, second], 2);
  assert.deepEqual(Array.from(plan.embed), [0, 5]);
  assert.deepEqual(Array.from(plan.leaderOf), [0, -1, -1, 0, -1, 5, -1]);
  assert.equal(plan.reused, 4);
  assert.equal(plan.deduplicated, 1);
  // "b" (rows 1, 4) from the first source's row 1; "c" (rows 2, 6) from the second's row 2;
  // jobs of at most 2 rows.
  assert.deepEqual(
    plan.copies.map((c) => [c.sourceNo, Array.from(c.rows), Array.from(c.sourceRows)]),
    [
      [0, [1, 4], [1, 1]],
      [1, [2, 6], [2, 2]],
    ],
  );
  const plain = planRows(hashesOf(texts), false, []);
  assert.deepEqual(Array.from(plain.embed), [0, 1, 2, 3, 4, 5, 6]);
  assert.equal(plain.deduplicated, 0);
});

test("a batch carries its rows' duplicates as (row, index) pairs", () => {
  const plan = planRows(hashesOf(["a", "b", "a", "a", "c"]), true, []);
  const lengths = Uint32Array.of(5, 3, 5, 5, 1);
  const batches = attachFollowers(
    planBatches(lengths, { batchSize: 2, maxBatchTokens: 0 }, plan.embed).batches,
    plan.leaderOf,
  );
  assert.deepEqual(
    batches.map((b) => [Array.from(b.rows), b.followers ? Array.from(b.followers) : null]),
    [
      [
        [0, 1],
        [2, 0, 3, 0],
      ],
      [[4], null],
    ],
  );
});

test("the checkpoint keeps copies and followers: counted in the rows, done only when marked", () => {
  const path = join(tempDir("reuse-ledger"), "c.sqlite");
  const ledger = Ledger.open(path);
  ledger.startRun({ path: "/in", size: 1, sha256: "ff", rows: 6 });
  const model = storedModel({ batchSize: 2, maxBatchTokens: 0 }, { revision: "r", maxLength: 8 });
  ledger.addModel(
    model,
    [
      {
        batchNo: 0,
        rows: Uint32Array.of(0, 1),
        paddedTokens: 4,
        realTokens: 4,
        followers: Uint32Array.of(2, 0),
      },
    ],
    {
      sources: [{ sourceNo: 0, dir: "/old", npy: "/old/m.npy", npySha256: "aa", npyBytes: 10 }],
      copies: [
        { copyNo: 0, sourceNo: 0, rows: Uint32Array.of(3, 4), sourceRows: Uint32Array.of(7, 9) },
        { copyNo: 1, sourceNo: 0, rows: Uint32Array.of(5), sourceRows: Uint32Array.of(1) },
      ],
    },
  );
  let status = ledger.status("m");
  assert.equal(status.rows, 6);
  assert.equal(status.deduplicatedRows, 1);
  assert.equal(status.reusedRows, 3);
  assert.deepEqual(status.reusedFrom, [{ dir: "/old", rows: 3 }]);
  assert.equal(status.copies, 2);
  assert.equal(status.doneCopies, 0);
  assert.deepEqual(Array.from(ledger.pendingBatches("m")[0]?.followers ?? []), [2, 0]);
  ledger.markCopiesDone("m", [1]);
  status = ledger.status("m");
  assert.equal(status.doneCopies, 1);
  assert.equal(status.doneRows, 1);
  assert.deepEqual(
    ledger.pendingCopies("m").map((c) => [c.copyNo, Array.from(c.sourceRows)]),
    [[0, [7, 9]]],
  );
  ledger.resetModel("m");
  assert.equal(ledger.status("m").doneCopies, 0);
  ledger.close();
});

test("a source matrix that changes or disappears during the run stops it with one line", () => {
  const dir = tempDir("reuse-source");
  const path = join(dir, "m.npy");
  const matrix = NpyMatrixFile.create(path, 3, 2);
  matrix.writeRows([0, 1, 2], new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer));
  matrix.sync();
  matrix.close();
  const bytes = readFileSync(path);
  const sha = createHash("sha256").update(bytes).digest("hex");
  const source = SourceMatrix.open(path, 2, sha, bytes.length);
  const rows = source.readRows(Uint32Array.of(2, 0));
  assert.deepEqual(Array.from(new Float32Array(new Uint8Array(rows).buffer)), [5, 6, 1, 2]);
  appendFileSync(path, "x");
  assert.throws(
    () => source.readRows(Uint32Array.of(1)),
    (err: unknown) =>
      err instanceof ExitError &&
      err.message.startsWith(`--reuse source ${path} changed during the run (modified)`),
  );
  source.close();
  assert.throws(
    () => SourceMatrix.open(path, 2, sha, bytes.length),
    /its sha256 differs from when the run planned it/,
  );
  assert.throws(
    () => SourceMatrix.open(join(dir, "gone.npy"), 2, sha, bytes.length),
    /changed during the run \(it is missing\)/,
  );
});

function writeHashes(path: string, texts: readonly string[]): string {
  writeFileSync(path, hashesOf(texts));
  return path;
}
