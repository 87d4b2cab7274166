// The compose stack for real (scripts/compose-stack.sh): both images built, the CPU
// variant of `docker compose up` embedding examples/, its outputs equal to a local
// run, a server restart in the middle of a longer run, and a second `up` on finished
// outputs. Without a Docker engine the test says in one line why it did not run; in
// CI (CI=true) a missing engine fails it.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  collected,
  EXAMPLE,
  paragraphLines,
  ROOT,
  readCorpusLines,
  readNpy,
  runCli,
  safeDone,
  sleep,
  tempDir,
} from "./helpers.js";

const SCRIPT = join(ROOT, "scripts", "compose-stack.sh");
const FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"];
const MODEL = "all-MiniLM-L6-v2";
const RESTART_ROWS = 3000;

function run(cmd: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv) {
  return collected(spawn(cmd, args, { cwd, env }));
}

/** Rows of `a` and `b` (two .npy files of the same shape): the lowest cosine. */
function minCosine(a: string, b: string): number {
  const x = readNpy(a);
  const y = readNpy(b);
  assert.deepEqual([x.rows, x.dim], [y.rows, y.dim], `${a} and ${b} have one shape`);
  let low = 1;
  for (let r = 0; r < x.rows; r++) {
    let dot = 0;
    let nx = 0;
    let ny = 0;
    for (let c = 0; c < x.dim; c++) {
      const u = x.data[r * x.dim + c] ?? 0;
      const v = y.data[r * y.dim + c] ?? 0;
      dot += u * v;
      nx += u * u;
      ny += v * v;
    }
    low = Math.min(low, dot / Math.sqrt(nx * ny));
  }
  return low;
}

/** The ids of a JSONL output, in order. */
function jsonlIds(path: string): string[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => {
      const row = JSON.parse(l) as { paper_id: string; paragraph_index: number };
      return `${row.paper_id}#${row.paragraph_index}`;
    });
}

/** Asserts that `out/stem.*` from the stack equal the local run in `local`. */
function assertSameAsLocal(stack: string, local: string): void {
  const cos = minCosine(join(stack, `${MODEL}.npy`), join(local, `${MODEL}.npy`));
  assert.ok(cos >= 0.99999, `lowest cosine between the stack's and a local run's rows: ${cos}`);
  assert.deepEqual(
    jsonlIds(join(stack, `${MODEL}.jsonl`)),
    jsonlIds(join(local, `${MODEL}.jsonl`)),
  );
}

