import { execFileSync, spawn } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Benchmarks run from dist/bench/. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI = join(ROOT, "bin", "embed-multi.js");
export const PYTHON = join(process.env.EMBED_VENV ?? join(ROOT, ".venv"), "bin", "python");
export const CORPUS = resolve(ROOT, "..", "shared", "data", "unarxive-2212-paragraphs.jsonl");
export const WORK = join(ROOT, "bench", "work");
export const RESULTS = join(ROOT, "bench", "RESULTS.md");

export function machine(): string {
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  return `${cpu}, ${cpus().length} cores`;
}

export function commit(): string {
  try {
    const sha = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: ROOT,
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], {
      cwd: ROOT,
      encoding: "utf8",
    }).trim();
    return dirty ? `${sha} (with uncommitted changes)` : sha;
  } catch {
    return "unknown";
  }
}

/** A Markdown table. */
export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Prints the table and appends it, dated and attributed, to bench/RESULTS.md. */
export function report(title: string, body: string, notes: string[] = []): void {
  const stamp = `${new Date().toISOString().slice(0, 10)}, ${machine()}, commit ${commit()}`;
  const text = `\n## ${title}\n\n${stamp}\n\n${body}\n${notes.map((n) => `\n${n}`).join("")}\n`;
  process.stdout.write(text);
  if (!existsSync(RESULTS))
    writeFileSync(
      RESULTS,
      "# Benchmark results\n\nTables appended by the scripts in bench/; newest last.\n",
    );
  appendFileSync(RESULTS, text);
}

export interface Timed {
  readonly seconds: number;
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Peak resident set of the process itself, in MB (VmHWM), when it could be read. */
  readonly peakRssMb: number;
}

/** Runs a command, timing it and sampling its peak RSS from /proc. */
export function timed(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Timed> {
  return new Promise((resolvePromise) => {
    const started = process.hrtime.bigint();
    const child = spawn(command, args, { env });
    let stdout = "";
    let stderr = "";
    let peakKb = 0;
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const sample = setInterval(() => {
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
        const match = /VmHWM:\s+(\d+) kB/.exec(status);
        if (match) peakKb = Math.max(peakKb, Number(match[1]));
      } catch {
        // exited
      }
    }, 100);
    child.on("close", (code) => {
      clearInterval(sample);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      resolvePromise({ seconds, code, stdout, stderr, peakRssMb: peakKb / 1024 });
    });
  });
}

export function corpusTexts(): string[] {
  return readFileSync(CORPUS, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => (JSON.parse(l) as { text: string }).text);
}

/**
 * A column of the run summary's row for `alias` (the table the CLI prints on stdout), by
 * its header name, so that a new column does not shift what a benchmark reads.
 */
export function summaryCell(stdout: string, alias: string, column: string): number {
  const lines = stdout.split("\n").map((l) => l.trim().split(/\s{2,}/));
  const header = lines.find((cells) => cells[0] === "model");
  const row = lines.find((cells) => cells[0] === alias);
  const at = header?.indexOf(column) ?? -1;
  return at >= 0 && row ? Number(row[at]) : Number.NaN;
}
