import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (tests run from dist/test/). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI = join(ROOT, "bin", "embed-multi.js");
export const PYTHON = join(process.env.EMBED_VENV ?? join(ROOT, ".venv"), "bin", "python");
export const CORPUS = resolve(ROOT, "..", "shared", "data", "unarxive-2212-paragraphs.jsonl");
export const EXAMPLE = join(ROOT, "examples", "paragraphs.jsonl");
export const FIXTURES = join(ROOT, "test", "fixtures");

/** A fresh temporary folder, removed when the process ends. */
export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `embed-multi-${name}-`));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The first `count` lines of a JSONL file (the real corpus when available, else the example). */
export function corpusSlice(count: number, skip = 0): string[] {
  const source = readCorpusLines();
  return source.slice(skip, skip + count);
}

let cachedLines: string[] | null = null;
function readCorpusLines(): string[] {
  if (!cachedLines) {
    let text: string;
    try {
      text = readFileSync(CORPUS, "utf8");
    } catch {
      text = readFileSync(EXAMPLE, "utf8");
    }
    cachedLines = text.split("\n").filter((l) => l.trim().length > 0);
  }
  return cachedLines;
}

export function writeLines(path: string, lines: readonly string[]): string {
  writeFileSync(path, lines.map((l) => `${l}\n`).join(""));
  return path;
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
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [CLI, "--progress", "none", ...args], { env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
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
