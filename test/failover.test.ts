import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  type CliResult,
  corpusSlice,
  inputDir,
  multiServerArgs,
  npyBytes,
  onlyErrorLine,
  type RunningServer,
  readNpy,
  runCli,
  safeDone,
  sleep,
  spawnCli,
  startServer,
  testEnv,
  waitForDone,
  withServer,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
/** Spot rows in most batches of 8 (the default 0.005 would put one in a few). */
const SPOTTED = { spot_check: 0.1 };

/**
 * Starts a run on a server of its own and kills that server once two
 * batches are done: the run is then left with no server.
 */
async function runThenKillServer(
  input: string,
  out: string,
  extra: Record<string, number>,
): Promise<{ target: string; done: Promise<CliResult> }> {
  const server = await startServer(["--threads", "2"]);
  const { done } = spawnCli(multiServerArgs(input, out, [server.target], extra));
  await waitForDone(out, 2, done);
  await server.stop();
  return { target: server.target, done };
}

async function withServers<T>(
  count: number,
  body: (servers: RunningServer[]) => Promise<T>,
): Promise<T> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => startServer(["--threads", "1"])),
  );
  try {
    return await body(servers);
  } finally {
    for (const s of servers) {
      try {
        process.kill(s.pid, "SIGCONT");
      } catch {
        // already gone
      }
      await s.stop();
    }
  }
}

test("two real servers, one killed with SIGKILL mid-run: every row once, same vectors as one server", async () => {
  const { dir, input } = inputDir("failover-kill", corpusSlice(200, 3000));
  await withServers(2, async ([a, b]) => {
    assert.ok(a && b);
    // Spot rows in most batches (8 rows at 0.1): probes on one server, rows the other
    // server embedded on two; their content must not change the other rows' bits.
    const single = join(dir, "single");
    const reference = await runCli(multiServerArgs(input, single, [a.target], SPOTTED));
    assert.equal(reference.code, 0, reference.stderr);

    const out = join(dir, "two");
    const { done } = spawnCli(multiServerArgs(input, out, [a.target, b.target], SPOTTED));
    await waitForDone(out, 3, done);
    await b.stop(); // SIGKILL
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, new RegExp(`server ${b.target.replace(/\./g, "\\.")} is down`));
    assert.ok(
      npyBytes(single, STEM).equals(npyBytes(out, STEM)),
      "same vectors as the single-server run",
    );
    const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
    assert.equal(meta.num_paragraphs, 200);
  });
});

test("one real server, the run killed with SIGKILL and resumed: the same bytes as an uninterrupted run, spot rows in its batches", async () => {
  const { dir, input } = inputDir("resume-kill-real", corpusSlice(160, 3100));
  await withServers(1, async ([a]) => {
    assert.ok(a);
    const whole = join(dir, "whole");
    const reference = await runCli(multiServerArgs(input, whole, [a.target], SPOTTED));
    assert.equal(reference.code, 0, reference.stderr);

    const out = join(dir, "resumed");
    const first = spawnCli(multiServerArgs(input, out, [a.target], SPOTTED));
    await waitForDone(out, 4, first.done);
    first.child.kill("SIGKILL");
    assert.equal((await first.done).signal, "SIGKILL");
    const resumed = await runCli(multiServerArgs(input, out, [a.target], SPOTTED));
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming: \d+ of \d+ batches done/);
    assert.ok(
      npyBytes(whole, STEM).equals(npyBytes(out, STEM)),
      "the resumed run's vectors are the uninterrupted run's, byte for byte",
    );
  });
});

test("a hung server (SIGSTOP) costs a deadline, not the run", async () => {
  const { dir, input } = inputDir("failover-stop", corpusSlice(160, 3300));
  await withServers(2, async ([a, b]) => {
    assert.ok(a && b);
    const out = join(dir, "out");
    const { done } = spawnCli(
      multiServerArgs(input, out, [a.target, b.target], { batch_timeout: 3 }),
    );
    await waitForDone(out, 2, done);
    process.kill(b.pid, "SIGSTOP");
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /DEADLINE_EXCEEDED/);
    const reference = join(dir, "reference");
    assert.equal((await runCli(multiServerArgs(input, reference, [a.target]))).code, 0);
    assert.ok(npyBytes(reference, STEM).equals(npyBytes(out, STEM)));
  });
});

