import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { buildRunConfig } from "../src/config.js";
import { RUN_METRICS } from "../src/metrics/run-metrics.js";
import type { Progress } from "../src/progress.js";
import { run } from "../src/run.js";
import { cliArgs } from "./cli-args.js";
import {
  assertSameOutputs,
  corpusSlice,
  freePort,
  inputDir,
  type RunningServer,
  readLedger,
  runCli,
  safeDone,
  sleep,
  startServer,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const NAME = "fleet.test";

/** Batches in flight per server, as the orchestrator's metrics say now. */
async function inFlight(): Promise<Map<string, number>> {
  const metric = RUN_METRICS.registry.getSingleMetric("embed_multi_batches_in_flight");
  const got = await metric?.get();
  return new Map((got?.values ?? []).map((v) => [String(v.labels.server), v.value]));
}

test("a dns:/// name re-resolved mid-run: the new address joins and works, the vanished one is drained and its batches redone elsewhere", async () => {
  const rows = 3000;
  const { dir, input } = inputDir("fleet", corpusSlice(rows));
  const port = await freePort("127.0.0.2");
  const servers: RunningServer[] = [];
  try {
    for (const host of ["127.0.0.2", "127.0.0.3"]) {
      servers.push(await startServer(["--engine", "debug", "--host", host], undefined, port));
    }
    const [a, b] = [`127.0.0.2:${port}`, `127.0.0.3:${port}`];
    const out = join(dir, "out");
    const config = buildRunConfig(
      {
        input_file: input,
        output_dir: out,
        models: [STEM],
        servers: [`dns:///${NAME}:${port}`],
        batch_size: 4,
        checkpoint_interval: 8,
        max_workers: 2,
        resolve_interval: 0.1,
        progress: "none",
      },
      process.env,
    );
    let answer = ["127.0.0.2"];
    const asked: string[] = [];
    const notes: string[] = [];
    const progress: Progress = {
      addModel: () => {},
      advance: () => {},
      servers: () => {},
      note: (line) => notes.push(line),
      stop: () => {},
    };
    const running = run(config, {
      progress,
      signal: new AbortController().signal,
      resolve: async (host) => {
        asked.push(host);
        return answer;
      },
    });
    let total = 0;
    while (total === 0 || safeDone(out) < total / 5) {
      try {
        total = readLedger(out).batches;
      } catch {
        // not planned yet
      }
      await sleep(20);
    }
    const before = await inFlight();
    answer = ["127.0.0.3"];
    const summary = await running;

    assert.ok(asked.every((h) => h === NAME) && asked.length >= 2, "the name was resolved again");
    assert.ok((before.get(a) ?? 0) > 0, `${a} had batches in flight when it left`);
    assert.deepEqual(
      (summary.membership ?? []).map((m) => `${m.change} ${m.target}`),
      [`joined ${b}`, `left ${a}`],
    );
    assert.match(notes.join("\n"), new RegExp(`server ${b.replace(/\./g, "\\.")} joined`));
    assert.match(
      notes.join("\n"),
      new RegExp(`server ${a.replace(/\./g, "\\.")} left .*draining it`),
    );

    const ledger = readLedger(out);
    assert.equal(ledger.done, ledger.batches);
    assert.equal(ledger.completionsOne, ledger.batches, "every batch written once");
    assert.deepEqual(
      ledger.rowsCovered,
      Array.from({ length: rows }, (_, i) => i),
    );
    const db = new Database(join(out, "embed-multi.checkpoint.sqlite"), { readonly: true });
    const byServer = new Map(
      (
        db.prepare("SELECT server, COUNT(*) AS n FROM batches GROUP BY server").all() as {
          server: string;
          n: number;
        }[]
      ).map((r) => [r.server, r.n]),
    );
    db.close();
    assert.ok((byServer.get(b) ?? 0) > 0, `the joined server embedded batches: ${[...byServer]}`);
    assert.equal((byServer.get(a) ?? 0) + (byServer.get(b) ?? 0), ledger.batches);
    // A's batches in flight when it left were not written by A: the rest of the run is B's.
    assert.ok((byServer.get(a) ?? 0) < ledger.batches);

    const reference = join(dir, "reference");
    const ref = await runCli(
      cliArgs(input, reference, STEM, { servers: a, batch_size: 4, checkpoint_interval: 8 }),
    );
    assert.equal(ref.code, 0, ref.stderr);
    assertSameOutputs(reference, out, STEM);
  } finally {
    for (const s of servers) await s.stop();
  }
});
