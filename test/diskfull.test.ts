import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { DiskFullError } from "../src/errors.js";
import { asDiskFull, closeLedger, isDiskFull } from "../src/output/diskfull.js";
import { cliArgs } from "./cli-args.js";
import {
  assertSameAsReferenceRun,
  diskFullEnv,
  errorLines,
  inputDir,
  paragraphLines,
  runCli,
  tempDir,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

function lines(count: number): string[] {
  return paragraphLines(count, (i) => [`p${i}`, `Paragraph ${i} ${"x".repeat(i % 50)}`]);
}

function args(input: string, out: string): string[] {
  return cliArgs(input, out, STEM, {
    engine: "debug",
    batch_size: 8,
    checkpoint_interval: 16,
    output_format: "both",
  });
}

test("disk full while embedding: one line saying so, where, and that the same command resumes; then it resumes byte-identical", async () => {
  const { dir, input, out } = inputDir("diskfull", lines(300));
  const full = await runCli(args(input, out), diskFullEnv(100));
  assert.equal(full.code, 1, full.stderr);
  const errors = errorLines(full.stderr).filter((l) => l.startsWith("embed-multi: error:"));
  assert.equal(errors.length, 1, full.stderr);
  assert.match(
    errors[0] ?? "",
    /disk full: cannot write .*all-MiniLM-L6-v2\.npy\.partial \(no space left on device\); free some space, then run the same command again to resume/,
  );
  assert.doesNotMatch(full.stderr, /this is a bug|internal error/);
  assert.ok(!existsSync(join(out, `${STEM}.metadata.json`)), "nothing claims to be complete");

  const resumed = await runCli(args(input, out));
  assert.equal(resumed.code, 0, resumed.stderr);
  const clean = join(dir, "clean");
  await assertSameAsReferenceRun(args(input, clean), clean, out, STEM);
  assert.deepEqual(
    readdirSync(out).filter((f) => f.endsWith(".partial")),
    [],
  );
});

/** A real SQLITE_FULL from SQLite: a database capped at a few pages, filled. */
function realSqliteFull(): unknown {
  const db = new Database(join(tempDir("sqlite-full"), "full.sqlite"));
  try {
    db.exec("CREATE TABLE t (x BLOB)");
    db.pragma("max_page_count = 4");
    for (let i = 0; i < 100; i++) db.prepare("INSERT INTO t VALUES (?)").run(Buffer.alloc(4096));
  } catch (err) {
    return err;
  } finally {
    db.close();
  }
  assert.fail("SQLite never filled up");
}

test("SQLite's 'database or disk is full', ENOSPC and EDQUOT all read as disk full", () => {
  const sqlite = realSqliteFull();
  assert.ok(isDiskFull(sqlite), String(sqlite));
  const shown = asDiskFull(sqlite, "/out/embed-multi.checkpoint.sqlite");
  assert.ok(shown instanceof DiskFullError);
  assert.match(shown.message, /^disk full: cannot write \/out\/embed-multi\.checkpoint\.sqlite/);
  for (const code of ["ENOSPC", "EDQUOT"]) {
    assert.ok(
      asDiskFull(Object.assign(new Error(code), { code }), "/out") instanceof DiskFullError,
    );
  }
  const other = new Error("something else");
  assert.equal(asDiskFull(other, "/out"), other);
});

test("closing the checkpoint on a full disk never hides the error that stopped the run", () => {
  const sqlite = realSqliteFull();
  let closed = 0;
  const ledger = {
    path: "/out/embed-multi.checkpoint.sqlite",
    addProcessingTime: () => {
      throw sqlite;
    },
    close: () => {
      closed++;
    },
  };
  // The run failed first: the bookkeeping failure is dropped, the ledger still closed.
  assert.doesNotThrow(() => closeLedger(ledger, 1, new Error("first")));
  assert.equal(closed, 1);
  // The run went well: the failure is reported, as disk full, naming the checkpoint.
  assert.throws(
    () => closeLedger(ledger, 1, null),
    /^DiskFullError|disk full: cannot write \/out\/embed-multi/,
  );
  assert.equal(closed, 2);
});
