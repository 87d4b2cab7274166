import { join } from "node:path";
import { buildRunConfig, type CliArgs, type RunConfig } from "./config.js";
import { ExitError, InterruptedError } from "./errors.js";
import { countedProgress, serveMetrics } from "./metrics/run-metrics.js";
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
  let embedded: readonly EmbeddedServer[] = [];
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      // A second Ctrl-C: the user means it.
      for (const e of embedded) e.killNow();
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    progress?.note(`${signal}: stopping, keeping what is done`);
    controller.abort(
      new InterruptedError(signal, "what is done is kept: run the same command again to resume"),
    );
  };
  const onExit = () => {
    for (const e of embedded) e.killNow();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("exit", onExit);
  let config: RunConfig | null = null;
  let metrics: { close(): Promise<void> } | null = null;
  try {
    config = buildRunConfig(args, process.env);
    progress = countedProgress(createProgress(config.progress));
    if (config.metricsPort !== null) {
      const served = await serveMetrics(config.metricsHost, config.metricsPort);
      metrics = served;
      progress.note(`metrics on http://${config.metricsHost}:${served.port}/metrics`);
    }
    const summary = await run(config, {
      progress,
      signal: controller.signal,
      onEmbeddedServer: (servers) => {
        embedded = servers;
      },
    });
    progress.stop();
    printSummary(config, summary);
    if (metrics && config.metricsLingerMs > 0) await linger(config.metricsLingerMs);
    return 0;
  } catch (caught) {
    progress?.stop();
    // SQLite says "database or disk is full" without a file: the checkpoint is the one it writes.
    return report(
      "embed-multi",
      config ? asDiskFull(caught, join(config.outputDir, CHECKPOINT_FILE)) : caught,
    );
  } finally {
    await metrics?.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("exit", onExit);
  }
}

/** Keeps the metrics up after the run until the time is over or a signal says stop. */
function linger(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      process.off("SIGTERM", done);
      process.off("SIGINT", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    process.once("SIGTERM", done);
    process.once("SIGINT", done);
  });
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
    String(m.reused),
    String(m.deduplicated),
    m.seconds.toFixed(1),
    m.seconds > 0 ? (m.rowsThisRun / m.seconds).toFixed(0) : "-",
    String(m.truncated),
    m.paddingEfficiency.toFixed(3),
  ]);
  const header = [
    "model",
    "rows",
    "embedded",
    "reused",
    "deduplicated",
    "seconds",
    "rows/s",
    "truncated",
    "padding eff.",
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ");
  const fleet = (summary.membership ?? []).map(
    (m) => `server ${m.target} ${m.change} after ${m.at} s`,
  );
  const from = summary.models.flatMap((m) =>
    m.reusedFrom.map((s) => `${m.alias}: ${s.rows} rows reused from ${s.dir}`),
  );
  const quantized = summary.models.flatMap((m) => {
    const f = m.quantizeFidelity;
    return f
      ? [
          `${m.alias}: int8 on ${f.rows} calibration paragraphs: lowest cosine to float32 ${f.minCosine.toFixed(6)}, mean ${f.meanCosine.toFixed(6)} (--quantize_min_cosine ${config.quantizeMinCosine})`,
        ]
      : [];
  });
  const out = [
    line(header),
    ...rows.map(line),
    ...quantized,
    ...from,
    ...fleet,
    `outputs in ${config.outputDir}`,
  ];
  process.stdout.write(`${out.join("\n")}\n`);
}