test("docker compose (CPU): both images, the stack embeds examples/ as a local run does, survives a server restart", async (t) => {
  const prepared = spawnSync("bash", [SCRIPT, "prepare"], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "inherit", "pipe"],
  });
  if (prepared.status === 3) {
    const why = prepared.stderr.trim().split("\n").at(-1) ?? "compose: not run";
    assert.notEqual(process.env.CI, "true", `in CI a Docker engine is required: ${why}`);
    console.log(why);
    t.skip(why);
    return;
  }
  assert.equal(prepared.status, 0, prepared.stderr);

  const ctx = tempDir("compose");
  const uid = process.getuid?.() ?? 1000;
  const gid = process.getgid?.() ?? 1000;
  const project = `embedmulti-test-${process.pid}`;
  const env = {
    ...process.env,
    COMPOSE_PROJECT_NAME: project,
    EMBED_UID: String(uid),
    EMBED_GID: String(gid),
    HF_HUB_OFFLINE: "1",
    // The classic builder: it finds the script's builds (host network) in its cache.
    DOCKER_BUILDKIT: process.env.DOCKER_BUILDKIT ?? "0",
  };
  const compose = (args: readonly string[]) => run("docker", ["compose", ...args], ctx, env);
  try {
    // 1. A clean context, both images, the README's CPU command as written.
    const up = await run("bash", [SCRIPT, "up", ctx], ROOT, env);
    assert.equal(up.code, 0, `${up.stdout}\n${up.stderr}`);
    const stackOut = join(ctx, "out", "example");
    assert.equal(statSync(join(stackOut, `${MODEL}.npy`)).uid, uid, "outputs belong to EMBED_UID");

    const localOut = join(tempDir("compose-local"), "example");
    const local = await runCli(cliArgs(EXAMPLE, localOut, MODEL, { progress: "log" }));
    assert.equal(local.code, 0, local.stderr);
    assertSameAsLocal(stackOut, localOut);
    // The CPU stack runs the default engine: OpenVINO, as the local run does on this CPU.
    const stackMeta = JSON.parse(readFileSync(join(stackOut, `${MODEL}.metadata.json`), "utf8"));
    assert.equal(stackMeta.engine, "openvino", "the stack's server ran the OpenVINO engine");

    // 2. The inference image runs as a non-root user and its own HEALTHCHECK turns healthy.
    const image = "embed-multi-inference:local";
    const inspect = spawnSync("docker", ["image", "inspect", "-f", "{{.Config.User}}", image], {
      encoding: "utf8",
    });
    assert.equal(inspect.stdout.trim(), "10001:10001");
    const name = `${project}-health`;
    const started = spawnSync(
      "docker",
      [
        "run",
        "-d",
        "--name",
        name,
        "-e",
        "HF_HUB_OFFLINE=1",
        image,
        "--host",
        "0.0.0.0",
        "--port",
        "50051",
        "--device",
        "cpu",
      ],
      { encoding: "utf8" },
    );
    assert.equal(started.status, 0, started.stderr);
    try {
      let health = "";
      for (let i = 0; i < 90 && health !== "healthy"; i++) {
        await sleep(2000);
        health = spawnSync("docker", ["inspect", "-f", "{{.State.Health.Status}}", name], {
          encoding: "utf8",
        }).stdout.trim();
      }
      assert.equal(health, "healthy", "the image's HEALTHCHECK");
      const id = spawnSync("docker", ["exec", name, "id", "-u"], { encoding: "utf8" });
      assert.equal(id.stdout.trim(), "10001");
    } finally {
      spawnSync("docker", ["rm", "-f", name]);
    }

    // 3. `docker compose restart inference` in the middle of a longer run.
    const corpus = readCorpusLines().map((l) => (JSON.parse(l) as { text: string }).text);
    const lines = paragraphLines(RESTART_ROWS, (i) => ["restart", corpus[i % corpus.length] ?? ""]);
    writeFileSync(join(ctx, "examples", "restart.jsonl"), lines.map((l) => `${l}\n`).join(""));
    const longArgs = ["--models", MODEL, "--servers", "inference:50051", "--progress", "log"];
    const longRun = compose([
      ...FILES,
      "run",
      "--rm",
      "-T",
      "orchestrator",
      "--input_file",
      "examples/restart.jsonl",
      "--output_dir",
      "/out/restart",
      ...longArgs,
    ]);
    const longOut = join(ctx, "out", "restart");
    let ended = false;
    void longRun.then(() => {
      ended = true;
    });
    while (!ended && safeDone(longOut) < 3) await sleep(500);
    assert.equal(ended, false, "the long run was still running when the server restarted");
    const restarted = await compose([...FILES, "restart", "inference"]);
    assert.equal(restarted.code, 0, restarted.stderr);
    const long = await longRun;
    assert.equal(long.code, 0, `${long.stdout}\n${long.stderr}`);
    const localLong = join(tempDir("compose-local-long"), "restart");
    const localLongRun = await runCli(
      cliArgs(join(ctx, "examples", "restart.jsonl"), localLong, MODEL, { progress: "log" }),
    );
    assert.equal(localLongRun.code, 0, localLongRun.stderr);
    assertSameAsLocal(longOut, localLong);
    assert.equal(jsonlIds(join(longOut, `${MODEL}.jsonl`)).length, RESTART_ROWS);

    // 4. down, then up again on the finished outputs: nothing to do.
    const down = await compose([...FILES, "down"]);
    assert.equal(down.code, 0, down.stderr);
    const again = await compose([...FILES, "up", "--build", "--exit-code-from", "orchestrator"]);
    assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);
    assert.match(again.stdout + again.stderr, /nothing to do/);
  } finally {
    await compose([...FILES, "down", "--volumes", "--remove-orphans"]);
  }
});
