import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { PROBE_TEXTS } from "../src/checks/probe-texts.js";
import { cliArgs } from "./cli-args.js";
import {
  corpusSlice,
  freePort,
  inputDir,
  liveOutput,
  sleep,
  spawnCli,
  withServer,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

async function scrape(url: string): Promise<string | null> {
  try {
    const res = await fetch(url);
    return res.ok ? await res.text() : null;
  } catch {
    return null;
  }
}

/** Sum of a metric's samples whose labels include `labels` (name without labels matches all). */
function value(text: string, name: string, labels: Record<string, string> = {}): number | null {
  let found: number | null = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) {
      found = (found ?? 0) + Number(m[3]);
    }
  }
  return found;
}

/** `promtool check metrics` (Debian's prometheus package; the set-up installs it). */
function promtool(text: string): { code: number | null; out: string } {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  if (r.error) {
    assert.fail(
      `promtool is not installed (${r.error.message}): scripts/setup.sh installs Debian's prometheus package as root`,
    );
  }
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test("both metrics endpoints scraped mid-run pass promtool check metrics; at the end the counters agree with the metadata", async () => {
  const rows = 1500;
  const { dir, input } = inputDir("metrics", corpusSlice(rows));
  const metricsPort = await freePort();
  await withServer(["--engine", "debug", "--metrics-port", String(metricsPort)], async (server) => {
    const serverUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    const out = join(dir, "out");
    const { child, done } = spawnCli(
      cliArgs(input, out, STEM, {
        servers: server.target,
        batch_size: 4,
        checkpoint_interval: 8,
        max_workers: 2,
        metrics_port: 0,
        metrics_linger: 120,
        // Spot rows (and, at a checkpoint every 8 rows, a batch of known rows per 8) would
        // add to the server's rows; this test counts the rows the run itself embeds.
        spot_check: 0,
      }),
    );
    const output = liveOutput(child);
    let exited = false;
    void done.then(() => {
      exited = true;
    });
    let runUrl: string | null = null;
    const midRun: { run: string; server: string }[] = [];
    while (!exited && !output.stdout.includes("outputs in")) {
      runUrl ??= /metrics on (http:\S+)/.exec(output.stderr)?.[1] ?? null;
      if (runUrl) {
        const [run, srv] = await Promise.all([scrape(runUrl), scrape(serverUrl)]);
        const doneRows = run ? value(run, "embed_multi_rows_done", { model: STEM }) : null;
        if (run && srv && doneRows !== null && doneRows > 0 && doneRows < rows) {
          midRun.push({ run, server: srv });
        }
      }
      await sleep(100);
    }
    assert.ok(runUrl, `the run printed where its metrics are: ${output.stderr}`);
    assert.ok(midRun.length > 0, "scraped while rows were still being embedded");
    const sample = midRun[Math.floor(midRun.length / 2)];
    assert.ok(sample);
    for (const [what, text] of [
      ["orchestrator", sample.run],
      ["server", sample.server],
    ] as const) {
      const checked = promtool(text);
      assert.equal(checked.code, 0, `${what}: promtool check metrics: ${checked.out}`);
    }
    assert.notEqual(value(sample.run, "embed_multi_batches_in_flight"), null);
    assert.notEqual(value(sample.run, "embed_multi_eta_seconds", { model: STEM }), null);
    assert.notEqual(value(sample.server, "embed_queue_depth", { stage: "received" }), null);
    assert.ok((value(sample.server, "embed_forward_seconds_count") ?? 0) > 0);

    // The run is over; its metrics linger until SIGTERM.
    const [finalRun, finalServer] = await Promise.all([scrape(runUrl), scrape(serverUrl)]);
    child.kill("SIGTERM");
    const result = await done;
    assert.equal(result.code, 0, output.stderr);
    assert.ok(finalRun && finalServer);
    const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
    assert.equal(meta.num_paragraphs, rows);
    assert.equal(value(finalRun, "embed_multi_rows_done", { model: STEM }), rows);
    assert.equal(value(finalRun, "embed_multi_rows", { model: STEM }), rows);
    assert.equal(value(finalRun, "embed_multi_rows_embedded_total", { model: STEM }), rows);
    assert.equal(
      value(finalRun, "embed_multi_batch_retries_total", { reason: "check" }) ?? 0,
      meta.retried_batches,
    );
    assert.equal(value(finalRun, "embed_multi_eta_seconds", { model: STEM }), 0);
    // The server embedded every distinct row once (duplicates are embedded once), plus the probes.
    assert.equal(value(finalServer, "embed_rows_total"), meta.embedded_rows + PROBE_TEXTS.length);
    assert.ok((value(finalServer, "embed_tokens_total") ?? 0) >= meta.total_tokens);
    assert.equal(value(finalServer, "embed_batch_errors_total") ?? 0, 0);
    assert.equal(value(finalServer, "embed_model_loaded"), 1);
    assert.equal(
      value(finalServer, "embed_batches_total", { outcome: "ok" }),
      value(finalServer, "embed_forward_seconds_count"),
    );
  });
});
