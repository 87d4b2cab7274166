import assert from "node:assert/strict";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { PROBE_TEXTS } from "../src/checks/probe-texts.js";
import { cliArgs } from "./cli-args.js";
import {
  compareDirect,
  EXAMPLE,
  errorLines,
  inputDir,
  paragraphLines,
  type RunningServer,
  runCli,
  tokenizedByModel,
  withServer,
} from "./helpers.js";

const STEMS = ["all-MiniLM-L6-v2", "e5-style-minilm"];
/** Rows the probe adds per model each run: the server embeds the probe texts before any batch. */
const PROBES = PROBE_TEXTS.length;

/** Rows each model_key of the server has tokenized, by prefix ("" or "passage: "). */
async function tokenizedByPrefix(server: RunningServer): Promise<Map<string, number>> {
  return new Map((await tokenizedByModel(server.target)).map((m) => [m.prefix, m.rows]));
}

function removeOutputs(out: string, stems: readonly string[]): void {
  for (const stem of stems) {
    for (const ext of [".npy", ".jsonl", ".metadata.json"]) rmSync(join(out, stem + ext));
  }
}

function scratchFiles(out: string): string[] {
  return readdirSync(out).filter((f) => f.startsWith(".embed-multi-tokens-"));
}

test("each paragraph is tokenized once per model; the ids and texts paths give identical vectors equal to encode", async () => {
  const lines = readFileSync(EXAMPLE, "utf8").split("\n").filter(Boolean).slice(0, 40);
  const { dir, input, out } = inputDir("tokenize-once", lines);
  const config = join(dir, "models.yaml");
  writeFileSync(
    config,
    "models:\n  e5-style-minilm:\n    model_name: sentence-transformers/all-MiniLM-L6-v2\n    prefix: 'passage: '\n",
  );
  await withServer(["--threads", "2"], async (server) => {
    // Spot checks off: their known rows (the probe texts counted once per model, the batch of
    // known rows at the end, sent as texts) are tokenized too; this counts the input's rows.
    const args = cliArgs(input, out, STEMS, {
      config,
      servers: server.target,
      batch_size: 16,
      spot_check: 0,
    });
    const first = await runCli(args);
    assert.equal(first.code, 0, first.stderr);
    // Rows the plan sends: each distinct model input once (the example repeats a few paragraphs).
    const sent = /all-MiniLM-L6-v2: (\d+) of 40 paragraphs go to the servers/.exec(first.stderr);
    assert.ok(sent, first.stderr);
    const distinct = Number(sent[1]);
    // Planning tokenized every row it sends and kept the ids; the batches carried them.
    // Each model's rows tokenized once: no more than the 40 rows, no fewer than those it sends.
    const once = await tokenizedByPrefix(server);
    const perModel = once.get("") ?? 0;
    assert.deepEqual(
      once,
      new Map([
        ["", perModel],
        ["passage: ", perModel],
      ]),
    );
    assert.ok(perModel >= distinct + PROBES && perModel <= 40 + PROBES, `tokenized ${perModel}`);
    assert.deepEqual(scratchFiles(out), [], "the token store is removed when the run ends");
    const viaIds = STEMS.map((s) => readFileSync(join(out, `${s}.npy`)));

    // Outputs lost, plan kept in the checkpoint: embedded again from the texts (the rows sent, once).
    removeOutputs(out, STEMS);
    const second = await runCli(args);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr + second.stdout, /embedding it again/);
    assert.deepEqual(
      await tokenizedByPrefix(server),
      new Map([
        ["", perModel + distinct + PROBES],
        ["passage: ", perModel + distinct + PROBES],
      ]),
    );
    STEMS.forEach((s, i) => {
      assert.ok(
        readFileSync(join(out, `${s}.npy`)).equals(viaIds[i] as Buffer),
        `${s}: same bytes`,
      );
    });
    for (const [stem, prefix] of [
      ["all-MiniLM-L6-v2", ""],
      ["e5-style-minilm", "passage: "],
    ] as const) {
      const cmp = compareDirect(input, join(out, `${stem}.npy`), { prefix });
      assert.deepEqual(cmp.shape, [40, 384]);
      assert.ok(cmp.min_cos >= 0.999999, `${stem}: lowest cosine with encode ${cmp.min_cos}`);
    }
  });
});

