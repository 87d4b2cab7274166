import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT, startServer, testEnv } from "./helpers.js";

// In a process of its own: what is measured is when that process can exit.
const SCRIPT = `
const { GrpcBackend } = await import(${JSON.stringify(join(ROOT, "dist/src/backend/grpc/backend.js"))});
const { embedTexts, loadModelKey } = await import(${JSON.stringify(join(ROOT, "dist/src/backend/embed-texts.js"))});
const { buildRunConfig } = await import(${JSON.stringify(join(ROOT, "dist/src/config.js"))});
const config = buildRunConfig({ input_file: "x", output_dir: "y", models: ["all-MiniLM-L6-v2"] }, {});
const connection = new GrpcBackend(process.argv[1], { tls: null, authToken: "", maxMessageBytes: 1 << 24 });
const model = config.models[0];
const { key } = await loadModelKey(connection, model, "");
process.stdout.write("loaded\\n");
await new Promise((r) => process.stdin.once("data", r));
const controller = new AbortController();
setTimeout(() => controller.abort(new Error("stopped")), 200);
await embedTexts(connection, key, ["a text"], 60_000, controller.signal).catch(() => {});
connection.close();
process.stdout.write("aborted\\n");
`;

test("a signal ends a probe's wait on a hung server at once: no batch timer keeps the process", async () => {
  const server = await startServer(["--engine", "debug"]);
  try {
    const child = spawn(process.execPath, ["--input-type=module", "-e", SCRIPT, server.target], {
      env: testEnv(),
    });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    await new Promise<void>((resolve) =>
      child.stdout.on("data", (d) => {
        stdout += d;
        if (stdout.includes("loaded")) resolve();
      }),
    );
    process.kill(server.pid, "SIGSTOP");
    child.stdin.write("go\n");
    child.stdin.end();
    const code = await Promise.race([
      exited,
      new Promise((r) => setTimeout(() => r("late"), 15_000)),
    ]);
    if (code === "late") child.kill("SIGKILL");
    assert.equal(code, 0, `the process exits well before the 60 s batch timeout: ${stderr}`);
    assert.match(stdout, /aborted/);
  } finally {
    process.kill(server.pid, "SIGCONT");
    await server.stop();
  }
});