test("all servers down: one coming back within --server_timeout lets the run finish", async () => {
  const { input, out } = inputDir("failover-back", corpusSlice(160, 3500));
  const { target, done } = await runThenKillServer(input, out, { server_timeout: 90 });
  const port = Number(target.split(":")[1]);
  await sleep(1000);
  const second = await startServer(["--threads", "2"], undefined, port);
  try {
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /is down/);
    assert.match(result.stderr, /is up/);
  } finally {
    await second.stop();
  }
});

test("all servers down for longer than --server_timeout: a clear error, then a resumable checkpoint", async () => {
  const { input, out } = inputDir("failover-none", corpusSlice(160, 3700));
  const { done } = await runThenKillServer(input, out, { server_timeout: 2 });
  const result = await done;
  assert.notEqual(result.code, 0);
  const error = onlyErrorLine(result.stderr);
  assert.match(
    error,
    /no inference server up for 2 s \(--server_timeout\).*run the same command again to resume/,
  );
  const kept = safeDone(out);
  assert.ok(kept >= 2);

  await withServer(["--threads", "2"], async (again) => {
    const resumed = await runCli(multiServerArgs(input, out, [again.target]));
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming: \d+ of \d+ batches done/);
  });
});

test("out-of-memory splitting on the server (a test-only fault) gives the same vectors as unsplit batches", async () => {
  const { dir, input } = inputDir("failover-oom", corpusSlice(40, 4000));
  await withServer(["--threads", "2"], (plain) =>
    withServer(
      ["--threads", "2"],
      async (splitting) => {
        const a = join(dir, "plain");
        const b = join(dir, "split");
        assert.equal((await runCli(multiServerArgs(input, a, [plain.target]))).code, 0);
        const result = await runCli(multiServerArgs(input, b, [splitting.target]));
        assert.equal(result.code, 0, result.stderr);
        const x = readNpy(join(a, `${STEM}.npy`));
        const y = readNpy(join(b, `${STEM}.npy`));
        assert.equal(x.rows, 40);
        let worst = 0;
        for (let i = 0; i < x.data.length; i++) {
          worst = Math.max(worst, Math.abs((x.data[i] ?? 0) - (y.data[i] ?? 0)));
        }
        assert.ok(worst < 1e-5, `largest difference ${worst}`);
      },
      testEnv(),
      { oomAbove: 2 },
    ),
  );
});

test("a batch that fails on every attempt stops the run, naming its input lines; the checkpoint stays", async () => {
  const lines = corpusSlice(60, 4100);
  const poisonLine = 37;
  lines[poisonLine - 1] = JSON.stringify({
    paper_id: "p",
    paragraph_index: 0,
    text: "zz-poison-zz here",
  });
  const { input, out } = inputDir("failover-poison", lines);
  await withServer(
    ["--engine", "debug"],
    async (server) => {
      const result = await runCli(
        multiServerArgs(input, out, [server.target], { max_attempts: 3 }),
      );
      assert.notEqual(result.code, 0);
      const error = onlyErrorLine(result.stderr);
      assert.match(
        error,
        new RegExp(
          `batch \\d+ of ${STEM} \\(input lines [\\d, ]*\\b${poisonLine}\\b.*failed 3 times`,
        ),
      );
      assert.match(error, /poisoned batch/);
      assert.ok(safeDone(out) >= 1, "the other batches are kept");
      assert.ok(!existsSync(join(out, `${STEM}.npy`)), "no output that looks complete");
    },
    testEnv(),
    { poison: "zz-poison-zz" },
  );
});
