import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { ServerError } from "../errors.js";

/**
 * The local server's engines: sentence-transformers picks the fastest forward that matches
 * torch float32 at load (OpenVINO on a CPU); openvino and torch name the CPU one; debug
 * computes fake vectors without a model.
 */
export const LOCAL_ENGINES = ["sentence-transformers", "openvino", "torch", "debug"] as const;
export type LocalEngine = (typeof LOCAL_ENGINES)[number];

/** How the run starts its local servers (validated by the run's config). */
export interface EmbeddedServerConfig {
  /** The inference server's console script. */
  readonly command: string;
  readonly modelDir: string;
  readonly engine: LocalEngine;
  readonly debugDim: number;
  /** torch threads; 0 = the server's default. */
  readonly threads: number;
  /** --verbose: the server logs each batch (EMBED_LOG_LEVEL=debug) and its lines are shown. */
  readonly verbose: boolean;
}

/** Importing torch and starting up takes seconds; the first run on a cold disk, more. */
const START_TIMEOUT_MS = 180_000;
const STOP_GRACE_MS = 5_000;
const LISTENING = /listening on (\S+):(\d+)/;

/**
 * The local inference server started when no --servers are given: bound to
 * 127.0.0.1 on a port it picks itself (and tells us on stdout), stopped when
 * the run ends however it ends. Its stdin is a pipe it watches, so it exits
 * even if this process is killed with SIGKILL.
 */
export class EmbeddedServer {
  private stderrTail: string[] = [];
  private exited: Promise<number | null>;

  private constructor(
    private readonly child: ChildProcess,
    readonly target: string,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null) resolve(child.exitCode);
      else child.once("exit", (code) => resolve(code));
    });
  }

  static async start(
    config: EmbeddedServerConfig,
    device: string,
    signal?: AbortSignal,
  ): Promise<EmbeddedServer> {
    const args = [
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--model-dir",
      config.modelDir,
      "--engine",
      config.engine,
      "--exit-on-stdin-eof",
    ];
    if (device) args.push("--device", device);
    if (config.engine === "debug") args.push("--debug-dim", String(config.debugDim));
    if (config.threads > 0) args.push("--threads", String(config.threads));

    const child = spawn(config.command, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: {
        ...process.env,
        PYTHONUNBUFFERED: "1",
        ...(config.verbose ? { EMBED_LOG_LEVEL: "debug" } : {}),
      },
    });
    const stderrTail: string[] = [];
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
      if (config.verbose || process.env.EMBED_SERVER_LOG)
        process.stderr.write(`[server] ${line}\n`);
    });

    const target = await new Promise<string>((resolve, reject) => {
      const fail = (why: string) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        const last = stderrTail.filter((l) => l.trim()).slice(-1)[0];
        reject(
          new ServerError(`the embedded inference server ${why}${last ? `: ${last.trim()}` : ""}`),
        );
      };
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        fail(`did not start within ${START_TIMEOUT_MS / 1000} s`);
      }, START_TIMEOUT_MS);
      child.once("error", (err) => {
        const code = (err as NodeJS.ErrnoException).code;
        fail(
          code === "ENOENT"
            ? `cannot be started: ${config.command} not found (run scripts/setup.sh, or set EMBED_INFERENCE_SERVER)`
            : `cannot be started: ${err.message}`,
        );
      });
      const onEarlyExit = (code: number | null, signal: NodeJS.Signals | null) =>
        fail(`exited during start-up (${signal ?? `code ${code}`})`);
      child.once("exit", onEarlyExit);
      // A signal during start-up (importing torch can take a minute) ends the wait at once.
      const onAbort = () => {
        clearTimeout(timer);
        child.off("exit", onEarlyExit);
        child.kill("SIGKILL");
        reject(signal?.reason);
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        const match = LISTENING.exec(line);
        if (match) {
          clearTimeout(timer);
          child.off("exit", onEarlyExit);
          signal?.removeEventListener("abort", onAbort);
          resolve(`${match[1]}:${match[2]}`);
        }
      });
    });
    const server = new EmbeddedServer(child, target);
    server.stderrTail = stderrTail;
    return server;
  }

  /** The last lines the server logged, for error messages. */
  lastLog(): string {
    return this.stderrTail.join("\n");
  }

  /** Stops the server: SIGTERM, then SIGKILL after a grace period. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), STOP_GRACE_MS);
    await this.exited;
    clearTimeout(timer);
  }

  /** For process 'exit' handlers, where nothing asynchronous runs. */
  killNow(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}
