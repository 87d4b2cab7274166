import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { embedBatch } from "../src/backend/openai/batch.js";
import { OpenAIClient } from "../src/backend/openai/client.js";
import { discoverModel } from "../src/backend/openai/discover.js";
import { cliArgs } from "./cli-args.js";
import {
  assertSameOutputs,
  compareDirect,
  corpusSlice,
  inputDir,
  inputDirWithConfig,
  killedRun,
  readLedger,
  readNpy,
  runCli,
  runVerify,
  safeDone,
  sleep,
  spawnCli,
} from "./helpers.js";
import { INFINITY_SERVED_NAME, type RunningInfinity, startInfinity } from "./infinity.js";

/**
 * The openai backend against a real third-party server: infinity-emb (its own
 * venv, scripts/setup-infinity.sh) serving the offline all-MiniLM-L6-v2 on
 * 127.0.0.1 through its OpenAI-compatible route.
 */
const STEM = "all-MiniLM-L6-v2";

function minCosine(a: Float32Array, b: Float32Array, dim: number): number {
  let min = 1;
  for (let r = 0; r < a.length / dim; r++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let i = r * dim; i < (r + 1) * dim; i++) {
      const x = a[i] ?? 0;
      const y = b[i] ?? 0;
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    min = Math.min(min, dot / Math.sqrt(na * nb));
  }
  return min;
}

function metadata(out: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8")) as Record<
    string,
    unknown
  >;
}