/** CJK text of `chars` characters, different for each seed (BERT splits every CJK character). */
function cjkText(chars: number, seed: number): string {
  let x = seed + 1;
  const out: string[] = [];
  for (let i = 0; i < chars; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out.push(String.fromCharCode(0x4e00 + (x % 2000)));
  }
  return out.join("");
}

test("long CJK paragraphs over the message cap in all embed, from ids and from texts", async () => {
  // 24 paragraphs of 100k characters (300 kB each, 7.2 MB in all) against a 2 MiB
  // message cap: the overflow that 240 of them caused at the default 64 MiB.
  const lines = Array.from({ length: 24 }, (_, i) =>
    JSON.stringify({ paper_id: `p${i}`, paragraph_index: 0, text: cjkText(100_000, i) }),
  );
  const { input, out } = inputDir("tokenize-cjk", lines);
  await withServer(["--threads", "2", "--max-message-bytes", String(2 << 20)], async (server) => {
    const args = cliArgs(input, out, "all-MiniLM-L6-v2", { servers: server.target });
    const first = await runCli(args);
    assert.equal(first.code, 0, first.stderr);
    const viaIds = readFileSync(join(out, "all-MiniLM-L6-v2.npy"));
    const meta = JSON.parse(readFileSync(join(out, "all-MiniLM-L6-v2.metadata.json"), "utf8"));
    assert.equal(meta.truncated_count, 24);
    // Sent as texts (a resumed run): the plan's batches fit the cap too.
    removeOutputs(out, ["all-MiniLM-L6-v2"]);
    const second = await runCli(args);
    assert.equal(second.code, 0, second.stderr);
    assert.ok(readFileSync(join(out, "all-MiniLM-L6-v2.npy")).equals(viaIds), "same bytes");
    const cmp = compareDirect(input, join(out, "all-MiniLM-L6-v2.npy"));
    assert.deepEqual(cmp.shape, [24, 384]);
    assert.ok(cmp.min_cos >= 0.999999, `lowest cosine with encode ${cmp.min_cos}`);
  });
});

test("a text over the server's max_text_chars names its input line, before any work", async () => {
  const texts = ["short one", "short two", "é".repeat(1500), "short three"];
  const { input, out } = inputDir(
    "tokenize-limit",
    paragraphLines(texts.length, (i) => ["p", texts[i] ?? ""]),
  );
  await withServer(["--engine", "debug", "--max-text-chars", "1000"], async (server) => {
    const args = cliArgs(input, out, "m", { servers: server.target });
    const refused = await runCli(args);
    assert.notEqual(refused.code, 0);
    assert.deepEqual(errorLines(refused.stderr), [
      `embed-multi: error: ${input}:3: text has 1500 characters, over the server's limit 1000 (to skip such lines: --max_text_chars 1000 --skip_invalid --restart)`,
    ]);
    assert.doesNotMatch(refused.stderr, /text \d+ has/);
    // The advice works: skipping changes the paragraphs, hence --restart.
    const skipped = await runCli(
      cliArgs(input, out, "m", {
        servers: server.target,
        max_text_chars: 1000,
        skip_invalid: true,
        restart: true,
      }),
    );
    assert.equal(skipped.code, 0, skipped.stderr);
    const meta = JSON.parse(readFileSync(join(out, "m.metadata.json"), "utf8"));
    assert.equal(meta.num_paragraphs, 3);
    assert.match(JSON.stringify(meta), /1000/, "the skipped line is listed with its problem");
  });
});
