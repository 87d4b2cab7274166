import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { freePort, ROOT, sleep, tempDir, testEnv } from "./helpers.js";

/** infinity-emb's own venv (scripts/setup-infinity.sh), never .venv. */
export const INFINITY_VENV =
  process.env.EMBED_INFINITY_VENV ?? join(ROOT, ".cache", "infinity-venv");
export const MINILM_DIR = join(
  process.env.EMBED_MODEL_DIR ?? join(ROOT, "models"),
  "sentence-transformers",
  "all-MiniLM-L6-v2",
);
/** The name infinity serves the folder under: its last two path parts. */
export const INFINITY_SERVED_NAME = "sentence-transformers/all-MiniLM-L6-v2";

/** Makes the venv when scripts/setup.sh has not (a stamp makes this free when it has). */
export function ensureInfinity(): void {
  const result = spawnSync("bash", [join(ROOT, "scripts", "setup-infinity.sh")], {
    stdio: ["ignore", "inherit", "inherit"],
    env: process.env,
  });
  if (result.status !== 0) throw new Error("scripts/setup-infinity.sh failed");
}

export interface RunningInfinity {
  /** The base URL for --servers openai:… */
  readonly url: string;
  readonly pid: number;
  /** SIGKILL, and wait for the exit. */
  stop(): Promise<void>;
}

/**
 * A real infinity-emb serving the offline all-MiniLM-L6-v2 folder on
 * 127.0.0.1 through its OpenAI-compatible route (`/v1/embeddings`), torch on
 * the CPU with one thread (two share the machine with the orchestrator).
 */
export async function startInfinity(
  extra: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<RunningInfinity> {
  if (!existsSync(join(INFINITY_VENV, "bin", "infinity_emb"))) ensureInfinity();
  const port = await freePort();
  const child = spawn(
    join(INFINITY_VENV, "bin", "infinity_emb"),
    [
      "v2",
      "--model-id",
      MINILM_DIR,
      "--url-prefix",
      "/v1",
      "--engine",
      "torch",
      "--device",
      "cpu",
      "--no-model-warmup",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--log-level",
      "warning",
      ...extra,
    ],
    {
      // INFINITY_HOME: its .infinity_cache goes to a temporary folder, not the working directory.
      env: testEnv({
        DO_NOT_TRACK: "1",
        OMP_NUM_THREADS: "1",
        INFINITY_HOME: tempDir("infinity-home"),
        ...env,
      }),
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // The server goes with the test process, even one that fails.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const url = `http://127.0.0.1:${port}/v1`;
  const until = Date.now() + 240_000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`infinity_emb exited: ${stderr}`);
    try {
      const res = await fetch(`${url}/models`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    await sleep(500);
  }
  if (Date.now() >= until) {
    child.kill("SIGKILL");
    throw new Error(`infinity_emb did not come up in 240 s: ${stderr}`);
  }
  return {
    url,
    pid: child.pid ?? 0,
    stop: async () => {
      process.off("exit", killOnExit);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}