describe("openai backend against infinity-emb", () => {
  let server: RunningInfinity;
  before(async () => {
    server = await startInfinity();
  });
  after(async () => {
    await server?.stop();
  });

  test("what infinity says of itself: served name, base64, dimensions cut without renormalizing", async () => {
    const client = new OpenAIClient({ baseUrl: server.url, apiKey: "", timeoutMs: 120_000 });
    assert.deepEqual(await client.models(), [INFINITY_SERVED_NAME]);
    const full = await discoverModel(client, "all-MiniLM-L6-v2-by-another-name", 0);
    assert.equal(full.name, INFINITY_SERVED_NAME);
    assert.equal(full.encoding, "base64");
    assert.equal(full.dim, 384);
    assert.equal(full.normalized, true);
    const cut = await discoverModel(client, INFINITY_SERVED_NAME, 128);
    assert.equal(cut.serverDimensions, true);
    assert.equal(cut.dim, 128);
    // infinity cuts after normalizing: the first 128 of a unit vector are shorter.
    assert.equal(cut.normalized, false);
    const settings = {
      model: INFINITY_SERVED_NAME,
      serverDimensions: 0,
      localDimensions: 0,
      normalize: false,
      maxInputs: 2048,
      maxTokens: 300_000,
    };
    const texts = ["The first text.", "A second, longer text about embeddings."];
    const b64 = await embedBatch(client, texts, [5, 9], { ...settings, encoding: "base64" });
    const flt = await embedBatch(client, texts, [5, 9], { ...settings, encoding: "float" });
    assert.equal(b64.dim, 384);
    // JSON floats are float32 printed as doubles: both forms are the same numbers.
    assert.deepEqual(b64.vectors, flt.vectors);
  });

  test("300 paragraphs, base64 and float: the same as our own server and SentenceTransformer.encode, in order", async () => {
    const { dir, input, config } = inputDirWithConfig("openai-300", corpusSlice(300), [
      "models:",
      "  minilm-float:",
      "    model_name: sentence-transformers/all-MiniLM-L6-v2",
      "    encoding_format: float",
    ]);
    const viaBase64 = join(dir, "base64");
    const a = await runCli(
      cliArgs(input, viaBase64, STEM, { servers: `openai:${server.url}`, progress: "log" }),
    );
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stderr, /tokens counted with the model's tokenizer\.json/);
    const meta = metadata(viaBase64);
    assert.deepEqual(meta.servers, [server.url]);
    assert.deepEqual(meta.backend, {
      kind: "openai",
      served_model_name: INFINITY_SERVED_NAME,
      encoding_format: "base64",
      matryoshka: "none",
      normalized_by_server: true,
      token_counts: meta.backend && (meta.backend as { token_counts: string }).token_counts,
    });

    // verify --sample against the same backend: the stored rows are embedded again and match.
    const verified = await runVerify([
      "--output_dir",
      viaBase64,
      "--input_file",
      input,
      "--sample",
      "8",
      "--servers",
      `openai:${server.url}`,
    ]);
    assert.equal(verified.code, 0, verified.stderr + verified.stdout);

    const viaFloat = join(dir, "float");
    const b = await runCli(
      cliArgs(input, viaFloat, "minilm-float", { servers: `openai:${server.url}`, config }),
    );
    assert.equal(b.code, 0, b.stderr);
    const floatMeta = JSON.parse(
      readFileSync(join(viaFloat, "minilm-float.metadata.json"), "utf8"),
    ) as { backend: { encoding_format: string } };
    assert.equal(floatMeta.backend.encoding_format, "float");

    const ours = join(dir, "ours");
    const c = await runCli(cliArgs(input, ours, STEM, { threads: 2 }));
    assert.equal(c.code, 0, c.stderr);

    for (const npy of [join(viaBase64, `${STEM}.npy`), join(viaFloat, "minilm-float.npy")]) {
      const direct = compareDirect(input, npy, { jsonl: npy.replace(/\.npy$/, ".jsonl") });
      assert.deepEqual(direct.shape, [300, 384]);
      assert.ok(direct.min_cos >= 0.9999, `${npy}: min cosine with ST.encode ${direct.min_cos}`);
      assert.equal(direct.jsonl_order, true, "the JSONL is in input order");
      const theirs = readNpy(npy);
      const mine = readNpy(join(ours, `${STEM}.npy`));
      const cos = minCosine(theirs.data, mine.data, 384);
      assert.ok(cos >= 0.9999, `${npy}: min cosine with our own server ${cos}`);
    }
  });

  test("kill -9 mid-run, then resume: byte-identical to an uninterrupted run against the same server", async () => {
    const { dir, input } = inputDir("openai-resume", corpusSlice(96, 400));
    const args = (out: string) =>
      cliArgs(input, out, STEM, {
        servers: `openai:${server.url}`,
        batch_size: 8,
        checkpoint_interval: 8,
        // One request at a time: infinity regroups concurrent requests into its own
        // forward batches, and other neighbours change the last bits of a row.
        max_workers: 1,
      });
    const reference = join(dir, "reference");
    const clean = await runCli(args(reference));
    assert.equal(clean.code, 0, clean.stderr);
    const total = readLedger(reference).batches;

    const out = join(dir, "killed");
    const { result, killed } = await killedRun(args(out), out, Math.floor(total / 3), 0, 20);
    assert.ok(killed && result.signal === "SIGKILL", `the run was killed: ${result.stderr}`);
    const doneAtKill = safeDone(out);
    assert.ok(doneAtKill > 0 && doneAtKill < total, `killed mid-run (${doneAtKill}/${total})`);
    const resumed = await runCli(args(out));
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming: \d+ of \d+ batches done/);
    assertSameOutputs(reference, out, STEM);
    const ledger = readLedger(out);
    assert.equal(ledger.completionsOne, ledger.batches, "every batch done exactly once");
  });

  test("two infinity servers, one killed mid-run: every row once and right", async () => {
    const second = await startInfinity();
    try {
      const count = 96;
      const { dir, input } = inputDir("openai-failover", corpusSlice(count, 800));
      const out = join(dir, "out");
      const run = spawnCli(
        cliArgs(input, out, STEM, {
          servers: `openai:${server.url},openai:${second.url}`,
          batch_size: 8,
          checkpoint_interval: 8,
          max_workers: 1,
        }),
      );
      // Kill the second server once it has done some of the work.
      const until = Date.now() + 300_000;
      while (Date.now() < until && safeDone(out) < 3) await sleep(50);
      await second.stop();
      const result = await run.done;
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, new RegExp(`server ${second.url.replace(/[/.]/g, "\\$&")}`));
      const ledger = readLedger(out);
      assert.equal(ledger.completionsOne, ledger.batches, "every batch done exactly once");
      assert.deepEqual(
        ledger.rowsCovered,
        Array.from({ length: count }, (_, i) => i),
      );
      const meta = metadata(out);
      assert.deepEqual(
        [...(meta.servers as string[])].sort(),
        [server.url, second.url].sort(),
        "both servers made vectors",
      );
      const direct = compareDirect(input, join(out, `${STEM}.npy`), {
        jsonl: join(out, `${STEM}.jsonl`),
      });
      assert.deepEqual(direct.shape, [count, 384]);
      assert.ok(direct.min_cos >= 0.9999, `min cosine with ST.encode ${direct.min_cos}`);
      assert.equal(direct.jsonl_order, true);
    } finally {
      await second.stop();
    }
  });
});
