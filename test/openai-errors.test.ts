import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  errorLines,
  inputDir,
  onlyErrorLine,
  paragraphLines,
  readLedger,
  runCli,
  testEnv,
} from "./helpers.js";
import { startFakeOpenAI } from "./openai-fake.js";

/**
 * The error codes a real server will not produce on demand, through the CLI
 * against the test-only fake: each ends with its one line.
 */
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers) await close();
});

const MODEL = "fake/model";
const lines = paragraphLines(24, (i) => ["2212.00001", `paragraph number ${i} of the fake corpus`]);

function args(
  input: string,
  out: string,
  url: string,
  flags: Record<string, string | number | true> = {},
) {
  return cliArgs(input, out, MODEL, { servers: `openai:${url}`, batch_size: 4, ...flags });
}

test("429 with Retry-After: the server waits as asked, the batch costs no attempt, one line says so", async () => {
  let tooMany = 1;
  const fake = await startFakeOpenAI({
    rule: (req) => {
      if (req.body.input?.some((t) => t.includes("number 9 ")) && tooMany > 0) {
        tooMany--;
        return {
          status: 429,
          body: '{"error":{"message":"rate limit reached"}}',
          headers: { "retry-after": "1" },
        };
      }
      return null;
    },
  });
  closers.push(fake.close);
  const { input, out } = inputDir("openai-429", lines);
  // --max_attempts 1: had the 429 counted, the run would have stopped.
  const result = await runCli(args(input, out, fake.url, { max_attempts: 1 }));
  assert.equal(result.code, 0, result.stderr);
  const notes = errorLines(result.stderr).filter((l) => l.includes("429"));
  assert.equal(notes.length, 1, result.stderr);
  assert.match(
    notes[0] ?? "",
    /server http:\/\/127\.0\.0\.1:\d+\/v1 is down: HTTP 429: too many requests: rate limit reached/,
  );
  const ledger = readLedger(out);
  assert.equal(ledger.done, ledger.batches);
});

test("401: the run stops at once with one line naming the server and the refused key, never the key", async () => {
  const fake = await startFakeOpenAI({
    rule: (req) =>
      req.auth === "Bearer right-key" ? null : { status: 401, body: '{"detail":"Unauthorized"}' },
  });
  closers.push(fake.close);
  const { input, out } = inputDir("openai-401", lines);
  const result = await runCli(
    args(input, out, fake.url),
    testEnv({ OPENAI_API_KEY: "wrong-key-1234" }),
  );
  assert.notEqual(result.code, 0);
  const line = onlyErrorLine(result.stderr);
  assert.ok(line.includes(fake.url), line);
  assert.match(line, /HTTP 401: the server refused the key \(OPENAI_API_KEY or EMBED_AUTH_TOKEN\)/);
  assert.ok(!result.stderr.includes("wrong-key-1234"), "the key is never printed");
  assert.ok(!existsSync(join(out, "fake__model.metadata.json")), "no output claims to be complete");
  // With the right key the same command works.
  const ok = await runCli(args(input, out, fake.url), testEnv({ OPENAI_API_KEY: "right-key" }));
  assert.equal(ok.code, 0, ok.stderr);
});

test("400 for one row: the batch is split until that row stands alone, the run stops naming its line", async () => {
  const poisoned = [...lines];
  poisoned[13] = paragraphLines(1, () => ["2212.00002", "this one the server refuses"])[0] ?? "";
  const fake = await startFakeOpenAI({
    rule: (req) =>
      req.body.input?.some((t) => t.includes("refuses"))
        ? { status: 400, body: '{"error":{"message":"input contains a forbidden word"}}' }
        : null,
  });
  closers.push(fake.close);
  const { input, out } = inputDir("openai-400", poisoned);
  const result = await runCli(args(input, out, fake.url));
  assert.notEqual(result.code, 0);
  const line = onlyErrorLine(result.stderr);
  assert.match(line, /input line 14 \(batch \d+ of fake\/model\)/);
  assert.match(
    line,
    /HTTP 400: the server refuses this text even alone: .*input contains a forbidden word/,
  );
  assert.ok(!/^\s+at /m.test(result.stderr), "no stack trace");
});
