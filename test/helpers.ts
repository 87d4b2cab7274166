import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { GrpcBackend } from "../src/backend/grpc/backend.js";
import { ServerConnection } from "../src/backend/grpc/client.js";
import { LedgerReader } from "../src/checkpoint/ledger.js";
import { waitHealthy } from "../src/dispatch/servers.js";
import { readNpyShape } from "../src/output/npy.js";
import { CHECKPOINT_FILE } from "../src/run/prepare.js";
import { cliArgs, flagArgs } from "./cli-args.js";

/** The repository root (tests run from dist/test/). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI = join(ROOT, "bin", "embed-multi.js");

/**
 * The environment of a run whose disk fills up after `rows` rows of .npy
 * writes: the fault is a test-only module loaded before the CLI (test/faults/).
 */
export function diskFullEnv(rows: number): NodeJS.ProcessEnv {
  const fault = join(ROOT, "dist", "test", "faults", "disk-full.js");
  return testEnv({
    NODE_OPTIONS: `--import=${pathToFileURL(fault).href}`,
    EMBED_FAULT_DISK_FULL_AFTER_ROWS: String(rows),
  });
}
export const PYTHON = join(process.env.EMBED_VENV ?? join(ROOT, ".venv"), "bin", "python");
/** A slice of the unarXive corpus kept in the repository (licence beside it). */
export const CORPUS = join(ROOT, "test", "fixtures", "unarxive-slice.jsonl");
export const EXAMPLE = join(ROOT, "examples", "paragraphs.jsonl");
export const FIXTURES = join(ROOT, "test", "fixtures");

/** A fresh temporary folder, removed when the process ends. */
export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `embed-multi-${name}-`));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `count` valid lines of the corpus slice from `skip` on, wrapping around at its end. */
export function corpusSlice(count: number, skip = 0): string[] {
  const source = readCorpusLines();
  return Array.from({ length: count }, (_, i) => source[(skip + i) % source.length] ?? "");
}

let cachedLines: string[] | null = null;
/** Every line of the corpus slice (paragraphs with empty text are left out of it). */
export function readCorpusLines(): string[] {
  if (!cachedLines) {
    cachedLines = readFileSync(CORPUS, "utf8")
      .split("\n")
      .filter((l) => l.trim().length > 0)
      .filter((l) => (JSON.parse(l) as { text: string }).text.trim().length > 0);
  }
  return cachedLines;
}

export function writeLines(path: string, lines: readonly string[]): string {
  writeFileSync(path, lines.map((l) => `${l}\n`).join(""));
  return path;
}

/** A fresh temporary folder holding `in.jsonl` with `lines`; `out` is where a run writes. */
export function inputDir(
  name: string,
  lines: readonly string[],
): { dir: string; input: string; out: string } {
  const dir = tempDir(name);
  return { dir, input: writeLines(join(dir, "in.jsonl"), lines), out: join(dir, "out") };
}

/** `inputDir`, and beside the input a config file `models.yaml` holding `yaml`. */
export function inputDirWithConfig(
  name: string,
  lines: readonly string[],
  yaml: readonly string[],
): { dir: string; input: string; out: string; config: string } {
  const made = inputDir(name, lines);
  return { ...made, config: writeLines(join(made.dir, "models.yaml"), yaml) };
}

/** `count` JSONL paragraphs; `row(i)` gives paragraph i's paper id and text. */
export function paragraphLines(
  count: number,
  row: (i: number) => readonly [paperId: string, text: string],
): string[] {
  return Array.from({ length: count }, (_, i) => {
    const [paperId, text] = row(i);
    return JSON.stringify({ paper_id: paperId, paragraph_index: i, text });
  });
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Environment of every CLI run in tests: offline, no bars. */
export function testEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1", ...extra };
}

export function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = testEnv(),
): Promise<CliResult> {
  return spawnCli(args, env).done;
}

/** Runs a Python snippet in the project's venv; returns its stdout parsed as JSON. */
export function pythonJson<T>(script: string, args: readonly string[] = []): T {
  const result = spawnSync(PYTHON, [join(FIXTURES, script), ...args], {
    encoding: "utf8",
    env: testEnv(),
    maxBuffer: 256 * 1024 * 1024,
  });
  if (result.status !== 0) {
    throw new Error(`${script} failed (${result.status}): ${result.stderr}`);
  }
  return JSON.parse(result.stdout) as T;
}

/** The error lines a failed run printed: exactly one expected, no stack trace. */
export function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.trim().length > 0);
}

