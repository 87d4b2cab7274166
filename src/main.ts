import { join } from "node:path";
import { buildRunConfig, type CliArgs, type RunConfig } from "./config.js";
import { ExitError, InterruptedError } from "./errors.js";
import { asDiskFull } from "./output/diskfull.js";
import { createProgress, type Progress } from "./progress.js";
import { CHECKPOINT_FILE, type RunSummary, run } from "./run.js";
import type { EmbeddedServer } from "./server/embedded.js";

/**
 * The one top-level catch: user-facing errors become one line and their exit
 * code; anything else is a bug, reported as such (with the stack only when
 * EMBED_DEBUG is set).
 */
export async function main(args: CliArgs): Promise<number> {
  let progress: Progress | null = null;
  let embedded: EmbeddedServer | null = null;
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      // A second Ctrl-C: the user means it.
      embedded?.killNow();
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    progress?.note(`${signal}: stopping, keeping what is done`);
    controller.abort(
      new InterruptedError(signal, "what is done is kept: run the same command again to resume"),
    );
  };
  const onExit = () => embedded?.killNow();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("exit", onExit);
  let config: RunConfig | null = null;
  try {
    config = buildRunConfig(args, process.env);
    progress = createProgress(config.progress);
    const summary = await run(config, {
      progress,
      signal: controller.signal,
      onEmbeddedServer: (server) => {
        embedded = server;
      },
    });
    progress.stop();
    printSummary(config, summary);
    return 0;
  } catch (caught) {
    progress?.stop();
    // SQLite says "database or disk is full" without a file: the checkpoint is the one it writes.
    return report(
      "embed-multi",
      config ? asDiskFull(caught, join(config.outputDir, CHECKPOINT_FILE)) : caught,
    );
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("exit", onExit);
  }
}

/** Any command under the one catch: `embed-multi verify` too. */
export async function guarded(command: string, work: () => Promise<number>): Promise<number> {
  try {
    return await work();
  } catch (err) {
    return report(command, err);
  }
}

/** The one place an error becomes a line and an exit code. */
function report(command: string, err: unknown): number {
  if (err instanceof ExitError) {
    process.stderr.write(`${command}: error: ${err.message}\n`);
    return err.exitCode;
  }
  const detail = err instanceof Error ? err.message : String(err);
  process.stderr.write(
    `${command}: internal error: ${detail} (this is a bug; set EMBED_DEBUG=1 for details)\n`,
  );
  if (process.env.EMBED_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return 70;
}

function printSummary(config: RunConfig, summary: RunSummary): void {
  if (summary.nothingToDo) return;
  const rows = summary.models.map((m) => [
    m.alias,
    String(m.rows),
    String(m.rowsThisRun),
    m.seconds.toFixed(1),
    m.seconds > 0 ? (m.rowsThisRun / m.seconds).toFixed(0) : "-",
    String(m.truncated),
    m.paddingEfficiency.toFixed(3),
  ]);
  const header = ["model", "rows", "embedded", "seconds", "rows/s", "truncated", "padding eff."];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ");
  const out = [line(header), ...rows.map(line), `outputs in ${config.outputDir}`];
  process.stdout.write(`${out.join("\n")}\n`);
}
