import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  assertSameAsReferenceRun,
  errorLines,
  inputDir,
  paragraphLines,
  runCli,
  runVerify,
  serverForTests,
  sleep,
  spawnCli,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const PID_FILE = "embed-multi.checkpoint.lock.pid";

const server = serverForTests();

function lines(count: number): string[] {
  return paragraphLines(count, (i) => [`p${i % 97}`, `Paragraph ${i}: ${"word ".repeat(i % 40)}`]);
}

function args(input: string, out: string, extra: { restart?: true } = {}): string[] {
  return cliArgs(input, out, STEM, {
    servers: server.target,
    batch_size: 4,
    max_workers: 1,
    checkpoint_interval: 8,
    ...extra,
  });
}

/** Waits until the run's pid is in the lock's pid file: it holds the folder. */
async function waitForHolder(out: string, pid: number): Promise<void> {
  const path = join(out, PID_FILE);
  for (let i = 0; i < 600; i++) {
    if (existsSync(path) && readFileSync(path, "utf8").trim() === String(pid)) return;
    await sleep(25);
  }
  assert.fail("the first run never took the lock");
}

test("a second run on the same folder refuses at once, naming the holder; the first finishes intact", async () => {
  const { dir, input, out } = inputDir("lock", lines(3000));
  const first = spawnCli(args(input, out));
  await waitForHolder(out, first.child.pid ?? -1);

  for (const extra of [{}, { restart: true } as const]) {
    const second = await runCli(args(input, out, extra));
    assert.equal(first.child.exitCode, null, "the first run was still running");
    assert.equal(second.code, 1, second.stderr);
    const errors = errorLines(second.stderr);
    assert.equal(errors.length, 1, second.stderr);
    assert.ok(
      (errors[0] ?? "").startsWith(
        `embed-multi: error: ${out} is in use by another embed-multi run (pid ${first.child.pid})`,
      ),
      errors[0],
    );
    assert.doesNotMatch(second.stderr, /this is a bug/);
  }

  const result = await first.done;
  assert.equal(result.code, 0, result.stderr);
  // The same output as a run that had the folder to itself.
  const alone = join(dir, "alone");
  await assertSameAsReferenceRun(args(input, alone), alone, out, STEM);
});

test("a run killed with SIGKILL leaves no stuck lock: the next run proceeds", async () => {
  const { input, out } = inputDir("lock-kill", lines(3000));
  const first = spawnCli(args(input, out));
  await waitForHolder(out, first.child.pid ?? -1);
  first.child.kill("SIGKILL");
  await first.done;

  const next = await runCli(args(input, out));
  assert.equal(next.code, 0, next.stderr);
  assert.ok(existsSync(join(out, `${STEM}.metadata.json`)));
});

test("a run whose lock file is deleted under it does not finish beside a second run", async () => {
  const { input, out } = inputDir("lock-deleted", lines(1500));
  const first = spawnCli(args(input, out));
  await waitForHolder(out, first.child.pid ?? 0);
  rmSync(join(out, PID_FILE), { force: true });
  rmSync(join(out, "embed-multi.checkpoint.lock"), { force: true });
  const second = await runCli(args(input, out));
  const firstResult = await first.done;
  assert.ok(
    firstResult.code !== 0 || second.code !== 0,
    `not both end well: ${firstResult.stderr} | ${second.stderr}`,
  );
  const failed = firstResult.code !== 0 ? firstResult : second;
  assert.match(failed.stderr, /lock/);
  const last = await runCli(args(input, out));
  assert.equal(last.code, 0, last.stderr);
  const verified = await runVerify(["--output_dir", out]);
  assert.equal(verified.code, 0, verified.stdout);
});