export interface RunningServer {
  readonly target: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Faults that the test-only wrapper `inference-server/tests/faulty_server.py` installs around
 * the server's engine when it starts (production code reads none of them).
 */
export interface ServerFaults {
  /** A forward pass over more than this many rows runs out of memory (the server splits). */
  readonly oomAbove?: number;
  /** A batch holding a text that contains this string fails. */
  readonly poison?: string;
  /** This multiple of a fixed unit direction is added to every vector: other vectors. */
  readonly perturb?: number;
  /** With `perturb`: the first this many batches answered are right (the probe passes). */
  readonly perturbAfter?: number;
  /** Each text containing this string comes back as a row of NaN. */
  readonly nan?: string;
  /** LoadModel never answers. */
  readonly hangLoad?: boolean;
}

const FAULTY_SERVER = join(ROOT, "inference-server", "tests", "faulty_server.py");

function faultFlags(faults: ServerFaults): string[] {
  const flags: string[] = [];
  if (faults.oomAbove !== undefined) flags.push("--fault-oom-above", String(faults.oomAbove));
  if (faults.poison !== undefined) flags.push("--fault-poison", faults.poison);
  if (faults.perturb !== undefined) flags.push("--fault-perturb", String(faults.perturb));
  if (faults.perturbAfter !== undefined) {
    flags.push("--fault-perturb-after", String(faults.perturbAfter));
  }
  if (faults.nan !== undefined) flags.push("--fault-nan", faults.nan);
  if (faults.hangLoad) flags.push("--fault-hang-load");
  return flags;
}

/**
 * Starts a real inference server on 127.0.0.1 and a free port (parsed from its first line);
 * with `faults`, through the test-only wrapper that installs them.
 */
export function startServer(
  args: readonly string[] = [],
  env: NodeJS.ProcessEnv = testEnv(),
  port = 0,
  faults?: ServerFaults,
): Promise<RunningServer> {
  const venv = process.env.EMBED_VENV ?? join(ROOT, ".venv");
  const [command, ...lead] = faults
    ? [join(venv, "bin", "python"), FAULTY_SERVER, ...faultFlags(faults)]
    : [join(venv, "bin", "embed-inference-server")];
  const child = spawn(
    command ?? "",
    // --exit-on-stdin-eof: the server goes with the test process, even one killed by a timeout.
    [
      ...lead,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--model-dir",
      join(ROOT, "models"),
      "--exit-on-stdin-eof",
      ...args,
    ],
    { env, stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise<void>((resolveExit) => child.once("exit", () => resolveExit()));
  return new Promise((resolvePromise, reject) => {
    let stdout = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 120_000);
    const resolveReady = (server: RunningServer) => {
      // A TLS server (self-signed in the tests) is checked over TLS with its own certificate.
      const cert = args.indexOf("--tls-cert");
      const connection = new GrpcBackend(server.target, {
        tls: cert >= 0 ? { caFile: args[cert + 1] ?? "" } : null,
        authToken: "",
        maxMessageBytes: 1 << 20,
      });
      waitHealthy(connection, 120_000)
        .then(() => resolvePromise(server), reject)
        .finally(() => connection.close());
    };
    const onEarlyExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}): ${stderr}`));
    };
    child.once("exit", onEarlyExit);
    child.stdout.on("data", (d) => {
      stdout += d;
      const match = /listening on (\S+):(\d+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        child.off("exit", onEarlyExit);
        const target = `${match[1]}:${match[2]}`;
        // Ready means SERVING (torch imported, engine up), not just listening.
        resolveReady({
          target,
          pid: child.pid ?? 0,
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
            await exited;
          },
        });
      }
    });
  });
}

/** One server for all of a file's tests: started before the first, stopped after the last. */
export function serverForTests(
  args: readonly string[] = ["--engine", "debug"],
  env: NodeJS.ProcessEnv = testEnv(),
  faults?: ServerFaults,
): { readonly target: string } {
  let server: RunningServer | undefined;
  before(async () => {
    server = await startServer(args, env, 0, faults);
  });
  after(async () => {
    await server?.stop();
  });
  return {
    get target(): string {
      if (!server) throw new Error("the file's server has not started");
      return server.target;
    },
  };
}

/** Runs `body` with a server of its own, stopped however `body` ends. */
export async function withServer<T>(
  args: readonly string[],
  body: (server: RunningServer) => Promise<T>,
  env: NodeJS.ProcessEnv = testEnv(),
  faults?: ServerFaults,
): Promise<T> {
  const server = await startServer(args, env, 0, faults);
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

/**
 * Runs `args` (a run into the folder `reference`) and asserts that it ends
 * well and that `out` holds the same `stem` .npy and .jsonl, byte for byte.
 */
export async function assertSameAsReferenceRun(
  args: readonly string[],
  reference: string,
  out: string,
  stem: string,
): Promise<void> {
  const result = await runCli(args);
  assert.equal(result.code, 0, result.stderr);
  assertSameOutputs(reference, out, stem);
}

/** The `stem` files of the output folders `reference` and `out` are the same bytes. */
export function assertSameOutputs(
  reference: string,
  out: string,
  stem: string,
  extensions: readonly string[] = [".npy", ".jsonl"],
): void {
  for (const ext of extensions) {
    const same = readFileSync(join(out, stem + ext)).equals(
      readFileSync(join(reference, stem + ext)),
    );
    assert.ok(same, `${stem}${ext} is byte-identical to the reference run's`);
  }
}

/** Rows each model of a running server has tokenized so far, with its prefix (from its Info). */
export async function tokenizedByModel(
  target: string,
): Promise<{ prefix: string; rows: number }[]> {
  const connection = new ServerConnection(target, {
    tls: null,
    authToken: "",
    maxMessageBytes: 1 << 20,
  });
  try {
    const info = await connection.info(10_000);
    return info.models.map((m) => ({ prefix: m.prefix, rows: Number(m.tokenizedRows) }));
  } finally {
    connection.close();
  }
}

/** Rows the server's models have tokenized so far (planning counts every row it is sent). */
export async function tokenizedRows(target: string): Promise<number> {
  return (await tokenizedByModel(target)).reduce((n, m) => n + m.rows, 0);
}

/** Starts the CLI without waiting for it, for tests that signal it. */
export function spawnCli(args: readonly string[], env: NodeJS.ProcessEnv = testEnv()) {
  return spawnBare(["--progress", "none", ...args], env);
}

/** `embed-multi verify ARGS` (a subcommand: its name must come first). */
export function runVerify(
  args: readonly string[],
  env: NodeJS.ProcessEnv = testEnv(),
): Promise<CliResult> {
  return spawnBare(["verify", ...args], env).done;
}

export function spawnBare(args: readonly string[], env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, [CLI, ...args], { env });
  return { child, done: collected(child) };
}

/** What a child process has printed so far, kept as it comes. */
export function liveOutput(child: ChildProcess): {
  readonly stdout: string;
  readonly stderr: string;
} {
  const output = { stdout: "", stderr: "" };
  child.stdout?.on("data", (d) => {
    output.stdout += d;
  });
  child.stderr?.on("data", (d) => {
    output.stderr += d;
  });
  return output;
}

/** What a child process printed, and how it ended, once it has closed. */
export function collected(child: ChildProcess): Promise<CliResult> {
  const output = liveOutput(child);
  return new Promise<CliResult>((resolvePromise) =>
    child.on("close", (code, signal) => resolvePromise({ code, signal, ...output })),
  );
}

/** A TCP port free on `host` a moment ago (for a server that must be told its port). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePromise(port));
    });
  });
}

/** A small deterministic generator of numbers in [0, 1), so a failing run can be replayed. */
export function seededRandom(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1664525 + 1013904223) % 2 ** 32;
    return x / 2 ** 32;
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Reads a whole float32 .npy: its shape and its values. */
export function readNpy(path: string): { rows: number; dim: number; data: Float32Array } {
  const fd = openSync(path, "r");
  try {
    const shape = readNpyShape(fd);
    assert.ok(shape, `${path} is an NPY file`);
    const bytes = Buffer.alloc(shape.rows * shape.dim * 4);
    readSync(fd, bytes, 0, bytes.length, shape.dataOffset);
    return {
      rows: shape.rows,
      dim: shape.dim,
      data: new Float32Array(bytes.buffer, 0, shape.rows * shape.dim),
    };
  } finally {
    closeSync(fd);
  }
}

export interface LedgerView {
  batches: number;
  done: number;
  completionsOne: number;
  rowsCovered: number[];
}

/** What the checkpoint of a run says about its batches (read-only, safe during a run). */
export function readLedger(outDir: string): LedgerView {
  const ledger = LedgerReader.openReadOnly(join(outDir, CHECKPOINT_FILE));
  try {
    const batches = ledger.batches();
    return {
      batches: batches.length,
      done: batches.filter((b) => b.done).length,
      completionsOne: batches.filter((b) => b.completions === 1).length,
      // A batch's rows and the duplicates that take their vectors ((row, index) pairs).
      rowsCovered: batches
        .flatMap((b) => [
          ...Array.from(b.rows),
          ...Array.from(b.followers ?? []).filter((_, i) => i % 2 === 0),
        ])
        .sort((a, b) => a - b),
    };
  } finally {
    ledger.close();
  }
}

/** The rows of a query on the checkpoint of a run in `outDir` (read-only); null while it cannot be read. */
export function checkpointRows<T>(outDir: string, sql: string): T[] | null {
  try {
    const db = new Database(join(outDir, CHECKPOINT_FILE), { readonly: true, fileMustExist: true });
    try {
      return db.prepare(sql).all() as T[];
    } finally {
      db.close();
    }
  } catch {
    return null;
  }
}

/** Done batches, or 0 while the checkpoint is being created. */
export function safeDone(outDir: string): number {
  try {
    return readLedger(outDir).done;
  } catch {
    return 0;
  }
}

/** Runs `args` (a run into `reference`) and asserts it ends well; how many batches its plan has. */
export async function referenceRunBatches(
  args: readonly string[],
  reference: string,
): Promise<number> {
  const clean = await runCli(args);
  assert.equal(clean.code, 0, clean.stderr);
  return readLedger(reference).batches;
}

/**
 * A run of all-MiniLM-L6-v2 over `servers` in the small batches (8, a
 * checkpoint every 8) and two workers the multi-server tests use; `extra`
 * adds or overrides flags.
 */
export function multiServerArgs(
  input: string,
  out: string,
  servers: readonly string[],
  extra: Readonly<Record<string, number>> = {},
): string[] {
  return cliArgs(input, out, "all-MiniLM-L6-v2", {
    servers: servers.join(","),
    batch_size: 8,
    checkpoint_interval: 8,
    max_workers: 2,
    ...extra,
  });
}

/** The bytes of a run's `stem`.npy, for comparing runs. */
export function npyBytes(out: string, stem: string): Buffer {
  return readFileSync(join(out, `${stem}.npy`));
}

/** What test/fixtures' compare_direct.py reports: a run's .npy beside a direct encode. */
export interface DirectComparison {
  shape: number[];
  dtype: string;
  min_cos: number;
  mean_cos: number;
  norm_min: number;
  norm_max: number;
  direct_norm_max_diff: number;
  max_cos_other?: number;
  jsonl_rows?: number;
  jsonl_identical?: boolean;
  jsonl_order?: boolean;
  jsonl_models?: string[];
}

/** Compares the .npy `npy` of a run over `input` with a direct encode; `flags` are the script's. */
export function compareDirect(
  input: string,
  npy: string,
  flags: Readonly<Record<string, string | number | true>> = {},
): DirectComparison {
  return pythonJson<DirectComparison>("compare_direct.py", [
    "--input",
    input,
    "--npy",
    npy,
    ...flagArgs(flags),
  ]);
}

/** Waits until `outDir`'s checkpoint has `atLeast` batches done; throws if `run` ends first or time runs out. */
export async function waitForDone(
  outDir: string,
  atLeast: number,
  run: Promise<CliResult>,
  timeoutMs = 120_000,
): Promise<void> {
  let ended: CliResult | null = null;
  void run.then((r) => {
    ended = r;
  });
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (safeDone(outDir) >= atLeast) return;
    if (ended) throw new Error(`the run ended early: ${(ended as CliResult).stderr}`);
    await sleep(50);
  }
  throw new Error(`fewer than ${atLeast} batches done after ${timeoutMs} ms`);
}

/** The one "error:" line of a run's stderr (asserted to be the only one). */
export function onlyErrorLine(stderr: string): string {
  const errors = errorLines(stderr).filter((l) => l.includes("error:"));
  assert.equal(errors.length, 1, stderr);
  return errors[0] ?? "";
}

/**
 * Starts the run `args` writing to `out`, waits (polling every `pollMs`)
 * until its checkpoint has `target` batches done or the run ends, `delayMs`
 * more, and kills it with SIGKILL. `killed`: the signal was delivered.
 */
export async function killedRun(
  args: readonly string[],
  out: string,
  target: number,
  delayMs: number,
  pollMs: number,
): Promise<{ result: CliResult; killed: boolean }> {
  const { child, done } = spawnCli(args);
  let exited = false;
  void done.then(() => {
    exited = true;
  });
  while (!exited && safeDone(out) < target) await sleep(pollMs);
  await sleep(delayMs);
  const killed = child.kill("SIGKILL");
  return { result: await done, killed };
}
